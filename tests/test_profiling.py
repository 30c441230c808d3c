"""jax.profiler traces by config: the window, the files under <workdir>/profile, bad directories."""

import glob
import gzip
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from fgjax import errors
from fgjax import train
from fgjax.infra import profiling
from fgjax.methods import registry
from fgjax.tools import trace_summary


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _traces(directory):
  return sorted(glob.glob(os.path.join(directory, "plugins", "profile", "*", "*.trace.json.gz")))


def _step_numbers(trace_file):
  """Step numbers of the ``train`` StepTraceAnnotations in a trace."""
  with gzip.open(trace_file) as f:
    events = json.load(f)["traceEvents"]
  return sorted({int(e["args"]["step_num"]) for e in events
                 if e.get("name") == "train" and "step_num" in e.get("args", {})})


def test_profiler_traces_exactly_its_window(tmp_path):
  f = jax.jit(lambda x: jnp.tanh(x @ x))
  x = jnp.ones((64, 64))
  profiler = profiling.StepProfiler(str(tmp_path), start=2, num_steps=2)
  for step in range(6):
    with profiler.step(step, lambda: x):
      x = f(x)
    assert profiler.active == (step == 2)  # opened at 2, closed after 3
  profiler.close()
  traces = _traces(str(tmp_path))
  assert len(traces) == 1 and _step_numbers(traces[0]) == [2, 3]
  assert glob.glob(os.path.join(str(tmp_path), "plugins", "profile", "*", "*.xplane.pb"))
  rows = trace_summary.op_breakdown(str(tmp_path), num_steps=2)
  kinds = {kind for kind, ms, _ in rows if ms >= 0}
  assert kinds and not any(k.startswith(("ThunkExecutor", "$")) for k in kinds)
  assert [ms for _, ms, _ in rows] == sorted((ms for _, ms, _ in rows), reverse=True)  # largest first
  # The command line prints the same rows (top 30) with their share of the op time.
  run = subprocess.run([sys.executable, "-m", "fgjax.tools.trace_summary", str(tmp_path), "2"], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]
  lines = run.stdout.splitlines()
  assert lines[0].split() == ["ms/step", "share", "count", "op", "kind"]
  assert [line.split(None, 3)[3] for line in lines[1:]] == [kind for kind, _, _ in rows[:30]]


def test_trace_summary_without_a_trace_is_one_error_line(tmp_path):
  with pytest.raises(FileNotFoundError, match="no \\*.trace.json.gz"):
    trace_summary.op_breakdown(str(tmp_path))
  run = subprocess.run([sys.executable, "-m", "fgjax.tools.trace_summary", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and run.stderr.startswith("trace_summary: error: no *.trace.json.gz"), run.stderr
  assert "Traceback" not in run.stderr


def test_profiler_off_writes_nothing(tmp_path):
  cfg = registry.config("moco", "runlocal")
  profiler = profiling.StepProfiler.from_config(cfg, str(tmp_path))  # profile_steps = 0
  with profiler.step(5):
    pass
  assert not profiler.enabled and os.listdir(tmp_path) == []


def test_training_run_writes_a_profile_under_the_workdir(tmp_path):
  cfg = registry.config("moco", "runlocal")
  cfg.train.max_steps = 3
  cfg.train.profile_start_step = 1
  cfg.train.profile_steps = 2
  cfg.eval.knn_every = 0
  train.train_and_evaluate(cfg, str(tmp_path), devices=jax.devices()[:1])
  traces = _traces(str(tmp_path / "profile"))
  assert len(traces) == 1 and _step_numbers(traces[0]) == [1, 2]


@pytest.mark.parametrize("field,value", [("profile_steps", -1), ("profile_start_step", -2)])
def test_negative_profile_fields_are_config_errors(field, value):
  cfg = registry.config("moco", "runlocal")
  cfg.train[field] = value
  with pytest.raises(errors.ConfigError, match=f"train.{field}"):
    registry.validate(cfg, num_devices=1)


def test_unwritable_profile_dir_is_one_line_before_compiling(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  workdir = tmp_path / "run"
  run = subprocess.run(
      [sys.executable, "-m", "fgjax.main", "--config=configs/moco.py:runlocal", f"--workdir={workdir}",
       "--config.train.profile_steps=2", f"--config.train.profile_dir={blocker / 'profile'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_NUM_CPU_DEVICES="1"))
  assert run.returncode == 2, run.stderr[-2000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("fgjax: error:")]
  assert len(errors) == 1 and "train.profile_dir" in errors[0] and "not writable" in errors[0], run.stderr[-2000:]
  assert "Traceback" not in run.stderr
  assert not workdir.exists()  # stopped before the config, the data, any compilation; the new workdir removed
