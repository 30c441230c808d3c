"""Config schema, presets and validation of the class-attentive method (seed A).

``configs/class_attentive.py`` is a thin wrapper around :func:`class_attentive_config`;
:func:`validate` runs before anything else (``run.train_and_evaluate``).
Two orthogonal fields pick the variant:

* ``objective``: ``'cosine'`` (the paper's l_mod = 1 - cos(z'_i, z'_j) on positive
  pairs only), ``'margin'`` (l_mod plus a hinge on the cosine of different-class
  pairs: a Siamese contrastive loss), ``'infonce'`` (positive against the
  different-class samples of the batch, softmax with temperature) or
  ``'supervised'`` (cross-entropy of a linear head on the embedding);
* ``model.attention``: the class-attentive module z' = z (.) w_y on or off.

Presets (comma-separated, applied left to right):

* ``contrastive`` (= the default) -- attention + margin loss with negatives;
* ``paper``       -- attention + the paper's loss exactly (positives only; collapses);
* ``siamese``     -- no attention + margin loss (the baseline of ``contrastive``);
* ``supervised``  -- the MLP classifier on raw inputs (cross-entropy);
* ``positives_only`` -- objective = 'cosine' on whatever came before
  (``siamese,positives_only`` is the paper's own Siamese baseline);
* ``infonce``     -- objective = 'infonce' (the other negative form);
* ``own_weights`` -- negatives weighted by their *own* class (leaky; see README);
* ``hard``        -- closer radii (circles.HARD_RADII);
* ``runlocal``    -- seconds (tests, smoke runs).
"""

from __future__ import annotations

import importlib.util

import ml_collections

from fgjax.config.fields import apply_presets
from fgjax.config.fields import check_known_fields
from fgjax.config.fields import is_finite_number as finite
from fgjax.config.fields import require
from fgjax.data import circles


METHOD = "class_attentive"
OBJECTIVES = ("cosine", "margin", "infonce", "supervised")
NEGATIVE_WEIGHTS = ("anchor", "own")
POSITIVES = ("same_class", "same_sample")


def class_attentive_config(preset: str | None = None) -> ml_collections.ConfigDict:
  """The default config (the ``contrastive`` variant on the default circles) with presets applied."""
  c = ml_collections.ConfigDict()
  c.method = METHOD
  c.seed = 0  # model init, batch order, augmentation; the data has its own seed
  c.workdir = ""
  c.objective = "margin"

  # ---- data: fgjax.data.circles (the paper's toy set; layout in its docstring)
  c.data = ml_collections.ConfigDict()
  c.data.name = "circles"
  c.data.num_classes = 4
  c.data.radii = circles.DEFAULT_RADII
  c.data.noise_std = 0.1
  c.data.num_points = 100  # 100 points -> the paper's 200-d vector
  c.data.train_per_class = 500
  c.data.test_per_class = 500
  c.data.data_seed = 0  # fixed across training seeds
  c.data.global_batch_size = 64  # the paper does not give it (named as in the image methods' data block)

  # ---- positive-pair augmentation (circles.augment)
  c.augment = ml_collections.ConfigDict()
  c.augment.rotate = True
  c.augment.roll = True
  c.augment.extra_noise_std = 0.0

  # ---- model: MLP 200 -> hidden -> 64 (Sec. 4.2) and the class-attentive module
  c.model = ml_collections.ConfigDict()
  c.model.hidden_dims = (256, 256)  # the paper says "a simple MLP"; depth/width are ours
  c.model.embed_dim = 64
  c.model.attention = True
  # Std of the hidden layers' initial biases (0: Flax's zeros). Not 0: with zero
  # biases the MLP is scale-equivariant and a cosine loss cannot see the radius
  # (MLPEmbedding's docstring); 1 ~ the pre-activations' scale. Same for every variant.
  c.model.bias_init_std = 1.0

  # ---- loss details (objective above picks the form)
  c.loss = ml_collections.ConfigDict()
  # A positive partner is another sample of the same class (Sec. 3.2: "pairs of
  # augmented samples with the same class label"), or a second view of the sample.
  c.loss.positive = "same_class"
  # Which class's weights view a negative u of anchor v: 'anchor' compares
  # z_v (.) w_{y_v} with z_u (.) w_{y_v} (one lens per anchor); 'own' uses z_u (.) w_{y_u},
  # which lets the weights alone separate the classes (z may stay constant).
  c.loss.negative_weights = "anchor"
  c.loss.margin = 0.0  # hinge max(0, cos - margin) on different-class pairs
  c.loss.negative_weight = 1.0  # lambda of the hinge term
  c.loss.temperature = 0.1  # InfoNCE

  # ---- optimisation (Sec. 4.3: Adam, lr 1e-3, 20 epochs; batch size is not given)
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-3
  c.optim.num_epochs = 20

  # ---- evaluation (Sec. 4.3/4.5: linear classifier, 100 epochs, on frozen embeddings)
  c.eval = ml_collections.ConfigDict()
  c.eval.probe_epochs = 100
  c.eval.probe_batch_size = 256
  c.eval.probe_learning_rate = 0.1
  c.eval.probe_weight_decay = 0.0
  c.eval.probe_seed = 0
  c.eval.random_init_baseline = True  # also probe the untrained embedding
  c.eval.tsne = False  # tsne.png of the test embeddings (needs matplotlib: extra 'plots')
  c.eval.tsne_max_points = 1000

  return apply_presets(c, preset, _PRESET_FNS)


