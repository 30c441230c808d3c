"""The source set (the ImageNet stand-in), the encoder export, and the shipped ``model.init_from=source``."""

import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.data import scene
from fgjax.data import source
from fgjax.errors import ConfigError
from fgjax.errors import PretrainedError
from fgjax.methods import registry
from fgjax.models import resnet
from fgjax.pretrained import convert
from fgjax.pretrained import layout_resnet
from fgjax.pretrained import load
from fgjax.pretrained import shipped

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------
# the source set


def test_source_set_layout_labels_and_determinism():
  a = source.make_source(num_super=4, fine_per_super=3, train_per_class=5, test_per_class=2, image_size=16)
  assert a["train"]["image"].shape == (60, 16, 16, 3) and a["train"]["image"].dtype == np.uint8
  assert a["test"]["image"].shape == (24, 16, 16, 3)
  for split in ("train", "test"):
    fine, sup = a[split]["fine_label"], a[split]["super_label"]
    assert np.array_equal(sup, fine // 3) and np.array_equal(a["fine_to_super"][fine], sup)
    assert np.bincount(fine, minlength=12).min() == np.bincount(fine).max()  # balanced
  assert a["super_names"][:2] == ["square_solid", "square_hstripes"]
  assert a["fine_names"][4] == "square_hstripes_hue1"
  b = source.make_source(num_super=4, fine_per_super=3, train_per_class=5, test_per_class=2, image_size=16)
  np.testing.assert_array_equal(a["train"]["image"], b["train"]["image"])
  c = source.make_source(num_super=4, fine_per_super=3, train_per_class=5, test_per_class=2, image_size=16,
                         seed=1)
  assert not np.array_equal(a["train"]["image"], c["train"]["image"])


def test_source_classes_are_distinct_triples_none_a_marking():
  traits = source.class_traits(32, 4)
  triples = set(zip(traits["silhouette"], traits["texture"], np.round(traits["hue"], 6)))
  assert len(triples) == 128  # every class its own (silhouette, texture, hue family)
  assert set(traits["silhouette"]) == set(range(len(scene.SILHOUETTE_NAMES)))
  assert set(traits["texture"]) == set(range(len(scene.TEXTURE_NAMES)))
  # hue families never touch: the jitter is 30 % of the spacing each way
  gaps = np.diff(np.sort(np.unique(np.round(traits["hue"], 6))))
  assert np.all(gaps > 2 * source.HUE_JITTER / 4)


def test_source_images_differ_from_the_targets_at_the_same_seed():
  from fgjax.data import synthetic
  p = synthetic.make_patches(num_super=2, fine_per_super=2, train_per_class=4, test_per_class=1, image_size=16)
  s = source.make_source(num_super=2, fine_per_super=2, train_per_class=4, test_per_class=1, image_size=16)
  assert not np.array_equal(p["train"]["image"], s["train"]["image"])


@pytest.mark.parametrize("kw, match", [({"num_super": 33}, "num_super"), ({"fine_per_super": 9}, "fine_per_super"),
                                       ({"train_per_class": 0}, "train_per_class"),
                                       ({"background": "sky"}, "background")])
def test_source_set_bad_arguments_are_named(kw, match):
  with pytest.raises(ValueError, match=match):
    source.make_source(**kw)


def test_source_config_validates_and_names_a_bad_size():
  cfg = registry.config("fine", "source")
  assert (cfg.data.name, cfg.model.width, cfg.model.cifar_stem) == ("source", 16, True)
  registry.validate(cfg, num_devices=1)
  cfg.data.num_super = 40
  with pytest.raises(ConfigError, match="data.num_super"):
    registry.validate(cfg, num_devices=1)
  with pytest.raises(ConfigError):  # a data set preset after runlocal would be undone
    registry.config("fine", "runlocal,source")


# ----------------------------------------------------------------------------
# export: fgjax -> torchvision layout -> fgjax is the identity


@pytest.mark.parametrize("arch, width, stem", [("resnet18", 8, True), ("resnet50", 4, False)])
def test_resnet_export_round_trip(arch, width, stem):
  model = resnet.build_encoder(arch, width=width, cifar_stem=stem)
  variables = jax.device_get(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
  rng = np.random.default_rng(0)  # non-trivial BatchNorm statistics, so a swapped mean / var is seen
  variables = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), variables)
  tensors = layout_resnet.resnet_to_torch(variables, model)
  assert "conv1.weight" in tensors and "bn1.running_var" in tensors and not any(k.startswith("fc") for k in tensors)
  assert tensors["conv1.weight"].shape[0] == width  # PyTorch [out, in, kh, kw]
  back = layout_resnet.resnet_from_torch(convert.Tensors(tensors, "x"), model)
  restored = load.check_against(back, variables, "x")
  jax.tree.map(np.testing.assert_array_equal, restored, variables)


