r"""Benchmark of the evaluation suite: retrieval at Stanford Online Products scale, the linear probe.

  python -m fgjax.tools.eval_bench --num=10000,60000 --dim=512 --out=bench_eval.json

For each N it runs, in a fresh child process (so each peak-memory figure is
that N's own), ``retrieval.retrieval_metrics`` on N synthetic embeddings of
dimension ``--dim`` with SOP's class structure (2 to 12 images per class,
uniform; SOP's test split has 60,502 images in 11,316 classes, 5.3 per class),
Recall@{1, 10, 100, 1000}, mAP on. It reports the wall time (compilation
included: an evaluation compiles once per run), the time without the mAP pass,
and the process's peak resident memory (``ru_maxrss``: the JAX runtime, the
embeddings and every chunk's buffers).

Then it times the linear probe (``linear_probe.linear_probe``, the default
``eval.probe_*`` settings) on clustered features of the sizes in ``--probe``
(``N x d x classes``; default: the embedded data's 2,048 x 128 x 32, and
CUB-200's 5,994 x 2,048 x 200 with 5,794 test features), at 100 % and 20 % of
the labels: first call (with compilation) and second call.

Measure on a quiet machine: other processes on the same cores distort it.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags


def _define_flags():
  """Flags, defined only when run as a program (importing it defines none)."""
  flags.DEFINE_list("num", ["10000", "60000"], "Numbers of embeddings N (comma-separated).")
  flags.DEFINE_integer("dim", 512, "Embedding dimension.")
  flags.DEFINE_integer("chunk_size", 1024, "Queries per jitted block.")
  flags.DEFINE_string("out", None, "Optional JSON file for the figures.")
  flags.DEFINE_bool("child", False, "Internal: measure one N in this process.")
  flags.DEFINE_list("probe", ["2048x128x32x512", "5994x2048x200x5794"],
                    "Linear-probe sizes: N_train x d x classes x N_test ('' = skip).")


def sop_like_embeddings(num: int, dim: int, seed: int = 0):
  """[num, dim] float32 embeddings and [num] labels, 2..12 per class, noisy class centres (noise chosen so that Recall@1 is far from 0 and 1)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  sizes = []
  while sum(sizes) < num:
    sizes.append(int(rng.integers(2, 13)))
  sizes[-1] -= sum(sizes) - num
  if sizes[-1] < 2:  # keep every class retrievable
    sizes[-2] += sizes.pop()
  labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
  centres = rng.normal(size=(len(sizes), dim)).astype(np.float32)
  features = centres[labels] + 2.5 * rng.normal(size=(num, dim)).astype(np.float32)
  return features, labels


def measure(num: int, dim: int, chunk_size: int) -> dict[str, float]:
  """Times ``retrieval_metrics`` on N SOP-like embeddings (with and without mAP)."""
  from fgjax.evaluate import retrieval
  features, labels = sop_like_embeddings(num, dim)
  ks = (1, 10, 100, 1000)
  t0 = time.perf_counter()
  ranks_only = retrieval.retrieval_metrics(features, labels, ks=ks, chunk_size=chunk_size,
                                           compute_map=False)
  t1 = time.perf_counter()
  full = retrieval.retrieval_metrics(features, labels, ks=ks, chunk_size=chunk_size)
  t2 = time.perf_counter()
  assert all(full[k] == v for k, v in ranks_only.items())
  return {"num": num, "dim": dim, "chunk_size": chunk_size, "num_classes": int(labels.max() + 1),
          "seconds_ranks_only": t1 - t0, "seconds_with_map": t2 - t1,
          "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
          "recall@1": full["recall@1"], "map": full["map"]}


def measure_probe(num: int, dim: int, num_classes: int, num_test: int, fraction: float) -> dict[str, float]:
  """Times two ``linear_probe`` calls (the first compiles) on clustered features."""
  import numpy as np

  from fgjax.evaluate import linear_probe
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(num_classes, dim)).astype(np.float32)
  train_y, test_y = rng.integers(0, num_classes, num), rng.integers(0, num_classes, num_test)
  train_x = centres[train_y] + 3.0 * rng.normal(size=(num, dim)).astype(np.float32)
  test_x = centres[test_y] + 3.0 * rng.normal(size=(num_test, dim)).astype(np.float32)
  times = []
  for _ in range(2):
    t0 = time.perf_counter()
    result = linear_probe.linear_probe(train_x, train_y, test_x, test_y, fraction=fraction)
    times.append(time.perf_counter() - t0)
  return {"num": num, "dim": dim, "num_classes": num_classes, "fraction": fraction,
          "seconds_first_call": times[0], "seconds_second_call": times[1], "top1": result["top1"]}


def main(argv):
  del argv
  f = flags.FLAGS
  if f.child:
    print(json.dumps(measure(int(f.num[0]), f.dim, f.chunk_size)))
    return
  rows = []
  for num in f.num:
    child = subprocess.run(
        [sys.executable, "-m", "fgjax.tools.eval_bench", "--child", f"--num={num}",
         f"--dim={f.dim}", f"--chunk_size={f.chunk_size}"],
        capture_output=True, text=True, check=False)
    if child.returncode != 0:
      sys.exit(f"fgjax.tools.eval_bench: N={num} failed:\n{child.stderr[-3000:]}")
    rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    r = rows[-1]
    print(f"N={r['num']:>6} d={r['dim']} classes={r['num_classes']}: ranks {r['seconds_ranks_only']:.1f} s, "
          f"with mAP {r['seconds_with_map']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GB "
          f"(R@1 {100 * r['recall@1']:.1f}, mAP {100 * r['map']:.1f})", flush=True)
  probes = []
  for size in f.probe:
    num, dim, num_classes, num_test = (int(v) for v in size.split("x"))
    for fraction in (1.0, 0.2):
      p = measure_probe(num, dim, num_classes, num_test, fraction)
      probes.append(p)
      print(f"probe N={num} d={dim} classes={num_classes} fraction={fraction}: "
            f"{p['seconds_first_call']:.2f} s with compilation, {p['seconds_second_call']:.2f} s after "
            f"(top-1 {100 * p['top1']:.1f})", flush=True)
  if f.out:
    with open(f.out, "w") as out:
      json.dump({"machine": platform.processor() or platform.machine(), "retrieval": rows,
                 "probe": probes}, out, indent=2)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
