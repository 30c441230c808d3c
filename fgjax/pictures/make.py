"""The pictures of a run (``configs/pictures.py``), or of a state at the end of training.

``make_pictures(cfg)`` restores ``cfg.workdir`` (and every run of
``cfg.compare_workdirs``, drawn side by side where a figure compares models),
draws each picture that applies to the method, writes the PNG files into
``<workdir>/pictures/`` and a "Pictures" section, linking them, into the run's
``results.md``.

| picture | seed, figure | runs |
|---|---|---|
| ``gradcam``      | P, Fig. 3: spatial Grad-CAM of the SSL loss on images | SSL, ResNet |
| ``pairs``        | P, Fig. 4: x, x_hat = h(v), x_hat_p = h(v_p) and their difference in rows | Perturb-SSL |
| ``feature_dims`` | P, Fig. 2: two classes along the lowest/highest-variance dimensions | all |
| ``attention``    | B, Fig. 2: mean squared activation of a ResNet stage | ResNet |
| ``tsne``         | A and H: t-SNE coloured by fine and by super-class | all |
| ``retrieval``    | B, Fig. 3: query and top-k, wrong class framed red | all |
"""

from __future__ import annotations

import os
from typing import Any
from typing import Sequence

import ml_collections
import numpy as np
from absl import logging

from fgjax.config.fields import check_known_fields
from fgjax.config.fields import require
from fgjax.data import pipeline
from fgjax.errors import ConfigError
from fgjax.evaluate import features as features_lib
from fgjax.evaluate import report
from fgjax.evaluate import restore
from fgjax.methods import registry
from fgjax.pictures import draw
from fgjax.pictures import views
from fgjax.pictures.draw import PicturesError


PICTURES = ("gradcam", "pairs", "feature_dims", "attention", "tsne", "retrieval")


def pictures_block() -> ml_collections.ConfigDict:
  """What to draw and how much: shared by ``configs/pictures.py`` and the end of training."""
  p = ml_collections.ConfigDict()
  p.which = "auto"  # 'auto' (every picture that applies) or a comma list of PICTURES
  p.num_images = 6  # images in the Grad-CAM, pairs and attention figures
  p.tsne_max_points = 2000  # t-SNE on at most this many test points (seeded subset)
  p.retrieval_queries = 4
  p.retrieval_k = 6
  p.attention_stage = 3  # ResNet stage of seed B's maps (1-4)
  p.seed = 0  # picks the images and the positive views
  p.batch_size = 64  # feature extraction
  return p


def pictures_config() -> ml_collections.ConfigDict:
  """Schema and defaults of ``configs/pictures.py``."""
  c = ml_collections.ConfigDict()
  c.mode = "pictures"
  c.workdir = ""  # the run to draw (its config.json and checkpoints/)
  c.compare_workdirs = ""  # comma-separated runs drawn beside it (same data)
  c.checkpoint_step = -1  # -1: the latest checkpoint of every run
  c.pictures = pictures_block()
  return c


def validate_block(p: ml_collections.ConfigDict, prefix: str = "pictures") -> list[str]:
  """Checks a ``pictures`` block; returns the requested pictures ([] for 'auto')."""
  check_known_fields(p, pictures_block(), prefix=prefix + ".")
  which = [w.strip() for w in str(p.which).split(",") if w.strip()]
  if which != ["auto"]:
    unknown = [w for w in which if w not in PICTURES]
    require(which and not unknown, f"{prefix}.which",
                       f"expected 'auto' or a comma list of {PICTURES}, got {p.which!r}")
  for field in ("num_images", "retrieval_queries", "retrieval_k", "batch_size"):
    require(p[field] >= 1, f"{prefix}.{field}", f"must be >= 1, got {p[field]}")
  require(p.tsne_max_points >= 4, f"{prefix}.tsne_max_points", f"must be >= 4, got {p.tsne_max_points}")
  require(1 <= p.attention_stage <= 4, f"{prefix}.attention_stage",
                     f"must be a ResNet stage in [1, 4], got {p.attention_stage}")
  return [] if which == ["auto"] else which


def validate(cfg: ml_collections.ConfigDict) -> list[str]:
  check_known_fields(cfg, pictures_config())
  if not cfg.workdir:
    raise ConfigError("config field 'workdir': give the run to draw, "
                                 "e.g. --config.workdir=runs/perturb_moco")
  return validate_block(cfg.pictures)


def applicable(run: views.Run) -> list[str]:
  """The pictures that a run's method and encoder allow."""
  out = []
  method = registry.get(run.cfg.method)
  if method.features_loss is not None and run.is_resnet:
    out.append("gradcam")
  if method.has_decoder:
    out.append("pairs")
  out.append("feature_dims")
  if run.is_resnet:
    out.append("attention")
  return out + ["tsne", "retrieval"]


def _label(cfg: ml_collections.ConfigDict, workdir: str) -> str:
  return f"{cfg.method} ({os.path.basename(os.path.normpath(workdir))})"


