r"""Held-out evaluation of method A, without the label; collapse diagnostics; the t-SNE.

**Evaluation without the label.** z' = z (.) w_y needs y, which a test sample does
not have. The headline embedding is the plain ``z = f(x)`` (label-free; a linear
probe on ``z (.) w_c`` for every c concatenated would see the same information, as
the probe standardises each feature). Also reported: the *best match*
``z (.) w_c^`` with ``c^ = argmax_c cos(z (.) w_c, p_c)`` and ``p_c`` the normalised
mean of the training samples' ``z (.) w_c`` of class c (label-free at test time;
its nearest-prototype accuracy too), and, marked ``leaky_``, the probe on
``z (.) w_y`` with the *true* test label -- what a label-conditioned evaluation
would (wrongly) measure.

The linear probe is :func:`fgjax.evaluate.linear_probe.linear_probe` (100
epochs), trained on the train split and tested on the held-out split
(``probe_test_top1``), and, the seed's protocol, trained and tested on all samples
(``probe_all_top1``); ``unit_probe_*``: the same on ``z / |z|`` (the direction, all
that a cosine loss shapes). Collapse diagnostic: ``std_ratio`` = sqrt(d) x the mean over
dimensions of the per-dimension std of the L2-normalised embeddings (0: one
point; ~1: spread over the sphere; SimSiam's diagnostic) and the effective rank
of the centred embedding matrix (Roy & Vetterli 2007).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fgjax.data import circles
from fgjax.evaluate.linear_probe import ProbeHParams
from fgjax.evaluate.linear_probe import linear_probe
from fgjax.methods.class_attentive import model as model_lib
from fgjax.pictures import draw


_EPS = 1e-8


def _unit(z: np.ndarray) -> np.ndarray:
  return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), _EPS)


def collapse_std_ratio(z) -> float:
  """sqrt(d) x mean_k std_n (z_n / |z_n|)_k: 0 when all embeddings share one direction.

  Uniform directions on the sphere give ~1 (each coordinate's std is ~1/sqrt(d)).
  ``z: [N, d]``.
  """
  z = np.asarray(z, np.float64)
  return float(_unit(z).std(axis=0).mean() * np.sqrt(z.shape[1]))


def effective_rank(z) -> float:
  """exp(entropy of the normalised singular values) of the centred [N, d] matrix (1..d)."""
  z = np.asarray(z, np.float64)
  s = np.linalg.svd(z - z.mean(0), compute_uv=False)
  if s.sum() <= 0:
    return 0.0
  p = s / s.sum()
  p = p[p > 0]
  return float(np.exp(-(p * np.log(p)).sum()))


@functools.partial(jax.jit, static_argnames=("net",))
def _forward(net, params, x):
  return net.apply(params, x)


def embed(net: model_lib.ClassAttentiveNet, params, x: np.ndarray) -> dict[str, np.ndarray]:
  """Frozen forward pass: ``{'z': [N, d], 'class_weights': [C, d], ('logits': [N, C])}``."""
  return {k: np.asarray(v) for k, v in _forward(net, params, jnp.asarray(x)).items()}


def best_match(z: np.ndarray, class_weights: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
  """Label-free class choice: ``argmax_c cos(z (.) w_c, p_c)``. ``z: [N, d]``, ``w, p: [C, d]`` -> [N]."""
  per_class = z[:, None, :] * class_weights[None, :, :]  # [N, C, d]
  per_class = per_class / np.maximum(np.linalg.norm(per_class, axis=-1, keepdims=True), _EPS)
  return np.einsum("ncd,cd->nc", per_class, prototypes).argmax(1)


def class_prototypes(z: np.ndarray, labels: np.ndarray, class_weights: np.ndarray) -> np.ndarray:
  """``p_c`` = normalised mean of the unit vectors ``z (.) w_c`` of the class-c samples: [C, d]."""
  protos = []
  for c, w in enumerate(class_weights):
    zc = z[labels == c] * w
    zc = zc / np.maximum(np.linalg.norm(zc, axis=1, keepdims=True), _EPS)
    mean = zc.mean(0)
    protos.append(mean / max(np.linalg.norm(mean), _EPS))
  return np.stack(protos)


def _probe_hparams(cfg: ml_collections.ConfigDict) -> ProbeHParams:
  e = cfg.eval
  return ProbeHParams(epochs=e.probe_epochs, batch_size=e.probe_batch_size, learning_rate=e.probe_learning_rate,
                      weight_decay=e.probe_weight_decay, seed=e.probe_seed)


def _probe_pair(train_f, train_y, test_f, test_y, hp) -> dict[str, float]:
  """Held-out probe (train -> test) and the seed's protocol (all samples -> all samples)."""
  all_f = np.concatenate([train_f, test_f])
  all_y = np.concatenate([train_y, test_y])
  return {"probe_test_top1": linear_probe(train_f, train_y, test_f, test_y, hp=hp)["top1"],
          "probe_all_top1": linear_probe(all_f, all_y, all_f, all_y, hp=hp)["top1"]}


def evaluate(cfg: ml_collections.ConfigDict, net: model_lib.ClassAttentiveNet, params,
             data: circles.CirclesData) -> tuple[dict[str, float], np.ndarray]:
  """Every label-free metric of the module docstring; returns (metrics, test z [M, d]).

  Raises:
    FloatingPointError: an embedding holds NaN or inf.
  """
  hp = _probe_hparams(cfg)
  tr, te = embed(net, params, data.train_x), embed(net, params, data.test_x)
  for name, z in (("train", tr["z"]), ("test", te["z"])):
    if not np.all(np.isfinite(z)):
      raise FloatingPointError(f"the {name} embeddings contain NaN or inf")
  out = _probe_pair(tr["z"], data.train_y, te["z"], data.test_y, hp)
  # The direction alone (what a cosine loss shapes): the norm of z carries the
  # radius even in a collapsed embedding, and the standardising probe reads it.
  unit = _probe_pair(_unit(tr["z"]), data.train_y, _unit(te["z"]), data.test_y, hp)
  out.update({k.replace("probe_", "unit_probe_"): v for k, v in unit.items()})
  out["std_ratio"] = collapse_std_ratio(te["z"])
  out["effective_rank"] = effective_rank(te["z"])
  if cfg.objective == "supervised":
    for split, res, y in (("test", te, data.test_y), ("train", tr, data.train_y)):
      out[f"classifier_{split}_top1"] = float((res["logits"].argmax(1) == y).mean())
  if cfg.model.attention:
    w = tr["class_weights"]
    # The label-free best match: class prototypes from the (labelled) training split.
    protos = class_prototypes(tr["z"], data.train_y, w)
    c_train, c_test = best_match(tr["z"], w, protos), best_match(te["z"], w, protos)
    out["prototype_test_top1"] = float((c_test == data.test_y).mean())
    best = _probe_pair(tr["z"] * w[c_train], data.train_y, te["z"] * w[c_test], data.test_y, hp)
    out.update({k.replace("probe_", "bestmatch_probe_"): v for k, v in best.items()})
    # Leaky, for reference only: the true label chooses the weights of a test sample.
    leaky = _probe_pair(tr["z"] * w[data.train_y], data.train_y, te["z"] * w[data.test_y], data.test_y, hp)
    out.update({"leaky_" + k: v for k, v in leaky.items()})
    out["attentive_std_ratio"] = collapse_std_ratio(te["z"] * w[data.test_y])
    out["class_weight_spread"] = float(w.std(0).mean())  # 0: every class has the same weights
  return out, te["z"]


def reference_metrics(cfg: ml_collections.ConfigDict, data: circles.CirclesData) -> dict[str, float]:
  """Method-free references: a linear probe on the raw 200-d inputs, and the generator-aware oracle."""
  hp = _probe_hparams(cfg)
  out = {"raw_" + k: v for k, v in _probe_pair(data.train_x, data.train_y, data.test_x, data.test_y, hp).items()}
  all_x, all_y = np.concatenate([data.train_x, data.test_x]), np.concatenate([data.train_y, data.test_y])
  out["oracle_test_top1"] = float((circles.oracle_predict(data.test_x, data.radii, data.noise_std)
                                   == data.test_y).mean())
  out["oracle_all_top1"] = float((circles.oracle_predict(all_x, data.radii, data.noise_std) == all_y).mean())
  return out


def tsne_png(features, labels, path: str, title: str, *, seed: int = 0, max_points: int = 1000) -> str:
  """Writes a 2-d t-SNE (scikit-learn) of ``features: [N, d]`` coloured by ``labels: [N]``.

  At most ``max_points`` samples (a seeded subset); drawn by ``fgjax.pictures``.

  Raises:
    PicturesError: matplotlib is missing (the optional extra 'plots').
  """
  draw.pyplot()
  features, labels = np.asarray(features, np.float64), np.asarray(labels)
  if features.shape[0] > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(features.shape[0], max_points, replace=False))
    features, labels = features[keep], labels[keep]
  xy = draw.tsne(features, seed=seed)
  names = [f"class {c}" for c in range(int(labels.max()) + 1)]
  return draw.embedding_scatter(path, {"test embeddings z": (xy, labels, names)}, title=title)
