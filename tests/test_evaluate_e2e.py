"""End to end: evaluate a tiny trained checkpoint without retraining, and every bad input."""

import json
import os
import shutil
import subprocess
import sys

import jax
import pytest

from fgjax import errors
from fgjax import train
from fgjax.config import blocks as config_blocks
from fgjax.evaluate import checkpoint_eval
from fgjax.evaluate import restore
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.pretrained import init_from


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A finished runlocal MoCo run (its end-of-training evaluation included)."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  cfg = registry.config("moco", "runlocal")
  results = train.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
  return workdir, results


@pytest.fixture
def run_copy(trained_run, tmp_path):
  """A private copy of the trained run (evaluations append to its files)."""
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_run[0], workdir)
  return workdir


def _eval_config(workdir, **eval_overrides):
  sys.path.insert(0, os.path.join(REPO, "configs"))
  try:
    import evaluate as evaluate_config  # configs/evaluate.py
  finally:
    sys.path.pop(0)
  cfg = evaluate_config.get_config("runlocal")
  cfg.workdir = workdir
  cfg.eval.random_init_baseline = False
  for name, value in eval_overrides.items():
    cfg.eval[name] = value
  return cfg


def test_evaluation_reproduces_end_of_training_numbers(trained_run, run_copy):
  # The same protocol on the restored checkpoint must give exactly the numbers
  # the training run computed on its in-memory final state: the restore is
  # complete and the evaluation deterministic.
  _, train_results = trained_run
  md_before = open(os.path.join(run_copy, "results.md")).read()
  results = checkpoint_eval.evaluate_workdir(_eval_config(run_copy))
  assert results["trained"] == train_results["trained"]
  with open(os.path.join(run_copy, "results.json")) as f:
    on_disk = json.load(f)
  step = results["run"]["checkpoint step"]
  assert step == config_blocks.total_train_steps(registry.config("moco", "runlocal"))
  assert on_disk["trained"] == train_results["trained"]  # the training results are kept
  assert on_disk["evaluations"][f"step_{step}"]["trained"] == results["trained"]
  md = open(os.path.join(run_copy, "results.md")).read()
  assert md.startswith(md_before)  # appended, not overwritten
  appended = md[len(md_before):]
  assert f"## Evaluation: step_{step}" in appended
  for key in ("probe100_top1_fine", "probe50_top1_fine", "probe20_top1_super", "knn3_top1_fine",
              "recall@8_super", "map_fine", "outliers_super", "retrieval_skipped_fine"):
    assert f"| {key} |" in appended


def test_second_evaluation_appends_and_earlier_step_selectable(run_copy):
  steps = sorted(int(s) for s in os.listdir(os.path.join(run_copy, "checkpoints")) if s.isdigit())
  assert len(steps) == 2  # runlocal keeps two
  first = checkpoint_eval.evaluate_workdir(_eval_config(run_copy))
  cfg = _eval_config(run_copy, probe_fractions=(1.0, 0.1), knn_ks=(1, 3))
  cfg.checkpoint_step = steps[0]
  earlier = checkpoint_eval.evaluate_workdir(cfg)
  assert earlier["run"]["checkpoint step"] == steps[0]
  assert {"probe10_top1_fine", "knn1_top1_fine", "knn3_top1_fine"} <= set(earlier["trained"])
  assert "probe50_top1_fine" not in earlier["trained"]
  with open(os.path.join(run_copy, "results.json")) as f:
    evaluations = json.load(f)["evaluations"]
  assert set(evaluations) == {f"step_{steps[0]}", f"step_{steps[1]}"}
  assert evaluations[f"step_{steps[1]}"]["trained"] == first["trained"]
  md = open(os.path.join(run_copy, "results.md")).read()
  assert md.count("## Evaluation: step_") == 2


def test_random_init_baseline_section(run_copy):
  results = checkpoint_eval.evaluate_workdir(_eval_config(run_copy, random_init_baseline=True))
  assert set(results["random_init"]) == set(results["trained"])
  assert results["random_init"] != results["trained"]


def test_no_checkpoint_is_a_clear_error(tmp_path, trained_run):
  with pytest.raises(checkpoint_eval.EvaluationError, match="does not exist"):
    checkpoint_eval.evaluate_workdir(_eval_config(str(tmp_path / "missing")))
  with pytest.raises(checkpoint_eval.EvaluationError, match="no training config"):
    checkpoint_eval.evaluate_workdir(_eval_config(str(tmp_path)))
  shutil.copy(os.path.join(trained_run[0], "config.json"), tmp_path / "config.json")
  with pytest.raises(checkpoint_eval.EvaluationError, match="no checkpoint"):
    checkpoint_eval.evaluate_workdir(_eval_config(str(tmp_path)))
  os.makedirs(tmp_path / "checkpoints")
  with pytest.raises(checkpoint_eval.EvaluationError, match="no checkpoint"):
    checkpoint_eval.evaluate_workdir(_eval_config(str(tmp_path)))


