r"""A convolution whose weight gradient is a sum of matmuls: XLA:CPU's slow spot, avoided.

  y = conv(x, w)                      # x: [N, H, W, C] (NHWC), w: [kh, kw, C, D] (HWIO)
  dL/dw[i, j] = sum_{n, p, q} xpad[n, s*p + i, s*q + j, :]^T  g[n, p, q, :]        (1)

where ``g = dL/dy: [N, H', W', D]``, ``s`` the stride and ``xpad`` the padded
input. XLA's CPU backend has no backward-filter kernel: it rewrites the weight
gradient as a forward convolution with batch and channels swapped, behind
transposes of both operands, and that convolution runs far below the forward's
speed (ResNet-18 3x3 conv, 64 channels at 32 px, batch 64, quiet 2-core AVX2
CPU: forward 60 ms, about 80 GFLOP/s; weight gradient 533-736 ms, 7-9
GFLOP/s). Eq. (1) instead takes, for each of the ``kh * kw`` kernel taps, the
strided slice of the padded input that tap sees and one
``[C, N H' W'] @ [N H' W', D]`` matmul -- the same FLOPs in the shape CPU
matmul kernels are fast at (131-176 ms, 27-37 GFLOP/s, on the same layer).

:func:`conv_general_dilated` has ``lax.conv_general_dilated``'s signature, so a
Flax ``nn.Conv(..., conv_general_dilated=conv_general_dilated)`` uses it. The
forward and the input gradient stay XLA's own convolutions; only the weight
gradient changes, and only where Eq. (1) applies (NHWC/HWIO, no dilation, one
feature group, non-negative padding); anything else is
``lax.conv_general_dilated`` unchanged. The result equals XLA's weight gradient
to float32 rounding (the summation order differs): ``tests/test_conv.py``.

It is meant for the CPU: on a GPU or TPU, cuDNN and XLA compute the weight
gradient directly, and :func:`resolve` keeps XLA's convolution there.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

IMPLEMENTATIONS = ("auto", "xla", "matmul_dw")  # what model.conv_impl may say
_NHWC = ("NHWC", "HWIO", "NHWC")


def resolve(impl: str, platform: str | None = None) -> str:
  """``'auto'`` -> ``'auto_cpu'`` (per layer, :func:`matmul_dw_pays`) on a CPU, ``'xla'`` elsewhere.

  ``'xla'`` and ``'matmul_dw'`` (every layer where Eq. (1) applies) pass through.

  ``platform``: ``'cpu'``, ``'gpu'``, ``'tpu'``; default ``jax.default_backend()``.
  """
  if impl == "auto_cpu":
    return impl
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"conv implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
  if impl != "auto":
    return impl
  return "auto_cpu" if (platform or jax.default_backend()) == "cpu" else "xla"


def _xla_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def weight_gradient(x: jax.Array, g: jax.Array, kernel_hw: tuple[int, int], strides: tuple[int, int],
                    padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Eq. (1): ``dL/dw: [kh, kw, C, D]`` from ``x: [N, H, W, C]`` and ``g: [N, H', W', D]``.

  Accumulates in float32 and returns ``g``'s dtype (what XLA's gradient returns).
  """
  kh, kw = kernel_hw
  sh, sw = strides
  n, oh, ow, d = g.shape
  c = x.shape[-1]
  xpad = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  g2 = g.reshape(n * oh * ow, d)
  taps = []
  for i in range(kh):
    for j in range(kw):
      # The pixels tap (i, j) multiplied for every output position: [N, H', W', C].
      seen = lax.slice(xpad, (0, i, j, 0), (n, i + sh * (oh - 1) + 1, j + sw * (ow - 1) + 1, c), (1, sh, sw, 1))
      taps.append(lax.dot_general(seen.reshape(n * oh * ow, c), g2, (((0,), (0,)), ((), ())),
                                  preferred_element_type=jnp.float32))
  return jnp.stack(taps).reshape(kh, kw, c, d).astype(g.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul_dw(x, w, strides, padding):
  return _xla_conv(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
  return _xla_conv(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, g):
  x, w = residuals
  _, input_vjp = jax.vjp(lambda x: _xla_conv(x, w, strides, padding), x)
  (dx,) = input_vjp(g)
  dw = weight_gradient(x, g, w.shape[:2], strides, padding).astype(w.dtype)
  return dx, dw


_conv_matmul_dw.defvjp(_conv_fwd, _conv_bwd)


def _is_nhwc(x, w, dimension_numbers) -> bool:
  """Whether ``dimension_numbers`` (strings or Flax's ``ConvDimensionNumbers``) mean NHWC/HWIO/NHWC."""
  if x.ndim != 4 or w.ndim != 4 or dimension_numbers is None:
    return False
  given = lax.conv_dimension_numbers(x.shape, w.shape, dimension_numbers)
  return given == lax.conv_dimension_numbers(x.shape, w.shape, _NHWC)


def _applies(x, w, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
             batch_group_count) -> bool:
  if x.ndim != 4 or w.ndim != 4 or feature_group_count != 1 or batch_group_count != 1:
    return False
  if any(d != 1 for d in (lhs_dilation or (1, 1))) or any(d != 1 for d in (rhs_dilation or (1, 1))):
    return False
  if not _is_nhwc(x, w, dimension_numbers):
    return False
  return not isinstance(padding, str) and all(lo >= 0 and hi >= 0 for lo, hi in padding)


def matmul_dw_pays(x_shape: Sequence[int], w_shape: Sequence[int], strides: Sequence[int]) -> bool:
  """Whether Eq. (1) is worth it for this layer (the ``'auto'`` rule): a large layer.

  Large: ``C_in * C_out * H' * W' >= 2**20`` for one image (the FLOPs per image
  and kernel tap over 2). Measured per layer of a CIFAR-stem ResNet-18, batch
  64, on a quiet 2-core AVX2 CPU (``python -m fgjax.tools.bench --breakdown``;
  ms of XLA's weight gradient vs Eq. (1), ``docs/speed.md``): every full-width
  layer is large (2.1M-4.2M) and gains -- 64 ch at 32 px 533 vs 131, 128 ch at
  16 px 95 vs 77, the 1x1 stride-2 downsamples 27 vs 3.0 and 16 vs 2.8, the
  strided 3x3s 59 vs 43 and 35 vs 20. At quarter width (every layer 131k-262k)
  single layers gain a few ms or lose (16 ch at 32 px: 16.4 vs 21.8), and the
  whole step measured the same either way, so the CPU default keeps XLA's
  convolutions and its numbers bit for bit.

  The rule reads one image, not the batch: inside ``vmap`` over BatchNorm
  groups a layer sees one group, while XLA runs the whole batch as one
  convolution.
  """
  _, h, w, cin = x_shape
  out_positions = -(-h // strides[0]) * -(-w // strides[1])
  return cin * w_shape[-1] * out_positions >= 2**20


def _conv(rule):
  """``lax.conv_general_dilated``'s signature; Eq. (1)'s weight gradient where ``rule(x, w, strides)``."""

  def conv_general_dilated(lhs, rhs, window_strides: Sequence[int], padding, lhs_dilation=None,
                           rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                           batch_group_count: int = 1, precision=None, preferred_element_type=None):
    if isinstance(padding, str) and _is_nhwc(lhs, rhs, dimension_numbers):
      padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    if (precision is None and preferred_element_type is None
        and _applies(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count,
                     batch_group_count)
        and rule(lhs.shape, rhs.shape, window_strides)):
      pads = tuple((int(lo), int(hi)) for lo, hi in padding)
      return _conv_matmul_dw(lhs, rhs, tuple(int(s) for s in window_strides), pads)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                    feature_group_count=feature_group_count,
                                    batch_group_count=batch_group_count, precision=precision,
                                    preferred_element_type=preferred_element_type)

  return conv_general_dilated


conv_general_dilated = _conv(lambda *_: True)
conv_general_dilated.__doc__ = """``lax.conv_general_dilated`` with Eq. (1)'s weight gradient wherever it applies.

Same arguments and result as ``lax.conv_general_dilated``; the forward value is
XLA's. ``padding`` as a string (``'SAME'``) is converted to explicit pairs.
"""
conv_general_dilated_auto = _conv(matmul_dw_pays)
conv_general_dilated_auto.__doc__ = """:func:`conv_general_dilated` in the layers where :func:`matmul_dw_pays`, XLA's elsewhere."""


def layer_uses_matmul_dw(impl: str, x_shape, w_shape, strides) -> bool:
  """Whether a layer of these shapes gets Eq. (1) under ``model.conv_impl=impl`` (where Eq. (1) applies)."""
  impl = resolve(impl)
  return impl == "matmul_dw" or (impl == "auto_cpu" and matmul_dw_pays(x_shape, w_shape, strides))


def for_impl(impl: str):
  """The ``conv_general_dilated`` callable of ``model.conv_impl`` (None: Flax's default, XLA's)."""
  impl = resolve(impl)
  return {"matmul_dw": conv_general_dilated, "auto_cpu": conv_general_dilated_auto}.get(impl)
