"""What the pictures show, computed from a trained state: maps, reconstructions, neighbours.

Each function takes a run (its config, networks and host-array state) and
returns NumPy arrays ready for ``fgjax.pictures.draw``. Images enter the models
normalised, as in training and evaluation, and leave as uint8 in their real
colours.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fgjax.data import augment
from fgjax.data import pipeline
from fgjax.methods import perturb_ssl
from fgjax.methods import registry
from fgjax.methods import ssl_common
from fgjax.ops import gradcam as gradcam_lib
from fgjax.ops import perturb as perturb_lib
from fgjax.ops import spatial_attention
from fgjax.pictures.draw import PicturesError


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained model as the pictures see it.

  Attributes:
    label: the run's name in titles and columns (method and workdir).
    cfg: its training config.
    nets: its Flax modules (``registry.setup(cfg).nets``).
    state: its method's state, host arrays.
  """
  label: str
  cfg: ml_collections.ConfigDict
  nets: Any
  state: Any

  @property
  def is_resnet(self) -> bool:
    return self.cfg.model.encoder.startswith("resnet")


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Normalised float images ``[N, H, W, 3]`` (model space) -> uint8 in their real colours."""
  real = np.asarray(augment.denormalize(jnp.asarray(images, jnp.float32)))
  return np.clip(np.round(real * 255.0), 0, 255).astype(np.uint8)


def normalised(images: np.ndarray) -> jax.Array:
  """uint8 ``[N, H, W, 3]`` -> the models' input (ImageNet-normalised float32)."""
  return augment.normalize_uint8(images)


def pick_examples(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
  """``count`` indices of a split, one per class as far as the classes go (seeded).

  Classes are taken evenly spread over the label range, so the pictures show
  different super-classes when fine ids are grouped by super-class.
  """
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  classes = np.unique(labels)
  chosen_classes = classes[np.linspace(0, classes.size - 1, min(count, classes.size)).round().astype(int)]
  picks = [int(rng.choice(np.flatnonzero(labels == c))) for c in chosen_classes]
  rest = np.setdiff1d(np.arange(labels.size), picks)
  if len(picks) < count and rest.size:
    picks += list(rng.choice(rest, min(count - len(picks), rest.size), replace=False))
  return np.asarray(picks, np.int64)


def read_images(cfg: ml_collections.ConfigDict, source: Any, indices: np.ndarray) -> np.ndarray:
  """uint8 ``[len(indices), S, S, 3]`` evaluation images (resize + centre crop) of a split."""
  transform = pipeline.eval_transform(cfg, source)
  out = []
  for i in indices:
    record = source[int(i)]
    if transform is not None:
      record = transform.map(dict(record))
    out.append(np.asarray(record["image"], np.uint8))
  return np.stack(out)


def upsample(maps: jax.Array, size: int) -> np.ndarray:
  """``[N, h, w]`` -> ``[N, size, size]`` (bilinear), clipped to [0, 1]."""
  return np.clip(np.asarray(jax.image.resize(maps, (maps.shape[0], size, size), method="linear")), 0.0, 1.0)


def _feature_map(run: Run, x: jax.Array, params: Any) -> jax.Array:
  """The last conv map ``[N, h, w, n]`` of the online encoder (eval-mode BN)."""
  _, fmap = run.nets.encoder.apply({"params": params, "batch_stats": run.state.batch_stats}, x,
                                   train=False, return_feature_map=True)
  return fmap


def _positive_view(run: Run, x01: jax.Array, seed: int) -> jax.Array:
  """``x'' = T(x)``: one seeded view per image (normalised) with the run's own augmentation
  (its ``augment`` block), the positive of Eq. 3."""
  base = jax.random.PRNGKey(seed)
  keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(x01.shape[0]))
  view = ssl_common.ViewAugmentation.from_config(run.cfg.augment)
  views = jax.vmap(view.apply)(keys, x01)
  return augment.normalize(views)


def ssl_loss_of_features(run: Run, x_pos: jax.Array):
  """``(per-example SSL loss of pooled features v [N, n] -> [N], targets)`` for the run's method.

  The method's own ``features_loss`` (``fgjax.methods.spec.Method``): MoCo's
  InfoNCE against the momentum key of ``x_pos`` and the queue, SimSiam's
  ``D(h(g(v)), sg(g(f(x_pos))))``; float32 whatever the compute dtype.
  """
  return registry.get(run.cfg.method).features_loss(run.nets, run.state, run.cfg, x_pos)


def gradcam_maps(run: Run, images: np.ndarray, *, seed: int) -> np.ndarray:
  """Spatial Grad-CAM of the SSL loss on the last conv map, ``[N, S, S]`` in [0, 1] (Fig. 3).

  The score is ``-L_C``: regions that help the image match its positive
  ``x''`` (a seeded aug+ view, as in Eq. 3) against the negatives.
  """
  if registry.get(run.cfg.method).features_loss is None or not run.is_resnet:
    raise PicturesError(f"gradcam: needs an SSL run with a ResNet encoder, {run.label} is "
                        f"{run.cfg.method} with {run.cfg.model.encoder}")

  @jax.jit
  def compute(state, images):
    r = dataclasses.replace(run, state=state)
    x_pos = _positive_view(r, images.astype(jnp.float32) / 255.0, seed)
    loss_fn, _ = ssl_loss_of_features(r, x_pos)
    fmap = _feature_map(r, normalised(images), state.params["encoder"])
    # The encoder pools by the spatial mean: the loss as a function of the map.
    return gradcam_lib.spatial_gradcam(lambda a: -loss_fn(jnp.mean(a, axis=(1, 2))), fmap)

  maps = compute(run.state, jnp.asarray(images))
  return upsample(maps, images.shape[1])


