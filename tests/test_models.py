"""Tests for fgjax.models: ResNet encoders, heads, decoder (tiny widths, 16-32 px)."""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.models import decoder as decoder_lib
from fgjax.models import heads
from fgjax.models import resnet


# The library takes any key. Tests use 'rbg' keys and jit their inits because on this
# CPU each threefry init compiles for seconds (op by op, eagerly, even longer).
RNG = jax.random.key(0, impl="rbg")


def _normal(*shape, seed=1):
    # NumPy inputs: no per-shape XLA compile, unlike jax.random in eager mode.
    return jnp.asarray(np.random.RandomState(seed).normal(size=shape), jnp.float32)


def _images(b, s, seed=1):
    return _normal(b, s, s, 3, seed=seed)


def _init(module, *args, **kwargs):
    """module.init(RNG, *args, **kwargs) as one compiled program."""
    return jax.jit(functools.partial(module.init, **kwargs))(RNG, *args)


@functools.cache
def _encoder(name, width, cifar_stem):
    """(model, variables); parameter shapes do not depend on the input size."""
    model = resnet.build_encoder(name, width=width, cifar_stem=cifar_stem)
    return model, _init(model, jnp.zeros((1, 16, 16, 3)), train=False)


def _apply(model, **kwargs):
    """Jitted model.apply(variables, x, **kwargs) (one compile instead of op by op)."""
    return jax.jit(lambda variables, x: model.apply(variables, x, **kwargs))


def _param_count(model, x_shape):
    """Parameter count from shapes only (jax.eval_shape: no real init)."""
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), RNG, x)
    return sum(math.prod(p.shape) for p in jax.tree.leaves(variables["params"]))


# ----------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize(
    "name,width,cifar_stem,size,expected_map",
    [
        ("resnet18", 8, True, 16, 2),    # 16 -> 16, 8, 4, 2
        ("resnet18", 16, False, 32, 1),  # 32 -> 16 (conv) -> 8 (pool) -> 8, 4, 2, 1
        ("resnet18", 16, False, 64, 2),  # 64 -> 32 -> 16 -> 16, 8, 4, 2
        ("resnet50", 8, True, 16, 2),
        ("resnet50", 16, False, 32, 1),
        ("resnet50", 8, False, 224, 7),  # the papers' 7x7 map
    ],
)
def test_resnet_output_shapes(name, width, cifar_stem, size, expected_map):
    # Shapes and dtypes only: traced with eval_shape, nothing is compiled.
    model = resnet.build_encoder(name, width=width, cifar_stem=cifar_stem)
    n = resnet.feature_dim(name, width)
    assert n == model.num_features == width * (8 if name == "resnet18" else 32)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(RNG, x, train=False), x)
    v = jax.eval_shape(lambda variables, x: model.apply(variables, x, train=False),
                       variables, x)
    assert v.shape == (2, n) and v.dtype == jnp.float32
    (v2, fmap), _ = jax.eval_shape(lambda variables, x: model.apply(
        variables, x, train=True, return_feature_map=True, mutable=["batch_stats"]),
        variables, x)
    assert v2.shape == (2, n) and v2.dtype == jnp.float32
    assert fmap.shape == (2, expected_map, expected_map, n) and fmap.dtype == jnp.float32


