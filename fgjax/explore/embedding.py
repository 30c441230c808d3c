"""What the explorer shows, computed from restored runs: features, map, neighbours, outliers, thumbnails.

Nothing here reimplements a metric: the neighbours are
``fgjax.evaluate.retrieval.nearest_neighbours`` (the ranking the retrieval
metrics count: cosine, leave-one-out, ties to the lower index) and the
outliers ``retrieval.nearest_centroid_flags`` (the flags the evaluation suite
counts as ``outliers_{level}``), both on the WHOLE split; only the 2-D map is
drawn on a seeded subset when the split is larger than ``max_points``. The map
is ``fgjax.pictures.draw.tsne`` (the pictures' t-SNE) or UMAP.

Arrays indexed by image are over the whole split (``N`` rows, position =
the record's index in the split); rows that were not mapped or not queried
hold NaN (coordinates, similarities) or -1 (neighbours).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
from typing import Any
from typing import Sequence

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from fgjax.config.fields import require
from fgjax.data import pipeline
from fgjax.errors import ExplorerError
from fgjax.evaluate import features as features_lib
from fgjax.evaluate import retrieval
from fgjax.evaluate import suite
from fgjax.methods import registry
from fgjax.pictures import draw
from fgjax.pictures import views


@dataclasses.dataclass
class RunEmbedding:
  """One run's view of the split.

  Attributes:
    label: the run's name on the page (method and workdir).
    workdir: its absolute path.
    method: its method.
    step: the restored checkpoint's step.
    features: float32 [N, d], the frozen encoder's pooled features.
    outliers: bool [N], nearest-centroid outliers at the explorer's level.
    xy: float32 [N, 2], the 2-D map (NaN for the images not mapped).
    neighbours: int32 [N, k] split indices, best first (-1 for rows not queried).
    similarities: float32 [N, k] their cosine similarities (NaN for rows not queried).
    metrics: the run's headline metrics from results.json (name -> value; may be empty).
    metrics_source: where ``metrics`` came from, in words.
  """
  label: str
  workdir: str
  method: str
  step: int
  features: np.ndarray
  outliers: np.ndarray
  xy: np.ndarray
  neighbours: np.ndarray
  similarities: np.ndarray
  metrics: dict[str, float | int]
  metrics_source: str


@dataclasses.dataclass
class Explorer:
  """Everything the page and the export need.

  Attributes:
    split: 'test' or 'train'.
    description: the data, in one line.
    fine: int32 [N] fine labels; ``fine_names`` their names.
    super: int32 [N] super-class labels, or None; ``super_names`` likewise.
    file_names: [N] the image files, where the data source has files (else None).
    shown: int64 [M] sorted split indices on the map (all N, or a seeded subset).
    queried: int64 [Q] split indices whose neighbours were computed (the shown
      ones, or all N when exporting).
    outlier_level: 'fine' or 'super'.
    map_name: 't-SNE' or 'UMAP'.
    seed, k: the subset/map seed and the neighbours per query.
    thumbs: split index -> PNG data URI, for every shown image and every neighbour of one.
    thumb_px: the thumbnails' side in pixels.
    runs: the main run first, then the compared ones.
    levels: what the data calls its two label levels (``('species', 'genus')`` on
      the hierarchy data), for the page's words.
  """
  split: str
  description: str
  fine: np.ndarray
  fine_names: list[str]
  super: np.ndarray | None
  super_names: list[str] | None
  file_names: list[str] | None
  shown: np.ndarray
  queried: np.ndarray
  outlier_level: str
  map_name: str
  seed: int
  k: int
  thumbs: dict[int, str]
  thumb_px: int
  runs: list[RunEmbedding]
  levels: tuple[str, str] = ("fine class", "super-class")

  @property
  def size(self) -> int:
    return int(self.fine.shape[0])


MAP_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}


def check_map_available(name: str) -> None:
  """UMAP needs the umap-learn package: one line naming it, before any work."""
  if name == "umap":
    try:
      import umap  # noqa: F401
    except ImportError:
      raise ExplorerError("config field 'map': 'umap' needs the umap-learn package: pip install umap-learn "
                          "(or use --config.map=tsne)") from None


def two_d_map(features: np.ndarray, *, name: str, seed: int) -> np.ndarray:
  """float32 ``[M, 2]`` map of ``features [M, d]``: the pictures' t-SNE, or UMAP (cosine)."""
  if name == "umap":
    import umap
    reducer = umap.UMAP(n_components=2, metric="cosine", random_state=seed,
                        n_neighbors=min(15, features.shape[0] - 1))
    return np.asarray(reducer.fit_transform(np.asarray(features, np.float32)), np.float32)
  return np.asarray(draw.tsne(features, seed=seed), np.float32)  # one OpenMP thread up to 2,000 points


