"""The config blocks every image method shares (``data``, ``train``, ``eval``) and their checks.

A method's schema (``fgjax.config.ssl``, ``fgjax.config.supervised``) is these
blocks plus its own; the schedule's length (:func:`total_train_steps`) is
computed here once for every method.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from fgjax.config.fields import check_known_fields
from fgjax.config.fields import require
from fgjax.config.fields import require_nonnegative
from fgjax.config.fields import require_positive
from fgjax.errors import ConfigError


DTYPES = ("float32", "bfloat16")

# model.init_from (every image method): '' or 'none' = a random initialisation; 'source' = the shipped source
# encoder (fgjax.pretrained.shipped); else a .safetensors / .pth file or an fgjax run directory (fgjax.pretrained). A preset of a paper that starts from ImageNet weights sets
# weights_required(...): validation then asks for the file, or for an explicit 'none'.
INIT_RANDOM = ("", "none")
_WEIGHTS_REQUIRED = "required: "


def weights_required(what: str) -> str:
  """The ``model.init_from`` of a preset that expects pretrained weights: ``what`` names them."""
  return _WEIGHTS_REQUIRED + what


def expects_weights(init_from: str) -> bool:
  """Whether ``model.init_from`` is a preset's request for pretrained weights (not yet a file)."""
  return isinstance(init_from, str) and init_from.startswith(_WEIGHTS_REQUIRED)


def validate_encoder(m: ml_collections.ConfigDict, image_size: int) -> None:
  """Checks ``model.encoder`` (and that it takes ``image_size`` px images), ``model.conv_impl`` and
  ``model.init_from``;
  ConfigError names the field(s).

  The CIFAR stem (3x3, no max-pool) cannot take ImageNet ResNet weights (7x7
  stem): that pair is refused naming both fields. A run directory may have any
  stem (its encoder is checked tensor by tensor when loaded).
  """
  from fgjax.models import encoders  # pylint: disable=import-outside-toplevel
  names = encoders.names()
  require(m.encoder in names, "model.encoder", f"expected one of {names}, got {m.encoder!r}")
  problem = encoders.image_size_problem(m, image_size)
  if problem:
    raise ConfigError(f"config fields 'model.encoder' and 'data.image_size': {image_size} px: {problem}")
  from fgjax.ops import conv  # pylint: disable=import-outside-toplevel
  impl = m.get("conv_impl", "xla")
  require(impl in conv.IMPLEMENTATIONS, "model.conv_impl", f"expected one of {conv.IMPLEMENTATIONS}, got {impl!r}")
  init = m.get("init_from", "")
  require(isinstance(init, str), "model.init_from", f"expected a path, 'source', '' or 'none', got {init!r}")
  from fgjax.pretrained import shipped  # pylint: disable=import-outside-toplevel
  if shipped.is_shipped(init):
    wrong = shipped.model_mismatch(init, m)
    if wrong:
      raise ConfigError(f"config field 'model.init_from': the shipped {init!r} encoder does not fit {wrong}; "
                        "use model.init_from=none for this model")
    return
  if expects_weights(init):
    raise ConfigError(f"config field 'model.init_from': this preset starts from pretrained weights "
                      f"({init[len(_WEIGHTS_REQUIRED):]}): give the file (README 'Pretrained weights'), or "
                      "model.init_from=none to train from a random initialisation")
  if (init not in INIT_RANDOM and not os.path.isdir(init) and encoders.is_resnet(m.encoder)
      and m.get("cifar_stem", False)):
    raise ConfigError(f"config fields 'model.init_from' and 'model.cifar_stem': the CIFAR stem (3x3, no max-pool) "
                      f"cannot take ImageNet ResNet weights ({init}, 7x7 stem); set model.cifar_stem=False, or "
                      "model.init_from=none")


