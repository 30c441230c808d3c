"""Real image files through the real pipeline: transforms, batches, workers, shards, errors, a run."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from fgjax import errors
from fgjax import train
from fgjax.data import augment
from fgjax.data import pipeline
from fgjax.data import records
from fgjax.data import transforms
from fgjax.methods import registry


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("blue_jay", "cardinal", "crow", "robin")


def _write_folder(root, *, train_per_class=6, test_per_class=3, classes=CLASSES):
  """root/{train,test}/<class>/*.jpg|png: solid colours + a class-specific square, varied sizes."""
  rng = np.random.default_rng(0)
  for split, n in (("train", train_per_class), ("test", test_per_class)):
    for c, name in enumerate(classes):
      folder = os.path.join(root, split, name)
      os.makedirs(folder, exist_ok=True)
      for i in range(n):
        h, w = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        image = np.full((h, w, 3), 60 * c, np.uint8)
        image[h // 4:h // 2, w // 4:w // 2] = 255
        ext = "png" if i % 3 == 0 else "jpg"
        Image.fromarray(image).save(os.path.join(folder, f"{split}_{i}.{ext}"))
  return str(root)


def _super_map(path):
  with open(path, "w") as f:
    f.write("# fine\tsuper\nblue_jay\tcorvid\ncrow\tcorvid\ncardinal\tsongbird\nrobin,songbird\n")
  return str(path)


def _folder_config(root, method="moco", **data):
  cfg = registry.config(method, "runlocal")
  cfg.data.name = "folder"
  cfg.data.root = root
  cfg.data.image_size = 16
  cfg.data.base_size = 24
  for key, value in data.items():
    cfg.data[key] = value
  return cfg


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return _write_folder(tmp_path_factory.mktemp("birds"))


# ---------------------------------------------------------------------------- transforms


def test_resize_square_keeps_the_whole_image():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, 40:] = 200  # right half bright
  out = transforms.resize_square(image, 20)
  assert out.shape == (20, 20, 3) and out.dtype == np.uint8
  assert out[:, :9].max() == 0 and out[:, 11:].min() == 200  # both halves survive, squashed


def test_resize_center_crop_takes_the_centre():
  image = np.zeros((100, 200, 3), np.uint8)
  image[:, 50:150] = 255  # the centre 100 x 100 is white, the sides black
  out = transforms.resize_center_crop(image, 32, crop_fraction=1.0)
  # Only the white centre is left (the outermost columns blend with the black
  # border in the resize before the crop).
  assert out.shape == (32, 32, 3) and out[:, 1:-1].min() >= 250 and out.min() > 128
  out = transforms.resize_center_crop(image, 28, crop_fraction=0.875)  # shorter side 32
  assert out.shape == (28, 28, 3)


def test_aug_views_at_a_smaller_output_size():
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 24, 24, 3))
  out = augment.mocov2_augment(jax.random.PRNGKey(1), images, out_size=16)
  assert out.shape == (3, 16, 16, 3) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  again = augment.mocov2_augment(jax.random.PRNGKey(1), images, out_size=16)
  np.testing.assert_array_equal(out, again)
  with pytest.raises(ValueError, match="out_size"):
    augment.mocov2_augment(jax.random.PRNGKey(1), images, out_size=0)


# ---------------------------------------------------------------------------- sources and batches


def test_folder_splits_labels_and_super_map(folder, tmp_path):
  data = pipeline.load_splits(_folder_config(folder, super_map=_super_map(tmp_path / "map.tsv")))
  train, test = data["train"], data["test"]
  assert (len(train), len(test)) == (24, 12)
  assert list(train.fine_names) == list(CLASSES) and list(train.super_names) == ["corvid", "songbird"]
  np.testing.assert_array_equal(train.fine_labels, np.repeat(np.arange(4), 6))
  np.testing.assert_array_equal(train.super_labels, np.repeat([0, 1, 0, 1], 6))
  record = train[7]
  assert record["fine_label"] == 1 and record["super_label"] == 1 and record["image"].dtype == np.uint8


def test_train_and_eval_batches_have_fixed_sizes_and_follow_the_source(folder):
  cfg = _folder_config(folder)
  data = pipeline.load_splits(cfg)
  batches = pipeline.train_batches(data["train"], global_batch_size=8, seed=1,
                                   transform=pipeline.train_transform(cfg, data["train"]))
  batch = batches[0]
  assert batch["image"].shape == (8, 24, 24, 3) and batch["image"].dtype == np.uint8
  np.testing.assert_array_equal(batch["fine_label"], data["train"].fine_labels[batch["index"]])
  again = pipeline.train_batches(data["train"], global_batch_size=8, seed=1,
                                 transform=pipeline.train_transform(cfg, data["train"]))[0]
  np.testing.assert_array_equal(batch["image"], again["image"])  # seeded: same images, same order
  evaluated = list(pipeline.eval_batches(data["test"], batch_size=5,
                                         transform=pipeline.eval_transform(cfg, data["test"])))
  assert [len(b["index"]) for b in evaluated] == [5, 5, 2]  # in order, last batch short
  assert all(b["image"].shape[1:] == (16, 16, 3) for b in evaluated)
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in evaluated]), np.arange(12))


def test_two_processes_read_disjoint_shards_covering_each_example_once_per_epoch(folder):
  cfg = _folder_config(folder)
  source = pipeline.load_splits(cfg)["train"]
  per_epoch = len(source) // 8  # 24 images, global batch 8: 3 global batches per epoch
  seen = []
  for process in (0, 1):
    shard = pipeline.train_batches(source, global_batch_size=8, seed=5, process_index=process,
                                   process_count=2, transform=pipeline.train_transform(cfg, source))
    for i in range(per_epoch):
      assert len(shard[i]["index"]) == 4  # half of the global batch each
      seen.extend(shard[i]["index"].tolist())
  assert sorted(seen) == list(range(len(source)))


def test_worker_processes_give_the_same_batches(folder):
  cfg = _folder_config(folder)
  source = pipeline.load_splits(cfg)["train"]
  batches = pipeline.train_batches(source, global_batch_size=8, seed=2,
                                   transform=pipeline.train_transform(cfg, source))
  in_process = pipeline.iterate_from(batches, 2, num_workers=0)
  workers = pipeline.iterate_from(batches, 2, num_workers=2)
  for _ in range(3):
    a, b = next(in_process), next(workers)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["index"], b["index"])


# ---------------------------------------------------------------------------- bad input


def _truncate(path):
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: len(data) // 2])


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_is_one_error_naming_the_file(tmp_path, workers):
  root = _write_folder(tmp_path / "data")
  bad = os.path.join(root, "train", "crow", "train_1.jpg")
  _truncate(bad)
  cfg = _folder_config(root)
  source = pipeline.load_splits(cfg)["train"]
  batches = pipeline.train_batches(source, global_batch_size=24, seed=0,
                                   transform=pipeline.train_transform(cfg, source))
  with pytest.raises(records.DataError, match=f"cannot read image {bad}"):
    next(pipeline.iterate_from(batches, 0, num_workers=workers))


def test_skip_corrupt_counts_and_reports(tmp_path):
  root = _write_folder(tmp_path / "data")
  _truncate(os.path.join(root, "train", "crow", "train_1.jpg"))
  data = pipeline.load_splits(_folder_config(root, skip_corrupt=True))
  assert len(data["train"]) == 23 and data["train"].num_skipped == 1
  assert "skipped 1" in data["train"].description


def test_folder_errors_name_the_cause(tmp_path):
  with pytest.raises(records.DataError, match="does not exist"):
    pipeline.load_splits(_folder_config(str(tmp_path / "nowhere")))
  root = _write_folder(tmp_path / "data")
  os.rename(os.path.join(root, "test", "robin"), os.path.join(root, "test", "thrush"))
  with pytest.raises(records.DataError, match="robin|thrush"):
    pipeline.load_splits(_folder_config(root))
  root = _write_folder(tmp_path / "data2")
  with pytest.raises(records.DataError, match="'validation'"):
    pipeline.load_splits(_folder_config(root, test_split="validation"))
  bad_map = tmp_path / "partial.tsv"
  bad_map.write_text("blue_jay\tcorvid\ncrow\tcorvid\ncardinal\tsongbird\n")
  with pytest.raises(records.DataError, match="'robin'"):
    pipeline.load_splits(_folder_config(root, super_map=str(bad_map)))


def test_folder_without_root_is_a_config_error():
  cfg = _folder_config("")
  with pytest.raises(errors.ConfigError, match="data.root"):
    registry.validate(cfg, num_devices=1)


# ---------------------------------------------------------------------------- end to end


def test_training_run_on_an_image_folder(folder, tmp_path):
  cfg = _folder_config(folder, super_map=_super_map(tmp_path / "map.tsv"))
  cfg.data.global_batch_size = 8
  results = train.train_and_evaluate(cfg, str(tmp_path / "run"), devices=jax.devices()[:1])
  trained = results["trained"]
  assert {"knn3_top1_fine", "map_fine", "map_super", "probe100_top1_super"} <= set(trained)
  assert all(np.isfinite(v) for v in trained.values())
  assert "image folder" in results["run"]["data"] and "data wait" in results["run"]
  # 24 training images / batch 8 = 3 steps per epoch, 2 epochs (runlocal).
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert max(r["step"] for r in rows) == 6


def test_command_line_missing_root_is_one_line(tmp_path):
  run = subprocess.run(
      [sys.executable, "-m", "fgjax.main", "--config=configs/perturb_moco.py:folder",
       "--config.model.init_from=none",  # the preset asks for ImageNet weights first (a config check)
       f"--config.data.root={tmp_path / 'nowhere'}", f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert run.returncode == 2, run.stderr[-2000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("fgjax: error:")]
  assert len(errors) == 1 and "nowhere" in errors[0] and "does not exist" in errors[0]
  assert "Traceback" not in run.stderr


def test_a_zero_byte_jpeg_read_by_worker_processes_is_one_line_and_leaks_nothing(tmp_path):
  """Issue 32.6: the folder presets' grain workers meet an empty image file. One line, exit 2, no
  traceback, and no leak warning from multiprocessing's resource tracker (a child of the run that
  writes to its stderr, and warns of every shared-memory block left at exit: a /dev/shm listing
  would also see the other xdist worker's blocks)."""
  root = _write_folder(tmp_path / "data")
  bad = os.path.join(root, "train", "crow", "train_1.jpg")
  open(bad, "wb").close()
  run = subprocess.run(
      [sys.executable, "-m", "fgjax.main", "--config=configs/moco.py:runlocal", "--config.data.name=folder",
       f"--config.data.root={root}", "--config.data.image_size=16", "--config.data.base_size=24",
       "--config.data.num_workers=2", f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_NUM_CPU_DEVICES="1"))
  assert run.returncode == 2, run.stderr[-2000:]
  errors = [line for line in run.stderr.splitlines() if line.startswith("fgjax: error:")]
  assert len(errors) == 1 and f"cannot read image {bad}" in errors[0]
  assert "Traceback" not in run.stderr and "leaked shared_memory" not in run.stderr
