"""Run directories written before each SSL method owned its state still evaluate and resume.

``tests/fixtures/legacy_runs`` holds two ``:runlocal`` runs written by fgjax at
commit f887e8c, when every SSL method kept one flat state (``checkpointing.
LEGACY_SSL_FIELDS``, 1x1 placeholders for what a method lacked): Perturb-MoCo
(its step 8 of 10) and SimSiam (step 8, its last), each with the results that
code computed -- training's final evaluation (``trained``) and
``configs/evaluate.py:runlocal`` on the kept step (``evaluations/step_8``).
Today's code must restore them into the methods' own states and get the same
numbers, bit for bit.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from fgjax.evaluate import restore
from fgjax.infra import checkpointing
from fgjax.methods import perturb_ssl
from fgjax.methods import registry


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "legacy_runs")


def _copy(name, tmp_path):
  workdir = str(tmp_path / name)
  shutil.copytree(os.path.join(FIXTURES, name), workdir)
  return workdir


def _main(*args):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "fgjax.main", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_the_fixtures_are_in_the_legacy_layout():
  for name in ("perturb_moco", "simsiam"):
    ckpt = checkpointing.Checkpointer(os.path.join(FIXTURES, name), create=False)
    try:
      saved = ckpt.state_shapes(8)
    finally:
      ckpt.close()
    assert checkpointing.is_legacy_ssl_layout(saved), name
    assert saved["queue"] == ((1, 1), "float32") or name == "perturb_moco"  # SimSiam's placeholder queue


@pytest.mark.parametrize("name", ["perturb_moco", "simsiam"])
def test_a_legacy_run_evaluates_to_the_numbers_it_had(name, tmp_path):
  workdir = _copy(name, tmp_path)
  expected = _results(workdir)["evaluations"]["step_8"]
  proc = _main("--config=configs/evaluate.py:runlocal", f"--config.workdir={workdir}", "--config.checkpoint_step=8")
  assert "legacy SSL layout: converted to" in proc.stderr
  got = _results(workdir)["evaluations"]["step_8"]
  # Within float rounding, not bit for bit: the numbers were written by the code of their day, and two later
  # changes moved continuous measures in the 7th digit (the evaluation's forward takes the weights as an
  # argument; the random init compiles at XLA level 0). A wrong restore moves them by far more.
  assert got["trained"] == pytest.approx(expected["trained"], rel=1e-6, abs=1e-9)
  assert got["random_init"] == pytest.approx(expected["random_init"], rel=1e-6, abs=1e-9)


def test_a_legacy_run_resumes_and_continues_exactly(tmp_path):
  """Perturb-MoCo resumed from the legacy step 8: steps 9-10 log what the old code logged, the final
  evaluation equals the old run's, and the new checkpoint is in the method's own layout."""
  workdir = _copy("perturb_moco", tmp_path)
  old_rows = {r["step"]: r for r in _metrics(workdir)}
  old_trained = _results(workdir)["trained"]
  _main("--config=configs/perturb_moco.py:runlocal", f"--workdir={workdir}")
  new_rows = {r["step"]: r for r in _metrics(workdir)}
  for step in (9, 10):
    assert new_rows[step] == old_rows[step], step
  assert _results(workdir)["trained"] == pytest.approx(old_trained, rel=1e-6, abs=1e-9)  # (rounding: see above)
  ckpt = checkpointing.Checkpointer(workdir, create=False)
  try:
    assert ckpt.latest_step() == 10
    saved = ckpt.state_shapes(10)
  finally:
    ckpt.close()
  assert not checkpointing.is_legacy_ssl_layout(saved)
  assert "base/queue_ptr" in saved and "feature_bank" in saved and "base/feature_bank" not in saved


def test_a_legacy_step_restores_into_the_methods_own_state(tmp_path):
  """Every array of the legacy step lands in the new state (queue, key network, bank, decoder's optimizer)."""
  workdir = _copy("perturb_moco", tmp_path)
  cfg = restore.load_train_config(os.path.join(workdir, "config.json"))
  target = jax.eval_shape(registry.setup(cfg).init_state, registry.rngs(cfg)[0])
  assert isinstance(target, perturb_ssl.PerturbState)
  ckpt = checkpointing.Checkpointer(workdir, create=False)
  try:
    state, _ = ckpt.restore(8, target)
    raw, _ = ckpt.read(8)
  finally:
    ckpt.close()
  assert int(state.step) == 8 and int(state.bank_count) == int(raw["bank_count"])
  legacy = state.legacy_fields()
  for name in ("queue", "queue_ptr", "feature_bank", "momentum_params", "params", "decoder_opt_state"):
    for a, b in zip(jax.tree.leaves(legacy[name]), jax.tree.leaves(raw[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def test_a_legacy_checkpoint_of_another_model_is_one_line():
  """A legacy step that does not fit the config (another queue size) names the array, as any checkpoint."""
  cfg = restore.load_train_config(os.path.join(FIXTURES, "perturb_moco", "config.json"))
  cfg.moco.queue_size = 2 * cfg.moco.queue_size
  target = jax.eval_shape(registry.setup(cfg).init_state, registry.rngs(cfg)[0])
  ckpt = checkpointing.Checkpointer(os.path.join(FIXTURES, "perturb_moco"), create=False)
  try:
    problem = checkpointing.shape_mismatch(target, ckpt.state_shapes(8))
  finally:
    ckpt.close()
  assert problem is not None and problem.startswith("queue has shape")
