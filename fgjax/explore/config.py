"""Schema, defaults and checks of ``configs/explore.py`` (the embedding explorer)."""

from __future__ import annotations

import ml_collections

from fgjax.config.fields import check_known_fields
from fgjax.config.fields import require
from fgjax.errors import ConfigError


MAPS = ("tsne", "umap")
EXPORTS = ("", "npz", "parquet")
SPLITS = ("test", "train")
OUTLIER_LEVELS = ("auto", "fine", "super")
THUMB_FORMATS = ("auto", "png", "jpeg")


def explore_config() -> ml_collections.ConfigDict:
  """Schema and defaults of ``configs/explore.py``."""
  c = ml_collections.ConfigDict()
  c.mode = "explore"
  c.workdir = ""  # the run to explore (its config.json and checkpoints/); the page goes to <workdir>/explorer/
  c.compare_workdirs = ""  # comma-separated runs mapped beside it (same data), selection linked
  c.checkpoint_step = -1  # -1: the latest checkpoint of every run
  c.split = "test"  # 'test' (the split the retrieval and outlier metrics use) or 'train'
  c.map = "tsne"  # 'tsne' (scikit-learn) or 'umap' (needs the umap-learn package)
  # The page stays usable at this many points: a larger split is mapped on a
  # seeded subset (the neighbours and outliers are still those of the whole split).
  c.max_points = 10_000
  c.seed = 0  # the subset and the map's initialisation
  c.k = 8  # neighbours shown on a click (the retrieval metrics' ranking, cut at k)
  c.outlier_level = "auto"  # 'auto' (super-class where the data has it, as eval.outlier_level), 'fine', 'super'
  c.thumb_size = 64  # thumbnails: images larger than this are shrunk to it; smaller ones keep their pixels
  # 'auto': PNG for images kept at their own size (exact), JPEG for shrunk ones (3x smaller); or 'png', 'jpeg'.
  c.thumb_format = "auto"
  # Feature extraction batch and similarity block; 0: the run's eval.batch_size / eval.chunk_size, so
  # the features are bit for bit those its evaluation saw (the batch size changes the last float bits).
  c.batch_size = 0
  c.chunk_size = 0
  c.export = ""  # '' (none), 'npz' or 'parquet' (needs pyarrow): the embedding beside the page
  return c


def workdirs(cfg: ml_collections.ConfigDict) -> list[str]:
  """The main run, then the runs of ``compare_workdirs``."""
  return [cfg.workdir] + [w.strip() for w in str(cfg.compare_workdirs).split(",") if w.strip()]


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Every field of an explorer config, each bad one a ConfigError naming it."""
  check_known_fields(cfg, explore_config())
  if not cfg.workdir:
    raise ConfigError("config field 'workdir': give the run to explore, e.g. --config.workdir=runs/hcl")
  require(cfg.split in SPLITS, "split", f"expected one of {SPLITS}, got {cfg.split!r}")
  require(cfg.map in MAPS, "map", f"expected one of {MAPS}, got {cfg.map!r}")
  require(cfg.export in EXPORTS, "export", f"expected one of {EXPORTS} ('' = none), got {cfg.export!r}")
  require(cfg.outlier_level in OUTLIER_LEVELS, "outlier_level",
          f"expected one of {OUTLIER_LEVELS}, got {cfg.outlier_level!r}")
  require(cfg.thumb_format in THUMB_FORMATS, "thumb_format",
          f"expected one of {THUMB_FORMATS}, got {cfg.thumb_format!r}")
  require(cfg.max_points >= 4, "max_points", f"must be >= 4 (a map needs 4 points), got {cfg.max_points}")
  for field in ("k", "thumb_size"):
    require(cfg[field] >= 1, field, f"must be >= 1, got {cfg[field]}")
  for field in ("batch_size", "chunk_size"):
    require(cfg[field] >= 0, field, f"must be >= 1, or 0 for the run's eval.{field}; got {cfg[field]}")
