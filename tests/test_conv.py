"""fgjax.ops.conv: the weight gradient as per-tap matmuls equals XLA's, and applies only where it may."""

import chex
import jax
import jax.numpy as jnp
import pytest
from jax import lax

from fgjax.models import resnet
from fgjax.ops import conv


def _grads(conv_fn, x, w, strides, padding):
  def loss(x, w):
    y = conv_fn(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.sum(jnp.sin(y))  # a non-trivial dL/dy
  return jax.value_and_grad(loss, argnums=(0, 1))(x, w)


@pytest.mark.parametrize("kernel, cin, cout, strides, padding", [
    (3, 8, 16, (1, 1), ((1, 1), (1, 1))),     # a ResNet 3x3
    (3, 8, 16, (2, 2), ((1, 1), (1, 1))),     # the strided 3x3 opening a stage
    (1, 8, 16, (2, 2), ((0, 0), (0, 0))),     # the 1x1 downsample
    (7, 3, 8, (2, 2), ((3, 3), (3, 3))),      # the ImageNet stem
    (3, 4, 4, (1, 2), ((0, 2), (1, 0))),      # uneven strides and padding
    (3, 4, 4, (2, 2), "SAME"),                # a padding string
])
def test_weight_gradient_equals_xlas(kernel, cin, cout, strides, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 11, 9, cin))
  w = jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, cin, cout)) * 0.2
  (y_ref, (dx_ref, dw_ref)) = _grads(lax.conv_general_dilated, x, w, strides, padding)
  (y, (dx, dw)) = _grads(conv.conv_general_dilated, x, w, strides, padding)
  chex.assert_trees_all_close((y, dx, dw), (y_ref, dx_ref, dw_ref), rtol=1e-5, atol=1e-5)
  jaxpr = str(jax.make_jaxpr(lambda w: conv.conv_general_dilated(
      x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")))(w))
  assert "custom_vjp" in jaxpr  # Eq. (1) was used, not a silent fallback


def test_bfloat16_weight_gradient_accumulates_in_float32():
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 8, 16)).astype(jnp.bfloat16)
  g = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 16)).astype(jnp.bfloat16)
  dw = conv.weight_gradient(x, g, (3, 3), (1, 1), ((1, 1), (1, 1)))
  exact = conv.weight_gradient(x.astype(jnp.float32), g.astype(jnp.float32), (3, 3), (1, 1), ((1, 1), (1, 1)))
  assert dw.dtype == jnp.bfloat16
  chex.assert_trees_all_close(dw.astype(jnp.float32), exact, rtol=1e-2, atol=1e-1)


@pytest.mark.parametrize("kwargs", [
    dict(rhs_dilation=(2, 2)),
    dict(lhs_dilation=(2, 2)),
    dict(feature_group_count=2),
    dict(dimension_numbers=("NCHW", "OIHW", "NCHW")),
])
def test_other_convolutions_are_xlas_unchanged(kwargs):
  dn = kwargs.pop("dimension_numbers", ("NHWC", "HWIO", "NHWC"))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4 // kwargs.get("feature_group_count", 1), 4))
  if dn[0] == "NCHW":
    x, w = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1))
  f = lambda w: conv.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn, **kwargs)  # noqa: E731
  ref = lambda w: lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=dn, **kwargs)  # noqa: E731
  assert "custom_vjp" not in str(jax.make_jaxpr(f)(w))
  chex.assert_trees_all_equal(jax.grad(lambda w: jnp.sum(f(w)))(w), jax.grad(lambda w: jnp.sum(ref(w)))(w))


def test_resnet_trains_the_same_with_either_convolution():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3))
  out = {}
  for impl in ("xla", "matmul_dw"):
    model = resnet.build_encoder("resnet18", width=8, cifar_stem=True, conv_impl=impl)
    variables = model.init(jax.random.PRNGKey(1), x, train=False)

    def loss(params, model=model, variables=variables):
      v, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
      return jnp.sum(jnp.tanh(v))
    out[impl] = jax.value_and_grad(loss)(variables["params"])
  chex.assert_trees_all_close(out["matmul_dw"], out["xla"], rtol=1e-4, atol=1e-5)


def test_auto_is_xla_off_the_cpu_and_the_rule_on_it():
  assert conv.resolve("auto", "gpu") == "xla" and conv.resolve("auto", "tpu") == "xla"
  assert conv.resolve("auto", "cpu") == "auto_cpu"
  assert conv.for_impl("xla") is None
  with pytest.raises(ValueError, match="im2col"):
    conv.resolve("im2col")


def _resnet18_cifar_layers(width, batch):
  """(x_shape, w_shape, strides) of every conv of a CIFAR-stem ResNet-18 on 32 px images."""
  layers, c, side = [((batch, 32, 32, 3), (3, 3, 3, width), (1, 1))], width, 32
  for stage in range(4):
    d = width * 2**stage
    for block in range(2):
      s = 2 if stage > 0 and block == 0 else 1
      layers.append(((batch, side, side, c), (3, 3, c, d), (s, s)))
      if s == 2 or c != d:
        layers.append(((batch, side, side, c), (1, 1, c, d), (s, s)))
      side //= s
      layers.append(((batch, side, side, d), (3, 3, d, d), (1, 1)))
      c = d
  return layers


def test_auto_switches_every_large_layer_and_none_of_the_quarter_width_cpu_default():
  """So 'auto' leaves the CPU default's numbers (and the :runlocal digests) exactly as they were."""
  for batch in (4, 16, 64, 128):
    assert not any(conv.matmul_dw_pays(*layer) for layer in _resnet18_cifar_layers(16, batch))
  wide = [conv.matmul_dw_pays(*layer) for layer in _resnet18_cifar_layers(64, 64)]
  assert not wide[0] and all(wide[1:])  # full width: all but the 3-channel stem


def test_a_run_may_resume_with_another_conv_impl(tmp_path):
  """It changes the gradients' rounding, not what a checkpoint holds; old run directories lack the field."""
  import json

  from fgjax import errors
  from fgjax.infra import workdir
  from fgjax.methods import registry

  saved = registry.config("moco", "runlocal")
  saved.model.conv_impl = "xla"
  old = saved.to_dict()
  del old["model"]["conv_impl"]  # written before the field existed
  (tmp_path / "checkpoints" / "8").mkdir(parents=True)
  for written in (saved.to_dict(), old):
    (tmp_path / "config.json").write_text(json.dumps(written))
    workdir.check_resume_config(str(tmp_path), registry.config("moco", "runlocal"), registry.with_defaults)
  wider = registry.config("moco", "runlocal")
  wider.model.width *= 2
  with pytest.raises(errors.WorkdirError, match="model.width"):
    workdir.check_resume_config(str(tmp_path), wider, registry.with_defaults)
