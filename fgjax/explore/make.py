"""The explorer of a run (``configs/explore.py``): restore, compute, write ``<workdir>/explorer/``.

``make_explorer(cfg)`` restores ``cfg.workdir`` (and every run of
``cfg.compare_workdirs``, mapped side by side on the same images), computes
what the page shows (``fgjax.explore.embedding``), writes
``<workdir>/explorer/index.html`` for a run alone, or
``compare_<runs>.html`` beside other runs (:func:`page_name`: a later
comparison never replaces an earlier one) (``fgjax.explore.page``), the
optional export (``embedding.npz`` / ``embedding.parquet``, one file per run)
and an "Embedding explorer" section linking every page and export of the
folder into the run's ``results.md``.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import ml_collections
from absl import logging

from fgjax.errors import ExplorerError
from fgjax.evaluate import report
from fgjax.evaluate import restore
from fgjax.explore import config as config_lib
from fgjax.explore import embedding as embedding_lib
from fgjax.explore import page as page_lib
from fgjax.methods import registry
from fgjax.pictures import make as pictures_make
from fgjax.pictures import views


OUT_DIR = "explorer"
_SECTION = "## Embedding explorer"


def _check_image_run(workdir: str) -> None:
  """A method with its own loop on vectors (class-attentive's circles) has no images to show."""
  path = os.path.join(os.path.abspath(workdir), "config.json")
  if os.path.isfile(path):
    try:
      with open(path) as f:
        method = json.load(f).get("method")
    except (OSError, json.JSONDecodeError):
      return  # restore_run names the problem
    if method in registry.METHODS and registry.get(method).run is not None:
      raise ExplorerError(f"{workdir} is a {method} run: it trains on vectors, the explorer needs an image encoder")


def export_name(index: int, workdir: str, kind: str, taken: set[str]) -> str:
  """``embedding.<kind>`` for the main run, ``embedding_<workdir name>.<kind>`` for a compared one."""
  if index == 0:
    name = f"embedding.{kind}"
  else:
    slug = _slug(workdir)
    name = f"embedding_{slug}.{kind}"
    if name in taken:  # the same run twice, or two runs of one name
      name = f"embedding_{slug}_{index}.{kind}"
  taken.add(name)
  return name


def _slug(workdir: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(os.path.normpath(workdir))) or "run"


def page_name(ex: embedding_lib.Explorer) -> str:
  """``index.html`` for a run alone; ``compare_<run>_<run>....html`` beside other runs (named by the
  compared runs' directories), so that a later comparison never replaces an earlier one."""
  if len(ex.runs) == 1:
    return "index.html"
  return "compare_" + "_".join(_slug(r.workdir) for r in ex.runs[1:]) + ".html"


def make_explorer(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """``configs/explore.py``: restores the run(s), writes the page (and the export), links it from results.md.

  Returns:
    {'page': path of index.html, 'exports': [paths], 'explorer': the Explorer}.

  Raises:
    ConfigError: a bad field.
    ExplorerError: Bokeh (or pyarrow, umap-learn) missing, runs on different data, a
      run without images.
    EvaluationError: a run or checkpoint that cannot be read (``fgjax.evaluate.restore``).
  """
  config_lib.validate(cfg)
  # A missing extra fails before any work.
  page_lib.bokeh()
  embedding_lib.check_export_available(cfg.export)
  embedding_lib.check_map_available(cfg.map)
  started = time.perf_counter()
  runs, data = [], None
  for w in config_lib.workdirs(cfg):
    _check_image_run(w)
    restored = restore.restore_run(w, checkpoint_step=cfg.checkpoint_step)
    data = restored.data if data is None else data
    label = pictures_make.run_label(restored.train_cfg, w, [r.label for r, _, _ in runs])
    runs.append((views.Run(label=label, cfg=restored.train_cfg, nets=restored.setup.nets, state=restored.state),
                 restored.workdir, restored.step))
  fields = pictures_make.SAME_DATA_FIELDS + (("train_split", "train_per_class") if cfg.split == "train" else ())
  problem = pictures_make.same_data_problem([r for r, _, _ in runs], fields)
  if problem:
    raise ExplorerError(problem.replace("drawn together", "explored together"))
  ex = embedding_lib.build(runs, data, cfg)
  out_dir = os.path.join(os.path.abspath(cfg.workdir), OUT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  path = page_lib.write(os.path.join(out_dir, page_name(ex)), ex)
  exports, taken = [], set()
  for i, run in enumerate(ex.runs):
    if cfg.export:
      target = os.path.join(out_dir, export_name(i, run.workdir, cfg.export, taken))
      write = embedding_lib.write_npz if cfg.export == "npz" else embedding_lib.write_parquet
      exports.append(write(target, ex, run))
  link_in_results(os.path.abspath(cfg.workdir), path, exports, ex)
  logging.info("wrote %s (%.1f MB, %d points, %.1f s)%s", path, os.path.getsize(path) / 1e6, ex.shown.size,
               time.perf_counter() - started, "".join(f"; {p}" for p in exports))
  return {"page": path, "exports": exports, "explorer": ex}


def link_in_results(workdir: str, page: str, exports: list[str], ex: embedding_lib.Explorer) -> None:
  """Replaces the run's "Embedding explorer" section of results.md with links to the page and the export."""
  rel = os.path.relpath(page, workdir)
  compared = ", ".join(r.label for r in ex.runs[1:])
  lines = [f"[{rel}]({rel}): {ex.map_name} of the {ex.split} split ({ex.shown.size:,} of {ex.size:,} images), "
           f"hover for the image, click for its {ex.k} nearest neighbours" + (f"; beside {compared}" if compared else "")
           + ". Open it from the file system (no server needed).", ""]
  # The pages and exports of earlier builds stay linked (a later build adds, never drops).
  folder = os.path.dirname(page)
  earlier = sorted(f for f in os.listdir(folder) if f.endswith(".html") and f != os.path.basename(page))
  lines += [f"- an earlier page: [{os.path.relpath(os.path.join(folder, f), workdir)}]"
            f"({os.path.relpath(os.path.join(folder, f), workdir)})" for f in earlier]
  kept = sorted(set(exports) | {os.path.join(folder, f) for f in os.listdir(folder)
                                if f.startswith("embedding") and f.endswith((".npz", ".parquet"))})
  for p in kept:
    r = os.path.relpath(p, workdir)
    lines += [f"- export: [{r}]({r})"]
  report.replace_section(workdir, _SECTION, lines + ([""] if exports else []))