def _preset_contrastive(c):
  c.objective = "margin"
  c.model.attention = True


def _preset_paper(c):
  c.objective = "cosine"
  c.model.attention = True


def _preset_siamese(c):
  c.objective = "margin"
  c.model.attention = False


def _preset_supervised(c):
  c.objective = "supervised"
  c.model.attention = False


def _preset_positives_only(c):
  c.objective = "cosine"


def _preset_infonce(c):
  c.objective = "infonce"


def _preset_own_weights(c):
  c.loss.negative_weights = "own"


def _preset_hard(c):
  c.data.radii = circles.HARD_RADII
  c.data.num_classes = len(circles.HARD_RADII)


def _preset_runlocal(c):
  c.data.train_per_class = 32
  c.data.test_per_class = 32
  c.model.hidden_dims = (64,)
  c.optim.num_epochs = 4
  c.data.global_batch_size = 32
  c.eval.probe_epochs = 10
  c.eval.random_init_baseline = False
  c.eval.tsne = False


_PRESET_FNS = {"contrastive": _preset_contrastive, "paper": _preset_paper, "siamese": _preset_siamese,
               "supervised": _preset_supervised, "positives_only": _preset_positives_only,
               "infonce": _preset_infonce, "own_weights": _preset_own_weights, "hard": _preset_hard,
               "runlocal": _preset_runlocal}


