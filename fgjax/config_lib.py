"""Configuration schema, presets and validation for the self-supervised methods.

Config files under ``configs/`` are thin: they call :func:`ssl_config` with the
method name and the preset string from ``--config=configs/x.py:preset``. This
module holds the one schema every SSL config follows, so that a mistyped field
is caught by comparing against it (:func:`validate`), not discovered as a
silently ignored attribute hours into a run.

Presets (comma-separated, applied left to right):

* ``(none)``   -- the CPU default: quarter-width ResNet-18, 32 px embedded
                  *patches* data (version 2), the small-image recipe of
                  docs/recipes.md (batch 64, lr 0.3 per 256 -- SimSiam 0.5 --
                  with 20 warm-up steps and cosine decay, EMA momentum 0.99 ->
                  0.999, half of aug+'s colour jitter and no blur, 800 steps):
                  about 9 minutes for Perturb-MoCo, 3 for MoCo on 2 cores.
* ``cub200``   -- the paper's settings (ResNet-50, 224 px, batch 128, 100 epochs,
                  D = 5632, alpha = 1, nu = 0.5, eps_g = 0.1, eps_var = 0.05,
                  kappa = 0.02, K = 65536, m = 0.999, tau = 0.2, lr 0.03 per 256,
                  cosine) on CUB-200-2011 from tfds (``data.data_dir``), images
                  from a 448-px base, 2 decoding workers.
* ``folder``   -- the same settings on an image folder: ``--config.data.root=DIR``
                  with ``DIR/{train,test}/<class>/*.jpg``.
* ``gradcam_only``, ``lowvar_only``, ``no_pairs`` -- the paper's ablations on
                  either Perturb base: v_p = v + v^g; v_p = v + v^var; L_C + alpha L_R
                  (pair_loss off, nu = 0).
* ``fullwidth`` -- full-width (64) ResNet-18 on the default data (benchmarks).
* ``bf16``     -- bfloat16 compute, float32 parameters/optimizer/BN statistics/losses
                  (``model.dtype``; fgjax/infra/precision.py). For TPUs and GPUs of compute
                  capability >= 8.0; on a CPU without AVX512-BF16/AMX it is emulated.
* ``runlocal`` -- shrinks whatever came before to seconds (tests, smoke runs):
                  image size, batch, model, schedule, evaluation. It keeps the
                  data source an earlier preset chose (``folder,runlocal`` is a
                  smoke run on your folder, all of it: two epochs), so it goes
                  last; ``runlocal,cub200`` is refused (cub200 would undo it).

Presets that would silently override each other are refused (ConfigError, one
line): two that choose the data set (``cub200``, ``folder``) or the model
(those two and ``fullwidth``), and ``cub200`` or ``folder`` after ``runlocal``
or ``no_pairs`` (they would reset the sizes or nu those set: give them first).
"""

from __future__ import annotations

import difflib
import importlib.util
import math
from typing import Any

import ml_collections
from fgjax.errors import ConfigError  # (re-exported: raised here)

SSL_METHODS = ("moco", "perturb_moco", "simsiam", "perturb_simsiam")
PERTURB_METHODS = ("perturb_moco", "perturb_simsiam")
SIMSIAM_METHODS = ("simsiam", "perturb_simsiam")
ENCODERS = ("resnet18", "resnet34", "resnet50")
DTYPES = ("float32", "bfloat16")