def subset(size: int, max_points: int, seed: int) -> np.ndarray:
  """Sorted split indices to map: all of them, or ``max_points`` drawn without replacement (seeded)."""
  keep = np.arange(size)
  if size > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(size, max_points, replace=False))
  return keep


def thumbnail_uri(image: np.ndarray, size: int, fmt: str = "auto") -> str:
  """uint8 ``[H, W, 3]`` -> ``data:image/...;base64,...``; shrunk (box filter) to fit ``size``, never enlarged.

  Small images keep their own pixels: the page enlarges them with nearest-neighbour
  CSS (``image-rendering: pixelated``), which costs nothing in the file.
  ``fmt='auto'``: PNG (exact) for an image kept at its own size, JPEG (quality 90)
  for one that was shrunk (its pixels are resampled anyway): a 224 px photo
  shrunk to 64 px is a 9.9 kB PNG data URI and a 2.9 kB JPEG one.
  """
  img = Image.fromarray(np.asarray(image, np.uint8))
  shrunk = max(img.size) > size
  if shrunk:
    img.thumbnail((size, size), Image.Resampling.BOX)
  if fmt == "auto":
    fmt = "jpeg" if shrunk else "png"
  buf = io.BytesIO()
  if fmt == "jpeg":
    img.save(buf, format="JPEG", quality=90)
  else:
    img.save(buf, format="PNG", optimize=True)
  return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def file_names(source: Any) -> list[str] | None:
  """The image file of each record, where the source reads files (an image folder, CUB)."""
  for s in (source, getattr(source, "_source", None)):  # (a super-class map wraps the source)
    paths = getattr(s, "paths", None)
    if paths is not None and len(paths) == len(source):
      return [str(p) for p in paths]
  return None


_HEADLINE_KEYS = ("knn{k}_top1_{level}", "probe100_top1_{level}", "recall@1_{level}", "map_{level}")


def headline_metrics(workdir: str, step: int, outlier_level: str) -> tuple[dict[str, float | int], str]:
  """The run's headline numbers from ``results.json`` and where they came from.

  The evaluation of the restored step (``evaluations/step_<N>``) where there is
  one, else the end-of-training ``trained`` section.
  """
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return {}, "no results.json"
  try:
    with open(path) as f:
      results = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    return {}, f"results.json unreadable ({type(e).__name__})"
  evaluation = results.get("evaluations", {}).get(f"step_{step}", {}).get("trained")
  section, source = ((evaluation, f"results.json, evaluations/step_{step}") if evaluation
                     else (results.get("trained"), "results.json, end of training"))
  if not isinstance(section, dict):
    return {}, "results.json has no 'trained' section"
  knn_ks = sorted({int(m.group(1)) for key in section for m in [re.match(r"knn(\d+)_top1_", key)] if m})
  out: dict[str, float | int] = {}
  for level in ("fine", "super"):
    for pattern in _HEADLINE_KEYS:
      key = pattern.format(k=knn_ks[0] if knn_ks else 0, level=level)
      if key in section:
        out[key] = section[key]
  for key in (f"outliers_{outlier_level}", f"outlier_share_{outlier_level}"):
    if key in section:
      out[key] = section[key]
  return out, source


