"""The benchmark's building blocks run and count FLOPs (no timing assertions: speed is measured, not tested)."""

import jax
import pytest

from fgjax import bench
from fgjax import config_lib


def test_matmul_ceiling_is_positive():
  assert bench.matmul_ceiling_gflops(64, repeats=2) > 0


@pytest.mark.parametrize("method", ["moco", "perturb_moco"])
def test_time_step_reports_flops_and_rates(method):
  cfg = config_lib.ssl_config("perturb_moco", "runlocal")
  r = bench.time_step(cfg, method, steps=1, warmup=0, devices=jax.devices()[:1])
  assert r["gflop_per_step"] > 0 and r["ms_per_step"] > 0
  assert r["images_per_s"] == pytest.approx(cfg.data.global_batch_size / (r["ms_per_step"] / 1e3))


def test_retrieval_benchmark_measures_a_small_set():
  from fgjax.evaluate import bench as eval_bench
  features, labels = eval_bench.sop_like_embeddings(300, 16)
  sizes = __import__("numpy").bincount(labels)
  assert features.shape == (300, 16) and sizes.min() >= 2 and sizes.max() <= 14
  r = eval_bench.measure(300, 16, chunk_size=64)
  assert r["seconds_with_map"] > 0 and r["peak_rss_gb"] > 0 and 0 < r["map"] <= 1


def test_probe_benchmark_measures_a_small_set():
  from fgjax.evaluate import bench as eval_bench
  r = eval_bench.measure_probe(200, 8, 4, 100, fraction=0.5)
  assert r["seconds_first_call"] > 0 and r["seconds_second_call"] > 0 and 0 <= r["top1"] <= 1