def data_config() -> ml_collections.ConfigDict:
  """The ``data`` block shared by every image method: the embedded *patches* set
  (``fgjax.data.synthetic``) by default, or a real data set by name."""
  d = ml_collections.ConfigDict()
  d.name = "patches"
  d.image_size = 32
  d.num_super = 8
  d.fine_per_super = 4
  d.train_per_class = 64
  d.test_per_class = 16
  d.data_seed = 0  # the data set is fixed across training seeds.
  # The embedded generators (patches, hierarchy): version 2 draws objects that
  # differ per instance on `background` ('tinted', 'blank' = the Base-Indi
  # paper's setting, 'gradient' = a nuisance colour jitter cannot remove);
  # version 1 is the first generator (fixed class prototypes on a random
  # gradient), kept so that its runs stay reproducible: it needs 'gradient'.
  d.version = 2
  d.background = "tinted"
  d.global_batch_size = 128
  d.read_threads = 2
  d.prefetch_batches = 2
  d.num_workers = 0  # grain worker processes that decode (0: threads in this process)
  # Real data (see fgjax/data/pipeline.py): a tfds name read from data_dir, or
  # 'folder' (root/<split>/<class>/*.jpg) or 'cub_layout' (CUB_200_2011 at root).
  d.data_dir = ""  # tfds data_dir ('' = tfds's default, ~/tensorflow_datasets)
  d.root = ""
  d.train_split = "train"
  d.test_split = "test"
  d.super_map = ""  # file: fine class <tab|comma> super class, one per line
  d.skip_corrupt = False  # True: unreadable images are skipped, counted and reported
  # Image files of more pixels are unreadable (an error naming the file, or a skip
  # with skip_corrupt); the default is PIL's decompression-bomb warning threshold
  # (fgjax.data.records.MAX_IMAGE_PIXELS = 89,478,485, about 9459 x 9459).
  d.max_image_pixels = 89_478_485
  d.base_size = 0  # side of the host's training image (0: image_size); aug+ crops from it
  d.eval_crop_fraction = 0.875  # eval: shorter side to image_size / this, centre crop
  return d


def train_config() -> ml_collections.ConfigDict:
  """The ``train`` block shared by every image method: loop, checkpoints, logging."""
  t = ml_collections.ConfigDict()
  t.log_every = 10
  t.checkpoint_every = 100
  t.keep_checkpoints = 2
  t.max_steps = 0  # > 0: stop after this many steps (the schedule is unchanged).
  # jax.profiler trace of profile_steps steps from profile_start_step (absolute
  # step numbers; the first steps compile) into profile_dir ('' = <workdir>/profile);
  # 0 steps = off. See fgjax/infra/profiling.py.
  t.profile_steps = 0
  t.profile_start_step = 5
  t.profile_dir = ""
  return t


def eval_config() -> ml_collections.ConfigDict:
  """The ``eval`` block: every protocol of the evaluation suite.

  (docs/evaluation.md, "Evaluation: any checkpoint, every protocol".)

  Shared by the training configs (evaluation at the end of training and the
  online kNN monitor) and ``configs/evaluate.py`` (any checkpoint, later).
  """
  e = ml_collections.ConfigDict()
  # Weighted kNN (cosine, votes exp(s / T)), train split -> test split.
  e.knn_ks = (20,)
  e.knn_temperature = 0.07
  # Online monitor: kNN at knn_ks[0] every N training steps, logged with the
  # other metrics (0: off). Costs one forward pass over both splits.
  e.knn_every = 50
  # Leave-one-out retrieval on the test split. recall_ks=() picks by test-set
  # size: (1, 2, 4, 8) below 10,000 test images, (1, 10, 100, 1000) from there.
  e.recall_ks = ()
  e.rank_ks = (1, 5)
  # Linear probe on frozen features: label fractions (stratified subsets,
  # every class keeps >= 1 example, drawn with probe_seed).
  e.probe_fractions = (1.0, 0.5, 0.2)
  e.probe_epochs = 100
  e.probe_batch_size = 256
  e.probe_learning_rate = 0.1
  e.probe_weight_decay = 0.0
  e.probe_seed = 0
  # Nearest-centroid outliers on the test split at this label level: 'auto' =
  # the super-class level where the data has one, else fine; '' = off.
  e.outlier_level = "auto"
  # Memory: queries per similarity block; images per forward pass.
  e.chunk_size = 1024
  e.batch_size = 256
  e.random_init_baseline = True  # also evaluate the untrained encoder
  # True: draw the pictures (configs/pictures.py's defaults) into <workdir>/pictures
  # at the end of training; needs matplotlib (extra 'plots').
  e.pictures = False
  return e