def test_feature_map_values():
    model, variables = _encoder("resnet18", 8, True)
    x = _images(2, 16)
    v, (v2, fmap) = jax.jit(lambda variables, x: (
        model.apply(variables, x, train=False),
        model.apply(variables, x, train=False, return_feature_map=True)))(variables, x)
    chex.assert_shape(fmap, (2, 2, 2, 64))
    # v is the global average pool of the returned map (spatial Grad-CAM relies on it).
    np.testing.assert_allclose(v2, fmap.mean(axis=(1, 2)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v2, v, rtol=1e-6, atol=1e-6)
    assert bool(jnp.all(fmap >= 0)) and bool(jnp.any(fmap > 0))  # post-ReLU map


@pytest.mark.parametrize("name,expected", [("resnet18", 11_176_512),
                                           ("resnet34", 21_797_672 - 513_000),
                                           ("resnet50", 23_508_032)])
def test_param_count_matches_torchvision_without_fc(name, expected):
    # torchvision counts with fc: 11,689,512 / 21,797,672 / 25,557,032.
    model = resnet.build_encoder(name)  # width 64, ImageNet stem
    assert _param_count(model, (1, 64, 64, 3)) == expected


def test_factories_equal_build_encoder():
    assert resnet.resnet18(width=8) == resnet.build_encoder("resnet18", width=8)
    assert resnet.resnet34() == resnet.build_encoder("resnet34")
    assert resnet.resnet50(cifar_stem=True) == resnet.build_encoder(
        "resnet50", cifar_stem=True)
    assert resnet.feature_dim("resnet50") == 2048 and resnet.feature_dim("resnet18") == 512


def test_build_encoder_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        resnet.build_encoder("resnet101")
    for valid in ("resnet18", "resnet34", "resnet50"):
        assert valid in str(err.value)
    with pytest.raises(ValueError, match="resnet18"):
        resnet.feature_dim("vit", 64)


def test_bad_block_raises():
    model = resnet.ResNet(stage_sizes=(1,), block="wide")
    with pytest.raises(ValueError, match="block"):
        jax.eval_shape(lambda x: model.init(RNG, x, train=False),
                       jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))


