"""The schemas of the supervised methods: Base-Indi (seed B) and CE / SupCon / HCL (seed H).

Seed B (Base-Indi, "Representation Learning with Fine-grained Patterns"): a
ResNet f with linear heads trained by cross-entropy on one or two label levels.
``cfg.method`` picks the objective (``configs/base_indi.py:<preset>``):

* ``base``          -- CE on super-class labels only (Eq. 1);
* ``fine``          -- CE on fine labels (Eq. 2; the upper bound that uses labels
                       the other methods pretend not to have);
* ``indi``          -- CE on instance ids, every training image its own class (Eq. 3);
* ``base_indi``     -- CE(super) + lambda_I * CE(instance over all n) (Eq. 4);
* ``base_indi_eff`` -- CE(super) + lambda_I * CE(instance within the image's own
                       super-class) (Eq. 5), computed at O(d * n_b) per image.

Presets (comma-separated, left to right; the first one may also be an
objective name, so ``configs/base_indi.py:eff,runlocal`` works):

* ``(none)``  -- the CPU default: quarter-width ResNet-18, 32 px embedded
                 *patches* with 32 super-classes x 4 fine classes (the paper's
                 synthetic set has 32 x 128 in 512 images), 8 train / 8 test
                 images per fine class (1,024 instance classes), 30 epochs, SGD
                 momentum 0.9, weight decay 5e-4, lr 0.1 per 256 images decayed
                 x0.2 at 30/60/80 % of training, crop from the zero-padded
                 image (pad 4) + flip.
* ``cifar100`` -- the paper's Sec. 4.2: tfds cifar100 (20 coarse / 100 fine),
                 full-width ResNet-18 (CIFAR stem), batch 256, 200 epochs, lr 0.1
                 decayed x0.2 at epochs 60/120/160, crop from 40x40 zero-padded.
* ``stanford_online_products`` -- Sec. 4.4: tfds stanford_online_products
                 (12 super / 22,634 fine), ResNet-18 at 224 px (ImageNet stem),
                 random-resized crop + flip, 90 epochs, lr 0.1 x0.1 at 30/60,
                 Recall@{1,10,100,1000}.
* ``source`` -- the source encoder's pre-training on the embedded *source* set
                 (the ImageNet stand-in; ``configs/source.py`` = ``fine,source``).
* ``runlocal`` -- shrinks whatever came before to seconds (tests, smoke runs),
                 keeping the data source an earlier preset chose; it goes last.

Two presets that choose the same thing (the data set: ``cifar100``,
``stanford_online_products``; the objective) are refused, as is a data set
preset after ``runlocal`` (the later one would silently replace the earlier).
"""

from __future__ import annotations

from typing import Any

import ml_collections

from fgjax.config import blocks as shared
from fgjax.config.fields import apply_presets
from fgjax.config.fields import check_known_fields
from fgjax.config.fields import require
from fgjax.config.fields import require_positive
from fgjax.errors import ConfigError


BASE_INDI_METHODS = ("base", "fine", "indi", "base_indi", "base_indi_eff")
HCL_METHODS = ("ce", "supcon", "hcl")  # seed H
METHODS = BASE_INDI_METHODS + HCL_METHODS
OPTIMIZERS = ("sgd", "adamw")
# Which heads each objective trains (the evaluation uses the super head when present).
SUPER_HEAD_METHODS = ("base", "base_indi", "base_indi_eff")
INSTANCE_METHODS = ("indi", "base_indi", "base_indi_eff")
WEIGHTED_INSTANCE_METHODS = ("base_indi", "base_indi_eff")  # those with the base_indi block (lambda_I)
# The instance loss over the images of the same super-class only (Base-Indi_eff), not over all.
WITHIN_SUPER_INSTANCE_METHODS = ("base_indi_eff",)
CROPS = ("pad", "resized")
SCHEDULES = ("step", "cosine", "constant")