def shrink_for_runlocal(c: ml_collections.ConfigDict) -> None:
  """The part of every image method's ``runlocal`` preset: seconds of compute (tests, smoke runs).

  The embedded data shrinks to 2 super-classes x 2 fine classes of 16-px
  images (a real source ignores the sizes and keeps all its images), two
  epochs of batch 8, a checkpoint every 2 steps, and an evaluation small
  enough for 16 test images. A preset's request for pretrained weights, or
  for the shipped source encoder, is dropped (the tiny model is trained from a
  random initialisation).
  """
  c.data.image_size = 16
  c.data.base_size = 0
  c.data.num_super = 2
  c.data.fine_per_super = 2
  c.data.train_per_class = 8
  c.data.test_per_class = 4
  c.data.global_batch_size = 8
  c.optim.num_epochs = 2.0
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.eval.knn_ks = (3,)
  c.eval.batch_size = 16
  c.eval.chunk_size = 8
  c.eval.probe_epochs = 5
  c.eval.random_init_baseline = False
  from fgjax.pretrained import shipped  # pylint: disable=import-outside-toplevel
  init = c.model.get("init_from", "")
  if expects_weights(init) or shipped.is_shipped(init):  # the paper's (or the shipped) weights do not fit the tiny model
    c.model.init_from = ""


