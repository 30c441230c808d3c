"""Pictures: the spatial Grad-CAM math, each figure from arrays, and from real tiny runs."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fgjax import errors
from fgjax import train
from fgjax.data import pipeline
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.ops import gradcam


pytest.importorskip("matplotlib")

from fgjax.pictures import draw  # noqa: E402
from fgjax.pictures import make  # noqa: E402
from fgjax.pictures import views  # noqa: E402


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _png(path):
  """(width, height, pixel variance) of a written PNG."""
  with Image.open(path) as im:
    assert im.format == "PNG"
    pixels = np.asarray(im.convert("RGB"), np.float64)
  return im.size[0], im.size[1], float(pixels.var())


# ----------------------------------------------------------------------------
# Spatial Grad-CAM, numerically


def test_score_of_one_location_lights_up_only_that_location():
  fmap = jnp.asarray(np.random.default_rng(0).uniform(0.1, 1.0, (2, 5, 6, 8)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.0, (8,)), jnp.float32)
  # A "model" whose output reads the conv map at (2, 3) only.
  cam = gradcam.spatial_gradcam(lambda a: jnp.tanh(a[:, 2, 3, :] @ w), fmap)
  expected = np.zeros((2, 5, 6))
  expected[:, 2, 3] = 1.0
  np.testing.assert_allclose(np.asarray(cam), expected, atol=1e-6)


def test_pooled_and_elementwise_agree_for_a_mean_pooled_encoder():
  rng = np.random.default_rng(2)
  fmap = jnp.asarray(rng.normal(size=(3, 4, 4, 6)), jnp.float32)
  w1, w2 = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((6, 5), (5,)))
  score = lambda a: jnp.tanh(jnp.mean(a, axis=(1, 2)) @ w1) @ w2  # GAP, then an MLP head
  np.testing.assert_allclose(np.asarray(gradcam.spatial_gradcam(score, fmap, weighting="pooled")),
                             np.asarray(gradcam.spatial_gradcam(score, fmap)), atol=1e-5)


def test_pooled_gradcam_matches_hand_computation():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(2, 3, 3, 4))
  w = rng.normal(size=(3, 3, 4))
  # score = sum(w * A): dscore/dA = w, alpha_c = mean_hw w_c, map = ReLU(sum_c alpha_c A_c)
  alpha = w.mean(axis=(0, 1))
  raw = np.maximum(np.einsum("nhwc,c->nhw", a, alpha), 0.0)
  cam = gradcam.spatial_gradcam(lambda f: jnp.sum(f * w, axis=(1, 2, 3)), jnp.asarray(a, jnp.float32),
                                weighting="pooled", normalize=False)
  np.testing.assert_allclose(np.asarray(cam), raw, rtol=1e-5, atol=1e-6)


def test_gradcam_map_range_constant_map_and_bad_input():
  fmap = jnp.ones((1, 3, 3, 2))
  cam = gradcam.spatial_gradcam(lambda a: jnp.sum(a, axis=(1, 2, 3)), fmap)
  np.testing.assert_array_equal(np.asarray(cam), 0.0)  # constant -> 0, not NaN
  with pytest.raises(ValueError, match=r"\[N, h, w, C\]"):
    gradcam.spatial_gradcam(lambda a: a.sum(), jnp.ones((3, 3, 2)))
  with pytest.raises(ValueError, match="weighting"):
    gradcam.spatial_gradcam(lambda a: a.sum(), fmap, weighting="mean")


# ----------------------------------------------------------------------------
# Each figure from hand-made arrays: written, of the size asked for, not blank


@pytest.fixture
def images():
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)


def test_map_overlays_png(tmp_path, images):
  maps = {"a (run1)": np.random.default_rng(1).uniform(size=(3, 16, 16)), "b": np.zeros((3, 16, 16))}
  w, h, var = _png(draw.map_overlays(str(tmp_path / "m.png"), images, maps, title="t", row_labels=list("xyz")))
  assert (w, h) == (round((draw._CELL * 3 + 0.9) * draw.DPI), round((draw._CELL * 3 + 0.6) * draw.DPI))
  assert var > 0
  with pytest.raises(draw.PicturesError, match="shape"):
    draw.map_overlays(str(tmp_path / "bad.png"), images, {"a": np.zeros((3, 8, 8))}, title="t")
  with pytest.raises(draw.PicturesError, match="uint8"):
    draw.map_overlays(str(tmp_path / "bad.png"), images.astype(np.float32), maps, title="t")


def test_image_rows_png(tmp_path, images):
  w, h, var = _png(draw.image_rows(str(tmp_path / "r.png"), {"x": images, "y": images[::-1]}, title="t"))
  assert (w, h) == (round((draw._CELL * 3 + 0.8) * draw.DPI), round((draw._CELL * 2 + 0.6) * draw.DPI))
  assert var > 0


def test_two_dimension_scatter_png(tmp_path):
  rng = np.random.default_rng(0)
  labels = np.repeat([3, 7], 20)
  x, y = rng.normal(size=40), rng.normal(size=40) + labels
  w, h, var = _png(draw.two_dimension_scatter(str(tmp_path / "s.png"), x, y, labels,
                                              class_names={3: "c3", 7: "c7"}, x_label="v_min",
                                              y_label="v_max", title="t"))
  assert (w, h) == (560, 580) and var > 0


def test_embedding_scatter_png_many_classes(tmp_path):
  rng = np.random.default_rng(0)
  panels = {"fine": (rng.normal(size=(60, 2)), np.arange(60) % 30, [f"f{i}" for i in range(30)]),
            "super": (rng.normal(size=(60, 2)), np.arange(60) % 3, ["a", "b", "c"])}
  w, h, var = _png(draw.embedding_scatter(str(tmp_path / "e.png"), panels, title="t"))
  assert (w, h) == (920, 430) and var > 0


def test_retrieval_grid_png(tmp_path, images):
  neighbours = np.stack([images[[1, 2]], images[[0, 2]]])
  correct = np.array([[True, False], [False, False]])
  w, h, var = _png(draw.retrieval_grid(str(tmp_path / "q.png"), {"m": (images[:2], neighbours, correct)},
                                       query_labels=["a", "b"], title="t"))
  assert (w, h) == (round((draw._CELL * 3 + 1.2) * draw.DPI), round((draw._CELL * 2 + 0.6) * draw.DPI))
  assert var > 0


def test_missing_matplotlib_is_one_clear_error(monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_matplotlib(name, *args, **kwargs):
    if name.startswith("matplotlib"):
      raise ImportError(name)
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_matplotlib)
  with pytest.raises(draw.PicturesError, match=r"pip install -e '\.\[plots\]'"):
    draw.pyplot()


# ----------------------------------------------------------------------------
# Views of untrained states (no training needed for the shapes and the math)


def _run(cfg, label="r"):
  data = pipeline.load_splits(cfg)
  setup = registry.setup(cfg, num_train=len(data["train"]), train_source=data["train"])
  state = jax.device_get(spec.initial_state(setup, jax.random.PRNGKey(0)))
  return views.Run(label=label, cfg=cfg, nets=setup.nets, state=state), data


def test_pick_examples_spreads_over_classes():
  labels = np.repeat(np.arange(8), 5)
  picked = views.pick_examples(labels, 4, seed=0)
  assert len(set(labels[picked])) == 4 and labels[picked].min() == 0 and labels[picked].max() == 7
  assert len(views.pick_examples(labels[:5], 3, seed=0)) == 3  # one class: the rest at random


def test_nearest_neighbours_leave_the_query_out():
  f = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.01]])
  nn = views.nearest_neighbours(f, np.array([0, 2]), 2)
  np.testing.assert_array_equal(nn, [[3, 1], [1, 3]])


def test_attention_and_feature_bank_views_of_a_supervised_model():
  cfg = registry.config("base", "runlocal")
  run, data = _run(cfg)
  imgs = views.read_images(cfg, data["test"], np.arange(3))
  maps = views.attention_maps(run, imgs, stage=2)
  assert maps.shape == (3, cfg.data.image_size, cfg.data.image_size)
  assert 0.0 <= maps.min() and maps.max() <= 1.0 and maps.max() > 0
  assert make.applicable(run) == ["feature_dims", "attention", "tsne", "retrieval"]
  with pytest.raises(draw.PicturesError, match="gradcam: needs an SSL run"):
    views.gradcam_maps(run, imgs, seed=0)


def test_pairs_need_a_perturb_run_and_a_filled_bank():
  moco_run, data = _run(registry.config("moco", "runlocal"))
  imgs = views.read_images(moco_run.cfg, data["test"], np.arange(2))
  with pytest.raises(draw.PicturesError, match="pairs: needs a Perturb-SSL run"):
    views.generated_pairs(moco_run, imgs, seed=0)
  perturb_run, _ = _run(registry.config("perturb_moco", "runlocal"))
  with pytest.raises(draw.PicturesError, match="memory bank .* holds 0"):
    views.generated_pairs(perturb_run, imgs, seed=0)


def test_requested_picture_that_does_not_apply(tmp_path):
  moco_run, data = _run(registry.config("moco", "runlocal"))
  p = make.pictures_block()
  with pytest.raises(draw.PicturesError, match="'pairs' does not apply to r"):
    make.draw_runs([moco_run], data, str(tmp_path), p, ["pairs"])


def test_runs_on_different_data_are_not_drawn_together(tmp_path):
  a, data = _run(registry.config("moco", "runlocal"), "a")
  other = registry.config("moco", "runlocal")
  other.data.image_size = 32
  b = views.Run(label="b", cfg=other, nets=a.nets, state=a.state)
  with pytest.raises(draw.PicturesError, match="data.image_size"):
    make.draw_runs([a, b], data, str(tmp_path), make.pictures_block())


def test_config_errors_name_the_field():
  cfg = make.pictures_config()
  with pytest.raises(errors.ConfigError, match="'workdir'"):
    make.validate(cfg)
  cfg.workdir = "x"
  cfg.pictures.which = "gradcam,tsen"
  with pytest.raises(errors.ConfigError, match="pictures.which"):
    make.validate(cfg)
  cfg.pictures.which = "tsne"
  cfg.pictures.attention_stage = 5
  with pytest.raises(errors.ConfigError, match="pictures.attention_stage"):
    make.validate(cfg)


# ----------------------------------------------------------------------------
# From real tiny runs: the end-of-training hook and the command line


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """The tiny Perturb-MoCo run of tests/test_train_e2e.py (same programs), pictures at the end."""
  workdir = str(tmp_path_factory.mktemp("pictures_run"))
  cfg = registry.config("perturb_moco", "runlocal")
  cfg.eval.pictures = True
  train.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
  return workdir


def test_training_with_eval_pictures_writes_every_picture(trained_run):
  out = os.path.join(trained_run, "pictures")
  assert sorted(os.listdir(out)) == sorted(f"{n}.png" for n in make.PICTURES)
  for name in make.PICTURES:
    w, h, var = _png(os.path.join(out, f"{name}.png"))
    assert w >= 300 and h >= 300 and var > 0, name
  results = open(os.path.join(trained_run, "results.md")).read()
  assert results.count("## Pictures") == 1
  for name in make.PICTURES:
    assert f"![{name}](pictures/{name}.png)" in results


def _main(*args):
  return subprocess.run([sys.executable, "-m", "fgjax.main", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=600)


def test_command_line_draws_a_comparison_and_replaces_the_section(trained_run):
  proc = _main("--config=configs/pictures.py:runlocal", f"--config.workdir={trained_run}",
               f"--config.compare_workdirs={trained_run}", "--config.pictures.which=gradcam,retrieval")
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = open(os.path.join(trained_run, "results.md")).read()
  assert results.count("## Pictures") == 1  # replaced, not appended again
  assert "![gradcam](pictures/gradcam.png)" in results and "![tsne]" not in results
  w, h, var = _png(os.path.join(trained_run, "pictures", "gradcam.png"))
  assert var > 0 and w > h / 2  # image column + two runs' columns


def test_command_line_bad_input_is_one_line(tmp_path):
  proc = _main("--config=configs/pictures.py", f"--config.workdir={tmp_path / 'nope'}")
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1].startswith("fgjax: error: workdir")
  assert "Traceback" not in proc.stderr