# ----------------------------------------------------------------------------
# model.init_from=source


@pytest.fixture
def weights_copy(tmp_path, monkeypatch):
  """The shipped file and manifest copied to a temporary WEIGHTS_DIR (damage there, never in the repo)."""
  for path in shipped.paths("source"):
    shutil.copy(path, tmp_path)
  monkeypatch.setattr(shipped, "WEIGHTS_DIR", str(tmp_path))
  return shipped.paths("source")


def test_the_shipped_file_matches_its_manifest_and_size_limit():
  weights, _ = shipped.paths("source")
  manifest = shipped.manifest("source")
  assert shipped.resolve("source") == weights
  assert os.path.getsize(weights) <= 5 * 2**20
  for field in ("command", "commit", "sha256", "source accuracy", "transfer"):
    assert field in manifest, field


def test_source_loads_into_the_cpu_default_encoder():
  model = resnet.build_encoder("resnet18", width=16, cifar_stem=True)
  template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
  variables, report = load.encoder_variables("source", model, dict(template))
  assert report.source == shipped.paths("source")[0]
  assert report.loaded == len(jax.tree_util.tree_leaves(template))


def test_a_damaged_or_missing_source_file_is_one_line_with_the_remake_command(weights_copy):
  weights, manifest = weights_copy
  data = bytearray(open(weights, "rb").read())
  data[len(data) // 2] ^= 0xFF
  with open(weights, "wb") as f:
    f.write(data)
  with pytest.raises(PretrainedError, match="is damaged") as e:
    shipped.resolve("source")
  assert shipped.REMAKE_COMMAND in str(e.value) and "\n" not in str(e.value)
  os.remove(weights)
  with pytest.raises(PretrainedError, match=f"{weights} is missing.*{shipped.REMAKE_COMMAND}"):
    shipped.resolve("source")
  os.remove(manifest)
  with pytest.raises(PretrainedError, match="manifest .* is missing"):
    shipped.resolve("source")


def test_source_on_another_encoder_is_a_config_error():
  cfg = registry.config("moco", None)
  cfg.model.init_from = "source"
  cfg.model.width = 32
  with pytest.raises(ConfigError, match=r"model.init_from.*model.width=32 \(the file needs 16\)"):
    registry.validate(cfg, num_devices=1)


def test_main_refuses_a_damaged_source_in_one_line(weights_copy, tmp_path):
  """Through the command line: exit 2, one line naming the file and the remake command."""
  weights, _ = weights_copy
  with open(weights, "r+b") as f:
    f.truncate(100)
  code = (f"import sys; from fgjax.pretrained import shipped; shipped.WEIGHTS_DIR = {os.path.dirname(weights)!r}; "
          "from fgjax import main; sys.argv = ['fgjax'] + sys.argv[1:]; main.run()")
  run = subprocess.run([sys.executable, "-c", code, "--config=configs/moco.py:runlocal",
                        "--config.model.width=16", "--config.model.init_from=source",
                        f"--workdir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JAX_NUM_CPU_DEVICES": "1"})
  assert run.returncode == 2, run.stderr[-2000:]
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and "is damaged" in lines[0] and shipped.REMAKE_COMMAND in lines[0], run.stderr[-2000:]
  assert not (tmp_path / "run").exists()  # refused before the workdir was made


def test_a_run_from_source_reports_random_init_source_and_trained(tmp_path):
  """The SSL default starts from the source encoder: results hold the three rows, the verdict is against it."""
  from fgjax import train
  cfg = registry.config("perturb_moco", "runlocal")
  assert registry.config("perturb_moco", None).model.init_from == "source"  # the default
  assert cfg.model.init_from == ""  # runlocal's tiny model takes no shipped weights
  cfg.model.width = 16
  cfg.model.init_from = "source"
  cfg.train.max_steps = 2
  cfg.eval.random_init_baseline = True
  results = train.train_and_evaluate(cfg, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert {"random_init", "initial", "trained"} <= set(results)
  assert results["initial"] != results["random_init"]
  assert results["run"]["initial encoder"] == "source"
  md = open(tmp_path / "run" / "results.md").read()
  assert "| protocol | random init | source encoder | trained | trained - source encoder |" in md
  assert "**Verdict against the source encoder:" in md
