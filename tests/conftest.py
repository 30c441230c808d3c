"""Test session setup: 4 fake CPU devices and a shared compilation cache.

``JAX_NUM_CPU_DEVICES`` must be set before JAX initialises its backend, so it is
set here, at collection time. Single-device tests build a mesh of one device.
The persistent compilation cache lets tests that compile the same step (e.g. a
run and its resumption) pay for XLA compilation once.
"""

import os
import tempfile


os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")

import jax  # noqa: E402


jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("FGJAX_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "fgjax_test_jax_cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
