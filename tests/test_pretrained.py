"""Pretrained weights (fgjax.pretrained): the imported encoders compute torchvision's / timm's functions.

The reference outputs in ``tests/fixtures/pretrained/<arch>.npz`` come from real
torchvision / timm code (``launch/make_pretrained_fixtures.py``, run where torch
is installed), with weights drawn by ``tests/reference_weights.py``; here the
same weights are drawn again without torch, converted and run in fgjax.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_weights
from fgjax.errors import PretrainedError
from fgjax.models import resnet
from fgjax.models import vit
from fgjax.pretrained import convert
from fgjax.pretrained import layout_resnet
from fgjax.pretrained import layout_vit
from fgjax.pretrained import load

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "pretrained")


def _fixture(arch):
  data = dict(np.load(os.path.join(FIXTURES, f"{arch}.npz")))
  spec = json.loads(str(data["tensors"]))
  weights = reference_weights.draw_weights([n for n, _ in spec], [tuple(s) for _, s in spec], int(data["seed"]))
  return data, weights


def _template(model, size):
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False))


def _load(weights, model, size, layout, **kw):
  template = _template(model, size)
  converted = layout(convert.Tensors(dict(weights), "file.safetensors"), model, **kw)
  return load.check_against(converted, dict(template), "file.safetensors"), converted


# ----------------------------------------------------------------------------
# ResNet-50 (torchvision)


@pytest.fixture(scope="module")
def resnet50_imported():
  data, weights = _fixture("resnet50")
  model = resnet.build_encoder("resnet50")
  variables, converted = _load(weights, model, int(data["image_size"]), layout_resnet.resnet_from_torch)
  return data, model, variables, converted


def test_resnet50_eval_features_equal_torchvision(resnet50_imported):
  data, model, variables, converted = resnet50_imported
  images = reference_weights.draw_images(int(data["num_images"]), int(data["image_size"]), int(data["seed"]))
  v = jax.jit(lambda x: model.apply(variables, x, train=False))(images)
  np.testing.assert_allclose(np.asarray(v), data["eval_features"], rtol=1e-4, atol=1e-5)
  # Only the classifier is left out (the drawn weights hold no integer num_batches_tracked); every encoder
  # variable was filled (check_against).
  assert converted.ignored == ["fc.bias", "fc.weight"]


def test_resnet50_train_mode_batchnorm_equals_torchvision(resnet50_imported):
  data, model, variables, _ = resnet50_imported
  images = reference_weights.draw_images(int(data["num_images"]), int(data["image_size"]), int(data["seed"]))
  v, updates = jax.jit(lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"]))(images)
  # Batch statistics of 4 images at 2 x 2 positions in the last stage divide by a 16-sample standard deviation,
  # which amplifies float32 summation-order differences (XLA's convolutions vs oneDNN's): 2.5e-4 at most on
  # features of about 1 (measured; a two-pass variance does not change it). The eval path agrees at 1e-5.
  np.testing.assert_allclose(np.asarray(v), data["train_features"], rtol=1e-4, atol=5e-4)
  # Running means move as PyTorch's (momentum 0.1 = Flax's 0.9). (Running variances differ by design:
  # PyTorch's update uses the unbiased batch variance, Flax's the biased one.)
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["stem"]["bn"]["mean"]),
                             data["train_bn1_running_mean"], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------
# ViT-S/16 (timm)


def test_vit_s16_features_equal_timm():
  data, weights = _fixture("vit_s16")
  model, size = vit.build_vit("vit_s16"), int(data["image_size"])
  pos_shape = tuple(_template(model, size)["params"]["pos_embed"].shape)
  variables, converted = _load(weights, model, size, layout_vit.vit_from_timm, pos_embed_shape=pos_shape)
  assert converted.ignored == ["head.bias", "head.weight"]
  images = reference_weights.draw_images(int(data["num_images"]), size, int(data["seed"]))
  v = jax.jit(lambda x: model.apply(variables, x, train=False))(images)
  np.testing.assert_allclose(np.asarray(v), data["eval_features"], rtol=1e-4, atol=1e-4)


def test_vit_position_embeddings_resized_as_timm():
  data, weights = _fixture("vit_s16")
  model, size = vit.build_vit("vit_s16"), int(data["small_image_size"])
  pos_shape = tuple(_template(model, size)["params"]["pos_embed"].shape)
  assert pos_shape == (1, 17, 384)  # 64 px / 16 = a 4 x 4 grid, from the file's 14 x 14
  variables, _ = _load(weights, model, size, layout_vit.vit_from_timm, pos_embed_shape=pos_shape)
  np.testing.assert_allclose(variables["params"]["pos_embed"], data["small_pos_embed"], rtol=1e-5, atol=1e-6)
  images = reference_weights.draw_images(int(data["num_images"]), size, int(data["seed"]))
  v = jax.jit(lambda x: model.apply(variables, x, train=False))(images)
  np.testing.assert_allclose(np.asarray(v), data["small_eval_features"], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------
# Bad files: one line naming the cause, nothing partially initialised


def _resnet18_weights(width=16):
  """A torchvision-named ResNet-18 state_dict of the given width (drawn, not trained)."""
  names = {"conv1.weight": (width, 3, 7, 7)}
  def bn(prefix, c):
    for leaf in ("weight", "bias", "running_mean", "running_var"):
      names[f"{prefix}.{leaf}"] = (c,)
  bn("bn1", width)
  cin = width
  for s in range(4):
    c = width * 2**s
    for b in range(2):
      p = f"layer{s + 1}.{b}"
      names[f"{p}.conv1.weight"] = (c, cin if b == 0 else c, 3, 3)
      bn(f"{p}.bn1", c)
      names[f"{p}.conv2.weight"] = (c, c, 3, 3)
      bn(f"{p}.bn2", c)
      if b == 0 and s > 0:
        names[f"{p}.downsample.0.weight"] = (c, cin, 1, 1)
        bn(f"{p}.downsample.1", c)
    cin = c
  names["fc.weight"], names["fc.bias"] = (1000, cin), (1000,)
  return reference_weights.draw_weights(list(names), list(names.values()), seed=3)


def _save(tmp_path, weights, name="w.safetensors"):
  from safetensors.numpy import save_file
  path = str(tmp_path / name)
  save_file(weights, path)
  return path


_R18 = resnet.build_encoder("resnet18", width=16)


def _r18_template():
  return dict(_template(_R18, 32))


def test_a_complete_file_loads_and_says_what_it_ignored(tmp_path):
  weights = _resnet18_weights()
  weights["layer1.0.bn1.num_batches_tracked"] = np.zeros((), np.int64)
  path = _save(tmp_path, weights)
  variables, report = load.encoder_variables(path, _R18, _r18_template())
  np.testing.assert_array_equal(variables["params"]["stage2_block1"]["downsample"]["conv"]["kernel"],
                                weights["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["stem"]["bn"]["var"], weights["bn1.running_var"])
  assert report.ignored == ["fc.bias", "fc.weight", "layer1.0.bn1.num_batches_tracked"]
  leaves = jax.tree_util.tree_leaves(_r18_template())
  assert report.loaded == len(leaves) and report.numbers == sum(x.size for x in leaves)
  assert "ignored from the file: fc.* (2), *.num_batches_tracked" in report.summary()


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
  path = _save(tmp_path, _resnet18_weights(width=64))  # a full-width file into a quarter-width encoder
  with pytest.raises(PretrainedError) as e:
    load.encoder_variables(path, _R18, _r18_template())
  assert str(e.value) == (f"{path}: tensor 'conv1.weight' (params/stem/conv/kernel) has shape (7, 7, 3, 64), "
                          "the encoder needs (7, 7, 3, 16)")


def test_a_missing_or_unexpected_tensor_is_named(tmp_path):
  weights = _resnet18_weights()
  del weights["layer3.1.bn2.running_var"]
  with pytest.raises(PretrainedError, match="tensor 'layer3.1.bn2.running_var' is missing"):
    load.encoder_variables(_save(tmp_path, weights), _R18, _r18_template())
  weights = _resnet18_weights()
  weights["layer4.2.conv1.weight"] = np.zeros((128, 128, 3, 3), np.float32)  # a ResNet-34 block
  with pytest.raises(PretrainedError, match="unexpected tensor 'layer4.2.conv1.weight'.*architecture"):
    load.encoder_variables(_save(tmp_path, weights, "x.safetensors"), _R18, _r18_template())


def test_a_truncated_or_unknown_file_is_one_line(tmp_path):
  path = _save(tmp_path, _resnet18_weights())
  data = open(path, "rb").read()
  cut = str(tmp_path / "cut.safetensors")
  with open(cut, "wb") as f:
    f.write(data[: len(data) // 2])
  with pytest.raises(PretrainedError, match=r"cut.safetensors: not a readable .safetensors file \(") as e:
    load.encoder_variables(cut, _R18, _r18_template())
  assert "\n" not in str(e.value)
  with pytest.raises(PretrainedError, match="does not exist"):
    load.encoder_variables(str(tmp_path / "nothing.safetensors"), _R18, _r18_template())
  npz = str(tmp_path / "w.npz")
  np.savez(npz, a=np.zeros(2))
  with pytest.raises(PretrainedError, match="unknown weights format"):
    load.encoder_variables(npz, _R18, _r18_template())


def test_a_pth_without_torch_says_how_to_convert(tmp_path, monkeypatch):
  path = str(tmp_path / "resnet18.pth")
  open(path, "wb").write(b"not read")
  monkeypatch.setitem(__import__("sys").modules, "torch", None)  # import torch -> ImportError
  with pytest.raises(PretrainedError) as e:
    load.encoder_variables(path, _R18, _r18_template())
  assert str(e.value) == (f"{path}: reading a torch file needs torch (pip install 'fgjax[torch-weights]'); or "
                          f"convert it once where torch is installed: python -m fgjax.tools.convert_weights {path} "
                          f"{str(tmp_path / 'resnet18')}.safetensors")


def test_a_pth_that_needs_pickle_is_refused(tmp_path, monkeypatch):
  """torch.load(weights_only=True) raises UnpicklingError on such a file; fgjax says so in one line."""
  import pickle
  import sys
  import types
  calls = []

  def fake_load(path, map_location=None, weights_only=None):
    calls.append(weights_only)
    raise pickle.UnpicklingError("Weights only load failed. ... Unsupported global: GLOBAL __main__.Net")

  monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=fake_load, Tensor=object))
  path = str(tmp_path / "model.pth")
  open(path, "wb").write(b"x")
  with pytest.raises(PretrainedError, match=r"needs pickle to load \(it holds a pickled __main__.Net\); fgjax reads "
                                            r"tensors only") as e:
    load.encoder_variables(path, _R18, _r18_template())
  assert calls == [True] and "\n" not in str(e.value)


class _FakeTensor:
  """What fgjax.pretrained.files uses of a torch.Tensor (torch is not installed in CI)."""

  def __init__(self, array):
    self.array = array

  def is_floating_point(self):
    return self.array.dtype.kind == "f"

  def float(self):
    return _FakeTensor(self.array.astype(np.float32))

  def numpy(self):
    return self.array


def test_convert_weights_writes_what_the_loader_reads(tmp_path, monkeypatch, capsys):
  """``python -m fgjax.tools.convert_weights``: a torch file (here a stand-in torch.load) -> .safetensors."""
  import sys
  import types
  from fgjax.tools import convert_weights
  weights = _resnet18_weights()
  checkpoint = {"epoch": 3, "state_dict": {k: _FakeTensor(v) for k, v in weights.items()}}
  checkpoint["state_dict"]["bn1.num_batches_tracked"] = _FakeTensor(np.array(7, np.int64))
  fake = types.SimpleNamespace(load=lambda path, map_location=None, weights_only=None: checkpoint,
                               Tensor=_FakeTensor)
  monkeypatch.setitem(sys.modules, "torch", fake)
  src, dst = tmp_path / "r18.pth", tmp_path / "r18.safetensors"
  src.write_bytes(b"x")
  assert convert_weights.main([str(src), str(dst)]) == 0
  assert capsys.readouterr().out.startswith(f"wrote {dst}: {len(weights) + 1} tensors, ")  # + the step counter
  variables, report = load.encoder_variables(str(dst), _R18, _r18_template())
  np.testing.assert_array_equal(variables["params"]["stem"]["conv"]["kernel"],
                                weights["conv1.weight"].transpose(2, 3, 1, 0))
  assert "*.num_batches_tracked" in report.summary()
  assert convert_weights.main([str(tmp_path / "missing.pth"), str(dst)]) == 2
  assert "missing.pth does not exist" in capsys.readouterr().err
