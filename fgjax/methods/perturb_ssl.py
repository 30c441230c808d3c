"""Perturb-SSL (seed method P) as a plug-in for any SSL base: :func:`wrap` turns a base's hooks
(``fgjax.methods.ssl_common.Base``) into Perturb-<base>: config block, decoder, memory bank,
perturbation and reconstruction (steps 5-7), the reconstructions' encodings, decoder pre-training.

Step and equation numbers are those of docs/perturb_ssl.md ("what exactly is
computed": eight steps) and of the paper (Wang et al., "On Learning
Discriminative Features from Synthesized Data for Self-Supervised Fine-Grained
Visual Recognition"), whose Fig. 1a incorporates the method "into various
existing SSL methods". The base gives steps 1-3 (its views, its target network,
L_C), the loss whose Grad-CAM scores step 4 takes and the form of step 8's pair
loss; everything else is here and the same for every base.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import ClassVar

import flax

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from fgjax.config import ssl as ssl_config
from fgjax.config.fields import require
from fgjax.config.fields import require_nonnegative
from fgjax.config.fields import require_positive
from fgjax import optim
from fgjax.data import augment
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import ssl_common as common
from fgjax.models import decoder as decoder_lib
from fgjax.models import encoders
from fgjax.ops import gradcam as gradcam_lib
from fgjax.ops import losses
from fgjax.ops import perturb as perturb_lib
from fgjax.ops import queue as queue_lib


PyTree = Any


# The readings of the paper's ambiguous or silent points that are switches (docs/perturb_ssl.md,
# "the paper's readings"): field -> its allowed values, the paper-literal one first.
GRADCAM_SIGNS = ("loss", "-loss")  # Eq. 3 as printed | the text's intent: what helps minimise L_C
NOISE_SCALES = perturb_lib.NOISE_SCALES  # N(0, eps (1 - .)): the second argument as std (the text) | variance
PAIR_AUGMENTS = ("none", "aug+")  # the pairs as generated | each of x_hat, x_hat_p through the run's aug+


@dataclasses.dataclass(frozen=True)
class PerturbHParams:
  """Static hyper-parameters of the perturbation, the decoder and the pair loss (hashable).

  Exactly the ``perturb`` block's fields that the step reads, with the block's
  values (:func:`_perturb_block` holds the defaults and what each field means).
  """

  alpha: float
  nu: float
  eps_g: float
  eps_var: float
  kappa: float
  gradcam_noise: bool
  lowvar_noise: bool
  pair_loss: bool
  pair_temperature: float
  pair_positive_in_denominator: bool
  recon_grad_to_encoder: bool
  pair_grad_through_reconstruction: bool
  pair_shuffle_bn: bool
  gradcam_sign: str
  noise_scale: str
  pair_augment: str

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict) -> "PerturbHParams":
    return cls(**{f.name: cfg.perturb[f.name] for f in dataclasses.fields(cls)})


def _perturb_block() -> ml_collections.ConfigDict:
  p = ml_collections.ConfigDict()
  p.bank_size = 1024  # D (5632 in the paper preset)
  p.alpha = 1.0  # weight of L_R (Eq. 8)
  p.nu = 0.5  # weight of L_Cp (Eq. 8)
  p.eps_g = 0.1  # Grad-CAM noise scale (Eq. 5)
  p.eps_var = 0.05  # low-variance noise scale (Eq. 6)
  p.kappa = 0.02  # low-variance threshold (Eq. 6)
  p.gradcam_noise = True  # ablation: False -> no v^g
  p.lowvar_noise = True  # ablation: False -> no v^var
  p.pair_loss = True  # ablation: False -> L_C + alpha * L_R only
  p.pair_temperature = 0.2
  # NT-Xent with the positive in the denominator (SimCLR); False is the paper's
  # literal Eq. 7 (positive excluded).
  p.pair_positive_in_denominator = True
  # Silent points of the paper, as fields (docs/perturb_ssl.md, "our defaults"):
  p.recon_grad_to_encoder = True  # L_R trains f through v = f(x)
  p.pair_grad_through_reconstruction = False  # x_hat, x_hat_p are data for L_Cp
  # Shuffle-BN for L_Cp: x_hat_p permuted across the BatchNorm groups of all devices before the
  # encoder (as MoCo does for its keys), so a pair never shares its batch statistics. False: the
  # two batches' groups hold the same images in the same order (a leak; kept for the record).
  p.pair_shuffle_bn = True
  # The paper's ambiguous readings (GRADCAM_SIGNS, NOISE_SCALES, PAIR_AUGMENTS; the literal first):
  p.gradcam_sign = "-loss"  # eta = ReLU(d(-L_C)/dv * v): dimensions that help minimise L_C score high
  p.noise_scale = "std"  # eps_g (1 - eta_bar), eps_var (1 - s_bar) are standard deviations
  p.pair_augment = "none"  # x_hat and x_hat_p enter L_Cp as decoded (the paper augments neither)
  p.decoder_pretrain_steps = 40  # encoder frozen, L_R only (Adam)
  p.decoder_lr = 2e-3  # Adam, decoder pre-training and joint phase
  return p


def _decoder_sizes(c: ml_collections.ConfigDict) -> None:
  c.model.decoder_channels = 128
  c.model.decoder_upsamples = 3


def _cub200(c: ml_collections.ConfigDict) -> None:
  c.model.decoder_upsamples = 5  # 224 = 7 * 2**5
  c.model.decoder_channels = 512
  c.perturb.bank_size = 5632
  c.perturb.alpha = 1.0
  c.perturb.nu = 0.5
  c.perturb.eps_g = 0.1
  c.perturb.eps_var = 0.05
  c.perturb.kappa = 0.02
  c.perturb.decoder_pretrain_steps = 2000


def _runlocal(c: ml_collections.ConfigDict) -> None:
  c.model.decoder_channels = 8
  c.model.decoder_upsamples = 2
  c.perturb.bank_size = 16
  c.perturb.decoder_pretrain_steps = 2


def _gradcam_only(c: ml_collections.ConfigDict) -> None:
  """Ablation: v_p = v + v^g (Grad-CAM noise only)."""
  c.perturb.lowvar_noise = False


def _lowvar_only(c: ml_collections.ConfigDict) -> None:
  """Ablation: v_p = v + v^var (low-variance noise only)."""
  c.perturb.gradcam_noise = False


def _no_pairs(c: ml_collections.ConfigDict) -> None:
  """Ablation: L_C + alpha L_R only (decoder, no perturbed pairs); sweep perturb.alpha."""
  c.perturb.pair_loss = False
  c.perturb.nu = 0.0


def _validate(cfg: ml_collections.ConfigDict) -> None:
  p, gb, size = cfg.perturb, cfg.data.global_batch_size, cfg.data.image_size
  require(size % (2 ** cfg.model.decoder_upsamples) == 0, "model.decoder_upsamples",
          f"image_size {size} is not divisible by 2**{cfg.model.decoder_upsamples}")
  # Ablation switches that contradict each other are errors, not silent choices.
  require(p.pair_loss or p.nu == 0, "perturb.nu",
          f"perturb.pair_loss=False (no perturbed pairs) needs nu=0, got nu={p.nu}; use the no_pairs preset")
  require(not p.pair_loss or p.gradcam_noise or p.lowvar_noise, "perturb.pair_loss",
          "both noises are off (gradcam_noise=lowvar_noise=False), so v_p = v and the pairs "
          "are identical; turn one on or use the no_pairs preset")
  require(p.bank_size >= gb and p.bank_size % gb == 0, "perturb.bank_size",
          f"D={p.bank_size} must be a positive multiple of the global batch {gb}")
  for field in ("alpha", "nu", "eps_g", "eps_var", "kappa"):
    require_nonnegative(p[field], f"perturb.{field}")
  require_positive(p.pair_temperature, "perturb.pair_temperature")
  for field, allowed in (("gradcam_sign", GRADCAM_SIGNS), ("noise_scale", NOISE_SCALES),
                         ("pair_augment", PAIR_AUGMENTS)):
    require(p[field] in allowed, f"perturb.{field}", f"must be one of {list(allowed)}, got {p[field]!r}")
  require(p.decoder_pretrain_steps >= 0, "perturb.decoder_pretrain_steps", "must be >= 0")
  require_positive(p.decoder_lr, "perturb.decoder_lr")


# The ``perturb`` block: memory bank, noise, loss weights, decoder pre-training; the decoder's sizes in ``model``.
BLOCK = ssl_config.Block(name="perturb", fields=_perturb_block, defaults=_decoder_sizes, validate=_validate,
                         presets={"cub200": _cub200, "runlocal": _runlocal, "gradcam_only": _gradcam_only,
                                  "lowvar_only": _lowvar_only, "no_pairs": _no_pairs})


def pretrain_steps(cfg: ml_collections.ConfigDict) -> int:
  """Decoder pre-training steps before the joint phase."""
  return int(cfg.perturb.decoder_pretrain_steps)


def with_perturbation(base_hparams):
  """The ``hparams`` of a Perturb-SSL method from its base's: the perturb block, the joint phase's start."""
  def hparams(cfg: ml_collections.ConfigDict, setup: Any, num_devices: int) -> common.SSLHParams:
    return dataclasses.replace(base_hparams(cfg, setup, num_devices), joint_start_step=pretrain_steps(cfg),
                               perturb=PerturbHParams.from_config(cfg))
  return hparams


class PerturbState(flax.struct.PyTreeNode):
  """The state of Perturb-<base>: the base's own state and what Perturb-SSL adds to it.

  The decoder's parameters are ``base.params['decoder']``: the joint optimizer
  steps them with the encoder's (Adam for the decoder, the base's SGD for the
  rest: ``optim.joint_optimizer``), so they live in the base state's ``params``
  and its ``opt_state`` covers them. ``step``, ``params``, ``batch_stats`` and
  ``opt_state`` read the base's.

  Attributes:
    base: the base method's state (``moco.MocoState``, ``ssl_common.OnlineState``, ...).
    decoder_opt_state: optax state of decoder pre-training (``()`` without one).
    feature_bank: ``[D, n]`` memory bank M of pooled features, a ring buffer.
    bank_ptr: int32 scalar, next row of ``feature_bank`` to write.
    bank_count: int32 scalar, rows of ``feature_bank`` filled so far (<= D).
  """

  base: Any
  decoder_opt_state: PyTree
  feature_bank: jax.Array
  bank_ptr: jax.Array
  bank_count: jax.Array

  _OWN_FIELDS: ClassVar[tuple[str, ...]] = ("decoder_opt_state", "feature_bank", "bank_ptr", "bank_count")

  @property
  def step(self) -> jax.Array:
    return self.base.step

  @property
  def params(self) -> PyTree:
    return self.base.params

  @property
  def batch_stats(self) -> PyTree:
    return self.base.batch_stats

  @property
  def opt_state(self) -> PyTree:
    return self.base.opt_state

  def legacy_fields(self) -> dict[str, PyTree]:
    """The base's legacy fields and Perturb's own (the same names in the legacy flat layout)."""
    return {**self.base.legacy_fields(), **{name: getattr(self, name) for name in self._OWN_FIELDS}}

  @classmethod
  def from_legacy(cls, old: dict[str, PyTree], like: "PerturbState") -> "PerturbState":
    return cls(base=type(like.base).from_legacy(old, like.base), **{name: old[name] for name in cls._OWN_FIELDS})

  def with_encoder(self, place: Any) -> "PerturbState":
    return self.replace(base=self.base.with_encoder(place))


def push_to_bank(state: PerturbState, local_features: jax.Array):
  """Step 5a: all-gathers this step's features ``[b, n]`` and writes them into M.

  Returns:
    ``(bank [D, n], bank_ptr, bank_count)``; identical on every device.
  """
  global_features = lax.all_gather(lax.stop_gradient(local_features), DATA_AXIS, tiled=True)
  bank, ptr = queue_lib.enqueue(state.feature_bank, global_features, state.bank_ptr)
  count = jnp.minimum(state.bank_count + global_features.shape[0], bank.shape[0])
  return bank, ptr, count


_PERTURB_STREAM = 0x9E7B  # folds Perturb's keys out of the base step's key


def step_keys(rng: jax.Array, state: PerturbState, hp: common.SSLHParams
              ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """The joint step's keys: ``(base_key, noise_key, pair_shuffle_key, pair_augment_key)``.

  ``base_key`` is the base method's own key at the same *joint* step (the step
  counted from the end of decoder pre-training), which the base step splits as
  it always does; Perturb's own randomness comes from a separate stream of it.
  So a Perturb run and its base with the same seed draw the same augmentations
  (and MoCo's key shuffle) at each joint step: paired runs.
  """
  base_key = jax.random.fold_in(rng, state.step - hp.joint_start_step)
  noise_key, shuffle_key, augment_key = jax.random.split(jax.random.fold_in(base_key, _PERTURB_STREAM), 3)
  return base_key, noise_key, shuffle_key, augment_key


def gradcam_scores(per_example_loss, v: jax.Array, *, sign: str) -> jax.Array:
  """Eq. 3 under the reading ``sign`` (``GRADCAM_SIGNS``): ``[b, n]`` scores, no gradient.

  ``'loss'``: ``ReLU(dL_C/dv * v)`` as printed, high where growing ``|v_i|``
  raises the loss; ``'-loss'``: ``ReLU(-dL_C/dv * v)``, high where it lowers the
  loss -- the dimensions that, in the paper's words, "contribute to minimizing
  the loss" and to "data discrimination".

  Args:
    per_example_loss: ``[b, n] -> [b]`` the base's SSL loss of pooled features.
    v: ``[b, n]`` pooled features.
  """
  if sign == "-loss":
    return gradcam_lib.gradcam_feature_scores(lambda f: -per_example_loss(f), v)
  if sign == "loss":
    return gradcam_lib.gradcam_feature_scores(per_example_loss, v)
  raise ValueError(f"gradcam sign must be one of {GRADCAM_SIGNS}, got {sign!r}")


def perturb_vectors(noise_keys: jax.Array, v: jax.Array, eta: jax.Array, s: jax.Array, ph: PerturbHParams
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Step 6 (Eqs. 4-6): ``v_p = v + v^g + v^var``, one key per example, as training and pictures draw it.

  Args:
    noise_keys: ``[b]`` per-example keys (by global position: device-count independent).
    v: ``[b, n]`` features; eta: ``[b, n]`` Grad-CAM scores; s: ``[n]`` bank variances.

  Returns:
    ``(v_p [b, n], aux)`` as ``fgjax.ops.perturb.perturb_features`` (``aux`` per example).
  """
  v_p, aux = jax.vmap(
      lambda key, vi, ei: perturb_lib.perturb_features(
          key, vi[None], gradcam_scores=ei[None], bank_variance=s, eps_g=ph.eps_g, eps_var=ph.eps_var,
          kappa=ph.kappa, use_gradcam_noise=ph.gradcam_noise, use_lowvar_noise=ph.lowvar_noise,
          noise_scale=ph.noise_scale))(noise_keys, v, eta)
  return v_p[:, 0], aux


def pair_features(encoder, params, batch_stats, x_hat: jax.Array, x_hat_p: jax.Array, shuffle_key: jax.Array,
                  augment_key: jax.Array, *, hp: common.SSLHParams) -> tuple[jax.Array, jax.Array]:
  """Step 8's encodings ``f(x_hat)``, ``f(x_hat_p)`` of the generated pairs, ``[b, n]`` each, this device's rows.

  Two encoder passes of ``b`` images each, as Eq. 7 writes ``g(f(x_hat))`` and
  ``g(f(x_hat_p))`` (one concatenated 2b-image pass costs the same FLOPs but ran
  ~20 % slower on CPU at full width). With ``perturb.pair_shuffle_bn`` (the
  default) ``x_hat_p`` is permuted across the BatchNorm groups of all devices
  before its pass and its features un-permuted after (shuffle-BN, as MoCo does
  for its keys): unshuffled, the BN groups of the two passes hold the same
  images in the same order, so each pair shares its batch statistics and the
  pair task can be solved from them. ``perturb.pair_augment='aug+'`` first
  passes each reconstruction through its own draw of the run's augmentation.
  Running BN statistics are NOT updated from these passes: evaluation uses
  them, and they should describe real images.
  """
  ph, groups = hp.perturb, hp.local_bn_groups
  if not ph.pair_grad_through_reconstruction:  # x_hat, x_hat_p are data for L_Cp
    x_hat, x_hat_p = lax.stop_gradient(x_hat), lax.stop_gradient(x_hat_p)
  if ph.pair_augment == "aug+":
    x_hat, x_hat_p = _augmented_pair(augment_key, x_hat, x_hat_p, hp.views)
  f_hat, _ = common.encode(encoder, params, batch_stats, x_hat, groups=groups)
  if not ph.pair_shuffle_bn:
    f_hat_p, _ = common.encode(encoder, params, batch_stats, x_hat_p, groups=groups)
    return f_hat, f_hat_p
  shuffled, perm = common.shuffle_across_devices(x_hat_p, shuffle_key)
  f_shuffled, _ = common.encode(encoder, params, batch_stats, shuffled, groups=groups)
  return f_hat, common.local_slice(common.unshuffle_to_global(f_shuffled, perm), x_hat.shape[0])


def _augmented_pair(key: jax.Array, x_hat: jax.Array, x_hat_p: jax.Array, views: common.ViewAugmentation
                    ) -> tuple[jax.Array, jax.Array]:
  """One independent draw of ``views`` for each reconstruction (normalised in, normalised out)."""
  b = x_hat.shape[0]

  def one(k, images):
    images01 = jnp.clip(augment.denormalize(images), 0.0, 1.0)
    return augment.normalize(jax.vmap(views.apply)(common.example_keys(k, b), images01))

  key_a, key_b = jax.random.split(key)
  return one(key_a, x_hat), one(key_b, x_hat_p)


def perturb_and_reconstruct(state: PerturbState, params: PyTree, v: jax.Array, eta: jax.Array,
                            x: jax.Array, noise_keys: jax.Array, *, nets: common.Networks,
                            hp: common.SSLHParams):
  """Steps 5-7, the same on either SSL base: bank, perturbed features, decoder, L_R.

  Args:
    v: ``[b, n]`` pooled features f(x) of the clean images (with gradient).
    eta: ``[b, n]`` Grad-CAM scores of the base's SSL loss (no gradient).
    x: ``[b, H, W, 3]`` normalised clean images (the L_R target).
    noise_keys: ``[b]`` per-example keys (global positions).

  Returns:
    ``(x_hat, x_hat_p, loss_r, (bank, bank_ptr, bank_count), aux)``: the
    reconstructions of v and v_p, Eq. 2's L_R, the bank after this batch, and
    the perturbation statistics of ``perturb_vectors``.
  """
  b = v.shape[0]
  # Step 5: bank after pushing this batch, per-dimension variance s (filled rows only).
  bank, bank_ptr, bank_count = push_to_bank(state, v)
  s = perturb_lib.feature_bank_variance(bank, num_valid_rows=bank_count)
  # Step 6: v_p = v + v^g + v^var (Eqs. 4-6).
  v_p, aux = perturb_vectors(noise_keys, v, eta, s, hp.perturb)
  # Step 7: one decoder pass on [v; v_p]; L_R (Eq. 2) on the clean reconstruction.
  v_dec = v if hp.perturb.recon_grad_to_encoder else lax.stop_gradient(v)
  v_p_dec = v_p if hp.perturb.recon_grad_to_encoder else lax.stop_gradient(v_p)
  recon = nets.decoder.apply({"params": params["decoder"]}, jnp.concatenate([v_dec, v_p_dec]))
  x_hat, x_hat_p = recon[:b], recon[b:]
  loss_r = losses.reconstruction_loss(x, x_hat)
  return x_hat, x_hat_p, loss_r, (bank, bank_ptr, bank_count), aux


def loss_terms(total, loss_c, loss_r, loss_cp, pair_top1, aux) -> dict[str, jax.Array]:
  """The logged metrics of a joint Perturb-SSL step (``pair_top1``: ``losses.pair_top1_accuracy``)."""
  return {
      "loss": total, "loss_c": loss_c, "loss_r": loss_r, "loss_cp": loss_cp, "pair_top1": pair_top1,
      "lowvar_fraction": aux["lowvar_fraction"].mean(),
      "gradcam_noise_abs": jnp.mean(jnp.abs(aux["gradcam_noise"])),
      "lowvar_noise_abs": jnp.mean(jnp.abs(aux["lowvar_noise"])),
  }


def decoder_pretrain_step(state: PerturbState, batch: dict[str, jax.Array], rng: jax.Array, *,
                          nets: common.Networks, hp: common.SSLHParams,
                          decoder_tx: optax.GradientTransformation
                          ) -> tuple[PerturbState, dict[str, jax.Array]]:
  """Decoder pre-training (paper Sec. 4.1): encoder frozen, ``L_R`` only, per device.

  The frozen encoder runs with batch statistics (as in the joint step, whose
  v = f(x) is computed in training mode) but its running statistics are left
  untouched. The features also fill the memory bank, so that joint training
  starts with a warm bank.
  """
  del rng  # deterministic: no augmentation of x for L_R (paper Sec. 3.2)
  x = augment.normalize(common.clean_view(common.to_float_images(batch["image"]), hp.image_size))
  v, _ = common.encode(nets.encoder, state.params["encoder"], state.batch_stats, x,
                       groups=hp.local_bn_groups)
  v = lax.stop_gradient(v)

  def loss_fn(decoder_params):
    x_hat = nets.decoder.apply({"params": decoder_params}, v)
    return losses.reconstruction_loss(x, x_hat)

  loss_r, grads = jax.value_and_grad(loss_fn)(state.params["decoder"])
  grads = common.mean_over_devices(grads)
  updates, dec_opt_state = decoder_tx.update(grads, state.decoder_opt_state, state.params["decoder"])
  params = dict(state.params, decoder=optax.apply_updates(state.params["decoder"], updates))
  bank, bank_ptr, bank_count = push_to_bank(state, v)
  new_state = state.replace(base=state.base.replace(step=state.step + 1, params=params),
                            decoder_opt_state=dec_opt_state, feature_bank=bank, bank_ptr=bank_ptr,
                            bank_count=bank_count)
  return new_state, common.mean_over_devices({"loss": loss_r, "loss_r": loss_r})


# --- The wrapper: Perturb-<base> from a base's hooks.

# The hooks a base must have to be wrapped, and what each is (``ssl_common.Base``).
HOOKS = {
    "gradcam_loss": "its SSL loss as a function of pooled features v, for Eq. 3's Grad-CAM scores",
    "pair_loss": "the form of Eq. 7's pair loss on the encodings of x_hat and x_hat_p",
}
_DECODER_STREAM = 0xDEC0  # the decoder's initialisation key, folded out of the run's init key


def networks_with_decoder(base_networks):
  """``cfg -> Networks``: the base's networks and the decoder h (Sec. 3.2) sized by ``model.decoder_*``."""
  def networks(cfg: ml_collections.ConfigDict) -> common.Networks:
    m = cfg.model
    decoder = decoder_lib.Decoder(image_size=cfg.data.image_size, base_channels=m.decoder_channels,
                                  num_upsamples=m.decoder_upsamples, dtype=jnp.dtype(m.dtype),
                                  conv_impl=m.get("conv_impl", "xla"))
    return dataclasses.replace(base_networks(cfg), decoder=decoder)
  return networks


def state_with_decoder(base_create_state, decoder_key=None):
  """``create_state`` of Perturb-<base>: a :class:`PerturbState` around the base's state, with the decoder
  in its ``params`` (and in its joint optimizer's state), decoder pre-training's optimizer state and the bank M.

  The base's own parameters come from the same key as in the base's run (a
  seed starts both runs of a pair from the same encoder); the decoder's from
  ``decoder_key(rng)`` (``Base.decoder_key``) or else a stream of its own.
  """
  if decoder_key is None:
    decoder_key = lambda rng: jax.random.fold_in(rng, _DECODER_STREAM)  # noqa: E731
  def create_state(cfg: ml_collections.ConfigDict, nets: common.Networks, rng: jax.Array,
                   tx: optax.GradientTransformation) -> PerturbState:
    base = base_create_state(cfg, nets, rng, tx)
    n = encoders.feature_dim(cfg.model)
    decoder_params = nets.decoder.init(decoder_key(rng), jnp.zeros((2, n), jnp.float32))["params"]
    params = {**base.params, "decoder": decoder_params}
    zero = jnp.zeros((), jnp.int32)
    return PerturbState(base=base.replace(params=params, opt_state=tx.init(params)),
                        decoder_opt_state=optim.decoder_optimizer(cfg).init(decoder_params),
                        feature_bank=jnp.zeros((cfg.perturb.bank_size, n), jnp.float32), bank_ptr=zero,
                        bank_count=zero)
  return create_state


def perturb_step(base: common.Base):
  """The joint Perturb-<base> step, per device: ``L = L_C + alpha L_R + nu L_Cp`` (Eq. 8).

  Returns ``(state, batch, rng, *, nets, hp, tx) -> (new_state, metrics)``; the
  metrics are device means of each loss term, the pair task's top-1 and the
  perturbation statistics. The base's views and target network are its own at
  the same joint step (:func:`step_keys`): a Perturb run and its base with the
  same seed are paired.
  """
  finish = base.finish or common.no_finish

  def step(state: PerturbState, batch: dict[str, jax.Array], rng: jax.Array, *, nets: common.Networks,
           hp: common.SSLHParams, tx: optax.GradientTransformation
           ) -> tuple[PerturbState, dict[str, jax.Array]]:
    base_key, noise_rng, pair_shuffle_rng, pair_augment_rng = step_keys(rng, state, hp)
    x01 = common.to_float_images(batch["image"])
    x = augment.normalize(common.clean_view(x01, hp.image_size))  # non-augmented (L_R target, Grad-CAM, bank)
    # Steps 1-2: the base's views and gradient-free part (MoCo: EMA update, keys with shuffle-BN).
    ctx = base.forward(state.base, x01, base_key, nets=nets, hp=hp)
    ph = hp.perturb
    noise_keys = common.example_keys(noise_rng, x.shape[0])

    def loss_fn(params):
      # Step 3: L_C, the base's SSL loss.
      out = base.ssl_loss(params, state.batch_stats, ctx, nets=nets, hp=hp)
      # Step 4: v = f(x), Grad-CAM scores of the base's loss of v (Eq. 3).
      v, stats = common.encode(nets.encoder, params["encoder"], out.batch_stats, x, groups=hp.local_bn_groups)
      per_example_loss = base.gradcam_loss(params, ctx, out.outputs, nets=nets, hp=hp)
      eta = gradcam_scores(per_example_loss, lax.stop_gradient(v), sign=ph.gradcam_sign)
      # Steps 5-7: bank, v_p, one decoder pass, L_R.
      x_hat, x_hat_p, loss_r, bank_state, aux = perturb_and_reconstruct(state, params, v, eta, x, noise_keys,
                                                                        nets=nets, hp=hp)
      # Step 8: L_Cp (Eq. 7) in the base's form on the generated pairs, their BatchNorm groups shuffled.
      if ph.pair_loss:
        f_hat, f_hat_p = pair_features(nets.encoder, params["encoder"], stats, x_hat, x_hat_p,
                                       pair_shuffle_rng, pair_augment_rng, hp=hp)
        loss_cp, pair_top1 = base.pair_loss(params, f_hat, f_hat_p, nets=nets, hp=hp)
      else:
        loss_cp = pair_top1 = jnp.zeros((), jnp.float32)
      total = out.loss + ph.alpha * loss_r + ph.nu * loss_cp
      return total, (stats, bank_state, loss_terms(total, out.loss, loss_r, loss_cp, pair_top1, aux))

    (_, (new_stats, bank_state, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    params, opt_state = common.apply_gradients(state.base, grads, tx)
    new_base = state.base.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  batch_stats=common.mean_over_devices(new_stats))
    bank, bank_ptr, bank_count = bank_state
    return (state.replace(base=finish(new_base, state.base, ctx), feature_bank=bank, bank_ptr=bank_ptr,
                          bank_count=bank_count),
            common.mean_over_devices(terms))
  return step


def of_base_state(features_loss):
  """The base's ``features_loss`` (pictures) applied to a :class:`PerturbState`'s base state."""
  if features_loss is None:
    return None
  return lambda nets, state, cfg, x_pos: features_loss(nets, state.base, cfg, x_pos)


def wrap(base: common.Base) -> common.Base:
  """Perturb-<base>: ``base`` with Perturb-SSL's decoder, bank, perturbation and pair loss (Eq. 8).

  The result is a ``Base`` named ``perturb_<name>`` with the base's config
  blocks plus ``perturb``, the base's networks plus the decoder, decoder
  pre-training before the joint phase, and :func:`perturb_step` as its step.

  Raises:
    TypeError: ``base`` lacks one of :data:`HOOKS` (one line naming it), or is
      already a Perturb-SSL method.
  """
  if base.has_decoder:
    raise TypeError(f"perturb_ssl.wrap: '{base.name}' already has a decoder (it is a Perturb-SSL method)")
  for hook, what in HOOKS.items():
    if getattr(base, hook) is None:
      raise TypeError(f"perturb_ssl.wrap: the base '{base.name}' has no '{hook}' hook ({what}; "
                      f"fgjax.methods.ssl_common.Base)")
  return dataclasses.replace(
      base, name=f"perturb_{base.name}", blocks=(*base.blocks, BLOCK),
      networks=networks_with_decoder(base.networks),
      create_state=state_with_decoder(base.create_state, base.decoder_key),
      hparams=with_perturbation(base.hparams), joint_step=perturb_step(base),
      features_loss=of_base_state(base.features_loss),
      pretrain_step=decoder_pretrain_step, pretrain_steps=pretrain_steps, has_decoder=True)