def run_label(cfg: ml_collections.ConfigDict, workdir: str, taken: Sequence[str] = ()) -> str:
  """'method (workdir name)', numbered when ``taken`` has it already (labels name columns: keep them distinct)."""
  label = _label(cfg, workdir)
  return f"{label} #{len(taken) + 1}" if label in taken else label


# The data fields that decide which images a split holds (and how they are cropped).
SAME_DATA_FIELDS = ("name", "root", "data_dir", "test_split", "super_map", "image_size", "data_seed",
                    "num_super", "fine_per_super", "test_per_class", "eval_crop_fraction")


def same_data_problem(runs: Sequence[views.Run], fields: Sequence[str] = SAME_DATA_FIELDS) -> str | None:
  """Why ``runs`` do not see the same images (one line), or None. Shared with the explorer."""
  first = runs[0].cfg.data
  for r in runs[1:]:
    d = r.cfg.data
    for field in fields:
      if field in first and first.get(field) != d.get(field):
        return (f"compare_workdirs: {r.label} has data.{field}={d.get(field)!r}, "
                f"{runs[0].label} has {first.get(field)!r}; runs drawn together need the same test images")
  return None


def _check_same_data(runs: Sequence[views.Run]) -> None:
  problem = same_data_problem(runs)
  if problem:
    raise PicturesError(problem)


# Drawn for the main run only; the others compare every run side by side.
MAIN_RUN_ONLY = ("pairs", "feature_dims")


def _choose(requested: list[str], runs: Sequence[views.Run]) -> list[str]:
  """The pictures to draw: every applicable one ('auto'), or the requested ones, checked.

  A comparing picture applies when it applies to every run; under 'auto' one
  that does not is left out (logged), a requested one is an error.
  """
  def fits(name: str) -> list[views.Run]:
    return [r for r in (runs[:1] if name in MAIN_RUN_ONLY else runs) if name not in applicable(r)]

  if not requested:
    chosen = []
    for name in applicable(runs[0]):
      misfits = fits(name)
      if misfits:
        logging.info("picture %s left out: it does not apply to %s", name, ", ".join(r.label for r in misfits))
      else:
        chosen.append(name)
    return chosen
  for name in requested:
    misfits = fits(name)
    if misfits:
      r = misfits[0]
      raise PicturesError(f"picture {name!r} does not apply to {r.label}: it can have {applicable(r)}")
  return requested


def _class_names(source: Any, level: str) -> list[str]:
  names = source.fine_names if level == "fine" else source.super_names
  return [str(n) for n in names]


