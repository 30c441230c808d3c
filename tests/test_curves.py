"""The learning curve (knn_curve.png), its tail gain, and the headline of results.md."""

import json
import os

import numpy as np
import pytest

from fgjax.evaluate import curves
from fgjax.evaluate import learning_table
from fgjax.evaluate import report


def _write_run(workdir, points, baseline=(0.1, 0.3)):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "random_init_eval.json"), "w") as f:
    json.dump({"knn20_top1_fine": baseline[0], "knn20_top1_super": baseline[1], "map_fine": 0.05}, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for step, fine, sup in points:
      f.write(json.dumps({"step": step, "loss": 1.0}) + "\n")  # a training record, no kNN
      f.write(json.dumps({"step": step, "knn20_top1_fine": fine, "knn20_top1_super": sup}) + "\n")


def test_read_monitor_starts_at_random_init_and_keeps_the_last_value_of_a_step(tmp_path):
  # A resumed run logs step 200 twice: the later value counts.
  _write_run(tmp_path, [(100, 0.2, 0.4), (200, 0.25, 0.5), (200, 0.3, 0.55), (300, 0.31, 0.6)])
  curve = curves.read_monitor(str(tmp_path))
  assert curve["metric"] == "knn20_top1"
  np.testing.assert_array_equal(curve["steps"], [0, 100, 200, 300])
  np.testing.assert_allclose(curve["fine"], [0.1, 0.2, 0.3, 0.31])
  np.testing.assert_allclose(curve["super"], [0.3, 0.4, 0.55, 0.6])


def test_tail_gain_is_the_rise_over_the_last_quarter():
  steps = np.array([0, 100, 200, 300, 400])
  assert curves.tail_gain(steps, np.array([0.1, 0.3, 0.4, 0.45, 0.47])) == pytest.approx(0.02)
  # A curve still climbing at the end shows it.
  assert curves.tail_gain(steps, np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(0.1)
  assert np.isnan(curves.tail_gain(steps[:2], np.array([0.1, 0.2])))


def test_write_curve_draws_a_png_and_returns_the_tail_gains(tmp_path):
  _write_run(tmp_path, [(100, 0.2, 0.4), (200, 0.3, 0.5), (300, 0.32, 0.52), (400, 0.33, 0.56)])
  summary = curves.write_curve(str(tmp_path), title="t")
  png = os.path.join(tmp_path, curves.CURVE_FILE)
  assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 10_000
  assert summary == pytest.approx({"knn_tail_gain_fine": 0.01, "knn_tail_gain_super": 0.04})


def test_no_monitor_no_curve(tmp_path):
  assert curves.write_curve(str(tmp_path), title="t") == {}
  assert not os.path.exists(os.path.join(tmp_path, curves.CURVE_FILE))


@pytest.mark.parametrize("gains, verdict", [
    ((0.06, 0.06, 0.11, 0.12), "learned"),
    ((0.06, 0.02, 0.11, 0.12), "partly learned"),  # the fine probe misses the bar
    ((-0.01, 0.0, -0.02, 0.0), "not learned"),
])
def test_headline_verdict(gains, verdict):
  random_init = {"knn20_top1_fine": 0.1, "probe100_top1_fine": 0.2, "map_fine": 0.05,
                 "knn20_top1_super": 0.3, "probe100_top1_super": 0.4, "map_super": 0.2}
  trained = dict(random_init)
  for key, gain in zip(("knn20_top1_fine", "probe100_top1_fine", "knn20_top1_super",
                        "probe100_top1_super"), gains):
    trained[key] += gain
  lines = report.headline(trained, random_init)
  assert lines[0] == "| protocol | random init | trained | difference |"
  assert f"**Verdict: {verdict}**" in "\n".join(lines)
  assert f"| kNN top-1, fine | 10.00 | {100 * (0.1 + gains[0]):.2f} | {100 * gains[0]:+.2f} |" in lines


@pytest.mark.parametrize("super_gain, verdict", [(0.0, "learned"), (-0.004, "learned"), (-0.2, "partly learned")])
def test_headline_against_a_start_at_the_ceiling(super_gain, verdict):
  """From the source encoder the super-classes start at 100 %: no room to rise by the bar, so holding them
  counts; falling by more than the bar does not."""
  random_init = {"knn20_top1_fine": 0.16, "probe100_top1_fine": 0.25, "knn20_top1_super": 0.40,
                 "probe100_top1_super": 0.56}
  start = {"knn20_top1_fine": 0.40, "probe100_top1_fine": 0.47, "knn20_top1_super": 1.0, "probe100_top1_super": 1.0}
  trained = {"knn20_top1_fine": 0.71, "probe100_top1_fine": 0.79, "knn20_top1_super": 1.0 + super_gain,
             "probe100_top1_super": 1.0}
  lines = report.headline(trained, random_init, "source encoder", start=start)
  assert lines[0] == ("| protocol | random init | source encoder | trained | trained - source encoder | "
                      "trained - random init |")
  assert "| kNN top-1, fine | 16.00 | 40.00 | 71.00 | +31.00 | +55.00 |" in lines
  assert f"**Verdict against the source encoder: {verdict}**" in "\n".join(lines)


def test_the_curve_starts_at_the_encoder_the_run_started_from(tmp_path):
  _write_run(tmp_path, [(100, 0.5, 0.9), (200, 0.6, 0.95)])
  with open(os.path.join(tmp_path, "initial_eval.json"), "w") as f:
    json.dump({"knn20_top1_fine": 0.4, "knn20_top1_super": 1.0}, f)
  curve = curves.read_monitor(str(tmp_path))
  np.testing.assert_allclose(curve["fine"], [0.4, 0.5, 0.6])  # not the random init's 0.1
  assert curve["start"] == "start (init_from)"


def test_learning_table_over_seeds(tmp_path):
  for seed, gain in ((0, 0.1), (1, 0.2)):
    workdir = os.path.join(tmp_path, f"moco_seed{seed}")
    _write_run(workdir, [(100, 0.2, 0.4), (200, 0.3, 0.5), (300, 0.3, 0.5)])
    base = {"knn20_top1_fine": 0.1, "knn20_top1_super": 0.3}
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"random_init": base, "trained": {k: v + gain for k, v in base.items()},
                 "run": {"wall time s": 120.0}, "curve": {"knn_tail_gain_fine": 0.0}}, f)
  runs = learning_table.find_runs(str(tmp_path))
  assert list(runs) == ["moco"] and sorted(runs["moco"]) == [0, 1]
  text = learning_table.table(runs)
  assert "| 0 | 20.00 (10.00) +10.00 |" in text and "2.0 min" in text
  assert "difference 15.00 ± 7.07" in text  # mean +- std of +10 and +20 points
  summary = learning_table.summary(runs)
  assert "| moco (2) | 2.0-2.0 min | 25.0 (+15.0 ± 7.1; +10.0 .. +20.0) | 45.0 (+15.0 ± 7.1; +10.0 .. +20.0) |" in summary
  learning_table.draw_curves(runs, os.path.join(tmp_path, "curves.png"))
  assert os.path.getsize(os.path.join(tmp_path, "curves.png")) > 10_000
