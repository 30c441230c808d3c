"""Multi-process runs on one machine: ``jax.distributed`` on loopback, gloo collectives.

Every multi-process run here is ``python -m fgjax.main`` (through a driver that
also dumps each process's copy of the train state at every checkpoint), N
processes with their own fake CPU devices, bound to 127.0.0.1 on a free port.
Each run has a bounded timeout and its processes are killed (whole process
groups) whatever happens.

* 2 processes x 2 devices reach the parameters of 1 process x 4 devices, and
  every process (every device) holds the same MoCo queue;
* a 2-process run killed between two checkpoints and started again continues
  exactly: bit for bit what it had computed before the kill;
* bad input ends every process with one ``fgjax: error:`` line and status 2,
  in bounded time: a process count that does not divide the global batch, a
  coordinator nobody hosts, processes that never join, different configs.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from fgjax.infra import checkpointing
from fgjax.infra import distributed
from fgjax.methods import registry


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
RUN_TIMEOUT_S = 300  # one whole multi-process run on the loaded 2-core machine (typically ~60 s)
ERROR_TIMEOUT_S = 60  # a run that must fail fast
# MoCo runlocal with 64 images, batch 16 in 4 BatchNorm groups (one per device of
# 4; groups of 2 images amplify rounding ~100x within 8 steps, checked), queue 32
# (wraps every 2 steps), 8 steps, checkpoints at steps 4 and 8.
# lr 0.03 per 256 (MoCo v2's ImageNet value), at which the tolerances were set: the
# CPU recipe's 0.3 scales the rounding-level differences between runs 10x.
OVERRIDES = {"data.global_batch_size": 16, "data.train_per_class": 16, "model.bn_groups": 4,
             "eval.knn_every": 0, "train.checkpoint_every": 4, "optim.base_lr": 0.03}
FLAGS = ["--config=configs/moco.py:runlocal"] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
TOTAL_STEPS = 8
LAST_CHECKPOINT = 4  # of the killed run (checkpoints every 4 steps)

# The child: fgjax.main with a hook that dumps this process's state at every checkpoint.
DRIVER = f"""
import sys
sys.path.insert(0, {TESTS!r})
import test_multihost
test_multihost.install_dump_hook()
from fgjax import main
main.run()
"""


# ----------------------------------------------------------------------------
# In the child processes (and the in-process reference run).


def install_dump_hook(dump_dir: str = "") -> object:
  """Wraps ``Checkpointer.save``: at step s, writes ``step{s}_process{i}.npz``.

  The npz holds this process's copy of every array of the state (from its
  first local device) and ``local_replicas_differ``: the arrays whose copies
  on this process's devices are not identical. ``FGJAX_TEST_KILL_AT=s``: at
  step s the process dumps the state, does *not* save it, announces it and
  waits to be killed (a run lost between two checkpoints).

  Returns:
    The original ``save`` (the in-process reference puts it back).
  """
  dump_dir = dump_dir or os.environ["FGJAX_TEST_DUMP"]
  kill_at = int(os.environ.get("FGJAX_TEST_KILL_AT", "0"))
  original_save = checkpointing.Checkpointer.save

  def save(self, step, state, *, data_position):
    import jax
    if step != kill_at:
      original_save(self, step, state, data_position=data_position)
    arrays, differ = {}, []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
      name = checkpointing.tree_path(path)
      copies = [np.asarray(shard.data) for shard in leaf.addressable_shards]
      arrays[name] = copies[0]
      if any(not np.array_equal(copies[0], c) for c in copies[1:]):
        differ.append(name)
    np.savez(os.path.join(dump_dir, f"step{step}_process{jax.process_index()}.npz"),
             local_replicas_differ=np.array(differ, dtype=str), **arrays)
    if step == kill_at:
      self.wait()  # the previous checkpoint is complete; this one was never started
      open(os.path.join(dump_dir, f"killable_{jax.process_index()}"), "w").close()
      time.sleep(RUN_TIMEOUT_S)

  checkpointing.Checkpointer.save = save
  return original_save


# ----------------------------------------------------------------------------
# Starting and always stopping process groups.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class _Run:
  """N processes of the driver; their output goes to files (no pipe can fill up and block)."""

  def __init__(self, tmp, name, *, num_processes, devices, flags_of, env=None, timeout_s=0.0):
    self.dir = os.path.join(tmp, name)
    os.makedirs(self.dir)
    self.procs, self.logs = [], []
    port = _free_port()
    for i in range(num_processes):
      # The session's compilation cache: process 0 loads what process 1 compiles (the cache
      # keys programs per process), the skew fgjax must absorb before the first collective.
      cache = os.environ.get("FGJAX_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "fgjax_test_jax_cache"))
      child_env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
                       JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
                       FGJAX_TEST_DUMP=self.dir, PYTHONUNBUFFERED="1", **(env or {}))
      args = [sys.executable, "-c", DRIVER, *flags_of(i)]
      if num_processes > 1:
        args += [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                 f"--process_id={i}", f"--distributed_timeout={timeout_s or 120}"]
      log = open(os.path.join(self.dir, f"log_{i}.txt"), "w")
      self.logs.append(log)
      self.procs.append(subprocess.Popen(args, cwd=REPO, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True))  # own process group: killed as one

  def output(self, i: int) -> str:
    with open(os.path.join(self.dir, f"log_{i}.txt")) as f:
      return f.read()

  def wait(self, timeout_s: float) -> list[int]:
    """Exit statuses; kills everything and fails the test at the deadline."""
    deadline = time.monotonic() + timeout_s
    try:
      return [p.wait(timeout=max(0.1, deadline - time.monotonic())) for p in self.procs]
    except subprocess.TimeoutExpired:
      self.kill()
      pytest.fail(f"processes still running after {timeout_s} s; outputs:\n" + self.outputs())

  def outputs(self) -> str:
    return "\n".join(f"--- process {i}:\n{self.output(i)[-3000:]}" for i in range(len(self.procs)))

  def kill(self) -> None:
    for p in self.procs:
      with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    for p in self.procs:
      with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)
    for log in self.logs:
      log.close()


@contextlib.contextmanager
def _running(*args, **kwargs):
  run = _Run(*args, **kwargs)
  try:
    yield run
  finally:
    run.kill()  # no process outlives its test, pass or fail
    assert all(p.poll() is not None for p in run.procs)


def _load(run_dir: str, step: int, process: int) -> dict[str, np.ndarray]:
  """A process's state at ``step``; fails if its devices held different copies."""
  with np.load(os.path.join(run_dir, f"step{step}_process{process}.npz")) as f:
    arrays = {k: f[k] for k in f.files}
  differ = arrays.pop("local_replicas_differ")
  assert differ.size == 0, f"process {process}: devices hold different {list(differ)}"
  return arrays