def generated_pairs(run: Run, images: np.ndarray, *, seed: int) -> dict[str, np.ndarray]:
  """Seed P, Fig. 4: ``{'x', 'x_hat', 'x_hat_p', 'difference'}``, uint8 ``[N, S, S, 3]`` each, and
  ``'difference_max'``: the largest ``|x_hat_p - x_hat|`` (pixel units in [0, 1]), white in ``difference``.

  ``x_hat = h(v)`` and ``x_hat_p = h(v_p)`` with ``v_p`` perturbed exactly as in
  training (``perturb_ssl.perturb_vectors``, Eqs. 3-6): Grad-CAM scores of the
  SSL loss (with the run's ``perturb.gradcam_sign``) with the seeded positive
  view, the variance of the run's memory bank, and the run's ``perturb`` block
  (eps_g, eps_var, kappa, noise_scale, the ablation toggles).
  """
  method = registry.get(run.cfg.method)
  if not method.has_decoder:
    raise PicturesError(f"pairs: needs a Perturb-SSL run (with a decoder), {run.label} is {run.cfg.method}")
  count = int(run.state.bank_count)
  if count < 2:
    raise PicturesError(f"pairs: the memory bank of {run.label} holds {count} feature(s); "
                        "train the run first")
  ph = perturb_ssl.PerturbHParams.from_config(run.cfg)

  @jax.jit
  def compute(state, images):
    r = dataclasses.replace(run, state=state)
    params = state.params
    x = normalised(images)
    x_pos = _positive_view(r, images.astype(jnp.float32) / 255.0, seed)
    v = r.nets.encoder.apply({"params": params["encoder"], "batch_stats": state.batch_stats}, x, train=False)
    loss_fn, _ = ssl_loss_of_features(r, x_pos)
    eta = perturb_ssl.gradcam_scores(loss_fn, v, sign=ph.gradcam_sign)
    s = perturb_lib.feature_bank_variance(state.feature_bank, num_valid_rows=state.bank_count)
    noise_keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(v.shape[0]))
    v_p, _ = perturb_ssl.perturb_vectors(noise_keys, v, eta, s, ph)
    return r.nets.decoder.apply({"params": params["decoder"]}, jnp.concatenate([v, v_p]))

  recon = compute(run.state, jnp.asarray(images))
  n = images.shape[0]
  x_hat, x_hat_p = to_uint8(recon[:n]), to_uint8(recon[n:])
  # Where the perturbation changed the picture: |x_hat_p - x_hat| per pixel (mean over the
  # channels, in [0, 1] pixel units), scaled so that the figure's largest change is white.
  change = np.abs(x_hat_p.astype(np.float32) - x_hat.astype(np.float32)).mean(axis=-1) / 255.0
  largest = float(change.max())
  scaled = change / largest if largest > 0 else change
  difference = np.repeat(np.round(255 * scaled).astype(np.uint8)[..., None], 3, axis=-1)
  return {"x": np.asarray(images, np.uint8), "x_hat": x_hat, "x_hat_p": x_hat_p, "difference": difference,
          "difference_max": largest}


def bank_variance(run: Run, train_features: Callable[[], np.ndarray]) -> tuple[np.ndarray, str]:
  """Per-dimension variance ``s [n]`` of the memory bank (after L2-normalising each column).

  Perturb-SSL runs use their own bank M; other runs use the training split's
  features as the bank (``train_features()`` is called only then: it is a pass
  over the training split). Returns ``(s, what the bank was)``.
  """
  state = run.state
  count = int(state.bank_count) if registry.get(run.cfg.method).has_decoder else 0
  if count >= 2:
    return np.asarray(perturb_lib.feature_bank_variance(jnp.asarray(state.feature_bank),
                                                        num_valid_rows=count)), f"memory bank ({count} rows)"
  features = train_features()
  s = perturb_lib.feature_bank_variance(jnp.asarray(features, jnp.float32))
  return np.asarray(s), f"train features ({features.shape[0]} rows)"


def attention_maps(run: Run, images: np.ndarray, *, stage: int) -> np.ndarray:
  """Seed B, Fig. 2: mean of squared activations of a ResNet stage, ``[N, S, S]`` in [0, 1]."""
  if not run.is_resnet:
    raise PicturesError(f"attention: needs a ResNet encoder, {run.label} has {run.cfg.model.encoder}")

  @jax.jit
  def compute(state, images):
    model = registry.frozen_model(run.cfg, run.nets, state)
    return spatial_attention.attention_maps(model, normalised(images), stage=stage, out_size=images.shape[1])

  return np.clip(np.asarray(compute(run.state, jnp.asarray(images))), 0.0, 1.0)


def nearest_neighbours(features: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
  """Top-``k`` cosine neighbours ``[Q, k]`` of ``features[queries]`` in ``features``, the query left out.

  Ties go to the lower index, as in ``fgjax.evaluate.retrieval``.
  """
  f = np.asarray(features, np.float64)
  f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  sims = f[queries] @ f.T
  sims[np.arange(len(queries)), queries] = -np.inf  # leave-one-out
  return np.argsort(-sims, axis=1, kind="stable")[:, :k]