def variant_name(cfg: ml_collections.ConfigDict) -> str:
  """A short name of the variant (for reports): e.g. 'attentive/margin', 'siamese/cosine'."""
  if cfg.objective == "supervised":
    return "supervised"
  name = ("attentive" if cfg.model.attention else "siamese") + "/" + cfg.objective
  if cfg.model.attention and cfg.objective != "cosine" and cfg.loss.negative_weights == "own":
    name += "/own-weights"
  return name


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Checks for unknown fields and impossible or contradictory values.

  Raises:
    ConfigError: one line naming the offending field.
  """
  require(cfg.get("method") == METHOD, "method", f"expected {METHOD!r}, got {cfg.get('method')!r}")
  check_known_fields(cfg, class_attentive_config())
  require(cfg.objective in OBJECTIVES, "objective", f"expected one of {OBJECTIVES}, got {cfg.objective!r}")
  require(not (cfg.objective == "supervised" and cfg.model.attention), "model.attention",
          "the supervised classifier on raw inputs has no class-attentive module (it would "
          "need the label it predicts); set model.attention=False or use the supervised preset")
  require(isinstance(cfg.seed, int), "seed", f"must be an integer, got {cfg.seed!r}")

  d = cfg.data
  require(d.name == "circles", "data.name", f"only the embedded 'circles' data exists for this method, got {d.name!r}")
  require(isinstance(d.num_classes, int) and d.num_classes >= 2, "data.num_classes",
          f"must be an integer >= 2, got {d.num_classes!r}")
  radii = tuple(d.radii)
  require(len(radii) == d.num_classes, "data.radii",
          f"has {len(radii)} radii but data.num_classes={d.num_classes}; give one radius per class")
  require(all(finite(r) and r > 0 for r in radii), "data.radii", f"every radius must be > 0, got {radii}")
  require(len(set(radii)) == len(radii), "data.radii", f"radii must be distinct, got {radii}")
  require(finite(d.noise_std) and d.noise_std >= 0, "data.noise_std", f"must be >= 0, got {d.noise_std}")
  require(d.num_points >= 1, "data.num_points", f"must be >= 1, got {d.num_points}")
  # A same-class positive partner must be another sample: >= 2 per class.
  require(d.train_per_class >= 2, "data.train_per_class", f"must be >= 2, got {d.train_per_class}")
  require(d.test_per_class >= 1, "data.test_per_class", f"must be >= 1, got {d.test_per_class}")

  require(finite(cfg.augment.extra_noise_std) and cfg.augment.extra_noise_std >= 0, "augment.extra_noise_std",
          f"must be >= 0, got {cfg.augment.extra_noise_std}")

  m = cfg.model
  require(all(int(h) >= 1 for h in m.hidden_dims), "model.hidden_dims",
          f"every width must be >= 1, got {tuple(m.hidden_dims)}")
  require(m.embed_dim >= 1, "model.embed_dim", f"must be >= 1, got {m.embed_dim}")
  require(finite(m.bias_init_std) and m.bias_init_std >= 0, "model.bias_init_std",
          f"must be >= 0, got {m.bias_init_std}")

  lo = cfg.loss
  require(lo.positive in POSITIVES, "loss.positive", f"expected one of {POSITIVES}, got {lo.positive!r}")
  require(lo.negative_weights in NEGATIVE_WEIGHTS, "loss.negative_weights",
          f"expected one of {NEGATIVE_WEIGHTS}, got {lo.negative_weights!r}")
  require(finite(lo.margin) and -1.0 <= lo.margin < 1.0, "loss.margin",
          f"a cosine margin must be in [-1, 1), got {lo.margin}")
  require(finite(lo.negative_weight) and lo.negative_weight >= 0, "loss.negative_weight",
          f"must be >= 0, got {lo.negative_weight}")
  require(finite(lo.temperature) and lo.temperature > 0, "loss.temperature", f"must be > 0, got {lo.temperature}")

  o = cfg.optim
  require(finite(o.learning_rate) and o.learning_rate > 0, "optim.learning_rate",
          f"must be > 0, got {o.learning_rate}")
  require(isinstance(o.num_epochs, int) and o.num_epochs >= 1, "optim.num_epochs",
          f"must be an integer >= 1, got {o.num_epochs!r}")
  num_train = d.num_classes * d.train_per_class
  batch = cfg.data.global_batch_size
  require(2 <= batch <= num_train, "data.global_batch_size",
          f"must be in [2, {num_train}] (the training split), got {batch}")

  e = cfg.eval
  for field in ("probe_epochs", "probe_batch_size"):
    require(e[field] >= 1, f"eval.{field}", f"must be >= 1, got {e[field]}")
  require(finite(e.probe_learning_rate) and e.probe_learning_rate > 0, "eval.probe_learning_rate", "must be > 0")
  require(finite(e.probe_weight_decay) and e.probe_weight_decay >= 0, "eval.probe_weight_decay", "must be >= 0")
  require(e.tsne_max_points >= 10, "eval.tsne_max_points", f"must be >= 10, got {e.tsne_max_points}")
  require(not e.tsne or importlib.util.find_spec("matplotlib") is not None, "eval.tsne",
          "the t-SNE picture needs matplotlib: pip install -e '.[plots]' (or eval.tsne=False)")
