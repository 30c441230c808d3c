"""Swin Transformer (fgjax.models.swin) and its timm weights (fgjax.pretrained.layout_swin).

The reference outputs in ``tests/fixtures/pretrained/swin_t.npz`` and
``swin_cpu.npz`` come from timm 1.0.31's own ``SwinTransformer``
(``launch/make_pretrained_fixtures.py``, run where torch is installed) with
weights drawn by ``tests/reference_weights.py``; here the same weights are drawn
again without torch, converted and run in fgjax.
"""

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_weights
from fgjax.errors import PretrainedError
from fgjax.models import swin
from fgjax.pretrained import convert
from fgjax.pretrained import layout_swin

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pretrained")
SOURCE = "swin.safetensors"


def _weights(data, key="tensors"):
    spec = json.loads(str(data[key]))
    return reference_weights.draw_weights([n for n, _ in spec], [tuple(s) for _, s in spec], int(data["seed"]))


def _param_shapes(model, h, w):
    """``{('params', ...): shape}`` of the model's own parameters at ``h x w`` (no compute)."""
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3)), train=False))
    assert set(template) == {"params"}  # no BatchNorm: nothing but params
    return {path: tuple(leaf.shape) for path, leaf in flax.traverse_util.flatten_dict(dict(template)).items()}


def _variables(converted):
    return flax.traverse_util.unflatten_dict({path: jnp.asarray(x) for path, x in converted.variables.items()})


def _convert(weights, model, **kw):
    return layout_swin.swin_from_timm(convert.Tensors(dict(weights), SOURCE), model, **kw)


@pytest.fixture(scope="module")
def swin_t_data():
    data = dict(np.load(os.path.join(FIXTURES, "swin_t.npz")))
    return data, _weights(data)


# ----------------------------------------------------------------------------
# Swin-T at 224 px: timm's swin_tiny_patch4_window7_224


def test_swin_t_converted_fills_every_parameter(swin_t_data):
    data, weights = swin_t_data
    model = swin.build_swin("swin_t")
    size = int(data["image_size"])
    converted = _convert(weights, model)
    want = _param_shapes(model, size, size)
    got = {path: tuple(x.shape) for path, x in converted.variables.items()}
    assert got == want
    assert sum(int(np.prod(s)) for s in want.values()) == 27_519_354  # timm's 28,288,354 minus the head
    # Only the classifier is left (timm 1.x state_dicts hold no index / mask buffers).
    assert converted.ignored == ["head.fc.bias", "head.fc.weight"]
    assert converted.sources[("params", "layers_1", "downsample", "reduction", "kernel")] == \
        "layers.1.downsample.reduction.weight"