def base_indi_config(method: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of a seed-B objective (one of ``BASE_INDI_METHODS``) with presets applied."""
  method = _objective_of(preset, method, _OBJECTIVES)
  if method not in BASE_INDI_METHODS:
    raise ConfigError(f"method={method!r}: expected one of {BASE_INDI_METHODS}")
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.workdir = ""

  c.data = shared.data_config()
  # The paper's synthetic set has 32 super-classes (big patches) and 128 fine
  # classes (small patches); ours nests 4 fine classes in each super-class.
  c.data.num_super = 32
  c.data.fine_per_super = 4
  c.data.train_per_class = 8  # 1,024 training images = 1,024 instance classes
  c.data.test_per_class = 8

  c.model = ml_collections.ConfigDict()
  c.model.encoder = "resnet18"
  c.model.width = 16  # quarter width on a CPU; 64 = the paper's ResNet-18
  c.model.cifar_stem = True
  # The encoder's initial weights: '' = random; a .safetensors / .pth file or an fgjax run directory.
  c.model.init_from = ""
  c.model.dtype = "float32"
  # Convolutions: 'auto' = XLA's on GPU/TPU; on a CPU, the weight gradient of the large layers as
  # per-tap matmuls (fgjax.ops.conv: the same values to float32 rounding, up to 4x faster per layer);
  # 'xla' = XLA's everywhere; 'matmul_dw' = the matmuls in every layer. ResNet only.
  c.model.conv_impl = "auto"
  # Global number of BatchNorm groups; 0 = one per device (PyTorch DDP's default).
  c.model.bn_groups = 0

  # Training augmentation (the paper: random crop + horizontal mirroring).
  c.augment = ml_collections.ConfigDict()
  c.augment.crop = "pad"  # 'pad': crop S x S from the image zero-padded by `pad` (CIFAR)
  c.augment.pad = 4  # 'resized': RandomResizedCrop(scale) of the base image (ImageNet)
  c.augment.scale = (0.08, 1.0)
  c.augment.flip = True

  if method in WEIGHTED_INSTANCE_METHODS:  # base, fine and indi have no lambda_I
    c.base_indi = ml_collections.ConfigDict()
    # lambda_I of Eqs. 4-5. The paper gives no value; 1 weighs both terms alike.
    c.base_indi.instance_weight = 1.0
    # base_indi_eff: images per super-class and device that the grouped O(d n_b)
    # computation holds (0 = auto: the largest super-class's expected count + 3
    # standard deviations, rounded up to 8). A batch with more images of one
    # super-class than this takes the exact masked O(d n) path for that step
    # (counted as metric `instance_overflow`), so the loss never changes.
    c.base_indi.group_capacity = 0

  c.optim = ml_collections.ConfigDict()
  c.optim.base_lr = 0.1  # per lr_batch_base images (the paper: 0.1 at batch 256)
  c.optim.lr_batch_base = 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "step"
  # 'step': multiply by decay_factor at these fractions of training (CIFAR-100:
  # x0.2 at epochs 60/120/160 of 200).
  c.optim.decay_at = (0.3, 0.6, 0.8)
  c.optim.decay_factor = 0.2
  c.optim.warmup_steps = 0
  c.optim.num_epochs = 30.0

  c.train = shared.train_config()
  c.train.log_every = 16
  c.train.checkpoint_every = 80

  c.eval = shared.eval_config()
  # The learning curve (knn_curve.png): every 3 epochs; the retrieval metrics at
  # the end are seed B's protocol.
  c.eval.knn_every = 24
  # Seed B's protocol is retrieval (Recall@k) and the super head's accuracy; the
  # linear probes (fast, on frozen features) are kept at 100 % of the labels.
  c.eval.probe_fractions = (1.0,)
  c.eval.random_init_baseline = True  # the same encoder untrained: did it learn?

  return apply_presets(c, preset, _PRESET_FNS, exclusive=_EXCLUSIVE_PRESETS, undone_by=_UNDONE_BY)


def _preset_cifar100(c: ml_collections.ConfigDict) -> None:
  """The paper's CIFAR-100 settings (Sec. 4.2)."""
  c.data.name = "cifar100"
  c.data.image_size = 32
  c.data.global_batch_size = 256
  c.model.width = 64
  c.model.cifar_stem = True
  c.augment.crop = "pad"
  c.augment.pad = 4
  c.optim.base_lr = 0.1
  c.optim.lr_batch_base = 256
  c.optim.num_epochs = 200.0
  c.optim.decay_at = (0.3, 0.6, 0.8)  # epochs 60 / 120 / 160
  c.optim.decay_factor = 0.2
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.eval.recall_ks = (1, 2, 4, 8)  # Tables 1-2 (10,000 test images would auto-pick 1..1000)
  c.eval.knn_every = 1950  # every 10 epochs (a monitor pass reads all 60,000 images)


def _preset_sop(c: ml_collections.ConfigDict) -> None:
  """Stanford Online Products (Sec. 4.4): ImageNet-style ResNet-18 training."""
  c.data.name = "stanford_online_products"
  c.data.image_size = 224
  c.data.base_size = 256
  c.data.num_workers = 2
  c.data.global_batch_size = 256
  c.model.width = 64
  c.model.cifar_stem = False
  c.model.init_from = "none"  # the paper trains SOP from scratch (Sec. 4.4, the ImageNet recipe of its [10])
  c.augment.crop = "resized"
  c.augment.scale = (0.08, 1.0)
  c.optim.num_epochs = 90.0
  c.optim.decay_at = (1 / 3, 2 / 3)  # epochs 30 / 60
  c.optim.decay_factor = 0.1
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.eval.recall_ks = (1, 10, 100, 1000)  # Table 4
  c.eval.knn_every = 2320  # every 10 epochs (a monitor pass reads all 120,053 images)


def _preset_source(c: ml_collections.ConfigDict) -> None:
  """The source encoder's pre-training (``configs/source.py``): cross-entropy on the embedded *source* set.

  The ImageNet stand-in (``fgjax.data.source``): 128 generic classes, 80 / 20
  images each, 32 px; the SSL CPU default's encoder (quarter-width ResNet-18,
  CIFAR stem), so that its weights initialise it (``model.init_from=source``).
  The CIFAR recipe of the small-image ResNets: crop from the zero-padded image
  + flip, SGD momentum 0.9, weight decay 5e-4, lr 0.1 per 256 images decayed
  x0.2 at 30/60/80 %, batch 128, 20 epochs (1,600 steps).
  """
  c.data.name = "source"
  c.data.num_super = 32
  c.data.fine_per_super = 4
  c.data.train_per_class = 80
  c.data.test_per_class = 20
  c.data.image_size = 32
  c.data.global_batch_size = 128
  c.model.width = 16
  c.model.cifar_stem = True
  c.model.init_from = "none"
  c.optim.num_epochs = 20.0
  c.train.log_every = 40
  c.train.checkpoint_every = 400
  c.eval.knn_every = 400  # every 5 epochs
  c.eval.recall_ks = (1, 4)


def _preset_runlocal(c: ml_collections.ConfigDict) -> None:
  """Shrinks any config to a few seconds of compute (tests, smoke runs); keeps the data source."""
  shared.shrink_for_runlocal(c)
  c.model.encoder = "resnet18"
  c.model.width = 4
  c.model.cifar_stem = True
  c.augment.crop = "pad"
  c.eval.recall_ks = ()
  c.eval.knn_every = 0


def _objective(name: str):
  def set_method(c: ml_collections.ConfigDict) -> None:
    c.method = name
  set_method.__doc__ = f"method = {name!r}"
  return set_method


def _objective_of(preset: str | None, method: str, objectives: dict[str, str]) -> str:
  """The method an objective preset (``configs/base_indi.py:eff``) chooses, else ``method``.

  The schema depends on the method (``base`` has no ``base_indi`` block), so
  the objective is known before the config is built; the preset itself still
  runs in its place (and two objectives are refused there).
  """
  chosen = [objectives[p.strip()] for p in (preset or "").split(",") if p.strip() in objectives]
  return chosen[-1] if chosen else method


_PRESET_FNS = {"cifar100": _preset_cifar100, "stanford_online_products": _preset_sop,
               "source": _preset_source, "runlocal": _preset_runlocal,
               # objectives as presets: configs/base_indi.py:base, :fine, :indi, :eff
               "base": _objective("base"), "fine": _objective("fine"), "indi": _objective("indi"),
               "eff": _objective("base_indi_eff"), "base_indi": _objective("base_indi")}
_OBJECTIVES = {"base": "base", "fine": "fine", "indi": "indi", "eff": "base_indi_eff", "base_indi": "base_indi"}
_EXCLUSIVE_PRESETS = {"data set": ("cifar100", "stanford_online_products", "source"),
                      "objective": ("base", "fine", "indi", "eff", "base_indi")}
_UNDONE_BY = {"runlocal": ("cifar100", "stanford_online_products", "source")}


def hcl_config(method: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of a seed-H objective (``ce``, ``supcon``, ``hcl``) with presets applied.

  Presets: ``ce``, ``supcon``, ``hcl`` (the objective); ``vit`` / ``swin`` (a small
  ViT / Swin for 32 px, AdamW); ``df20_mini`` (an image folder with a species ->
  genus map, ViT-S/16 at 224 px from ImageNet weights: ``--config.data.root=DIR
  --config.data.super_map=FILE --config.model.init_from=FILE``); ``swin_t`` (after
  ``df20_mini``: Swin-T instead of ViT-S/16); ``runlocal`` (last: it shrinks sizes
  and keeps the data source). Two presets choosing the model (``vit``, ``swin``,
  ``df20_mini``) or the objective are refused, as are ``df20_mini``, ``vit`` or
  ``swin`` after ``runlocal``, and ``df20_mini`` after ``swin_t``.
  The default: quarter-width ResNet-18 on the embedded two-level *hierarchy*
  data (``fgjax.data.hierarchy``: genus = super-class, species = fine class).
  """
  method = _objective_of(preset, method, _HCL_OBJECTIVES)
  if method not in HCL_METHODS:
    raise ConfigError(f"method={method!r}: expected one of {HCL_METHODS}")
  c = ml_collections.ConfigDict()
  c.method = method
  c.seed = 0
  c.workdir = ""

  c.data = shared.data_config()
  c.data.name = "hierarchy"
  c.data.num_super = 6  # genera (DF20-Mini has 6)
  c.data.fine_per_super = 6  # species per genus
  c.data.train_per_class = 32  # 1,152 training images
  c.data.test_per_class = 16  # 576 test images

  c.model = ml_collections.ConfigDict()
  c.model.encoder = "resnet18"  # or vit_tiny, vit_ti16, vit_s16, vit_b16, swin_cpu, swin_t
  c.model.width = 16  # ResNet only
  c.model.cifar_stem = True  # ResNet only
  # The encoder's initial weights: '' = random; a .safetensors / .pth file or an fgjax run directory.
  c.model.init_from = ""
  c.model.dtype = "float32"
  # Convolutions: 'auto' = XLA's on GPU/TPU; on a CPU, the weight gradient of the large layers as
  # per-tap matmuls (fgjax.ops.conv: the same values to float32 rounding, up to 4x faster per layer);
  # 'xla' = XLA's everywhere; 'matmul_dw' = the matmuls in every layer. ResNet only.
  c.model.conv_impl = "auto"
  c.model.bn_groups = 0  # 0 = one BatchNorm group per device (ResNet only)
  if method != "ce":  # CE trains a linear classifier, no projection head
    c.model.head_hidden_dim = 0  # SupCon head n-n-128 (0: n, the encoder's width)
    c.model.proj_dim = 128

  c.augment = ml_collections.ConfigDict()
  c.augment.scale = (0.2, 1.0)  # RandomResizedCrop area (SupCon's)

  if method != "ce":
    # SupCon as in its official code; HCL's soft-positive weight.
    c.supcon = ml_collections.ConfigDict()
    c.supcon.temperature = 0.07
    c.supcon.base_temperature = 0.07
    c.supcon.contrast_mode = "all"
    c.supcon.soft_weight = 0.5  # HCL: weight of same-genus / other-species pairs, in (0, 1)

  c.optim = ml_collections.ConfigDict()
  c.optim.optimizer = "sgd"  # 'sgd' (momentum, coupled weight decay) or 'adamw'
  c.optim.base_lr = 0.1  # per lr_batch_base images
  c.optim.lr_batch_base = 256
  c.optim.momentum = 0.9
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.decay_at = (0.3, 0.6, 0.8)
  c.optim.decay_factor = 0.1
  c.optim.warmup_steps = 0
  # 450 steps: CE's online kNN on species flattens from about step 300 (20 epochs,
  # the earlier default, stopped at 64 % while it was still rising; docs/recipes.md).
  c.optim.num_epochs = 50.0

  c.train = shared.train_config()
  c.train.log_every = 9
  c.train.checkpoint_every = 90

  c.eval = shared.eval_config()
  c.eval.knn_every = 45  # every 5 epochs: the learning curve (knn_curve.png)
  c.eval.outlier_level = "super"  # the seed's measure: nearest-centroid outliers at genus level
  c.eval.probe_fractions = (1.0,)
  c.eval.random_init_baseline = True  # the same encoder untrained: did it learn?

  return apply_presets(c, preset, _HCL_PRESET_FNS, exclusive=_HCL_EXCLUSIVE_PRESETS, undone_by=_HCL_UNDONE_BY)


def _preset_vit(c: ml_collections.ConfigDict) -> None:
  """A small ViT (patch 4 at 32 px) with AdamW, warm-up and cosine (DeiT-style)."""
  c.model.encoder = "vit_tiny"
  c.optim.optimizer = "adamw"
  c.optim.base_lr = 1e-3
  c.optim.lr_batch_base = 256
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 40


_DF20_WEIGHTS = {"vit_s16": "ImageNet ViT-S/16: timm vit_small_patch16_224.augreg_in21k_ft_in1k as .safetensors",
                 "swin_t": "ImageNet Swin-T: timm swin_tiny_patch4_window7_224.ms_in1k as .safetensors"}


def _preset_swin(c: ml_collections.ConfigDict) -> None:
  """A small Swin (``swin_cpu``, patch 2 at 32 px) with the ``vit`` preset's AdamW recipe."""
  _preset_vit(c)
  c.model.encoder = "swin_cpu"


def _preset_swin_t(c: ml_collections.ConfigDict) -> None:
  """Swin-T, the seed H paper's other backbone (224 px: after df20_mini, which it then asks Swin-T weights for)."""
  c.model.encoder = "swin_t"
  if c.model.init_from == shared.weights_required(_DF20_WEIGHTS["vit_s16"]):
    c.model.init_from = shared.weights_required(_DF20_WEIGHTS["swin_t"])


def _preset_df20_mini(c: ml_collections.ConfigDict) -> None:
  """DF20-Mini-like image folders: root/{train,test}/<species>/*.jpg + a species -> genus map."""
  c.data.name = "folder"
  c.data.image_size = 224
  c.data.base_size = 256
  c.data.num_workers = 2
  c.data.global_batch_size = 64
  c.model.encoder = "vit_s16"
  # The paper fine-tunes ImageNet-pretrained ViT and Swin-T (add the swin_t preset for the latter).
  c.model.init_from = shared.weights_required(_DF20_WEIGHTS["vit_s16"])
  c.optim.optimizer = "adamw"
  c.optim.base_lr = 1e-4
  c.optim.weight_decay = 0.05
  c.optim.warmup_steps = 500
  c.optim.num_epochs = 50.0
  c.train.log_every = 50
  c.train.checkpoint_every = 1000
  c.eval.knn_every = 1000  # the folder's size is known only once opened


def _preset_hcl_runlocal(c: ml_collections.ConfigDict) -> None:
  """Seconds of compute (tests, smoke runs); keeps the data source (df20_mini's folder)."""
  shared.shrink_for_runlocal(c)
  c.model.width = 4
  if c.model.encoder == "swin_t":  # 16 px images: the CPU-sized Swin (Swin-T needs multiples of 32)
    c.model.encoder = "swin_cpu"
  if "proj_dim" in c.model:
    c.model.proj_dim = 8
  c.optim.warmup_steps = 0
  c.eval.knn_every = 0


_HCL_PRESET_FNS = {"vit": _preset_vit, "swin": _preset_swin, "swin_t": _preset_swin_t, "df20_mini": _preset_df20_mini,
                   "runlocal": _preset_hcl_runlocal,
                   "ce": _objective("ce"), "supcon": _objective("supcon"), "hcl": _objective("hcl")}
_HCL_OBJECTIVES = {"ce": "ce", "supcon": "supcon", "hcl": "hcl"}
_HCL_EXCLUSIVE_PRESETS = {"model": ("vit", "swin", "df20_mini"), "objective": ("ce", "supcon", "hcl")}
_HCL_UNDONE_BY = {"runlocal": ("df20_mini", "vit", "swin"), "swin_t": ("df20_mini",)}


BASE_INDI_PRESETS = tuple(_PRESET_FNS)
HCL_PRESETS = tuple(_HCL_PRESET_FNS)


def config(method: str, preset: str | None = None) -> ml_collections.ConfigDict:
  """The config of any supervised method (``METHODS``)."""
  if method in HCL_METHODS:
    return hcl_config(method, preset)
  return base_indi_config(method, preset)


def validate(cfg: ml_collections.ConfigDict, *, num_devices: int, num_processes: int = 1) -> None:
  """Checks a supervised config; ConfigError names the field."""
  require(cfg.get("method") in METHODS, "method", f"expected one of {METHODS}, got {cfg.get('method')!r}")
  check_known_fields(cfg, config(cfg.method))
  shared.validate_data(cfg, num_devices=num_devices, num_processes=num_processes)
  d, m, a, o = cfg.data, cfg.model, cfg.augment, cfg.optim
  gb = d.global_batch_size
  shared.validate_encoder(m, d.image_size)
  require(m.width >= 1, "model.width", f"must be >= 1, got {m.width}")
  require(m.dtype in shared.DTYPES, "model.dtype", f"expected one of {shared.DTYPES}, got {m.dtype!r}")
  require(m.bn_groups == 0 or m.bn_groups % num_devices == 0, "model.bn_groups",
          f"{m.bn_groups} must be 0 (one group per device) or a multiple of the device count {num_devices}")
  groups = m.bn_groups or num_devices
  require(gb % groups == 0 and gb // groups >= 2, "model.bn_groups",
          f"the global batch {gb} must split into {groups} BatchNorm groups of >= 2 images")
  lo, hi = a.scale
  require(0 < lo <= hi <= 1, "augment.scale", f"must satisfy 0 < low <= high <= 1, got {tuple(a.scale)}")
  if cfg.method in BASE_INDI_METHODS:
    require(a.crop in CROPS, "augment.crop", f"expected one of {CROPS}, got {a.crop!r}")
    require(isinstance(a.pad, int) and a.pad >= 0, "augment.pad", f"must be an int >= 0, got {a.pad!r}")
    require(a.crop != "pad" or d.base_size in (0, d.image_size), "augment.crop",
            f"'pad' crops image_size from the padded training image; data.base_size={d.base_size} "
            "would change its size (use crop='resized')")
    if "base_indi" in cfg:
      bi = cfg.base_indi
      require_positive(bi.instance_weight, "base_indi.instance_weight")
      require(bi.group_capacity >= 0, "base_indi.group_capacity",
              f"must be >= 0 (0 = auto), got {bi.group_capacity}")
  else:
    require(o.optimizer in OPTIMIZERS, "optim.optimizer", f"expected one of {OPTIMIZERS}, got {o.optimizer!r}")
  if "supcon" in cfg:
    from fgjax.ops import contrastive_losses
    require(m.proj_dim >= 1 and m.head_hidden_dim >= 0, "model.proj_dim", "head sizes must be >= 1")
    s = cfg.supcon
    require_positive(s.temperature, "supcon.temperature")
    require_positive(s.base_temperature, "supcon.base_temperature")
    require(s.contrast_mode in contrastive_losses.CONTRAST_MODES, "supcon.contrast_mode",
            f"expected one of {contrastive_losses.CONTRAST_MODES}, got {s.contrast_mode!r}")
    require(0 < s.soft_weight < 1, "supcon.soft_weight", f"must be in (0, 1), got {s.soft_weight}")
  require(o.schedule in SCHEDULES, "optim.schedule", f"expected one of {SCHEDULES}, got {o.schedule!r}")
  require(all(0 < float(f) < 1 for f in o.decay_at) and list(o.decay_at) == sorted(o.decay_at),
          "optim.decay_at", f"must be increasing fractions of training in (0, 1), got {tuple(o.decay_at)}")
  require(0 < o.decay_factor <= 1, "optim.decay_factor", f"must be in (0, 1], got {o.decay_factor}")
  shared.validate_optim_and_loop(cfg)
  shared.validate_eval(cfg.eval)


def check_labels(cfg: ml_collections.ConfigDict, train_source: Any) -> None:
  """The label levels the objective needs exist in the opened training data."""
  if cfg.method == "hcl" and train_source.super_names is None:
    raise ConfigError(f"config field 'method': 'hcl' needs genus (super-class) labels, but "
                      f"{train_source.description} has none (give data.super_map: species -> genus)")
  if cfg.method in SUPER_HEAD_METHODS and train_source.super_names is None:
    raise ConfigError(f"config field 'method': {cfg.method!r} trains on super-class labels, but "
                      f"{train_source.description} has none (give data.super_map, or use "
                      "method 'fine' or 'indi')")
