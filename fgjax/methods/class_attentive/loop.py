"""The training loop of method A: Adam on the circles, one ``lax.scan`` per epoch.

Its own loop rather than ``fgjax.train``'s: the data is a few MB of 200-d vectors
that live on the device, there are no checkpoints (a run takes seconds), and a
whole epoch -- batch order, positive partners, two augmented views, the step --
compiles into one scan.

Randomness: the parameters start from ``fold_in(PRNGKey(seed), 0)``
(:func:`model.init_params`); epoch ``e`` uses ``fold_in(fold_in(PRNGKey(seed), 1), e)``,
split into (step keys, batch order), and step ``t`` ``fold_in(step keys, t)``,
split into (partners, view a, view b). No RNG state is carried.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fgjax.data import circles
from fgjax.errors import NonFiniteLossError
from fgjax.methods.class_attentive import model as model_lib
from fgjax.ops import class_attentive_losses as losses


def loss_fn(params, x_views: jax.Array, labels: jax.Array, *, net: model_lib.ClassAttentiveNet,
            objective: str, loss_cfg: dict) -> tuple[jax.Array, dict]:
  """Loss of one batch. ``x_views: [2B, D_in]`` = B anchors then their B partners; ``labels: [2B]``.

  Returns ``(loss, metrics)``; the metrics (mean positive and different-class
  cosine) are measured without gradient.
  """
  out = net.apply(params, x_views)
  z, weights = out["z"], out["class_weights"]
  two_b = z.shape[0]
  b = two_b // 2
  partner = jnp.concatenate([jnp.arange(b, two_b), jnp.arange(b)])
  sim = losses.pair_similarities(z, labels, weights, loss_cfg["negative_weights"])
  observed, negatives = jax.lax.stop_gradient(sim), losses.negative_mask(labels)
  metrics = {
      "pos_cos": jnp.take_along_axis(observed, partner[:, None], axis=1).mean(),
      "neg_cos": jnp.where(negatives, observed, 0.0).sum() / jnp.maximum(negatives.sum(), 1),
  }
  if objective == "supervised":
    logits = out["logits"][:b]  # the anchors' views; partners are not needed
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels[:b]).mean()
    metrics["train_top1"] = (logits.argmax(-1) == labels[:b]).mean()
  elif objective == "cosine":  # the paper's l_mod, symmetric over the pair
    per_pair = losses.class_attentive_cosine_loss(z[:b], z[b:], weights[labels[:b]])
    loss = per_pair.mean()
  else:
    if objective == "margin":
      per_view = losses.margin_contrastive_loss(sim, partner, labels, margin=loss_cfg["margin"],
                                                negative_weight=loss_cfg["negative_weight"])
    else:
      per_view = losses.info_nce_loss(sim, partner, labels, temperature=loss_cfg["temperature"])
    loss = per_view.mean()
  return loss, metrics


def train_step(params, opt_state, x_views, labels, *, net, tx, objective, loss_cfg):
  """One Adam step: ``(params, opt_state, [2B, D_in], [2B]) -> (params, opt_state, metrics)``."""
  (loss, metrics), grads = jax.value_and_grad(
      functools.partial(loss_fn, net=net, objective=objective, loss_cfg=loss_cfg), has_aux=True)(
          params, x_views, labels)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state, {"loss": loss, **metrics}


def sample_pairs(key: jax.Array, anchors: jax.Array, train_y: jax.Array, class_members: jax.Array,
                 position_in_class: jax.Array, same_sample: bool) -> jax.Array:
  """Positive partners: another random sample of the anchor's class (or the anchor itself).

  Args:
    anchors: [B] indices into the training split.
    train_y: [N] labels; class_members: [C, n] indices of each class's samples;
    position_in_class: [N] where each sample sits in its class's row.

  Returns:
    [B] partner indices.
  """
  if same_sample:
    return anchors
  n_per_class = class_members.shape[1]
  offset = jax.random.randint(key, anchors.shape, 1, n_per_class)  # never 0: not the anchor
  return class_members[train_y[anchors], (position_in_class[anchors] + offset) % n_per_class]


def make_train_epoch(cfg: ml_collections.ConfigDict, net: model_lib.ClassAttentiveNet, tx,
                     data: circles.CirclesData):
  """A jitted ``(params, opt_state, epoch) -> (params, opt_state, mean metrics)`` over one epoch.

  The training split lives on the device; every step draws its batch from a
  per-epoch permutation (drop remainder), partners by :func:`sample_pairs`, and
  two augmented views by :func:`fgjax.data.circles.augment`. Randomness is
  ``fold_in(seed key, epoch)`` then ``fold_in(., step)``: no RNG state to carry.
  """
  train_x, train_y = jnp.asarray(data.train_x), jnp.asarray(data.train_y)
  labels_np = np.asarray(data.train_y)
  class_members_np = np.stack([np.flatnonzero(labels_np == c) for c in range(data.num_classes)])
  position_np = np.empty_like(labels_np)
  for row in class_members_np:
    position_np[row] = np.arange(row.size)
  class_members, position_in_class = jnp.asarray(class_members_np), jnp.asarray(position_np)
  n, batch = train_x.shape[0], cfg.data.global_batch_size
  steps = n // batch
  a = cfg.augment
  aug = dict(rotate=bool(a.rotate), roll=bool(a.roll), extra_noise_std=float(a.extra_noise_std))
  loss_cfg = {k: cfg.loss[k] for k in ("negative_weights", "margin", "negative_weight", "temperature")}
  step_fn = functools.partial(train_step, net=net, tx=tx, objective=cfg.objective, loss_cfg=loss_cfg)
  base_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)  # 0 is the init key
  same_sample = cfg.loss.positive == "same_sample"

  @jax.jit
  def epoch_fn(params, opt_state, epoch):
    epoch_key, order_key = jax.random.split(jax.random.fold_in(base_key, epoch))
    order = jax.random.permutation(order_key, n)[:steps * batch].reshape(steps, batch)

    def body(carry, inputs):
      params, opt_state = carry
      step, anchors = inputs
      k_pair, k_view_a, k_view_b = jax.random.split(jax.random.fold_in(epoch_key, step), 3)
      partners = sample_pairs(k_pair, anchors, train_y, class_members, position_in_class, same_sample)
      views = jnp.concatenate([circles.augment(k_view_a, train_x[anchors], **aug),
                               circles.augment(k_view_b, train_x[partners], **aug)])
      labels = jnp.concatenate([train_y[anchors], train_y[partners]])
      params, opt_state, metrics = step_fn(params, opt_state, views, labels)
      return (params, opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), (jnp.arange(steps), order))
    return params, opt_state, jax.tree.map(jnp.mean, metrics)

  return epoch_fn, steps


def train(cfg: ml_collections.ConfigDict, data: circles.CirclesData, *, log_fn=None):
  """Trains for ``optim.num_epochs``; returns ``(net, params, history)``.

  ``log_fn(epoch, metrics)``, if given, is called after every epoch (1-based).

  Raises:
    NonFiniteLossError: a NaN/inf loss or metric (names the epoch); never passed on.
  """
  net = model_lib.build_net(cfg)
  params = model_lib.init_params(cfg, net, data.train_x.shape[1])
  tx = optax.adam(cfg.optim.learning_rate)
  opt_state = tx.init(params)
  epoch_fn, _ = make_train_epoch(cfg, net, tx, data)
  history = []
  for epoch in range(cfg.optim.num_epochs):
    params, opt_state, metrics = epoch_fn(params, opt_state, epoch)
    metrics = {k: float(v) for k, v in metrics.items()}
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
      raise NonFiniteLossError(f"epoch {epoch + 1}: {bad[0]} is {metrics[bad[0]]}")
    history.append({"epoch": epoch + 1, **metrics})
    if log_fn:
      log_fn(epoch + 1, metrics)
  return net, params, history
