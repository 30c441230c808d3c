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