def validate_data(cfg: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1) -> None:
  """The ``data`` block's checks, shared by every image method."""
  d = cfg.data
  gb = d.global_batch_size
  require(isinstance(gb, int) and gb > 0, "data.global_batch_size", f"must be a positive integer, got {gb!r}")
  # The process count first: with several processes it names the cause a user changes.
  require(gb % num_processes == 0, "data.global_batch_size",
           f"{gb} is not divisible by the process count {num_processes}")
  require(gb % num_devices == 0, "data.global_batch_size",
           f"{gb} is not divisible by the device count {num_devices}")
  require(d.image_size >= 8, "data.image_size", f"must be >= 8, got {d.image_size}")
  if d.name in ("patches", "hierarchy", "source"):  # the generators' own limits, named as fields
    from fgjax.data import source
    from fgjax.data import synthetic
    limits = {"num_super": (2, {"hierarchy": 8, "source": source.MAX_CATEGORIES}.get(d.name)),
              "fine_per_super": ((1, source.MAX_HUE_FAMILIES) if d.name == "source"
                                 else (2, len(synthetic.FINE_TEMPLATES))),
              "train_per_class": (1, None), "test_per_class": (1, None), "image_size": (16, None)}
    require(d.version in synthetic.VERSIONS, "data.version",
            f"expected one of {synthetic.VERSIONS}, got {d.version!r}")
    from fgjax.data import scene
    require(d.background in scene.BACKGROUNDS, "data.background",
            f"expected one of {scene.BACKGROUNDS}, got {d.background!r}")
    require(d.version == 2 or d.background == "gradient", "data.background",
            f"{d.background!r} needs data.version=2; version 1 draws only its random 'gradient' "
            "background (add --config.data.background=gradient)")
    if d.name == "patches" and d.version == 2:
      limits["num_super"] = (2, synthetic.MAX_SUPER_V2)
    for field, (low, high) in limits.items():
      value = d[field]
      require(low <= value and (high is None or value <= high), f"data.{field}",
              f"the {d.name} data needs {low} <= {field}" + (f" <= {high}" if high else "") + f", got {value}")
  known = num_train_examples(cfg)
  require(known is None or known >= gb, "data.global_batch_size",
           "the training split is smaller than one global batch")
  require(d.base_size == 0 or d.base_size >= d.image_size, "data.base_size",
           f"must be 0 or >= image_size {d.image_size}, got {d.base_size}")
  require(0.0 < d.eval_crop_fraction <= 1.0, "data.eval_crop_fraction",
           f"must be in (0, 1], got {d.eval_crop_fraction}")
  require(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
  from fgjax.data import records
  require(isinstance(d.max_image_pixels, int) and 1 <= d.max_image_pixels <= records.MAX_IMAGE_PIXELS_LIMIT,
          "data.max_image_pixels", f"must be an integer in [1, {records.MAX_IMAGE_PIXELS_LIMIT}] (PIL refuses "
          f"larger images itself), got {d.max_image_pixels!r}")
  require(d.name not in ("folder", "cub_layout") or bool(d.root), "data.root",
           f"data.name={d.name!r} needs the data directory, e.g. --config.data.root=/data/cub")


def validate_eval(e: ml_collections.ConfigDict, prefix: str = "eval") -> None:
  """Checks an ``eval`` block (see :func:`eval_config`); ConfigError names the field."""
  check_known_fields(e, eval_config(), prefix=prefix + ".")
  require(len(e.knn_ks) >= 1 and all(int(k) >= 1 for k in e.knn_ks), f"{prefix}.knn_ks",
           f"needs at least one k and every k >= 1, got {tuple(e.knn_ks)}")
  require_positive(e.knn_temperature, f"{prefix}.knn_temperature")
  require(e.knn_every >= 0, f"{prefix}.knn_every", f"must be >= 0 (0 = off), got {e.knn_every}")
  for field in ("recall_ks", "rank_ks"):
    require(all(int(k) >= 1 for k in e[field]), f"{prefix}.{field}",
             f"every k must be >= 1, got {tuple(e[field])}")
  require(len(e.rank_ks) >= 1, f"{prefix}.rank_ks", "needs at least one k")
  require(all(0.0 < float(f) <= 1.0 for f in e.probe_fractions), f"{prefix}.probe_fractions",
           f"every label fraction must be in (0, 1], got {tuple(e.probe_fractions)}")
  for field in ("probe_epochs", "probe_batch_size", "chunk_size", "batch_size"):
    require(e[field] >= 1, f"{prefix}.{field}", f"must be >= 1, got {e[field]}")
  require_positive(e.probe_learning_rate, f"{prefix}.probe_learning_rate")
  require_nonnegative(e.probe_weight_decay, f"{prefix}.probe_weight_decay")
  require(e.outlier_level in ("", "auto", "fine", "super"), f"{prefix}.outlier_level",
           f"expected '', 'auto', 'fine' or 'super', got {e.outlier_level!r}")
  require(not e.pictures or importlib.util.find_spec("matplotlib") is not None, f"{prefix}.pictures",
          "the pictures need matplotlib: pip install -e '.[plots]' (or eval.pictures=False)")


def validate_optim_and_loop(cfg: ml_collections.ConfigDict) -> None:
  """Checks of the SGD fields every method has and of the ``train`` block."""
  o, t = cfg.optim, cfg.train
  require_positive(o.base_lr, "optim.base_lr")
  require_positive(o.lr_batch_base, "optim.lr_batch_base")
  require_nonnegative(o.weight_decay, "optim.weight_decay")
  require(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
  require_positive(o.num_epochs, "optim.num_epochs")
  require(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
  require(t.log_every >= 1, "train.log_every", "must be >= 1")
  require(t.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
  require(t.keep_checkpoints >= 1, "train.keep_checkpoints", "must be >= 1")
  require(t.max_steps >= 0, "train.max_steps", "must be >= 0")
  require(t.profile_steps >= 0, "train.profile_steps", f"must be >= 0 (0 = off), got {t.profile_steps}")
  require(t.profile_start_step >= 0, "train.profile_start_step",
          f"must be >= 0, got {t.profile_start_step}")


# Training-split sizes of the real data sets the presets name (for the schedule
# before the data is opened; folders and other tfds sets are sized once opened).
KNOWN_TRAIN_SIZES = {"caltech_birds2011": 5994, "cars196": 8144, "oxford_iiit_pet": 3680,
                     "cifar100": 50000, "stanford_online_products": 59551}


def num_train_examples(cfg: ml_collections.ConfigDict) -> int | None:
  """Size of the training split when known without opening it (None: folders, other tfds sets)."""
  d = cfg.data
  if d.name in ("patches", "hierarchy", "source"):
    return d.num_super * d.fine_per_super * d.train_per_class
  if d.train_split == "train":
    return KNOWN_TRAIN_SIZES.get(d.name)
  return None


def steps_per_epoch(cfg: ml_collections.ConfigDict, num_train: int | None = None) -> int:
  """Training steps per epoch (drop-remainder batches); ``num_train``: the opened split's size."""
  n = num_train if num_train is not None else num_train_examples(cfg)
  if n is None:
    raise ConfigError(f"config field 'data.name': the size of {cfg.data.name!r} is known only "
                      "once the data is opened (pass num_train)")
  return max(1, n // cfg.data.global_batch_size)


def total_train_steps(cfg: ml_collections.ConfigDict, num_train: int | None = None) -> int:
  """Joint-training steps of the schedule (decoder pre-training not included)."""
  return max(1, int(round(cfg.optim.num_epochs * steps_per_epoch(cfg, num_train))))