def test_missing_step_names_the_saved_steps(run_copy):
  cfg = _eval_config(run_copy)
  cfg.checkpoint_step = 999
  with pytest.raises(checkpoint_eval.EvaluationError, match=r"no checkpoint of step 999 .*saved steps: \[\d+, \d+\]"):
    checkpoint_eval.evaluate_workdir(cfg)


def _config_json_with(workdir, tmp_path, section, name, value):
  with open(os.path.join(workdir, "config.json")) as f:
    stored = json.load(f)
  stored[section][name] = value
  path = tmp_path / "other_model.json"
  path.write_text(json.dumps(stored))
  return str(path)


def test_checkpoint_of_another_model_shape(run_copy, tmp_path):
  cfg = _eval_config(run_copy)
  cfg.train_config = _config_json_with(run_copy, tmp_path, "model", "width", 8)
  with pytest.raises(checkpoint_eval.EvaluationError,
                     match=r"does not match .*width 8.*has shape \(4,\) in the checkpoint.*needs \(8,\)"):
    checkpoint_eval.evaluate_workdir(cfg)
  cfg.train_config = _config_json_with(run_copy, tmp_path, "model", "encoder", "resnet34")
  with pytest.raises(checkpoint_eval.EvaluationError, match="does not match"):
    checkpoint_eval.evaluate_workdir(cfg)


def test_training_config_from_a_config_file(run_copy):
  cfg = _eval_config(run_copy)
  cfg.train_config = os.path.join(REPO, "configs", "moco.py") + ":runlocal"
  results = checkpoint_eval.evaluate_workdir(cfg)
  assert results["run"]["method"] == "moco"


@pytest.mark.parametrize("field,value,match", [
    ("probe_fractions", (1.0, 0.0), "eval.probe_fractions"),
    ("probe_fractions", (1.5,), "eval.probe_fractions"),
    ("knn_ks", (0,), "eval.knn_ks"),
    ("recall_ks", (1, -2), "eval.recall_ks"),
    ("rank_ks", (0,), "eval.rank_ks"),
    ("outlier_level", "genus", "eval.outlier_level"),
])
def test_bad_eval_fields(run_copy, field, value, match):
  with pytest.raises(errors.ConfigError, match=match):
    checkpoint_eval.evaluate_workdir(_eval_config(run_copy, **{field: value}))


def test_knn_k_beyond_the_train_split(run_copy):
  with pytest.raises(checkpoint_eval.EvaluationError, match="knn_ks: k=5000"):
    checkpoint_eval.evaluate_workdir(_eval_config(run_copy, knn_ks=(5000,)))


def test_empty_split_in_the_training_config(run_copy, tmp_path):
  cfg = _eval_config(run_copy)
  cfg.train_config = _config_json_with(run_copy, tmp_path, "data", "test_per_class", 0)
  with pytest.raises(errors.ConfigError, match="data.test_per_class"):
    checkpoint_eval.evaluate_workdir(cfg)


