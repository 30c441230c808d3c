"""Optimizers and learning-rate schedules (optax)."""

from __future__ import annotations

import ml_collections
import optax


def learning_rate(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear scaling rule ``base_lr * B / lr_batch_base``, optional warm-up, then cosine,
  constant or step decay (``optim.decay_factor`` at the fractions ``optim.decay_at`` of
  training, e.g. x0.2 at epochs 60/120/160 of 200)."""
  o = cfg.optim
  peak = o.base_lr * cfg.data.global_batch_size / o.lr_batch_base
  if o.schedule == "constant":
    main = optax.constant_schedule(peak)
  elif o.schedule == "step":
    main_steps = max(1, total_steps - o.warmup_steps)
    boundaries: dict[int, float] = {}
    for f in o.decay_at:  # (two fractions on one step of a short run decay twice there)
      at = int(round(float(f) * main_steps))
      boundaries[at] = boundaries.get(at, 1.0) * float(o.decay_factor)
    main = optax.piecewise_constant_schedule(peak, boundaries)
  else:
    main = optax.cosine_decay_schedule(peak, decay_steps=max(1, total_steps - o.warmup_steps))
  if o.warmup_steps:
    warm = optax.linear_schedule(0.0, peak, o.warmup_steps)
    return optax.join_schedules([warm, main], [o.warmup_steps])
  return main


def sgd_with_coupled_weight_decay(cfg: ml_collections.ConfigDict, total_steps: int, *,
                                  constant: bool = False) -> optax.GradientTransformation:
  """SGD + momentum with PyTorch-style (coupled) weight decay, as MoCo's official code.

  Weight decay is added to the gradient before momentum, on every parameter
  (BN scales and biases included), exactly as ``torch.optim.SGD(weight_decay=)``.
  ``constant``: the peak learning rate throughout (SimSiam's predictor).
  """
  o = cfg.optim
  lr = (o.base_lr * cfg.data.global_batch_size / o.lr_batch_base if constant
        else learning_rate(cfg, total_steps))
  return optax.chain(optax.add_decayed_weights(o.weight_decay), optax.sgd(lr, momentum=o.momentum))


def joint_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The optimizer of the joint phase over ``{'encoder', 'head'[, 'predictor'][, 'decoder']}``.

  Encoder and projection head: SGD as in MoCo v2 / SimSiam
  (:func:`sgd_with_coupled_weight_decay`, cosine). SimSiam's predictor: the same
  SGD at a fixed learning rate when ``simsiam.fixed_predictor_lr`` (the official
  recipe). Decoder (Perturb-SSL only): Adam at ``perturb.decoder_lr``, the
  optimizer it was pre-trained with -- the paper does not say how the decoder is
  optimised, and at MoCo's SGD learning rate a freshly pre-trained decoder
  barely follows the encoder.
  """
  groups = {"ssl": sgd_with_coupled_weight_decay(cfg, total_steps)}
  label = {"decoder": "decoder"}
  if "perturb" in cfg:  # the method's blocks say which parameter groups it has
    groups["decoder"] = decoder_optimizer(cfg)
  if "simsiam" in cfg and cfg.simsiam.fixed_predictor_lr:
    groups["predictor"] = sgd_with_coupled_weight_decay(cfg, total_steps, constant=True)
    label["predictor"] = "predictor"
  if len(groups) == 1:
    return groups["ssl"]
  return optax.multi_transform(groups, lambda params: {name: label.get(name, "ssl") for name in params})


def decoder_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam for the decoder (pre-training and, in :func:`joint_optimizer`, joint training)."""
  return optax.adam(cfg.perturb.decoder_lr)


def supervised_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """``optim.optimizer``: 'sgd' (:func:`sgd_with_coupled_weight_decay`) or 'adamw'
  (decoupled weight decay on every parameter, the ViT recipe), with :func:`learning_rate`."""
  if cfg.optim.get("optimizer", "sgd") == "adamw":
    return optax.adamw(learning_rate(cfg, total_steps), weight_decay=cfg.optim.weight_decay)
  return sgd_with_coupled_weight_decay(cfg, total_steps)