def ssl_config(method: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config of an SSL method (one of ``SSL_METHODS``) with presets applied."""
  if method not in SSL_METHODS:
    raise ConfigError(f"method={method!r}: expected one of {SSL_METHODS}")
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.workdir = ""  # --workdir overrides; required at run time.

  c.data = data_config()
  # Batch 64: on 2 CPU cores a step costs about half that of batch 128, and at the
  # same number of epochs the twice as many steps learned more (docs/recipes.md).
  c.data.global_batch_size = 64
  c.data.test_per_class = 32  # 1,024 test images: +-1.5 points of binomial noise at 50 %

  # ---- model
  c.model = ml_collections.ConfigDict()
  c.model.encoder = "resnet18"
  c.model.width = 16  # channels of the first stage; 64 = full width.
  c.model.cifar_stem = True  # 3x3 stride-1 stem, no max-pool (small images).
  c.model.head_hidden_dim = 0  # 0: same as the encoder's feature dim (MoCo v2).
  c.model.proj_dim = 128
  c.model.decoder_channels = 128
  c.model.decoder_upsamples = 3
  c.model.dtype = "float32"
  # Global number of BatchNorm groups ("devices" of the MoCo paper). The batch is
  # split into this many groups, each normalised with its own statistics, the
  # groups spread over the devices (bn_groups / num_devices per device). Keeping
  # it fixed keeps the math identical on 1 or N devices; > 1 on one device is
  # the single-device equivalent of MoCo's shuffle-BN.
  c.model.bn_groups = 4

  # The small-image recipe's augmentation: aug+ with half of its colour jitter and
  # no blur (solo-learn's CIFAR recipes drop the blur too). Measured on the embedded
  # data: with the full jitter (0.4, 0.4, 0.4, 0.1) and blur, MoCo learned nothing
  # in 400 steps (docs/recipes.md); the cub200 preset keeps aug+ unchanged.
  c.augment = augment_config()
  c.augment.jitter = (0.2, 0.2, 0.2, 0.05)
  c.augment.blur_prob = 0.0

  # ---- MoCo v2
  c.moco = ml_collections.ConfigDict()
  # K below the training-set size (2048 images): a larger queue holds stale keys
  # of the query's own image as negatives (checked: K=4096 gave lower kNN).
  c.moco.queue_size = 1024  # K
  c.moco.momentum = 0.99  # m (0.999 in the paper preset: long runs)
  # m rises along a cosine to final_momentum by the end of training (BYOL,
  # solo-learn's small-image recipe); equal to momentum: constant (MoCo v2).
  c.moco.final_momentum = 0.999
  c.moco.temperature = 0.2  # tau
  c.moco.shuffle_bn = True

  # ---- SimSiam (Chen & He 2021); used by simsiam and perturb_simsiam.
  c.simsiam = ml_collections.ConfigDict()
  # The paper's 2048-d projector and 512-d predictor bottleneck, scaled by 1/4
  # with the quarter-width encoder of the CPU default (the cub200 preset: 2048/512).
  c.simsiam.proj_dim = 512
  c.simsiam.pred_hidden_dim = 128
  c.simsiam.fixed_predictor_lr = True  # the official recipe: no cosine decay for the predictor

  # ---- Perturb-SSL (method P); ignored by plain MoCo.
  c.perturb = ml_collections.ConfigDict()
  c.perturb.bank_size = 1024  # D (5632 in the paper preset)
  c.perturb.alpha = 1.0  # weight of L_R (Eq. 8)
  c.perturb.nu = 0.5  # weight of L_Cp (Eq. 8)
  c.perturb.eps_g = 0.1  # Grad-CAM noise std scale (Eq. 5)
  c.perturb.eps_var = 0.05  # low-variance noise std scale (Eq. 6)
  c.perturb.kappa = 0.02  # low-variance threshold (Eq. 6)
  c.perturb.gradcam_noise = True  # ablation: False -> no v^g
  c.perturb.lowvar_noise = True  # ablation: False -> no v^var
  c.perturb.pair_loss = True  # ablation: False -> L_C + alpha * L_R only
  c.perturb.pair_temperature = 0.2
  # NT-Xent with the positive in the denominator (SimCLR); False is the paper's
  # literal Eq. 7 (positive excluded).
  c.perturb.pair_positive_in_denominator = True
  # Silent points of the paper, as fields (README "Perturb-SSL defaults"):
  c.perturb.recon_grad_to_encoder = True  # L_R trains f through v = f(x)
  c.perturb.pair_grad_through_reconstruction = False  # x_hat, x_hat_p are data for L_Cp
  c.perturb.decoder_pretrain_steps = 40  # encoder frozen, L_R only (Adam)
  c.perturb.decoder_lr = 2e-3  # Adam, decoder pre-training and joint phase

  # ---- optimisation
  c.optim = ml_collections.ConfigDict()
  c.optim.base_lr = 0.3  # per lr_batch_base images (small-image recipe; 0.03 in cub200)
  c.optim.lr_batch_base = 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 20
  c.optim.num_epochs = 25.0

  c.train = train_config()

  # ---- evaluation at the end of training (frozen encoder), and the monitor
  c.eval = eval_config()
  c.eval.knn_every = 100  # 9 points of the learning curve over the 800 default steps

  if method not in PERTURB_METHODS:
    # Plain MoCo v2 / SimSiam: same data, model and schedule; the perturb fields
    # stay in the schema (so all configs validate alike) but are unused.
    c.perturb.decoder_pretrain_steps = 0
  if method in SIMSIAM_METHODS:
    # SimSiam's small-image recipe (solo-learn's CIFAR config): lr 0.5 per 256 images
    # (the paper's ImageNet 0.05 is the cub200 preset's). Measured on the default
    # data, seed 0, 800 steps: kNN fine / super 47.4 / 78.6 % at 0.5 against
    # 22.7 / 49.7 % at 0.05 (random init: 16.2 / 39.6 %).
    c.optim.base_lr = 0.5

  for name in split_presets(preset):
    _PRESET_FNS[name](c)
  return c


def augment_config() -> ml_collections.ConfigDict:
  """The two-view augmentation of the SSL methods (``ssl_common.ViewAugmentation``):
  MoCo v2 aug+ by default, in the order RandomResizedCrop(scale) -> flip ->
  ColorJitter(jitter) with jitter_prob -> grayscale -> Gaussian blur."""
  a = ml_collections.ConfigDict()
  a.scale = (0.2, 1.0)  # RandomResizedCrop area range
  a.jitter = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
  a.jitter_prob = 0.8
  a.grayscale_prob = 0.2
  a.blur_prob = 0.5
  a.flip = True
  return a


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

  (README, "Evaluation: any checkpoint, every protocol".)

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


def split_presets(preset: str | None, known: Any = None, *, exclusive: dict[str, tuple[str, ...]] | None = None,
                  undone_by: dict[str, tuple[str, ...]] | None = None) -> list[str]:
  """``'a,b'`` -> ``['a', 'b']``, each checked against ``known`` (default: the SSL presets and their rules).

  Presets apply left to right, each overwriting the fields it sets, so some
  combinations would silently drop what an earlier one chose. Those raise:

  Args:
    exclusive: ``{what: presets}``: at most one of ``presets`` may be given, as
      each chooses ``what`` (the data set, the model, the objective).
    undone_by: ``{preset: later}``: the presets of ``later`` reset fields that
      ``preset`` sets (e.g. ``cub200`` resets the sizes ``runlocal`` shrinks),
      so they may not come after it.

  Raises:
    ConfigError: an unknown preset, or a combination that would override itself.
  """
  if known is None:
    known = _PRESET_FNS
    exclusive = _EXCLUSIVE_PRESETS if exclusive is None else exclusive
    undone_by = _UNDONE_BY if undone_by is None else undone_by
  names = [p.strip() for p in (preset or "").split(",") if p.strip()]
  for name in names:
    if name not in known:
      raise ConfigError(f"unknown preset {name!r}: expected one of {sorted(known)}")
  for what, group in (exclusive or {}).items():
    chosen = list(dict.fromkeys(n for n in names if n in group))
    if len(chosen) > 1:
      raise ConfigError(f"presets {chosen[0]!r} and {chosen[1]!r} both choose the {what} "
                        f"(the later one would silently replace the earlier); keep one")
  for i, name in enumerate(names):
    later = [n for n in names[i + 1:] if n in (undone_by or {}).get(name, ())]
    if later:
      raise ConfigError(f"preset {later[0]!r} after {name!r} would silently undo {name!r} (it resets "
                        f"the fields {name!r} sets); give {later[0]!r} first: {later[0]},{name}")
  return names


def _preset_cub200(c: ml_collections.ConfigDict) -> None:
  """The paper's settings (Perturb-SSL Sec. 4.1 and MoCo v2's official code)."""
  c.data.name = "caltech_birds2011"
  c.data.image_size = 224
  # aug+ crops (scale 0.2-1) from a 448-px base: a 0.2-area crop keeps ~200 px of
  # detail instead of being upsampled from 100 px of a 224-px image.
  c.data.base_size = 448
  c.data.num_workers = 2
  c.data.global_batch_size = 128
  c.model.encoder = "resnet50"
  c.model.width = 64
  c.model.cifar_stem = False
  c.model.head_hidden_dim = 2048
  c.model.proj_dim = 128
  c.model.decoder_upsamples = 5  # 224 = 7 * 2**5
  c.model.decoder_channels = 512
  c.model.bn_groups = 4  # 32 images per BatchNorm group
  c.moco.queue_size = 65536
  c.moco.momentum = 0.999
  c.moco.final_momentum = 0.999
  c.moco.temperature = 0.2
  c.perturb.bank_size = 5632
  c.perturb.alpha = 1.0
  c.perturb.nu = 0.5
  c.perturb.eps_g = 0.1
  c.perturb.eps_var = 0.05
  c.perturb.kappa = 0.02
  c.simsiam.proj_dim = 2048
  c.simsiam.pred_hidden_dim = 512
  if c.method in PERTURB_METHODS:
    c.perturb.decoder_pretrain_steps = 2000
  c.optim.base_lr = 0.05 if c.method in SIMSIAM_METHODS else 0.03
  c.optim.lr_batch_base = 256
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 0
  c.optim.num_epochs = 100.0
  c.augment = augment_config()  # MoCo v2 aug+
  c.eval.knn_every = 235  # every 5 epochs of CUB's 5,994 images
  c.train.checkpoint_every = 1000
  c.train.log_every = 50


def _preset_runlocal(c: ml_collections.ConfigDict) -> None:
  """Shrinks any config to a few seconds of compute (tests, smoke runs).

  The data source stays the one chosen before (the embedded patches by
  default; a folder or tfds set of an earlier preset: all of its images);
  the embedded data's sizes are shrunk, which a real source ignores.
  """
  c.data.image_size = 16
  c.data.base_size = 0
  c.data.num_super = 2
  c.data.fine_per_super = 2
  c.data.train_per_class = 8
  c.data.test_per_class = 4
  c.data.global_batch_size = 8
  c.model.encoder = "resnet18"
  c.model.width = 4
  c.model.cifar_stem = True
  c.model.head_hidden_dim = 16
  c.model.proj_dim = 8
  c.model.decoder_channels = 8
  c.model.decoder_upsamples = 2
  c.model.bn_groups = 2
  c.moco.queue_size = 32
  c.perturb.bank_size = 16
  c.simsiam.proj_dim = 32
  c.simsiam.pred_hidden_dim = 8
  if c.method in PERTURB_METHODS:
    c.perturb.decoder_pretrain_steps = 2
  c.optim.num_epochs = 2.0
  c.optim.warmup_steps = 0
  c.train.log_every = 1
  c.train.checkpoint_every = 2
  c.eval.knn_ks = (3,)
  c.eval.batch_size = 16
  c.eval.chunk_size = 8
  c.eval.random_init_baseline = False
  c.eval.probe_epochs = 5
  c.eval.knn_every = 2


def _preset_bf16(c: ml_collections.ConfigDict) -> None:
  """Mixed precision: bfloat16 compute, everything that accumulates in float32."""
  c.model.dtype = "bfloat16"


def _preset_fullwidth(c: ml_collections.ConfigDict) -> None:
  """Full-width ResNet-18 (64..512 channels) at batch 128, 32 px: the benchmark setting."""
  c.model.width = 64
  c.model.head_hidden_dim = 0


def _preset_gradcam_only(c: ml_collections.ConfigDict) -> None:
  """Ablation: v_p = v + v^g (Grad-CAM noise only)."""
  c.perturb.lowvar_noise = False


def _preset_lowvar_only(c: ml_collections.ConfigDict) -> None:
  """Ablation: v_p = v + v^var (low-variance noise only)."""
  c.perturb.gradcam_noise = False


def _preset_no_pairs(c: ml_collections.ConfigDict) -> None:
  """Ablation: L_C + alpha L_R only (decoder, no perturbed pairs); sweep perturb.alpha."""
  c.perturb.pair_loss = False
  c.perturb.nu = 0.0


def _preset_folder(c: ml_collections.ConfigDict) -> None:
  """The paper's settings on an image folder: --config.data.root=DIR (root/{train,test}/<class>/)."""
  _preset_cub200(c)
  c.data.name = "folder"


