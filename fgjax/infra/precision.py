"""Compute precision: which devices can run ``model.dtype``, and what stays float32.

fgjax's mixed-precision recipe (``model.dtype='bfloat16'``, the usual one on TPUs
and recent GPUs):

* **bfloat16**: the activations of the convolutions, dense layers and
  normalisations of the encoder, heads and decoder (``dtype`` of every module in
  ``fgjax.models``); the matmuls and convolutions accumulate in float32 on the
  hardware that has bf16 units.
* **float32, whatever the compute dtype**: parameters (``param_dtype``), the
  gradients (they are gradients of float32 parameters), the optimizer state, the
  momentum (key) network, BatchNorm statistics (Flax computes batch mean and
  variance in float32 and keeps the running averages in float32), the pooled
  feature vector ``v`` (the ResNet pools in float32), the head outputs, the MoCo
  queue, the memory bank and its variance (``fgjax.ops.perturb``), every loss and its
  softmax (``fgjax.ops.losses``, ``fgjax.ops.contrastive_losses``, the instance head), and
  the Grad-CAM gradient (``fgjax.ops.gradcam``; the head it differentiates runs in
  float32, see ``ssl_common.float32_heads``).

float32 stays the default (``fgjax.config.ssl``). bfloat16 on a CPU is
allowed: without AVX512-BF16/AMX it is emulated (converted around each op) and
slower than float32, useful only to rehearse a bf16 run; with them XLA's
convolutions run it natively (measured on the 2-core AMD EPYC development
machine, MoCo v2 step of the default preset: 945 ms of CPU time per step in bf16
against 1201 ms in float32). The log line of :func:`describe` says which.

:func:`check_compute_dtype` is called by the trainer and the benchmark before
anything compiles: a GPU without bf16 units (compute capability < 8.0, e.g. a
V100 or a T4) gets one :class:`fgjax.errors.ConfigError` line naming the device.
"""

from __future__ import annotations

from typing import Any
from typing import Iterable

import jax
import jax.numpy as jnp

from fgjax.errors import ConfigError


# The first NVIDIA architecture with bfloat16 tensor cores is Ampere (sm_80).
MIN_BF16_CUDA_CAPABILITY = (8, 0)


def _capability(device: Any) -> tuple[int, int] | None:
  """``compute_capability`` of a CUDA device as ``(major, minor)``, None if it has none."""
  text = getattr(device, "compute_capability", None)
  if not text:
    return None
  try:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)
  except ValueError:
    return None


def unsupported_reason(dtype: str, device: Any) -> str | None:
  """Why ``device`` cannot compute in ``dtype`` (None: it can).

  float32 runs everywhere. bfloat16 runs on TPUs, on CPUs (emulated) and on CUDA
  GPUs of compute capability >= 8.0. A GPU that reports no numeric capability
  (ROCm names an architecture, e.g. ``gfx90a``) is not second-guessed here.
  """
  if jnp.dtype(dtype) != jnp.bfloat16:
    return None
  platform = getattr(device, "platform", "")
  if platform in ("cpu", "tpu"):
    return None
  kind = getattr(device, "device_kind", platform)
  capability = _capability(device)
  if capability is not None:  # CUDA
    if capability < MIN_BF16_CUDA_CAPABILITY:
      need = ".".join(map(str, MIN_BF16_CUDA_CAPABILITY))
      return (f"{kind} (compute capability {capability[0]}.{capability[1]}) has no bfloat16 "
              f"units (needs >= {need})")
    return None
  return None


def check_compute_dtype(dtype: str, devices: Iterable[Any], field: str = "model.dtype") -> None:
  """Raises ``ConfigError`` (one line, naming the device) if a device can't run ``dtype``.

  Call it before compiling: on an unsupported GPU XLA would otherwise either
  fail deep inside compilation or silently emulate bf16 at a fraction of the
  float32 speed.
  """
  for device in devices:
    reason = unsupported_reason(dtype, device)
    if reason is not None:
      raise ConfigError(
          f"config field {field!r}: {dtype!r} is not supported on device {device.id} ({reason}); "
          "use 'float32'")


def describe(dtype: str, devices: Iterable[Any]) -> str:
  """One log line: compute dtype, what stays float32, and a warning for bf16 on a CPU."""
  devices = list(devices)
  platforms = sorted({getattr(d, "platform", "?") for d in devices})
  line = f"compute dtype {dtype} on {len(devices)} {'/'.join(platforms)} device(s)"
  if jnp.dtype(dtype) == jnp.bfloat16:
    line += ("; parameters, optimizer state, BN statistics, losses, Grad-CAM and the memory "
             "bank stay float32")
    if "cpu" in platforms:
      if cpu_has_bf16_instructions():
        line += ("; this CPU has bfloat16 instructions (AVX512-BF16/AMX): XLA's convolutions and "
                 "matmuls run them, but float32 stays the CPU default")
      else:
        line += "; bfloat16 on this CPU is emulated and slower than float32 (use it to rehearse only)"
  return line


def cpu_has_bf16_instructions() -> bool:
  """Whether this (Linux x86) CPU lists ``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          return bool(flags & {"avx512_bf16", "amx_bf16"})
  except OSError:
    pass
  return False


def tree_dtypes(tree: Any) -> set[str]:
  """The set of dtype names of the array leaves of ``tree`` (tests and checks)."""
  return {str(jnp.asarray(leaf).dtype) for leaf in jax.tree.leaves(tree)}