def run_embedding(run: views.Run, source: Any, *, workdir: str, step: int, shown: np.ndarray,
                  queried: np.ndarray, cfg: ml_collections.ConfigDict, outlier_labels: np.ndarray,
                  outlier_level: str) -> RunEmbedding:
  """Features, map, neighbours and outliers of one run on ``source`` (the explorer's split)."""
  model = registry.frozen_model(run.cfg, run.nets, run.state)
  batch_size = cfg.batch_size or run.cfg.eval.batch_size
  chunk_size = cfg.chunk_size or run.cfg.eval.chunk_size
  extracted = features_lib.extract_split(model, source, batch_size=batch_size,
                                         transform=pipeline.eval_transform(run.cfg, source))
  features = np.asarray(extracted["features"], np.float32)
  if not np.all(np.isfinite(features)):
    bad = int((~np.isfinite(features)).any(axis=1).sum())
    raise ExplorerError(f"{run.label}: {bad} of {features.shape[0]} features are NaN or inf (the encoder diverged)")
  n = features.shape[0]
  logging.info("%s: %s of %d points", run.label, MAP_NAMES[cfg.map], shown.size)
  xy = np.full((n, 2), np.nan, np.float32)
  xy[shown] = two_d_map(features[shown], name=cfg.map, seed=cfg.seed)
  k = min(cfg.k, n - 1)
  neighbours = np.full((n, k), -1, np.int32)
  similarities = np.full((n, k), np.nan, np.float32)
  neighbours[queried], similarities[queried] = retrieval.nearest_neighbours(
      features, k=k, queries=queried, chunk_size=chunk_size)
  outliers = retrieval.nearest_centroid_flags(features, outlier_labels, chunk_size=chunk_size)
  metrics, metrics_source = headline_metrics(workdir, step, outlier_level)
  return RunEmbedding(label=run.label, workdir=workdir, method=str(run.cfg.method), step=step,
                      features=features, outliers=outliers, xy=xy, neighbours=neighbours,
                      similarities=similarities, metrics=metrics, metrics_source=metrics_source)


# What a data set calls its label levels (fine, super); others: 'fine class', 'super-class'.
LEVEL_NAMES = {"hierarchy": ("species", "genus"), "source": ("class", "category")}


def build(runs: Sequence[tuple[views.Run, str, int]], data: dict[str, Any],
          cfg: ml_collections.ConfigDict) -> Explorer:
  """The explorer of ``runs`` (``(run, workdir, step)``, the main one first) on ``data[cfg.split]``.

  Raises:
    ExplorerError: a split of fewer than 4 images, NaN features.
    ConfigError: an outlier level the data does not have.
  """
  source = data[cfg.split]
  n = len(source)
  if n < 4:
    raise ExplorerError(f"the {cfg.split} split has {n} image(s); a map needs at least 4")
  fine = np.asarray(source.fine_labels, np.int32)
  has_super = source.super_names is not None
  sup = np.asarray(source.super_labels, np.int32) if has_super else None
  level = suite.resolve_outlier_level(cfg.outlier_level, {"fine": fine, **({"super": sup} if has_super else {})})
  require(level == "fine" or has_super, "outlier_level", f"{cfg.outlier_level!r}, but the data has no super-classes")
  shown = subset(n, cfg.max_points, cfg.seed)
  queried = np.arange(n) if cfg.export else shown  # the export holds every image's neighbours
  embeddings = [run_embedding(run, source, workdir=workdir, step=step, shown=shown, queried=queried, cfg=cfg,
                              outlier_labels=sup if level == "super" else fine, outlier_level=level)
                for run, workdir, step in runs]
  # Thumbnails of what the page can show: the mapped images and their neighbours.
  needed = set(shown.tolist())
  for e in embeddings:
    needed.update(int(i) for i in e.neighbours[shown].reshape(-1) if i >= 0)
  order = np.asarray(sorted(needed), np.int64)
  images = views.read_images(runs[0][0].cfg, source, order)
  thumbs = {int(i): thumbnail_uri(img, cfg.thumb_size, cfg.thumb_format) for i, img in zip(order, images)}
  return Explorer(split=cfg.split, description=str(source.description), fine=fine,
                  fine_names=[str(c) for c in source.fine_names], super=sup,
                  super_names=[str(c) for c in source.super_names] if has_super else None,
                  file_names=file_names(source), shown=shown, queried=queried, outlier_level=level,
                  map_name=MAP_NAMES[cfg.map], seed=cfg.seed, k=embeddings[0].neighbours.shape[1],
                  thumbs=thumbs, thumb_px=int(min(cfg.thumb_size, max(images.shape[1:3]))), runs=embeddings,
                  levels=LEVEL_NAMES.get(str(runs[0][0].cfg.data.name), ("fine class", "super-class")))