def _main(*args):
  return subprocess.run([sys.executable, "-m", "fgjax.main", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_command_line_evaluation_and_one_line_errors(run_copy, tmp_path):
  ok = _main("--config=configs/evaluate.py:runlocal", f"--config.workdir={run_copy}",
             "--config.eval.random_init_baseline=False")
  assert ok.returncode == 0, ok.stderr[-2000:]
  with open(os.path.join(run_copy, "results.json")) as f:
    assert "evaluations" in json.load(f)
  for args, match in [
      ((f"--config.workdir={tmp_path / 'nothing'}",), "does not exist"),
      ((f"--config.workdir={run_copy}", "--config.eval.probe_fractions=(0.5,2.0)"), "eval.probe_fractions"),
      ((f"--config.workdir={run_copy}",
        f"--config.train_config={_config_json_with(run_copy, tmp_path, 'model', 'width', 8)}"),
       "does not match"),
  ]:
    bad = _main("--config=configs/evaluate.py:runlocal", *args)
    assert bad.returncode == 2, bad.stderr[-2000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("fgjax: error:")]
    assert len(errors) == 1 and match in errors[0], bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr


# ----------------------------------------------------------------------------
# model.init_from: another run's encoder, exactly


def _frozen_encoder(workdir):
  restored = restore.restore_run(workdir)
  frozen = registry.frozen_model(restored.train_cfg, restored.setup.nets, restored.state)
  return frozen.params, frozen.batch_stats


def test_init_from_a_run_directory_starts_with_exactly_its_encoder(trained_run):
  import numpy as np
  from fgjax.data import pipeline
  params, batch_stats = _frozen_encoder(trained_run[0])
  for method in ("hcl", "moco"):  # HCL's encoder from an SSL run; MoCo's query and key encoders
    cfg = registry.config(method, "runlocal")
    cfg.model.init_from = trained_run[0]
    data = pipeline.load_splits(cfg)
    setup = registry.setup(cfg, num_train=1, train_source=data["train"])
    fresh = jax.device_get(spec.initial_state(setup, registry.rngs(cfg)[0]))
    state = init_from.with_init_from(cfg, setup, fresh)
    jax.tree.map(np.testing.assert_array_equal, state.params["encoder"], params)
    jax.tree.map(np.testing.assert_array_equal, state.batch_stats, batch_stats)
    others = [k for k in state.params if k != "encoder"]
    assert others  # the heads stay at their initialisation
    jax.tree.map(np.testing.assert_array_equal, {k: state.params[k] for k in others},
                 {k: fresh.params[k] for k in others})
    if method == "moco":
      jax.tree.map(np.testing.assert_array_equal, state.momentum_params["encoder"], params)
      jax.tree.map(np.testing.assert_array_equal, state.momentum_batch_stats, batch_stats)


def test_a_run_from_init_from_evaluates_the_imported_encoder_first(trained_run, tmp_path):
  # The new run's "before training" evaluations: the imported encoder's (exactly the numbers the source run
  # reported at its end: same encoder, data and protocol) and the same encoder at random init.
  cfg = registry.config("moco", "runlocal")
  cfg.model.init_from = trained_run[0]
  cfg.train.max_steps = 1
  cfg.eval.random_init_baseline = True
  results = train.train_and_evaluate(cfg, str(tmp_path / "from_run"), devices=jax.devices()[:1])
  assert results["initial"] == trained_run[1]["trained"]
  assert results["random_init"] != results["initial"]
  assert results["run"]["initial encoder"] == trained_run[0]
  md = open(tmp_path / "from_run" / "results.md").read()
  assert ("| protocol | random init | initial (init_from) | trained | trained - initial (init_from) | "
          "trained - random init |") in md
  assert "**Verdict against the initial (init_from):" in md


def test_evaluate_imported_weights_without_training(trained_run, tmp_path):
  cfg = _eval_config(str(tmp_path / "imported"))
  cfg.init_from = trained_run[0]
  cfg.train_config = os.path.join(REPO, "configs", "moco.py") + ":runlocal"
  results = checkpoint_eval.evaluate_workdir(cfg)
  assert results["imported"] == trained_run[1]["trained"]
  with open(tmp_path / "imported" / "results.json") as f:
    assert json.load(f)["evaluations"]["imported"]["imported"] == results["imported"]
  cfg.train_config = ""
  with pytest.raises(errors.ConfigError, match="config field 'train_config': evaluating init_from's weights"):
    checkpoint_eval.evaluate_workdir(cfg)


def test_init_from_refusals_are_one_line(tmp_path):
  cfg = registry.config("moco", "runlocal")  # the CIFAR stem
  cfg.model.init_from = str(tmp_path / "resnet18.safetensors")
  with pytest.raises(errors.ConfigError, match="config fields 'model.init_from' and 'model.cifar_stem': the CIFAR "
                                               "stem .* cannot take ImageNet ResNet weights"):
    registry.validate(cfg, num_devices=1)
  cfg = registry.config("moco", "cub200")  # the paper starts from ImageNet weights
  with pytest.raises(errors.ConfigError, match=r"config field 'model.init_from': this preset starts from pretrained "
                                               r"weights \(ImageNet-1k ResNet-50: .*model.init_from=none"):
    registry.validate(cfg, num_devices=1)
  cfg.model.init_from = "none"
  registry.validate(cfg, num_devices=1)
  # A file that cannot initialise the encoder: one line, exit 2, from the command line.
  bad = tmp_path / "bad.safetensors"
  bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
  run = subprocess.run([sys.executable, "-m", "fgjax.main", "--config=configs/moco.py:runlocal",
                        f"--workdir={tmp_path / 'w'}", "--config.model.cifar_stem=False",
                        f"--config.model.init_from={bad}"], cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
  assert run.returncode == 2, run.stderr[-2000:]
  last = run.stderr.strip().splitlines()[-1]
  assert last.startswith("fgjax: error: ") and str(bad) in last and "Traceback" not in run.stderr
