"""Mistakes a user can make end in one line ``fgjax: error: ...`` (exit 2), never a traceback.

Issue 18 (robustness): the command line (no --config, a config file that does
not load, a stray argument), impossible learning rates and temperatures, image
folders with entries that are not image files, images above the pixel limit,
and preset combinations that would silently replace each other. The
command-line cases run ``python -m fgjax.main`` (they fail before JAX is
imported: about a second each); the others are checked where they are caught.
"""

import glob
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fgjax import command_line
from fgjax import errors
from fgjax.config import blocks as config_blocks
from fgjax.data import folder_source
from fgjax.data import records
from fgjax.methods import registry
from fgjax.methods.class_attentive import config as class_attentive_config


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args, cwd=REPO):
  return subprocess.run([sys.executable, "-m", "fgjax.main", *args], cwd=cwd, capture_output=True,
                        text=True, timeout=120)


def _one_error_line(run) -> str:
  """The run failed with exit 2 and printed exactly one line, ``fgjax: error: ...``."""
  assert run.returncode == 2, run.stderr[-3000:]
  assert "Traceback" not in run.stderr, run.stderr[-3000:]
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("fgjax: error: "), run.stderr[-3000:]
  return lines[0]


# ---------------------------------------------------------------- 1-3: the command line


def test_no_config_names_the_usage_and_lists_the_configs(tmp_path):
  """Without --config the run crashed on ``None.get``; now it says how to call it."""
  line = _one_error_line(_main(f"--workdir={tmp_path}"))
  assert "no --config given" in line and "--config=configs/NAME.py" in line
  names = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, "configs", "*.py")))
  assert line.endswith("configs: " + ", ".join(names)) and "moco" in names


def test_the_config_list_falls_back_when_the_folder_is_absent(tmp_path):
  """An installed package without the repository's configs/ folder still gets a usage line."""
  assert command_line.available_configs(str(tmp_path / "no_configs_here")) == []
  (tmp_path / "b.py").write_text("")
  (tmp_path / "a.py").write_text("")
  (tmp_path / "_private.py").write_text("")
  (tmp_path / "notes.txt").write_text("")
  assert command_line.available_configs(str(tmp_path)) == ["a", "b"]


@pytest.mark.parametrize("source, preset, cause", [
    ("def get_config(arg=None):\n  x = (\n", "", r"SyntaxError: .* \(line 2\)$"),
    ("def get_config(arg=None):\n  raise ValueError('x')\n", "", r"ValueError: x$"),
    ("from fgjax.methods import registry\n\ndef get_config(arg=None):\n  return registry.config('moco', arg)\n",
     ":nope", r"ConfigError: unknown preset 'nope'"),
], ids=["syntax_error", "get_config_raises", "unknown_preset"])
def test_a_config_file_that_does_not_load_is_one_line_naming_it(tmp_path, source, preset, cause):
  """Syntax errors and exceptions in get_config printed 40-56 lines of traceback (exit 1)."""
  path = tmp_path / "bad.py"
  path.write_text(source)
  line = _one_error_line(_main(f"--config={path}{preset}", f"--workdir={tmp_path / 'run'}"))
  prefix = f"fgjax: error: cannot load --config {path}{preset}: "
  assert line.startswith(prefix) and re.match(cause, line[len(prefix):]), line


def test_a_stray_argument_is_one_line(tmp_path):
  """absl printed its 28-line usage for a positional argument (exit 1)."""
  line = _one_error_line(_main("--config=configs/moco.py", "extra", f"--workdir={tmp_path}"))
  assert line == "fgjax: error: unexpected arguments: ['extra']"


# ---------------------------------------------------------------- 4: learning rates and temperatures

BAD_POSITIVE = [float("inf"), float("nan"), 0.0, -1.0]


def _ssl(method="perturb_moco"):
  return registry.config(method, "runlocal")


