"""One run of method A: validate, generate the circles, train, evaluate, write the workdir.

The workdir receives ``config.json``, ``metrics.jsonl`` (one line per epoch),
``results.json`` / ``results.md`` (``fgjax.evaluate.report``) and, with
``eval.tsne``, ``tsne.png``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections
from absl import logging

from fgjax.data import circles
from fgjax.evaluate import report
from fgjax.infra import workdir as workdir_lib
from fgjax.methods.class_attentive import config as ca_config
from fgjax.methods.class_attentive import evaluate as evaluate_lib
from fgjax.methods.class_attentive import loop
from fgjax.methods.class_attentive import model as model_lib


# The untrained embedding's metrics kept in results.json's 'random_init' section.
_RANDOM_INIT_KEYS = ("probe_test_top1", "probe_all_top1", "unit_probe_test_top1", "unit_probe_all_top1",
                     "std_ratio", "effective_rank")


def load_data(cfg: ml_collections.ConfigDict) -> circles.CirclesData:
  """The circles of ``cfg.data`` (their own seed, ``data.data_seed``, fixed across training seeds)."""
  d = cfg.data
  return circles.make_circles(radii=tuple(d.radii), noise_std=d.noise_std, num_points=d.num_points,
                              train_per_class=d.train_per_class, test_per_class=d.test_per_class,
                              seed=d.data_seed)


def train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Validates, generates the data, trains, evaluates; writes results.json/.md (+ metrics.jsonl, tsne.png).

  Returns the results dict (``{'trained': ..., 'random_init': ..., 'reference': ..., 'run': ...}``).

  Raises:
    fgjax.errors.ConfigError: a bad config field (before anything runs).
    fgjax.errors.WorkdirError, fgjax.errors.NonFiniteLossError.
  """
  ca_config.validate(cfg)
  workdir = workdir_lib.prepare(workdir)
  with workdir_lib.Lock(workdir):  # one run per workdir (no checkpoints here: nothing to resume)
    return _train_and_evaluate(cfg, workdir)


def _train_and_evaluate(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """:func:`train_and_evaluate` in a checked, locked workdir."""
  workdir_lib.write_config(workdir, cfg)
  start = time.time()
  data = load_data(cfg)
  variant = ca_config.variant_name(cfg)
  logging.info("class_attentive %s: %d train / %d test samples, %d-d, radii %s", variant,
               data.train_x.shape[0], data.test_x.shape[0], data.train_x.shape[1], data.radii)

  with open(os.path.join(workdir, "metrics.jsonl"), "w") as metrics_file:
    def log_fn(epoch, metrics):
      metrics_file.write(json.dumps({"epoch": epoch, **metrics}) + "\n")
      logging.info("epoch %d/%d  %s", epoch, cfg.optim.num_epochs,
                   "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    net, params, history = loop.train(cfg, data, log_fn=log_fn)
  train_seconds = time.time() - start

  results: dict[str, Any] = {}
  results["trained"], test_z = evaluate_lib.evaluate(cfg, net, params, data)
  if cfg.eval.random_init_baseline:
    untrained = model_lib.init_params(cfg, net, data.train_x.shape[1])
    random_metrics, _ = evaluate_lib.evaluate(cfg, net, untrained, data)
    results["random_init"] = {k: v for k, v in random_metrics.items() if k in _RANDOM_INIT_KEYS}
  results["reference"] = evaluate_lib.reference_metrics(cfg, data)
  pictures = {}
  if cfg.eval.tsne:
    pictures["tsne"] = evaluate_lib.tsne_png(
        test_z, data.test_y, os.path.join(workdir, "tsne.png"),
        f"{variant}, seed {cfg.seed}: test z (held-out probe {100 * results['trained']['probe_test_top1']:.1f} %)",
        seed=cfg.seed, max_points=cfg.eval.tsne_max_points)
  results["run"] = {
      "variant": variant,
      "objective": cfg.objective,
      "attention": bool(cfg.model.attention),
      "seed": cfg.seed,
      "data": f"circles radii={tuple(data.radii)} noise_std={data.noise_std} points={data.num_points} "
              f"train={data.train_x.shape[0]} test={data.test_x.shape[0]} data_seed={cfg.data.data_seed}",
      "epochs": cfg.optim.num_epochs,
      "final_loss": round(history[-1]["loss"], 6),
      "final_pos_cos": round(history[-1]["pos_cos"], 6),
      "final_neg_cos": round(history[-1]["neg_cos"], 6),
      "train_seconds": round(train_seconds, 2),
      "total_seconds": round(time.time() - start, 2),
      "eval_embedding": "plain z = f(x) (label-free); bestmatch_*: z*w_c^ with the nearest class "
                        "prototype; leaky_*: z*w_y with the true label (not label-free)",
  }
  report.write_results(workdir, results, title=f"Class-attentive contrastive ({variant}) on circles")
  if pictures:
    report.link_pictures(workdir, pictures)
  logging.info("held-out probe %.4f, all-samples probe %.4f, std_ratio %.4f",
               results["trained"]["probe_test_top1"], results["trained"]["probe_all_top1"],
               results["trained"]["std_ratio"])
  return results
