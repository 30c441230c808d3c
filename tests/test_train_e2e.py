"""End to end: real training runs of the tiny preset, kill-and-resume, the NaN guard, bad workdirs."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from fgjax import errors
from fgjax import train
from fgjax.config import blocks as config_blocks
from fgjax.infra import checkpointing
from fgjax.methods import moco
from fgjax.methods import registry


def _config(method="perturb_moco", **overrides):
  cfg = registry.config(method, "runlocal")
  for path, value in overrides.items():
    section, name = path.split("__")
    cfg[section][name] = value
  return cfg


def _one_device():
  return jax.devices()[:1]


def _final_state(workdir):
  """The last checkpoint of a run as saved (host arrays): ``(state dict, data position)``.

  Read without a target structure, so the test does not rebuild the method's setup by hand.
  """
  _, state, position = checkpointing.read_latest(workdir)
  return state, position


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("full"))
  results = train.train_and_evaluate(_config(), workdir, devices=_one_device())
  return workdir, results


def test_run_writes_results_metrics_and_checkpoints(full_run):
  workdir, results = full_run
  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk["trained"] == pytest.approx(results["trained"])
  for key in ("knn3_top1_fine", "rank1_fine", "rank5_fine", "map_fine", "rank1_super",
              "probe100_top1_fine", "probe20_top1_super", "outlier_share_super"):
    assert 0.0 <= on_disk["trained"][key] <= 1.0
  assert "| knn3_top1_fine |" in open(os.path.join(workdir, "results.md")).read()
  all_rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  cfg = _config()
  total = cfg.perturb.decoder_pretrain_steps + config_blocks.total_train_steps(cfg)
  # The online kNN monitor logs its own rows every eval.knn_every steps.
  monitor = [r for r in all_rows if "knn3_top1_fine" in r]
  rows = [r for r in all_rows if "knn3_top1_fine" not in r]
  assert [r["step"] for r in monitor] == list(range(cfg.eval.knn_every, total + 1, cfg.eval.knn_every))
  assert all(set(r) == {"step", "knn3_top1_fine", "knn3_top1_super"} for r in monitor)
  # The last monitor reading is the final encoder: the same number as the final evaluation.
  if total % cfg.eval.knn_every == 0:
    assert monitor[-1]["knn3_top1_fine"] == pytest.approx(results["trained"]["knn3_top1_fine"])
  assert [r["step"] for r in rows] == list(range(1, total + 1))
  joint = [r for r in rows if r["step"] > cfg.perturb.decoder_pretrain_steps]
  assert all({"loss", "loss_c", "loss_r", "loss_cp"} <= set(r) for r in joint)
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert any(name.startswith("events.out.tfevents") for name in os.listdir(os.path.join(workdir, "tb")))
  state, position = _final_state(workdir)
  assert int(state["base"]["step"]) == position == total  # Perturb-MoCo's state: MoCo's inside
  assert int(state["bank_count"]) == cfg.perturb.bank_size  # the bank filled up


def test_killed_and_resumed_run_matches_uninterrupted(full_run, tmp_path):
  reference_dir, _ = full_run
  cfg = _config()
  total = cfg.perturb.decoder_pretrain_steps + config_blocks.total_train_steps(cfg)
  half = _config(train__max_steps=total // 2 + 1)  # stop mid-way (odd step: between checkpoints of 2)
  workdir = str(tmp_path)
  train.train_and_evaluate(half, workdir, devices=_one_device())
  _, stopped_at = _final_state(workdir)
  assert stopped_at == total // 2 + 1
  train.train_and_evaluate(cfg, workdir, devices=_one_device())  # same command again: resumes
  resumed, _ = _final_state(workdir)
  reference, _ = _final_state(reference_dir)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_nan_loss_stops_naming_step_and_term_and_keeps_last_checkpoint(tmp_path, monkeypatch):
  original = moco.moco_step

  def poisoned(state, batch, rng, **kw):
    new_state, metrics = original(state, batch, rng, **kw)
    bad = jax.numpy.where(state.step >= 4, jax.numpy.nan, metrics["loss_c"])  # 5th step is NaN
    return new_state, dict(metrics, loss_c=bad)

  monkeypatch.setitem(registry.METHODS, "moco", dataclasses.replace(registry.METHODS["moco"], joint_step=poisoned))
  cfg = _config("moco", train__checkpoint_every=2, train__log_every=3)
  with pytest.raises(train.NonFiniteLossError, match=r"non-finite loss_c at step 5 .*last good checkpoint is step 4"):
    train.train_and_evaluate(cfg, str(tmp_path), devices=_one_device())
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=10)
  assert ckpt.latest_step() == 4
  ckpt.close()


def test_nan_before_the_first_checkpoint_says_there_is_none(tmp_path, monkeypatch):
  """The stop named 'the last good checkpoint is step 0' where no checkpoint existed."""
  original = moco.moco_step

  def poisoned(state, batch, rng, **kw):
    new_state, metrics = original(state, batch, rng, **kw)
    return new_state, dict(metrics, loss_c=jax.numpy.where(state.step >= 1, jax.numpy.nan, metrics["loss_c"]))

  monkeypatch.setitem(registry.METHODS, "moco", dataclasses.replace(registry.METHODS["moco"], joint_step=poisoned))
  cfg = _config("moco", train__checkpoint_every=100, train__log_every=3)
  with pytest.raises(train.NonFiniteLossError, match=r"non-finite loss_c at step 2 .*no checkpoint was saved before "
                                                     r"it \(train.checkpoint_every = 100\)"):
    train.train_and_evaluate(cfg, str(tmp_path), devices=_one_device())


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(train.WorkdirError, match="not writable"):
    train.train_and_evaluate(_config("moco"), str(blocker / "run"), devices=_one_device())


def test_a_workdir_that_is_a_file_is_named_so(tmp_path):
  """It said 'is not writable: File exists'."""
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(train.WorkdirError, match=r"workdir .*file' is a file, not a directory"):
    train.train_and_evaluate(_config("moco"), str(blocker), devices=_one_device())
  assert blocker.read_text() == "not a directory"


def test_bad_input_found_after_the_workdir_was_made_leaves_no_trace(tmp_path):
  """A data-dependent error (found once the data is read) left config.json and the lock in a new workdir."""
  cfg = _config("moco", eval__knn_ks=(100000,))  # k above the training split's size: known once it is read
  with pytest.raises(errors.ConfigError, match=r"eval.knn_ks.*exceeds the 32 training images"):
    train.train_and_evaluate(cfg, str(tmp_path / "new"), devices=_one_device())
  assert not (tmp_path / "new").exists()
  # An existing workdir is never removed.
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "notes.txt").write_text("mine")
  with pytest.raises(errors.ConfigError, match="eval.knn_ks"):
    train.train_and_evaluate(cfg, str(tmp_path / "old"), devices=_one_device())
  assert (tmp_path / "old" / "notes.txt").read_text() == "mine"


def test_config_error_before_compiling(tmp_path):
  cfg = _config("moco")
  cfg.moco.temperature = -1.0
  with pytest.raises(errors.ConfigError, match="moco.temperature"):
    train.train_and_evaluate(cfg, str(tmp_path), devices=_one_device())
  assert not os.listdir(tmp_path)  # nothing written, nothing compiled