# Every learning rate and temperature of every method, with a config that has it.
POSITIVE_FIELDS = [
    (lambda: _ssl(), "optim.base_lr"),
    (lambda: _ssl(), "moco.temperature"),
    (lambda: _ssl(), "perturb.pair_temperature"),
    (lambda: _ssl(), "perturb.decoder_lr"),
    (lambda: _ssl("simsiam"), "optim.base_lr"),
    (lambda: _ssl(), "eval.knn_temperature"),
    (lambda: _ssl(), "eval.probe_learning_rate"),
    (lambda: registry.config("supcon", "runlocal"), "supcon.temperature"),
    (lambda: registry.config("hcl", "runlocal"), "supcon.base_temperature"),
    (lambda: registry.config("ce", "vit,runlocal"), "optim.base_lr"),
    (lambda: registry.config("base_indi", "runlocal"), "optim.base_lr"),
    (lambda: registry.config("base_indi", "runlocal"), "base_indi.instance_weight"),
]


def _set(cfg, field, value):
  *parents, leaf = field.split(".")
  node = cfg
  for name in parents:
    node = node[name]
  node.unlock()
  node[leaf] = value


@pytest.mark.parametrize("make, field", POSITIVE_FIELDS, ids=[f for _, f in POSITIVE_FIELDS])
def test_non_finite_or_non_positive_rates_and_temperatures_are_config_errors(make, field):
  """``--config.optim.base_lr=inf`` validated and stopped at step 1 as a NaN loss."""
  registry.validate(make(), num_devices=1)  # the config is fine before the change
  for value in BAD_POSITIVE:
    cfg = make()
    _set(cfg, field, value)
    with pytest.raises(errors.ConfigError, match=f"config field '{field}': must be a finite number > 0"):
      registry.validate(cfg, num_devices=1)


@pytest.mark.parametrize("field", ["loss.temperature", "optim.learning_rate", "eval.probe_learning_rate"])
def test_class_attentive_rates_and_temperatures(field):
  for value in BAD_POSITIVE:
    cfg = class_attentive_config.class_attentive_config("runlocal")
    _set(cfg, field, value)
    with pytest.raises(errors.ConfigError, match=f"config field '{field}'"):
      class_attentive_config.validate(cfg)


def test_infinite_epochs_weight_decay_and_a_zero_lr_batch_are_config_errors():
  """``num_epochs=inf`` passed ``> 0`` and then overflowed ``int(round(...))`` into a traceback;
  ``lr_batch_base=0`` was not checked (the lr divides by it)."""
  for field, value in (("optim.num_epochs", float("inf")), ("optim.weight_decay", float("inf")),
                       ("optim.weight_decay", float("nan")), ("eval.probe_weight_decay", float("inf")),
                       ("optim.lr_batch_base", 0), ("optim.lr_batch_base", -256)):
    cfg = _ssl()
    _set(cfg, field, value)
    with pytest.raises(errors.ConfigError, match=f"config field '{field}'"):
      registry.validate(cfg, num_devices=1)


# ---------------------------------------------------------------- 5: entries that are not image files