def draw_runs(runs: Sequence[views.Run], data: dict[str, Any], out_dir: str,
              p: ml_collections.ConfigDict, requested: list[str] | None = None) -> dict[str, str]:
  """Draws the pictures of ``runs`` (the first is the main one) into ``out_dir``.

  Args:
    data: ``pipeline.load_splits`` of the main run's config (shared by all).
    p: a ``pictures`` block.
    requested: names from PICTURES, or None/[] for every applicable one.

  Returns:
    picture name -> PNG path.
  """
  os.makedirs(out_dir, exist_ok=True)
  draw.pyplot()  # a missing extra fails before any work
  _check_same_data(runs)
  names = _choose(list(requested or []), runs)
  main = runs[0]
  cfg = main.cfg
  test = data["test"]
  fine = np.asarray(test.fine_labels)
  has_super = test.super_names is not None
  idx = views.pick_examples(fine, p.num_images, p.seed)
  images = views.read_images(cfg, test, idx)
  row_labels = [_class_names(test, "fine")[fine[i]] for i in idx]
  out: dict[str, str] = {}

  features: dict[str, dict[str, np.ndarray]] = {}

  def test_features(run: views.Run) -> dict[str, np.ndarray]:
    if run.label not in features:
      model = registry.frozen_model(run.cfg, run.nets, run.state)
      features[run.label] = features_lib.extract_split(
          model, test, batch_size=p.batch_size, transform=pipeline.eval_transform(run.cfg, test))
    return features[run.label]

  for name in names:
    path = os.path.join(out_dir, f"{name}.png")
    logging.info("drawing %s", path)
    if name == "gradcam":
      maps = {r.label: views.gradcam_maps(r, images, seed=p.seed) for r in runs}
      out[name] = draw.map_overlays(path, images, maps, row_labels=row_labels, colorbar_label="Grad-CAM",
                                    title="Grad-CAM of the SSL loss, last conv map (Perturb-SSL, Fig. 3)")
    elif name == "pairs":
      pairs = views.generated_pairs(main, images, seed=p.seed)
      out[name] = draw.image_rows(path, {"x (original)": pairs["x"], "x_hat = h(v)": pairs["x_hat"],
                                         "x_hat_p = h(v_p)": pairs["x_hat_p"],
                                         f"|x_hat_p - x_hat|\n(white = {pairs['difference_max']:.3f})":
                                             pairs["difference"]},
                                  column_labels=row_labels, title=f"Generated pairs, {main.label} (Perturb-SSL, Fig. 4)")
    elif name == "feature_dims":
      s, bank = views.bank_variance(main, lambda: features_lib.extract_split(
          registry.frozen_model(cfg, main.nets, main.state), data["train"], batch_size=p.batch_size,
          transform=pipeline.eval_transform(cfg, data["train"]))["features"])
      lo, hi = int(np.argmin(s)), int(np.argmax(s))
      two = _two_fine_classes(test)
      f = test_features(main)["features"]
      sel = np.isin(fine, two)
      names_fine = _class_names(test, "fine")
      out[name] = draw.two_dimension_scatter(
          path, f[sel, lo], f[sel, hi], fine[sel], class_names={c: names_fine[c] for c in two},
          x_label=f"v_min = dim {lo} (variance {s[lo]:.2e})", y_label=f"v_max = dim {hi} (variance {s[hi]:.2e})",
          title=f"{main.label}: two fine classes of the test split\nalong the lowest- and highest-variance "
                f"dimensions\nof the {bank} (Perturb-SSL, Fig. 2)")
    elif name == "attention":
      maps = {r.label: views.attention_maps(r, images, stage=p.attention_stage) for r in runs}
      out[name] = draw.map_overlays(path, images, maps, row_labels=row_labels, colorbar_label="attention",
                                    title=f"Spatial attention, mean |A|^2 of stage {p.attention_stage} "
                                          "(Base-Indi, Fig. 2)")
    elif name == "tsne":
      panels = {}
      rng = np.random.default_rng(p.seed)
      keep = np.arange(len(fine))
      if keep.size > p.tsne_max_points:
        keep = np.sort(rng.choice(keep.size, p.tsne_max_points, replace=False))
      for r in runs:
        xy = draw.tsne(test_features(r)["features"][keep], seed=p.seed)
        panels[f"{r.label}: fine classes"] = (xy, fine[keep], _class_names(test, "fine"))
        if has_super:
          panels[f"{r.label}: super-classes"] = (xy, np.asarray(test.super_labels)[keep],
                                                 _class_names(test, "super"))
      out[name] = draw.embedding_scatter(path, panels, title=f"t-SNE of test features ({keep.size} points)")
    elif name == "retrieval":
      queries = views.pick_examples(fine, p.retrieval_queries, p.seed + 1)
      q_images = views.read_images(cfg, test, queries)
      blocks = {}
      for r in runs:
        nn = views.nearest_neighbours(test_features(r)["features"], queries, p.retrieval_k)
        neighbour_images = views.read_images(cfg, test, nn.reshape(-1)).reshape(
            *nn.shape, *q_images.shape[1:])
        blocks[r.label] = (q_images, neighbour_images, fine[nn] == fine[queries][:, None])
      out[name] = draw.retrieval_grid(path, blocks, query_labels=[_class_names(test, "fine")[fine[q]]
                                                                  for q in queries],
                                      title=f"Retrieval, top {p.retrieval_k} by cosine (Base-Indi, Fig. 3)")
  return out


def _two_fine_classes(source: Any) -> list[int]:
  """Two fine classes to contrast: two of one super-class (the fine-grained case) if possible."""
  fine = np.asarray(source.fine_labels)
  classes = np.unique(fine)
  if source.super_names is not None:
    sup = np.asarray(source.super_labels)
    for s in np.unique(sup):
      members = np.unique(fine[sup == s])
      if members.size >= 2:
        return [int(members[0]), int(members[1])]
  if classes.size < 2:
    raise PicturesError("feature_dims: the test split has fewer than two classes")
  return [int(classes[0]), int(classes[1])]


def write_for_state(cfg: ml_collections.ConfigDict, nets: Any, state: Any, data: dict[str, Any],
                    workdir: str) -> dict[str, str]:
  """The end-of-training hook (``eval.pictures=True``): every applicable picture of ``state``."""
  run = views.Run(label=_label(cfg, workdir), cfg=cfg, nets=nets, state=state)
  paths = draw_runs([run], data, os.path.join(workdir, "pictures"), pictures_block())
  report.link_pictures(workdir, paths)
  return paths


def make_pictures(cfg: ml_collections.ConfigDict) -> dict[str, str]:
  """``configs/pictures.py``: restores the run(s), draws, links the PNGs from results.md.

  Raises:
    ConfigError: a bad field.
    PicturesError: a picture that does not apply, runs on different data,
      matplotlib missing.
    EvaluationError: a run or checkpoint that cannot be read (``fgjax.evaluate.restore``).
  """
  requested = validate(cfg)
  draw.pyplot()
  workdirs = [cfg.workdir] + [w.strip() for w in str(cfg.compare_workdirs).split(",") if w.strip()]
  runs, data = [], None
  for w in workdirs:
    restored = restore.restore_run(w, checkpoint_step=cfg.checkpoint_step)
    data = restored.data if data is None else data
    label = run_label(restored.train_cfg, w, [r.label for r in runs])
    runs.append(views.Run(label=label, cfg=restored.train_cfg,
                          nets=restored.setup.nets, state=restored.state))
  workdir = os.path.abspath(cfg.workdir)
  paths = draw_runs(runs, data, os.path.join(workdir, "pictures"), cfg.pictures, requested)
  report.link_pictures(workdir, paths)
  for name, path in paths.items():
    logging.info("wrote %s: %s", name, path)
  return paths