def test_swin_t_features_equal_timm(swin_t_data):
    data, weights = swin_t_data
    model = swin.build_swin("swin_t")
    variables = _variables(_convert(weights, model))
    images = reference_weights.draw_images(int(data["num_images"]), int(data["image_size"]), int(data["seed"]))
    v, fmap = jax.jit(lambda x: model.apply(variables, x, train=False, return_feature_map=True))(images)
    assert v.dtype == jnp.float32 and v.shape == (2, 768) and fmap.shape == (2, 7, 7, 768)
    # float32 on both sides, features of about 0.8: measured max |diff| 1.1e-6 on the pooled features and
    # 4.5e-6 on the token map (summation order of XLA's vs oneDNN's matmuls); the margins leave room for
    # other CPUs' kernels.
    np.testing.assert_allclose(np.asarray(v), data["eval_features"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(fmap), data["feature_map"], rtol=1e-4, atol=5e-5)


# ----------------------------------------------------------------------------
# swin_cpu at sizes where timm clamps windows, pads and shifts one axis only


def test_swin_cpu_small_maps_equal_timm():
    data = dict(np.load(os.path.join(FIXTURES, "swin_cpu.npz")))
    model = swin.build_swin("swin_cpu")
    sizes = [tuple(int(s) for s in hw) for hw in data["sizes"]]
    images = reference_weights.draw_images(int(data["num_images"]), max(max(s) for s in sizes), int(data["seed"]))
    for i, (h, w) in enumerate(sizes):
        converted = _convert(_weights(data, f"tensors_{i}"), model, image_size=(h, w))
        assert {p: tuple(x.shape) for p, x in converted.variables.items()} == _param_shapes(model, h, w)
        v = jax.jit(lambda var, x: model.apply(var, x, train=False))(_variables(converted), images[:, :h, :w])
        # measured max |diff| 1.5e-6 on features of about 0.6
        np.testing.assert_allclose(np.asarray(v), data[f"eval_features_{i}"], rtol=1e-4, atol=1e-5,
                                   err_msg=f"{h}x{w}: {model.stage_layout(h, w)}")


def test_stage_layout_clamps_pads_and_shifts_as_timm():
    model = swin.build_swin("swin_cpu")
    assert [(s.resolution, s.window, s.shift, s.padded) for s in model.stage_layout(16, 40)] == [
        ((8, 20), (4, 4), (2, 2), (8, 20)),
        ((4, 10), (4, 4), (0, 2), (4, 12)),  # h: 4 tokens = one window, unshifted
        ((2, 5), (2, 4), (0, 2), (2, 8)),  # h clamped to 2; w padded 5 -> 8
    ]
    # Swin-T at 224 px: no padding, and the 7 x 7 last stage is one unshifted window.
    last = swin.build_swin("swin_t").stage_layout(224, 224)[-1]
    assert (last.resolution, last.window, last.shift) == ((7, 7), (7, 7), (0, 0))


# ----------------------------------------------------------------------------
# swin_cpu on the embedded 32 px images


def test_swin_cpu_shapes_and_feature_map():
    model = swin.build_swin("swin_cpu")
    assert model.num_features == swin.feature_dim("swin_cpu") == 192
    assert swin.feature_dim("swin_t") == 768 and swin.swin_names() == ("swin_cpu", "swin_t")
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 3))
    variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, train=False))(x)
    assert set(variables) == {"params"}
    assert sum(x.size for x in jax.tree_util.tree_leaves(variables)) == 1_266_426
    v, fmap = jax.jit(lambda x: model.apply(variables, x, train=False, return_feature_map=True))(x)
    assert v.shape == (3, 192) and fmap.shape == (3, 4, 4, 192)
    assert v.dtype == fmap.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(fmap)))
    np.testing.assert_allclose(np.asarray(fmap.mean(axis=(1, 2))), np.asarray(v), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------
# Refusals


def test_missing_tensor_is_named(swin_t_data):
    _, weights = swin_t_data
    weights = dict(weights)
    del weights["layers.2.blocks.3.mlp.fc1.bias"]
    with pytest.raises(PretrainedError, match=r"'layers\.2\.blocks\.3\.mlp\.fc1\.bias' is missing"):
        _convert(weights, swin.build_swin("swin_t"))


def test_unexpected_tensor_is_named(swin_t_data):
    _, weights = swin_t_data
    weights = dict(weights, **{"layers.0.blocks.0.attn.logit_scale": np.zeros((3, 1, 1), np.float32)})
    with pytest.raises(PretrainedError, match=r"unexpected tensor 'layers\.0\.blocks\.0\.attn\.logit_scale'"):
        _convert(weights, swin.build_swin("swin_t"))


def test_buffers_and_head_are_ignored(swin_t_data):
    _, weights = swin_t_data
    # Older files (the Microsoft / early timm ones) carry the index and mask buffers.
    buffers = {"layers.0.blocks.0.attn.relative_position_index": np.zeros((49, 49), np.int64),
               "layers.0.blocks.1.attn_mask": np.zeros((64, 49, 49), np.float32)}
    converted = _convert(dict(weights, **buffers), swin.build_swin("swin_t"))
    assert converted.ignored == sorted(["head.fc.bias", "head.fc.weight", *buffers])


def test_table_of_another_window_is_refused_with_both_shapes(swin_t_data):
    _, weights = swin_t_data
    name = "layers.0.blocks.0.attn.relative_position_bias_table"
    weights = dict(weights, **{name: np.zeros((81, 3), np.float32)})  # a window-5 table
    with pytest.raises(PretrainedError, match=rf"'{name}' has shape \(81, 3\) \(window 5x5\), "
                                              r"the encoder needs \(169, 3\) \(window 7x7"):
        _convert(weights, swin.build_swin("swin_t"))


def test_window_7_file_into_clamped_window_is_refused(swin_t_data):
    _, weights = swin_t_data
    # At 192 px Swin-T's last stage has 6 x 6 tokens, so its window is clamped to 6 (a 121-row table).
    with pytest.raises(PretrainedError, match=r"'layers\.3\.blocks\.0\.attn\.relative_position_bias_table' has "
                                              r"shape \(169, 24\) \(window 7x7\), the encoder needs \(121, 24\)"):
        _convert(weights, swin.build_swin("swin_t"), image_size=192)


def test_file_of_another_size_is_refused(swin_t_data):
    _, weights = swin_t_data
    with pytest.raises(PretrainedError, match=r"'patch_embed\.proj\.weight' has shape \(96, 3, 4, 4\), the "
                                              r"encoder needs \(48, 3, 2, 2\)"):
        _convert(weights, swin.build_swin("swin_cpu"))


def test_unsupported_input_size_is_a_value_error():
    model = swin.build_swin("swin_cpu")
    with pytest.raises(ValueError, match=r"input size 36x32 is not supported.* = 8"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 36, 32, 3)), train=False)
    with pytest.raises(ValueError, match=r"input size 100x100 is not supported.* = 32"):
        swin.build_swin("swin_t").stage_layout(100, 100)


def test_inconsistent_fields_are_value_errors():
    x = jnp.zeros((1, 32, 32, 3))
    with pytest.raises(ValueError, match=r"num_heads\[1\]=5 must divide stage 1's width 96"):
        swin.build_swin("swin_cpu", num_heads=(3, 5, 12)).init(jax.random.PRNGKey(0), x, train=False)
    with pytest.raises(ValueError, match=r"depths=\(2, 2\) and num_heads=\(3, 6, 12\)"):
        swin.build_swin("swin_cpu", depths=(2, 2)).init(jax.random.PRNGKey(0), x, train=False)
    with pytest.raises(ValueError, match=r"unknown Swin 'swin_s'"):
        swin.build_swin("swin_s")