def test_batch_stats_update_only_in_train_mode():
    model, variables = _encoder("resnet18", 8, True)
    x = _images(4, 16) * 3.0 + 1.0  # far from the initial mean 0 / var 1
    stats = variables["batch_stats"]
    (_, updates), (_, eval_updates) = jax.jit(lambda variables, x: (
        model.apply(variables, x, train=True, mutable=["batch_stats"]),
        model.apply(variables, x, train=False, mutable=["batch_stats"])))(variables, x)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, updates["batch_stats"])
    assert all(jax.tree.leaves(changed))
    # momentum 0.9: new_mean = 0.9 * 0 + 0.1 * batch_mean, checked on the stem BN.
    stem_out = jax.lax.conv_general_dilated(
        x, variables["params"]["stem"]["conv"]["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(updates["batch_stats"]["stem"]["bn"]["mean"],
                               0.1 * stem_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    # Eval mode leaves the statistics as they are.
    chex.assert_trees_all_equal(eval_updates["batch_stats"], stats)


def test_eval_mode_is_per_example_train_mode_is_not():
    model, variables = _encoder("resnet18", 8, True)
    x = _images(3, 16)

    def run(variables, x):
        evaluate = lambda x: model.apply(variables, x, train=False)  # noqa: E731
        train = lambda x: model.apply(  # noqa: E731
            variables, x, train=True, mutable=["batch_stats"])[0]
        return evaluate(x)[:1], evaluate(x[:1]), train(x)[:1], train(x[:2])[:1]

    eval_full, eval_one, train_full, train_two = jax.jit(run)(variables, x)
    # Running averages in eval: an example's feature does not depend on its batch...
    np.testing.assert_allclose(eval_full, eval_one, rtol=1e-5, atol=1e-5)
    # ... whereas with batch statistics it does.
    assert not np.allclose(train_full, train_two, atol=1e-4)


def test_bn_axis_name_gives_sync_bn():
    # Two "devices" (vmap over a named axis) with SyncBN == one device on the full batch.
    per_device, variables = _encoder("resnet18", 8, True)
    synced = resnet.resnet18(width=8, cifar_stem=True, bn_axis_name="data")
    x = _images(4, 16)

    def on_two_devices(model):
        per_shard = lambda xs: model.apply(  # noqa: E731
            variables, xs, train=True, mutable=["batch_stats"])[0]
        return jax.vmap(per_shard, axis_name="data")(x.reshape(2, 2, 16, 16, 3)).reshape(4, -1)

    full, synced_out, per_device_out = jax.jit(lambda: (
        per_device.apply(variables, x, train=True, mutable=["batch_stats"])[0],
        on_two_devices(synced), on_two_devices(per_device)))()
    np.testing.assert_allclose(synced_out, full, rtol=1e-4, atol=1e-4)
    assert not np.allclose(per_device_out, full, atol=1e-3)


def test_kaiming_fan_out_init():
    _, variables = _encoder("resnet18", 8, True)
    kernel = variables["params"]["stage4_block2"]["conv_bn1"]["conv"]["kernel"]
    chex.assert_shape(kernel, (3, 3, 64, 64))
    fan_out = 3 * 3 * kernel.shape[-1]
    np.testing.assert_allclose(np.std(kernel), math.sqrt(2.0 / fan_out), rtol=0.02)
    assert abs(float(np.mean(kernel))) < 1e-3
    # Untruncated normal (torchvision): values beyond 2 std exist (~4.6% of them).
    assert np.mean(np.abs(kernel) > 2 * math.sqrt(2.0 / fan_out)) > 0.03


def test_imagenet_stem_pads_like_pytorch():
    # 7x7 stride-2 conv with padding 3 on both sides (Flax 'SAME' would pad (2, 3)).
    model = resnet.ResNet(stage_sizes=(1,), block="basic", width=8)
    x = _images(2, 16)
    variables = _init(model, x, train=False)
    _, updates = _apply(model, train=True, mutable=["batch_stats"])(variables, x)
    stem_out = jax.lax.conv_general_dilated(
        x, variables["params"]["stem"]["conv"]["kernel"], (2, 2), ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(updates["batch_stats"]["stem"]["bn"]["mean"],
                               0.1 * stem_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block,last", [("basic", "conv_bn2"), ("bottleneck", "conv_bn3")])
def test_zero_init_last_bn(block, last):
    x = jnp.zeros((1, 16, 16, 3))
    for zero_init in (True, False):
        model = resnet.ResNet(stage_sizes=(1, 1), block=block, width=8, cifar_stem=True,
                              zero_init_last_bn=zero_init)
        params = _init(model, x, train=False)["params"]
        for name in ("stage1_block1", "stage2_block1"):
            scale = params[name][last]["bn"]["scale"]
            assert float(jnp.abs(scale).max()) == (0.0 if zero_init else 1.0)
            assert float(params[name]["conv_bn1"]["bn"]["scale"].min()) == 1.0
            if name == "stage2_block1":  # the shortcut's BN is never zeroed
                assert float(params[name]["downsample"]["bn"]["scale"].min()) == 1.0


def test_bfloat16_compute_float32_params_and_output():
    _, variables = _encoder("resnet18", 8, True)  # params of the float32 model
    model = resnet.resnet18(width=8, cifar_stem=True, dtype=jnp.bfloat16)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(
        jax.eval_shape(lambda x: model.init(RNG, x, train=False),
                       jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))))
    x = _images(2, 16)
    f32 = resnet.resnet18(width=8, cifar_stem=True)
    ((v, fmap), updates), (v32, _), (_, inter) = jax.jit(lambda variables, x: (
        model.apply(variables, x, train=True, return_feature_map=True,
                    mutable=["batch_stats"]),
        f32.apply(variables, x, train=True, mutable=["batch_stats"]),
        model.apply(variables, x, train=False,
                    capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Conv))))(
                        variables, x)
    assert v.dtype == jnp.float32 and fmap.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(updates))
    # Close to the float32 model with the same parameters (bf16: ~3 significant digits).
    np.testing.assert_allclose(v, v32, rtol=0.1, atol=0.1)
    # The compute really is bf16: every conv output has that dtype.
    conv_outputs = jax.tree.leaves(inter)
    assert conv_outputs and all(o.dtype == jnp.bfloat16 for o in conv_outputs)