_PRESET_FNS = {"cub200": _preset_cub200, "folder": _preset_folder,
               "gradcam_only": _preset_gradcam_only, "lowvar_only": _preset_lowvar_only,
               "no_pairs": _preset_no_pairs, "fullwidth": _preset_fullwidth, "runlocal": _preset_runlocal,
               "bf16": _preset_bf16}
# Presets that choose the same thing (split_presets refuses two of one group) ...
_EXCLUSIVE_PRESETS = {"data set": ("cub200", "folder"), "model": ("cub200", "folder", "fullwidth")}
# ... and those that would undo another if they came after it (the paper's settings
# reset runlocal's sizes and no_pairs' nu).
_UNDONE_BY = {"runlocal": ("cub200", "folder"), "no_pairs": ("cub200", "folder")}


# ----------------------------------------------------------------------------
# Validation: one clear line naming the field, before anything compiles.


def _flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flatten(value, path + "."))
    else:
      out[path] = value
  return out


def check_known_fields(cfg: ml_collections.ConfigDict, schema: ml_collections.ConfigDict,
                       prefix: str = "") -> None:
  """Raises ConfigError for a field the schema does not have (with a suggestion)."""
  known = _flatten(schema, prefix)
  for path in _flatten(cfg, prefix):
    if path not in known:
      close = difflib.get_close_matches(path, known, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise ConfigError(f"unknown config field {path!r}{hint}")


def with_defaults(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved training config completed with today's defaults for the fields it lacks.

  A run written before a field existed (its ``config.json``) keeps every value
  it had; new fields take their defaults, which leave the old behaviour
  unchanged. Unknown fields are kept, so ``validate`` still names them.
  """
  from fgjax import supervised_config  # (it builds on this module)
  method = cfg.get("method")
  if method in SSL_METHODS:
    full = ssl_config(method)
  elif method in supervised_config.METHODS:
    full = supervised_config.config(method)
  else:
    return cfg
  full.unlock()
  _legacy_defaults(cfg, full)

  def merge(target: ml_collections.ConfigDict, saved: ml_collections.ConfigDict) -> None:
    for key, value in saved.items():
      if isinstance(value, ml_collections.ConfigDict) and isinstance(target.get(key), ml_collections.ConfigDict):
        merge(target[key], value)
      else:
        target[key] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value

  merge(full, cfg)
  return full


def _legacy_defaults(saved: ml_collections.ConfigDict, full: ml_collections.ConfigDict) -> None:
  """Where a field added later changed what the default does, an old run gets what it ran with.

  * ``data.version`` (added with the embedded data's version 2): absent means
    version 1 on its 'gradient' background.
  * The SSL ``augment`` block (added with the small-image recipe): absent means
    MoCo v2 aug+ (:func:`augment_config`), the only augmentation there was.
  * ``moco.final_momentum`` (added with the momentum schedule): absent means the
    constant ``moco.momentum``.
  """
  data = saved.get("data")
  if data is not None and "version" not in data:
    full.data.version = 1
    full.data.background = "gradient"
  if saved.get("method") in SSL_METHODS:
    if "augment" not in saved:
      full.augment = augment_config()
    moco = saved.get("moco")
    if moco is not None and "final_momentum" not in moco and "momentum" in moco:
      full.moco.final_momentum = moco["momentum"]


def require(condition: bool, field: str, message: str) -> None:
  """Raises ConfigError naming ``field`` unless ``condition``."""
  if not condition:
    raise ConfigError(f"config field {field!r}: {message}")


def is_finite_number(value: Any) -> bool:
  """An int or float (not a bool) that is neither NaN nor infinite."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_positive(value: Any, field: str) -> None:
  """A learning rate, temperature, ...: a finite number > 0 (``inf``, ``nan``, 0, -1 are errors)."""
  require(is_finite_number(value) and value > 0, field, f"must be a finite number > 0, got {value!r}")


def require_nonnegative(value: Any, field: str) -> None:
  """A weight or decay: a finite number >= 0."""
  require(is_finite_number(value) and value >= 0, field, f"must be a finite number >= 0, got {value!r}")


def validate(cfg: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1) -> None:
  """Checks a training config for unknown fields and impossible values.

  SSL methods are checked here; the supervised ones (Base-Indi, ...) by
  ``fgjax.supervised_config``, which shares the data and loop checks.

  Raises:
    ConfigError: one line naming the offending field.
  """
  from fgjax import supervised_config  # (it builds on this module)
  method = cfg.get("method")
  if method in supervised_config.METHODS:
    supervised_config.validate(cfg, num_devices=num_devices, num_processes=num_processes)
    return
  known = SSL_METHODS + supervised_config.METHODS
  require(method in SSL_METHODS, "method", f"expected one of {known}, got {method!r}")
  check_known_fields(cfg, ssl_config(cfg.method))
  validate_data(cfg, num_devices=num_devices, num_processes=num_processes)

  d, m, mo, p, o, e = cfg.data, cfg.model, cfg.moco, cfg.perturb, cfg.optim, cfg.eval
  gb = d.global_batch_size

  require(m.encoder in ENCODERS, "model.encoder", f"expected one of {ENCODERS}, got {m.encoder!r}")
  require(m.width >= 1, "model.width", f"must be >= 1, got {m.width}")
  require(m.dtype in DTYPES, "model.dtype", f"expected one of {DTYPES}, got {m.dtype!r}")
  require(m.proj_dim >= 1, "model.proj_dim", f"must be >= 1, got {m.proj_dim}")
  require(m.bn_groups >= 1 and m.bn_groups % num_devices == 0, "model.bn_groups",
           f"{m.bn_groups} must be a positive multiple of the device count {num_devices}")
  require(gb % m.bn_groups == 0 and gb // m.bn_groups >= 2, "model.bn_groups",
           f"the global batch {gb} must split into {m.bn_groups} groups of >= 2 images")
  require(d.image_size % (2 ** m.decoder_upsamples) == 0, "model.decoder_upsamples",
           f"image_size {d.image_size} is not divisible by 2**{m.decoder_upsamples}")

  require_positive(mo.temperature, "moco.temperature")
  require(0.0 <= mo.momentum <= 1.0, "moco.momentum", f"must be in [0, 1], got {mo.momentum}")
  require(0.0 <= mo.final_momentum <= 1.0, "moco.final_momentum",
          f"must be in [0, 1], got {mo.final_momentum}")
  require(mo.queue_size >= gb and mo.queue_size % gb == 0, "moco.queue_size",
           f"K={mo.queue_size} must be a positive multiple of the global batch {gb}")

  require(cfg.simsiam.proj_dim >= 1 and cfg.simsiam.pred_hidden_dim >= 1, "simsiam.proj_dim",
           "projector and predictor dims must be >= 1")
  if cfg.method in PERTURB_METHODS:
    # Ablation switches that contradict each other are errors, not silent choices.
    require(p.pair_loss or p.nu == 0, "perturb.nu",
             f"perturb.pair_loss=False (no perturbed pairs) needs nu=0, got nu={p.nu}; "
             "use the no_pairs preset")
    require(not p.pair_loss or p.gradcam_noise or p.lowvar_noise, "perturb.pair_loss",
             "both noises are off (gradcam_noise=lowvar_noise=False), so v_p = v and the pairs "
             "are identical; turn one on or use the no_pairs preset")
    require(p.bank_size >= gb and p.bank_size % gb == 0, "perturb.bank_size",
             f"D={p.bank_size} must be a positive multiple of the global batch {gb}")
    for field in ("alpha", "nu", "eps_g", "eps_var", "kappa"):
      require_nonnegative(p[field], f"perturb.{field}")
    require_positive(p.pair_temperature, "perturb.pair_temperature")
    require(p.decoder_pretrain_steps >= 0, "perturb.decoder_pretrain_steps", "must be >= 0")
    require_positive(p.decoder_lr, "perturb.decoder_lr")

  validate_augment(cfg.augment)
  require(o.schedule in ("cosine", "constant"), "optim.schedule", f"expected 'cosine' or 'constant', got {o.schedule!r}")
  validate_optim_and_loop(cfg)
  validate_eval(e)


def validate_augment(a: ml_collections.ConfigDict) -> None:
  """Checks the SSL ``augment`` block (:func:`augment_config`)."""
  lo, hi = (float(x) for x in a.scale)
  require(0 < lo <= hi <= 1, "augment.scale", f"must satisfy 0 < low <= high <= 1, got {tuple(a.scale)}")
  require(len(a.jitter) == 4 and all(0 <= float(x) < 1 for x in a.jitter[:3])
          and 0 <= float(a.jitter[3]) <= 0.5, "augment.jitter",
          f"(brightness, contrast, saturation, hue) must be in [0, 1) and hue in [0, 0.5], got {tuple(a.jitter)}")
  for field in ("jitter_prob", "grayscale_prob", "blur_prob"):
    require(0.0 <= a[field] <= 1.0, f"augment.{field}", f"must be in [0, 1], got {a[field]}")


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
  if d.name in ("patches", "hierarchy"):  # the generators' own limits, named as fields
    from fgjax.data import synthetic
    limits = {"num_super": (2, 8 if d.name == "hierarchy" else None),
              "fine_per_super": (2, len(synthetic.FINE_TEMPLATES)),
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
  if d.name in ("patches", "hierarchy"):
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