# ----------------------------------------------------------------------------
# Runs shared by the tests (module scope: each is paid once).


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Dump directories and logs of three runs (the two multi-process ones are the costly part).

  * ``one``: 1 process x 4 devices, in this process (the reference);
  * ``killed``: 2 processes x 2 devices, trained uninterrupted to step 8, then
    SIGKILLed before writing its step-8 checkpoint (the last one is step 4);
  * ``resumed``: the killed run's command again: resumes at step 4.
  """
  import jax
  if len(jax.devices()) < 4:
    pytest.skip("needs JAX_NUM_CPU_DEVICES=4 (set by conftest.py)")
  tmp = str(tmp_path_factory.mktemp("multihost"))
  flags_of = lambda i: FLAGS + [f"--workdir={tmp}/workdir"]  # noqa: E731  (one workdir, shared)
  with _running(tmp, "killed", num_processes=2, devices=2, flags_of=flags_of,
                env={"FGJAX_TEST_KILL_AT": str(TOTAL_STEPS)}) as killed:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    # The reference runs here meanwhile: its compilation overlaps the processes' waits.
    one_dir = os.path.join(tmp, "one")
    os.makedirs(one_dir)
    from fgjax import train
    cfg = registry.config("moco", "runlocal")
    for path, value in OVERRIDES.items():
      section, field = path.split(".")
      cfg[section][field] = value
    original_save = install_dump_hook(one_dir)
    try:
      train.train_and_evaluate(cfg, os.path.join(one_dir, "workdir"))
    finally:
      checkpointing.Checkpointer.save = original_save
    markers = [os.path.join(killed.dir, f"killable_{p}") for p in (0, 1)]
    while not all(os.path.exists(m) for m in markers):
      assert all(p.poll() is None for p in killed.procs), killed.outputs()
      assert time.monotonic() < deadline, killed.outputs()
      time.sleep(0.2)
    killed.kill()  # SIGKILL of both processes, whatever they were doing
    killed_logs = [killed.output(0), killed.output(1)]
  with _running(tmp, "resumed", num_processes=2, devices=2, flags_of=flags_of) as resumed:
    assert resumed.wait(RUN_TIMEOUT_S) == [0, 0], resumed.outputs()
    resumed_logs = [resumed.output(0), resumed.output(1)]
  return {"one": one_dir, "killed": killed.dir, "resumed": resumed.dir, "workdir": os.path.join(tmp, "workdir"),
          "logs": {"killed": killed_logs, "resumed": resumed_logs}}


def test_two_processes_reach_the_parameters_of_one(runs):
  one = _load(runs["one"], TOTAL_STEPS, 0)
  two = [_load(runs["killed"], TOTAL_STEPS, p) for p in (0, 1)]  # (uninterrupted up to here)
  # Every process holds the same state, bit for bit (replicated by pmean / all_gather).
  assert set(two[0]) == set(two[1]) == set(one)
  for name in two[0]:
    np.testing.assert_array_equal(two[0][name], two[1][name], err_msg=name)
  np.testing.assert_array_equal(two[0]["queue"], two[1]["queue"])
  # ... and the state of one process with 4 devices, up to the order of float sums
  # (gloo across processes vs. one in-process all-reduce); measured max |diff| 7e-6.
  assert int(two[0]["step"]) == int(one["step"]) == TOTAL_STEPS
  assert int(two[0]["queue_ptr"]) == int(one["queue_ptr"])
  for name in one:
    np.testing.assert_allclose(two[0][name], one[name], rtol=1e-4, atol=2e-5, err_msg=name)
  # Not vacuous: training moved the encoder by far more than the tolerance, and the queue was rewritten.
  half = _load(runs["one"], LAST_CHECKPOINT, 0)
  moved = max(float(np.max(np.abs(one[k] - half[k]))) for k in one if k.startswith("params/encoder"))
  assert moved > 50 * 2e-5
  assert not np.allclose(one["queue"], half["queue"])


def test_killed_and_resumed_run_matches_uninterrupted(runs):
  log0 = runs["logs"]["resumed"][0]
  # "resumed from <workdir>/checkpoints step 4 (data position 4)"
  assert f"step {LAST_CHECKPOINT} (data position {LAST_CHECKPOINT})" in log0
  assert not os.path.exists(os.path.join(runs["resumed"], f"step{LAST_CHECKPOINT}_process0.npz"))
  uninterrupted = _load(runs["killed"], TOTAL_STEPS, 0)  # what the killed run had computed
  for p in (0, 1):
    resumed = _load(runs["resumed"], TOTAL_STEPS, p)
    for name in uninterrupted:  # the same programs on the same processes: bit for bit
      np.testing.assert_array_equal(resumed[name], uninterrupted[name], err_msg=name)


def test_only_process_zero_logs_and_writes_results(runs):
  for run in ("killed", "resumed"):
    log0, log1 = runs["logs"][run]
    assert "[joint] step 8/8" in log0 and "[joint] step" not in log1  # process 1: warnings only
  assert os.path.exists(os.path.join(runs["workdir"], "results.json"))
  steps = [json.loads(line)["step"] for line in open(os.path.join(runs["workdir"], "metrics.jsonl"))]
  # Each step once: the resumed run dropped the killed run's rows after its checkpoint first.
  assert steps == list(range(1, TOTAL_STEPS + 1))
  assert not glob.glob(os.path.join(runs["workdir"], ".write_test_*"))


# ----------------------------------------------------------------------------
# Bad input: every process fails with one line, in bounded time.


def _error_lines(run, i):
  return [line for line in run.output(i).splitlines() if line.startswith("fgjax: error:")]


def test_process_count_that_does_not_divide_the_batch(tmp_path):
  start = time.monotonic()
  with _running(str(tmp_path), "three", num_processes=3, devices=1,
                flags_of=lambda i: FLAGS + [f"--workdir={tmp_path}/w"], timeout_s=60) as run:
    assert run.wait(ERROR_TIMEOUT_S) == [2, 2, 2], run.outputs()
    for i in range(3):
      (line,) = _error_lines(run, i)
      assert line == (f"fgjax: error: process {i} of 3: config field 'data.global_batch_size': "
                      "16 is not divisible by the process count 3")
  assert time.monotonic() - start < ERROR_TIMEOUT_S


def test_unreachable_coordinator_and_missing_processes_fail_in_bounded_time(tmp_path):
  # Process 1 of 2 whose coordinator never starts; process 0 of 2 whose peer never comes.
  nobody, alone = _free_port(), _free_port()
  start = time.monotonic()
  with _running(str(tmp_path), "lost", num_processes=1, devices=1,
                flags_of=lambda i: FLAGS + [f"--workdir={tmp_path}/w", f"--coordinator_address=127.0.0.1:{nobody}",
                                            "--num_processes=2", "--process_id=1", "--distributed_timeout=4"]
                ) as lost, _running(str(tmp_path), "alone", num_processes=1, devices=1,
                                    flags_of=lambda i: FLAGS + [f"--workdir={tmp_path}/w",
                                                                f"--coordinator_address=127.0.0.1:{alone}",
                                                                "--num_processes=2", "--process_id=0",
                                                                "--distributed_timeout=4"]) as solo:
    assert lost.wait(ERROR_TIMEOUT_S) == [2], lost.outputs()
    assert solo.wait(ERROR_TIMEOUT_S) == [2], solo.outputs()
    assert _error_lines(lost, 0) == [f"fgjax: error: process 1 of 2: cannot reach the coordinator at "
                                     f"127.0.0.1:{nobody} within 4 s: process 0 must be running and that "
                                     "address must be reachable from here"]
    assert _error_lines(solo, 0) == [f"fgjax: error: process 0 of 2: not all 2 processes joined the "
                                     f"coordinator at 127.0.0.1:{alone} within 4 s: start the same command "
                                     "on every process, each with its own --process_id"]
  assert time.monotonic() - start < ERROR_TIMEOUT_S


def test_different_configs_are_named_on_every_process(tmp_path):
  start = time.monotonic()
  flags_of = lambda i: FLAGS + [f"--workdir={tmp_path}/w"] + (["--config.moco.temperature=0.5"] if i else [])  # noqa: E731
  with _running(str(tmp_path), "mixed", num_processes=2, devices=2, flags_of=flags_of, timeout_s=60) as run:
    assert run.wait(ERROR_TIMEOUT_S) == [2, 2], run.outputs()
    for i in range(2):
      (line,) = _error_lines(run, i)
      assert line.startswith(f"fgjax: error: process {i} of 2: the processes run different configs: "
                             "process(es) 1 differ from process 0"), line
      assert line.endswith("process 1 vs 0: moco.temperature (0.5 vs 0.2). Run the same command on every "
                           "process"), line
  assert not os.path.exists(tmp_path / "w" / "checkpoints")  # stopped before anything was written
  assert time.monotonic() - start < ERROR_TIMEOUT_S


# ----------------------------------------------------------------------------
# The settings, checked before JAX is asked anything (no processes needed).


@pytest.mark.parametrize("kwargs, environ, message", [
    (dict(coordinator_address="127.0.0.1:1234"), {}, "missing: --num_processes, --process_id$"),
    (dict(coordinator_address="127.0.0.1:1234", process_id=0), {}, "missing: --num_processes$"),
    (dict(num_processes=2, process_id=0), {}, "missing: --coordinator_address"),
    (dict(coordinator_address="127.0.0.1", num_processes=2, process_id=0), {}, "is not HOST:PORT"),
    (dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2), {}, r"in \[0, 2\), got 2"),
    ({}, {"FGJAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "FGJAX_NUM_PROCESSES": "two",
          "FGJAX_PROCESS_ID": "0"}, "FGJAX_NUM_PROCESSES='two' is not int"),
])
def test_bad_settings(kwargs, environ, message):
  with pytest.raises(distributed.DistributedError, match=message):
    distributed.maybe_initialize(environ=environ, **kwargs)


def test_no_settings_is_a_single_process_run():
  assert distributed.maybe_initialize(environ={}) is None


def test_taken_port_is_named_before_jax_starts():
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(distributed.DistributedError, match=f"cannot host the coordinator at 127.0.0.1:{port}"):
      distributed.maybe_initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=0,
                                   environ={})


def test_config_fingerprint_and_differences():
  a = registry.config("moco", "runlocal")
  b = registry.config("moco", "runlocal")
  assert distributed.config_fingerprint(a, "w") == distributed.config_fingerprint(b, "w")
  assert distributed.config_fingerprint(a, "w")[0] != distributed.config_fingerprint(a, "other")[0]
  b.moco.temperature = 0.5
  b.data.global_batch_size = 16
  text = distributed.config_differences(distributed.config_fingerprint(b)[1], distributed.config_fingerprint(a)[1])
  assert text == "data.global_batch_size (16 vs 8), moco.temperature (0.5 vs 0.2)"