def test_gradients_flow_to_all_params():
    model, variables = _encoder("resnet18", 8, True)
    x = _images(2, 16)

    def loss(params):
        v, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                           x, train=True, mutable=["batch_stats"])
        return jnp.sum(v**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    nonzero = jax.tree.map(lambda g: bool(jnp.any(g != 0)), grads)
    assert all(jax.tree.leaves(nonzero))


# ----------------------------------------------------------------------------- heads


def test_projection_head_is_mlp_without_normalisation():
    head = heads.ProjectionHead(hidden_dims=(32,), out_dim=8)
    x = _normal(5, 16)
    variables = _init(head, x)
    assert set(variables) == {"params"}  # no BN
    out = _apply(head)(variables, x)
    chex.assert_shape(out, (5, 8))
    assert out.dtype == jnp.float32
    assert not np.allclose(np.linalg.norm(out, axis=-1), 1.0)  # the caller normalises
    p = variables["params"]
    ref = np.maximum(x @ p["dense1"]["kernel"] + p["dense1"]["bias"], 0)
    ref = ref @ p["out"]["kernel"] + p["out"]["bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # torch.nn.Linear's init: uniform within +-1/sqrt(fan_in).
    assert float(jnp.abs(p["dense1"]["kernel"]).max()) <= 1 / math.sqrt(16)
    assert float(jnp.abs(p["dense1"]["kernel"]).max()) > 0.9 / math.sqrt(16)
    # Two hidden layers -> three Dense layers.
    two = jax.eval_shape(heads.ProjectionHead(hidden_dims=(32, 32), out_dim=8).init, RNG, x)
    assert set(two["params"]) == {"dense1", "dense2", "out"}


def test_simsiam_projector_has_bn_and_last_bn_without_affine():
    proj = heads.SimSiamProjector(hidden_dim=32, out_dim=16)
    x = _normal(8, 24) * 5.0 + 3.0
    variables = _init(proj, x, train=False)
    assert "batch_stats" in variables
    assert set(variables["batch_stats"]) == {"bn1", "bn2", "bn3"}
    p = variables["params"]
    assert set(p["bn1"]) == {"scale", "bias"} and "bn3" not in p  # last BN: no affine
    assert all("bias" not in p[f"dense{i}"] for i in (1, 2, 3))
    out, updates = _apply(proj, train=True, mutable=["batch_stats"])(variables, x)
    chex.assert_shape(out, (8, 16))
    assert out.dtype == jnp.float32
    # Non-affine BN in train mode: every output column has mean 0 and variance ~1.
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=0), 1.0, rtol=1e-2)
    assert "bn3" in updates["batch_stats"]


def test_simsiam_predictor_shapes_and_bn():
    pred = heads.SimSiamPredictor(hidden_dim=8, out_dim=16)
    x = _normal(6, 16)
    variables = _init(pred, x, train=False)
    assert set(variables["batch_stats"]) == {"bn1"}
    chex.assert_shape(variables["params"]["dense1"]["kernel"], (16, 8))
    assert "bias" not in variables["params"]["dense1"]
    assert "bias" in variables["params"]["out"]
    out, _ = _apply(pred, train=True, mutable=["batch_stats"])(variables, x)
    chex.assert_shape(out, (6, 16))
    assert out.dtype == jnp.float32


def test_linear_classifier_and_head_dtypes():
    clf = heads.LinearClassifier(num_classes=7)
    x = _normal(3, 10)
    variables = _init(clf, x)
    logits = _apply(clf)(variables, x)
    chex.assert_shape(logits, (3, 7))
    p = variables["params"]["out"]
    np.testing.assert_allclose(logits, x @ p["kernel"] + p["bias"], rtol=1e-5, atol=1e-6)
    for module in (heads.LinearClassifier(num_classes=7, dtype=jnp.bfloat16),
                   heads.ProjectionHead(hidden_dims=(8,), out_dim=4, dtype=jnp.bfloat16)):
        v = _init(module, x)
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v))
        assert _apply(module)(v, x).dtype == jnp.float32


# ----------------------------------------------------------------------------- decoder


