"""Kill and damage campaign: does a run survive SIGTERM/SIGKILL at random moments and damaged checkpoints?

  python launch/survival_check.py [--kills N] [--dir runs/survival] [--seed S]

1. One uninterrupted tiny MoCo run (the reference; one CPU device).
2. N times: the same command, signalled (SIGTERM and SIGKILL alternately) at a
   random moment of its training (so some land inside a checkpoint write), then
   rerun to the end; the final state must equal the reference's bit for bit.
3. Each kind of checkpoint damage applied to the latest step of a copy of the
   reference: training must resume from the step before (and end bit-identical),
   and evaluation must fall back too.

Prints a line per trial and the totals (what docs/robustness.md reports).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--config=configs/moco.py:runlocal", "--config.optim.num_epochs=50", "--config.train.log_every=1",
         "--config.train.checkpoint_every=20", "--config.train.keep_checkpoints=3", "--config.eval.knn_every=0"]


def _env():
  return dict(os.environ, JAX_NUM_CPU_DEVICES="1", JAX_PLATFORMS="cpu")


def _command(workdir, *extra):
  return [sys.executable, "-m", "fgjax.main", *FLAGS, f"--workdir={workdir}", *extra]


def _run(workdir, *extra):
  proc = subprocess.run(_command(workdir, *extra), cwd=ROOT, env=_env(), capture_output=True, text=True)
  return proc.returncode, proc.stderr


def _logged_step(workdir):
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return max((json.loads(line)["step"] for line in f if line.endswith("\n")), default=0)
  except OSError:
    return 0


def _final_state(workdir):
  import jax

  from fgjax.infra import checkpointing
  step, state, _ = checkpointing.read_latest(workdir)
  return step, [np.asarray(x) for x in jax.tree.leaves(state)]


def _same(a, b):
  return a[0] == b[0] and len(a[1]) == len(b[1]) and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


def kill_trial(workdir, sig, delay_s):
  """Starts a run, sends ``sig`` ``delay_s`` after its first logged step; returns what happened."""
  proc = subprocess.Popen(_command(workdir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  while _logged_step(workdir) < 1 and proc.poll() is None:
    time.sleep(0.005)
  time.sleep(delay_s)
  at = _logged_step(workdir)
  if proc.poll() is not None:
    return None, at, ""
  proc.send_signal(sig)
  _, err = proc.communicate()
  return proc.returncode, at, err


# Damage to the latest checkpoint step (a folder under checkpoints/).
def _largest_array_file(step_dir):
  data = os.path.join(step_dir, "state", "ocdbt.process_0", "d")
  return max((os.path.join(data, f) for f in os.listdir(data)), key=os.path.getsize)


DAMAGE = {
    "array file deleted": lambda d: os.remove(_largest_array_file(d)),
    "array file truncated": lambda d: os.truncate(_largest_array_file(d), 16),
    "array file overwritten with zeros": lambda d: _zero(_largest_array_file(d)),
    "state/_METADATA deleted": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
    "state/_METADATA garbage": lambda d: _write(os.path.join(d, "state", "_METADATA"), "{not json"),
    "state/manifest.ocdbt deleted": lambda d: os.remove(os.path.join(d, "state", "manifest.ocdbt")),
    "_CHECKPOINT_METADATA deleted": lambda d: os.remove(os.path.join(d, "_CHECKPOINT_METADATA")),
    "data/metadata garbage": lambda d: _write(os.path.join(d, "data", "metadata"), "\x00\x01"),
    "data/ folder deleted (half-deleted step)": lambda d: shutil.rmtree(os.path.join(d, "data")),
    "state/ folder deleted (half-deleted step)": lambda d: shutil.rmtree(os.path.join(d, "state")),
}


def _zero(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.write(b"\x00" * size)


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--kills", type=int, default=10)
  parser.add_argument("--dir", default="runs/survival")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rng = random.Random(args.seed)
  shutil.rmtree(args.dir, ignore_errors=True)
  os.makedirs(args.dir)
  reference_dir = os.path.join(args.dir, "reference")
  started = time.perf_counter()
  code, err = _run(reference_dir)
  assert code == 0, err[-3000:]
  duration = time.perf_counter() - started
  reference = _final_state(reference_dir)
  print(f"reference: {reference[0]} steps, {duration:.1f} s", flush=True)

  survived = tried = 0
  for i in range(args.kills):
    sig = (signal.SIGTERM, signal.SIGKILL)[i % 2]
    workdir = os.path.join(args.dir, f"kill_{i}")
    code, at, err = kill_trial(workdir, sig, rng.uniform(0.0, 3.0))
    if code is None:
      print(f"kill {i}: the run ended before the signal; not counted", flush=True)
      continue
    expected = 3 if sig == signal.SIGTERM else -signal.SIGKILL
    rerun_code, rerun_err = _run(workdir)
    ok = code == expected and rerun_code == 0 and _same(_final_state(workdir), reference)
    tried += 1
    survived += ok
    line = [l for l in err.splitlines() if l.startswith("fgjax:")]
    print(f"kill {i}: {sig.name} near step {at}: exit {code}"
          f"{' (' + line[0][:120] + ')' if line else ''}; rerun exit {rerun_code}; "
          f"final state {'bit-identical' if ok else 'DIFFERENT or failed: ' + rerun_err[-500:]}", flush=True)

  recovered = damaged = 0
  for k, (name, damage) in enumerate(DAMAGE.items()):
    workdir = os.path.join(args.dir, f"damage_{k}")
    shutil.copytree(reference_dir, workdir)
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    damage(os.path.join(workdir, "checkpoints", str(steps[-1])))
    evaluation = subprocess.run(
        [sys.executable, "-m", "fgjax.main", "--config=configs/evaluate.py:runlocal", f"--config.workdir={workdir}"],
        cwd=ROOT, env=_env(), capture_output=True, text=True)
    train_code, train_err = _run(workdir)
    # Clean: the damage named in one warning line, no traceback in either log.
    clean = not any(t in e for e in (evaluation.stderr, train_err) for t in ("Traceback", "Exception ignored"))
    ok = evaluation.returncode == 0 and train_code == 0 and clean and _same(_final_state(workdir), reference)
    damaged += 1
    recovered += ok
    print(f"damage '{name}' of step {steps[-1]}: evaluate exit {evaluation.returncode}, resume exit {train_code}, "
          f"logs {'clean' if clean else 'WITH TRACEBACKS'}, "
          f"{'recovered, bit-identical' if ok else 'NOT recovered: ' + train_err[-500:]}", flush=True)

  print(f"kills survived / tried: {survived} / {tried}; damaged checkpoints recovered / tried: "
        f"{recovered} / {damaged}; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
  main()