# ----------------------------------------------------------------------------
# Export: the embedding in files other tools read.


def export_columns(ex: Explorer, run: RunEmbedding) -> dict[str, np.ndarray]:
  """The exported arrays of one run (no object arrays: strings are fixed-width unicode)."""
  out = {
      "index": np.arange(ex.size, dtype=np.int64),
      "features": run.features.astype(np.float32),
      "fine": ex.fine.astype(np.int32),
      "fine_names": np.asarray(ex.fine_names, dtype=np.str_),
      "outlier": run.outliers.astype(bool),
      "xy": run.xy.astype(np.float32),
      "in_map": np.isin(np.arange(ex.size), ex.shown),
      "neighbours": run.neighbours.astype(np.int32),
      "neighbour_similarity": run.similarities.astype(np.float32),
      "outlier_level": np.asarray(ex.outlier_level),
      "map": np.asarray(ex.map_name),
      "split": np.asarray(ex.split),
      "method": np.asarray(run.method),
      "workdir": np.asarray(run.workdir),
      "checkpoint_step": np.asarray(run.step, np.int64),
  }
  if ex.super is not None:
    out["super"] = ex.super.astype(np.int32)
    out["super_names"] = np.asarray(ex.super_names, dtype=np.str_)
  if ex.file_names is not None:
    out["file_names"] = np.asarray(ex.file_names, dtype=np.str_)
  return out


def check_export_available(kind: str) -> None:
  """Parquet needs pyarrow: one line naming it, before any work."""
  if kind == "parquet":
    try:
      import pyarrow  # noqa: F401
      import pyarrow.parquet  # noqa: F401
    except ImportError:
      raise ExplorerError("config field 'export': 'parquet' needs pyarrow: pip install pyarrow "
                          "(or use --config.export=npz)") from None


def write_npz(path: str, ex: Explorer, run: RunEmbedding) -> str:
  """One ``.npz`` of plain arrays (``np.load(path, allow_pickle=False)`` reads it)."""
  np.savez_compressed(path, **export_columns(ex, run))
  return path


def write_parquet(path: str, ex: Explorer, run: RunEmbedding) -> str:
  """One Parquet table, a row per image; the run's facts in the schema's metadata."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  c = export_columns(ex, run)
  k, d = c["neighbours"].shape[1], c["features"].shape[1]
  table = {
      "index": pa.array(c["index"]),
      "fine": pa.array(c["fine"]),
      "fine_name": pa.array(np.asarray(ex.fine_names, dtype=object)[c["fine"]].tolist()),
  }
  if ex.super is not None:
    table["super"] = pa.array(c["super"])
    table["super_name"] = pa.array(np.asarray(ex.super_names, dtype=object)[c["super"]].tolist())
  if ex.file_names is not None:
    table["file_name"] = pa.array(ex.file_names)
  table.update({
      "outlier": pa.array(c["outlier"]),
      "in_map": pa.array(c["in_map"]),
      "x": pa.array(c["xy"][:, 0]),
      "y": pa.array(c["xy"][:, 1]),
      "neighbours": pa.FixedSizeListArray.from_arrays(pa.array(c["neighbours"].reshape(-1)), k),
      "neighbour_similarity": pa.FixedSizeListArray.from_arrays(pa.array(c["neighbour_similarity"].reshape(-1)), k),
      "features": pa.FixedSizeListArray.from_arrays(pa.array(c["features"].reshape(-1)), d),
  })
  meta = {key: str(c[key]) for key in ("outlier_level", "map", "split", "method", "workdir", "checkpoint_step")}
  pq.write_table(pa.table(table).replace_schema_metadata({f"fgjax.{k}": v for k, v in meta.items()}), path)
  return path