@pytest.mark.parametrize("size,num_upsamples,upsample", [
    (32, 3, "resize"), (64, 3, "resize"), (32, 5, "transpose"), (16, 0, "resize")])
def test_decoder_output_shape(size, num_upsamples, upsample):
    dec = decoder_lib.Decoder(image_size=size, base_channels=32,
                              num_upsamples=num_upsamples, upsample=upsample)
    v = _normal(2, 24)
    variables = _init(dec, v)
    assert set(variables) == {"params"}  # no mutable state (no BatchNorm)
    out = _apply(dec)(variables, v)
    chex.assert_shape(out, (2, size, size, 3))
    assert out.dtype == jnp.float32
    seed = size // 2**num_upsamples
    chex.assert_shape(variables["params"]["seed_dense"]["kernel"], (24, seed * seed * 32))


def test_decoder_channels_halve_with_floor():
    dec = decoder_lib.Decoder(image_size=32, base_channels=64, num_upsamples=5)
    shapes = jax.eval_shape(dec.init, RNG, jax.ShapeDtypeStruct((1, 8), jnp.float32))
    channels = [shapes["params"][f"up{i}_conv"]["kernel"].shape[-1] for i in range(1, 6)]
    assert channels == [32, 16, 16, 16, 16]
    assert shapes["params"]["out_conv"]["kernel"].shape == (3, 3, 16, 3)


def test_decoder_paper_preset_224():
    dec = decoder_lib.Decoder(image_size=224, base_channels=16, num_upsamples=5)
    v = jax.ShapeDtypeStruct((1, 2048), jnp.float32)
    shapes = jax.eval_shape(dec.init, RNG, v)
    chex.assert_shape(shapes["params"]["seed_dense"]["kernel"], (2048, 7 * 7 * 16))
    assert jax.eval_shape(dec.apply, shapes, v).shape == (1, 224, 224, 3)


@pytest.mark.parametrize("size,num_upsamples", [(30, 3), (224, 6), (0, 1)])
def test_decoder_bad_image_size_raises(size, num_upsamples):
    dec = decoder_lib.Decoder(image_size=size, num_upsamples=num_upsamples)
    with pytest.raises(ValueError, match="image_size"):
        jax.eval_shape(dec.init, RNG, jax.ShapeDtypeStruct((1, 8), jnp.float32))


def test_decoder_is_trainable_and_bf16():
    dec = decoder_lib.Decoder(image_size=16, base_channels=16, num_upsamples=2,
                              dtype=jnp.bfloat16)
    v = _normal(2, 8)
    params = _init(dec, v)["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    target = _images(2, 16)

    def loss(p):
        out = dec.apply({"params": p}, v)
        return jnp.mean((out - target) ** 2), out

    grads, out = jax.jit(jax.grad(loss, has_aux=True))(params)
    assert out.dtype == jnp.float32
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


def test_initial_state_is_reproducible_and_within_an_ulp_of_the_default_compile():
  """``spec.initial_state`` compiles the init at XLA level 0 on CPU: the same values at every call (the trainer,
  the random-init baseline and the benchmarks agree), and no further than the last bits from the values the
  default optimisation level gives (the normal draws' multiply-adds may be fused there)."""
  from fgjax.methods import spec
  module = nn.Dense(64, kernel_init=nn.initializers.normal(1.0))
  init_state = lambda rng: module.init(rng, jnp.zeros((1, 32)))["params"]  # noqa: E731
  setup = spec.Setup(nets=module, tx=None, decoder_tx=None, init_state=init_state)
  rng = jax.random.PRNGKey(3)  # threefry: the keys the trainer uses
  first, second = spec.initial_state(setup, rng), spec.initial_state(setup, rng)
  chex.assert_trees_all_equal(first, second)
  default = jax.jit(init_state)(rng)
  np.testing.assert_array_max_ulp(np.asarray(first["kernel"]), np.asarray(default["kernel"]), maxulp=4)
  assert float(jnp.std(first["kernel"])) == pytest.approx(1.0, abs=0.05)  # a real normal draw, not zeros