def _tree(root, per_class=4):
  for split in ("train", "test"):
    for name in ("a", "b"):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(per_class):
        Image.fromarray(np.full((6, 5, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
  return root


def _bad_entries(folder):
  """A dangling link, a link loop and a FIFO, all named like images; returns their paths."""
  os.symlink("nowhere.png", folder / "dangling.png")
  os.symlink("loop.jpg", folder / "loop.jpg")
  os.mkfifo(folder / "fifo.png")
  return sorted(str(folder / n) for n in ("dangling.png", "fifo.png", "loop.jpg"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_entries_that_are_not_files_are_an_error_naming_them(tmp_path):
  """A link loop raised OSError from os.scandir; a dangling link or a FIFO was silently dropped."""
  root = _tree(tmp_path / "d")
  bad = _bad_entries(root / "train" / "a")
  with pytest.raises(records.DataError, match="skip_corrupt") as e:
    folder_source.image_folder(str(root), "train")
  assert str(e.value).startswith(f"cannot read image {bad[0]}: a dangling symbolic link to nowhere.png")
  assert "(and 2 more)" in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(records.DataError, match="not a regular file \\(a FIFO\\)"):  # never opened: no hang
    folder_source.decode_image(bad[1])
  with pytest.raises(records.DataError, match="a symbolic link loop"):
    folder_source.decode_image(bad[2])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_skip_corrupt_counts_them_and_the_description_counts_the_images_used(tmp_path):
  """With skip_corrupt the log said 24 images while 20 were used; non-files were not counted."""
  root = _tree(tmp_path / "d")
  bad = _bad_entries(root / "train" / "a")
  (root / "train" / "b" / "0.png").write_text("not a PNG")
  src = folder_source.image_folder(str(root), "train", skip_corrupt=True)
  assert len(src) == 7 and src.num_skipped == 4
  assert sorted(src.skipped_paths) == sorted(bad + [str(root / "train" / "b" / "0.png")])
  assert src.description == f"image folder {root} split train: 7 images, 2 classes, skipped 4 unreadable"


def test_a_symlink_loop_among_the_folders_is_an_error_naming_it(tmp_path):
  """A loop where a split or class folder could be raised OSError; a cycle inside a class is ignored."""
  root = _tree(tmp_path / "d")
  os.symlink("..", root / "train" / "a" / "up")  # nested folders are never followed
  assert len(folder_source.image_folder(str(root), "train")) == 8
  os.symlink("cycle", root / "train" / "cycle")
  with pytest.raises(records.DataError, match=f"{root / 'train' / 'cycle'}: a symbolic link loop"):
    folder_source.image_folder(str(root), "train")


# ---------------------------------------------------------------- 6: the pixel limit


def test_the_pixel_limit_is_documented_and_validated():
  assert records.MAX_IMAGE_PIXELS == 89_478_485  # PIL's decompression-bomb warning threshold
  assert config_blocks.data_config().max_image_pixels == records.MAX_IMAGE_PIXELS
  for value in (0, -1, records.MAX_IMAGE_PIXELS_LIMIT + 1):
    cfg = _ssl()
    cfg.data.max_image_pixels = value
    with pytest.raises(errors.ConfigError, match="data.max_image_pixels"):
      registry.validate(cfg, num_devices=1)


def test_an_image_above_the_limit_is_an_error_naming_it_or_a_counted_skip(tmp_path):
  """A 12000 x 12000 PNG trained with only PIL's warning; the limit is tested at 30 pixels here."""
  root = _tree(tmp_path / "d")  # 5 x 6 = 30 pixels each
  big = root / "train" / "a" / "big.png"
  Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(big)  # 35 pixels
  src = folder_source.image_folder(str(root), "train", max_image_pixels=30)
  src[0]  # 30 pixels: at the limit, read
  with pytest.raises(records.DataError, match=f"cannot read image {big}: ImageTooLargeError: 5x7 = 35 pixels"
                     " is more than data.max_image_pixels = 30"):
    src[src.paths.index(str(big))]
  skipping = folder_source.image_folder(str(root), "train", max_image_pixels=30, skip_corrupt=True)
  assert skipping.skipped_paths == [str(big)] and len(skipping) == 8


# ---------------------------------------------------------------- 7: presets that replace each other


def test_runlocal_keeps_the_data_source_of_an_earlier_preset():
  """``moco.py:folder,runlocal --config.data.root=X`` trained on the embedded patches."""
  assert registry.config("moco", "folder,runlocal").data.name == "folder"
  assert registry.config("moco", "cub200,runlocal").data.name == "caltech_birds2011"
  assert registry.config("moco", "runlocal").data.name == "patches"
  assert registry.config("base_indi", "cifar100,runlocal").data.name == "cifar100"
  assert registry.config("hcl", "df20_mini,runlocal").data.name == "folder"
  assert registry.config("hcl", "runlocal").data.name == "hierarchy"
  small = registry.config("moco", "folder,runlocal")
  assert (small.data.image_size, small.data.base_size, small.data.global_batch_size) == (16, 0, 8)


@pytest.mark.parametrize("make, preset, match", [
    (lambda p: registry.config("moco", p), "cub200,folder", "'cub200' and 'folder' both choose the data set"),
    (lambda p: registry.config("moco", p), "fullwidth,cub200", "'fullwidth' and 'cub200' both choose the model"),
    (lambda p: registry.config("moco", p), "runlocal,folder", "'folder' after 'runlocal'"),
    (lambda p: registry.config("perturb_moco", p), "no_pairs,cub200", "'cub200' after 'no_pairs'"),
    (lambda p: registry.config("base_indi", p), "cifar100,stanford_online_products",
     "both choose the data set"),
    (lambda p: registry.config("base_indi", p), "eff,indi",
     "'eff' and 'indi' both choose the objective"),
    (lambda p: registry.config("base_indi", p), "runlocal,cifar100", "'cifar100' after 'runlocal'"),
    (lambda p: registry.config("hcl", p), "vit,df20_mini", "'vit' and 'df20_mini' both choose the model"),
    (lambda p: registry.config("hcl", p), "ce,supcon", "both choose the objective"),
    (lambda p: registry.config("hcl", p), "runlocal,df20_mini", "'df20_mini' after 'runlocal'"),
])
def test_presets_that_would_replace_each_other_are_refused(make, preset, match):
  with pytest.raises(errors.ConfigError, match=match):
    make(preset)


def _config_files():
  files = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))
  return [f for f in files if os.path.basename(f) not in ("evaluate.py", "pictures.py", "explore.py")]  # not training configs


def _load(path):
  spec = importlib.util.spec_from_file_location(f"cfg_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("path", _config_files(), ids=os.path.basename)
def test_every_preset_of_every_config_validates_alone_and_with_runlocal(path):
  """Each preset, and each followed by runlocal (the smoke-test form), is a valid config."""
  module = _load(path)
  cfg = module.get_config()
  known = registry.get(cfg.method).presets
  validate = lambda c: registry.validate(c, num_devices=1)  # noqa: E731
  for name in [None, *known]:
    for preset in ([name, f"{name},runlocal"] if name not in (None, "runlocal") else [name]):
      if path.endswith("source.py") and name in ("cifar100", "stanford_online_products"):
        # configs/source.py is the 'source' data preset: another data set preset is refused, naming both
        with pytest.raises(errors.ConfigError, match="both choose the data set"):
          module.get_config(preset)
        continue
      c = module.get_config(preset)
      if c.data.get("name") == "folder":
        c.data.root = "/data/folder"
      if config_blocks.expects_weights(c.model.get("init_from", "")):  # a paper's preset that asks for weights
        with pytest.raises(errors.ConfigError, match="config field 'model.init_from': this preset starts from"):
          validate(c)
        c.model.init_from = "none"
      validate(c)


@pytest.mark.parametrize("config, override, owner", [
    ("configs/moco.py:runlocal", "--config.perturb.nu=7", "perturb_moco"),
    ("configs/simsiam.py:runlocal", "--config.moco.temperature=0.5", "moco"),
])
def test_a_field_of_another_method_on_the_command_line_is_one_line_naming_it(tmp_path, config, override, owner):
  """ml_collections alone printed 'bad command-line flag: "perturb"' (the block, not the field)."""
  field = override[len("--config."):].split("=")[0]
  line = _one_error_line(_main(f"--config={config}", override, f"--workdir={tmp_path / 'run'}"))
  assert f"config field {field!r}" in line and owner in line, line
  assert not (tmp_path / "run").exists()
