"""The schema of the self-supervised methods: shared blocks, plus each method's own blocks.

An SSL config holds the blocks every SSL method uses (``data``, ``model``,
``augment``, ``optim``, ``train``, ``eval``) and *only* the blocks of its own
method (:class:`Block`): MoCo's ``moco``, SimSiam's ``simsiam``, Perturb-SSL's
``perturb``. A block brings its fields, the changes it makes to the shared
blocks (MoCo's projection-head sizes in ``model``, the decoder's), its part of
every preset and its checks. So ``configs/moco.py --config.perturb.nu=7`` is an
unknown field (one line), and a new SSL method adds a block, not a branch here.
The methods' table (``fgjax.methods.registry``) says which blocks each uses.

Presets (comma-separated, applied left to right):

* ``(none)``   -- the CPU default: quarter-width ResNet-18, 32 px embedded
                  *patches* data (version 2), the small-image recipe of
                  docs/recipes.md (batch 64, lr 0.3 per 256 -- SimSiam 0.5 --
                  with 20 warm-up steps and cosine decay, EMA momentum 0.99 ->
                  0.999, half of aug+'s colour jitter and no blur, 800 steps),
                  the encoder starting from the shipped source encoder
                  (``model.init_from=source``, the papers' ImageNet start;
                  ``none``: from scratch). Times: README (the main job).
* ``cub200``   -- the paper's settings (ResNet-50, 224 px, batch 128, 100 epochs,
                  D = 5632, alpha = 1, nu = 0.5, eps_g = 0.1, eps_var = 0.05,
                  kappa = 0.02, K = 65536, m = 0.999, tau = 0.2, lr 0.03 per 256,
                  cosine) on CUB-200-2011 from tfds (``data.data_dir``), images
                  from a 448-px base, 2 decoding workers.
* ``folder``   -- the same settings on an image folder: ``--config.data.root=DIR``
                  with ``DIR/{train,test}/<class>/*.jpg``.
* ``gradcam_only``, ``lowvar_only``, ``no_pairs`` -- the paper's ablations, on
                  either Perturb base only: v_p = v + v^g; v_p = v + v^var;
                  L_C + alpha L_R (pair_loss off, nu = 0).
* ``fullwidth`` -- full-width (64) ResNet-18 on the default data (benchmarks),
                  from a random initialisation.
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

import dataclasses
from typing import Callable
from typing import Mapping
from typing import Sequence

import ml_collections

from fgjax.config import blocks as shared
from fgjax.config.fields import check_known_fields
from fgjax.config.fields import require
from fgjax.config.fields import split_presets
from fgjax.errors import ConfigError


ConfigDict = ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Block:
  """A method's own config block and its part in the shared schema.

  Attributes:
    name: the block's key (``cfg.<name>``).
    fields: ``() -> ConfigDict``, the block with its defaults.
    defaults: ``(cfg) -> None``, applied once the config is built, before the
      presets: fields the block adds to the shared blocks (MoCo's head sizes
      in ``model``) and the method's own defaults of shared fields (SimSiam's
      learning rate).
    presets: ``{preset: (cfg) -> None}``, the block's part of a shared preset,
      applied after the shared part (``cub200``: the paper's sizes), or a
      preset of its own (Perturb-SSL's ablations).
    validate: ``(cfg) -> None``, the block's checks (ConfigError names the field).
  """
  name: str
  fields: Callable[[], ConfigDict]
  defaults: Callable[[ConfigDict], None] | None = None
  presets: Mapping[str, Callable[[ConfigDict], None]] = dataclasses.field(default_factory=dict)
  validate: Callable[[ConfigDict], None] | None = None


def augment_config() -> ConfigDict:
  """The two-view augmentation of the SSL methods (``ssl_common.ViewAugmentation``):
  MoCo v2 aug+ by default, in the order RandomResizedCrop(scale) -> flip ->
  ColorJitter(jitter) with jitter_prob -> grayscale -> Gaussian blur."""
  a = ConfigDict()
  a.scale = (0.2, 1.0)  # RandomResizedCrop area range
  a.jitter = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
  a.jitter_prob = 0.8
  a.grayscale_prob = 0.2
  a.blur_prob = 0.5
  a.flip = True
  return a


def ssl_config(method: str, blocks: Sequence[Block], preset: str | None = None) -> ConfigDict:
  """The config of an SSL method using ``blocks``, with ``preset`` applied."""
  c = ConfigDict()
  c.method = method
  c.seed = 0
  c.workdir = ""  # --workdir overrides; required at run time.

  c.data = shared.data_config()
  # Batch 64: on 2 CPU cores a step costs about half that of batch 128, and at the
  # same number of epochs the twice as many steps learned more (docs/recipes.md).
  c.data.global_batch_size = 64
  c.data.test_per_class = 32  # 1,024 test images: +-1.5 points of binomial noise at 50 %

  # ---- model (the blocks add their heads' and the decoder's sizes)
  c.model = ConfigDict()
  c.model.encoder = "resnet18"
  c.model.width = 16  # channels of the first stage; 64 = full width.
  c.model.cifar_stem = True  # 3x3 stride-1 stem, no max-pool (small images).
  # The encoder's initial weights. 'source' (default): the shipped source encoder, pretrained on the
  # embedded ImageNet stand-in, as the papers start from ImageNet weights (fgjax.pretrained.shipped);
  # 'none' = a random initialisation; or a .safetensors / .pth file or an fgjax run directory.
  c.model.init_from = "source"
  c.model.dtype = "float32"
  # Convolutions: 'auto' = XLA's on GPU/TPU; on a CPU, the weight gradient of the large layers as
  # per-tap matmuls (fgjax.ops.conv: the same values to float32 rounding, up to 4x faster per layer);
  # 'xla' = XLA's everywhere; 'matmul_dw' = the matmuls in every layer. ResNet only.
  c.model.conv_impl = "auto"
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

  for block in blocks:
    c[block.name] = block.fields()

  # ---- optimisation
  c.optim = ConfigDict()
  c.optim.base_lr = 0.3  # per lr_batch_base images (small-image recipe; 0.03 in cub200)
  c.optim.lr_batch_base = 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 20
  c.optim.num_epochs = 25.0

  c.train = shared.train_config()

  # ---- evaluation at the end of training (frozen encoder), and the monitor
  c.eval = shared.eval_config()
  c.eval.knn_every = 100  # 9 points of the learning curve over the 800 default steps

  for block in blocks:
    if block.defaults is not None:
      block.defaults(c)
  # A block's own presets (the ablations) run only its part; a shared one runs the
  # shared part, then each block's part ('folder' is 'cub200' on another source).
  presets = {name: _PRESETS.get(name, _noop) for name in preset_names(blocks)}
  for name in _split(preset, presets):
    presets[name](c)
    for block in blocks:
      part = block.presets.get(_BLOCK_PART.get(name, name))
      if part is not None:
        part(c)
  return c


def preset_names(blocks: Sequence[Block]) -> tuple[str, ...]:
  """Every preset an SSL config with ``blocks`` accepts: the shared ones and the blocks' own."""
  names = list(_PRESETS)
  for block in blocks:
    names += [name for name in block.presets if name not in names]
  return tuple(names)


def _noop(c: ConfigDict) -> None:
  del c


def _split(preset, presets):
  return split_presets(preset, presets, exclusive=_EXCLUSIVE_PRESETS, undone_by=_UNDONE_BY)


def _preset_cub200(c: ConfigDict) -> None:
  """The paper's settings (Perturb-SSL Sec. 4.1 and MoCo v2's official code); the blocks add theirs."""
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
  # "All methods adopt ResNet-50 ... initialized by loading ImageNet-1k pre-trained model" (Sec. 4.1).
  c.model.init_from = shared.weights_required(
      "ImageNet-1k ResNet-50: torchvision resnet50-11ad3fa6.pth, or timm resnet50.tv2_in1k as .safetensors")
  c.model.bn_groups = 4  # 32 images per BatchNorm group
  c.optim.base_lr = 0.03
  c.optim.lr_batch_base = 256
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 0
  c.optim.num_epochs = 100.0
  c.augment = augment_config()  # MoCo v2 aug+
  c.eval.knn_every = 235  # every 5 epochs of CUB's 5,994 images
  c.train.checkpoint_every = 1000
  c.train.log_every = 50


def _preset_runlocal(c: ConfigDict) -> None:
  """Shrinks any config to a few seconds of compute (tests, smoke runs).

  The data source stays the one chosen before (the embedded patches by
  default; a folder or tfds set of an earlier preset: all of its images);
  the embedded data's sizes are shrunk, which a real source ignores.
  """
  shared.shrink_for_runlocal(c)
  c.model.encoder = "resnet18"
  c.model.width = 4
  c.model.cifar_stem = True
  c.model.bn_groups = 2
  c.optim.warmup_steps = 0
  c.eval.knn_every = 2


def _preset_bf16(c: ConfigDict) -> None:
  """Mixed precision: bfloat16 compute, everything that accumulates in float32."""
  c.model.dtype = "bfloat16"


def _preset_fullwidth(c: ConfigDict) -> None:
  """Full-width ResNet-18 (64..512 channels) at batch 128, 32 px: the benchmark setting (from a random
  initialisation: the shipped source encoder is quarter width)."""
  c.model.width = 64
  if c.model.init_from == "source":
    c.model.init_from = "none"


def _preset_folder(c: ConfigDict) -> None:
  """The paper's settings on an image folder: --config.data.root=DIR (root/{train,test}/<class>/)."""
  _preset_cub200(c)
  c.data.name = "folder"


_PRESETS = {"cub200": _preset_cub200, "folder": _preset_folder, "fullwidth": _preset_fullwidth,
            "runlocal": _preset_runlocal, "bf16": _preset_bf16}
# The blocks' part of 'folder' is their part of 'cub200' (the same settings, another source).
_BLOCK_PART = {"folder": "cub200"}
# Presets that choose the same thing (split_presets refuses two of one group) ...
_EXCLUSIVE_PRESETS = {"data set": ("cub200", "folder"), "model": ("cub200", "folder", "fullwidth")}
# ... and those that would undo another if they came after it (the paper's settings
# reset runlocal's sizes and no_pairs' nu).
_UNDONE_BY = {"runlocal": ("cub200", "folder"), "no_pairs": ("cub200", "folder")}


def validate(cfg: ConfigDict, blocks: Sequence[Block], *, num_devices: int, num_processes: int = 1) -> None:
  """Checks an SSL config: unknown fields (including other methods' blocks) and impossible values.

  Raises:
    ConfigError: one line naming the offending field.
  """
  check_known_fields(cfg, ssl_config(cfg.method, blocks))
  shared.validate_data(cfg, num_devices=num_devices, num_processes=num_processes)
  d, m = cfg.data, cfg.model
  gb = d.global_batch_size
  shared.validate_encoder(m, d.image_size)
  require(m.width >= 1, "model.width", f"must be >= 1, got {m.width}")
  require(m.dtype in shared.DTYPES, "model.dtype", f"expected one of {shared.DTYPES}, got {m.dtype!r}")
  require(m.bn_groups >= 1 and m.bn_groups % num_devices == 0, "model.bn_groups",
          f"{m.bn_groups} must be a positive multiple of the device count {num_devices}")
  require(gb % m.bn_groups == 0 and gb // m.bn_groups >= 2, "model.bn_groups",
          f"the global batch {gb} must split into {m.bn_groups} groups of >= 2 images")
  for block in blocks:
    if block.validate is not None:
      block.validate(cfg)
  validate_augment(cfg.augment)
  require(cfg.optim.schedule in ("cosine", "constant"), "optim.schedule",
          f"expected 'cosine' or 'constant', got {cfg.optim.schedule!r}")
  shared.validate_optim_and_loop(cfg)
  shared.validate_eval(cfg.eval)


def validate_augment(a: ConfigDict) -> None:
  """Checks the SSL ``augment`` block (:func:`augment_config`)."""
  lo, hi = (float(x) for x in a.scale)
  require(0 < lo <= hi <= 1, "augment.scale", f"must satisfy 0 < low <= high <= 1, got {tuple(a.scale)}")
  require(len(a.jitter) == 4 and all(0 <= float(x) < 1 for x in a.jitter[:3])
          and 0 <= float(a.jitter[3]) <= 0.5, "augment.jitter",
          f"(brightness, contrast, saturation, hue) must be in [0, 1) and hue in [0, 0.5], got {tuple(a.jitter)}")
  for field in ("jitter_prob", "grayscale_prob", "blur_prob"):
    require(0.0 <= a[field] <= 1.0, f"augment.{field}", f"must be in [0, 1], got {a[field]}")


__all__ = ["Block", "ConfigError", "augment_config", "preset_names", "ssl_config", "validate", "validate_augment"]
