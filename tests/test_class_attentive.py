"""Class-attentive contrastive learning (seed A): losses, module, data, config, a short run, the CLI."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import errors
from fgjax.data import circles
from fgjax.methods.class_attentive import config as cc
from fgjax.methods.class_attentive import evaluate as ca_eval
from fgjax.methods.class_attentive import loop
from fgjax.methods.class_attentive import model as ca_model
from fgjax.methods.class_attentive import run as ca_run
from fgjax.ops import class_attentive_losses as ca_losses
from fgjax.tools import tables


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------
# Modules


def test_class_attention_module_has_one_bounded_row_per_class():
  net = ca_model.ClassAttentiveNet(num_classes=3, hidden_dims=(8,), embed_dim=5)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 10)))
  chex.assert_shape(params["params"]["attention"]["logits"], (3, 5))
  out = net.apply(params, jnp.ones((2, 10)))
  chex.assert_shape(out["z"], (2, 5))
  np.testing.assert_allclose(out["class_weights"], 0.5)  # sigmoid(0): all classes start equal
  logits = jnp.arange(15.0).reshape(3, 5) - 7.0
  params = {"params": {**params["params"], "attention": {"logits": logits}}}
  w = net.apply(params, jnp.ones((2, 10)))["class_weights"]
  np.testing.assert_allclose(w, jax.nn.sigmoid(logits), rtol=1e-6)
  assert np.all((w > 0) & (w < 1))
  z = net.apply(params, jnp.ones((3, 10)))["z"]
  np.testing.assert_allclose(ca_losses.attend(z, w, jnp.array([2, 0, 1])), z * w[jnp.array([2, 0, 1])], rtol=1e-6)


def test_siamese_net_has_unit_weights_and_no_attention_params():
  net = ca_model.ClassAttentiveNet(num_classes=3, hidden_dims=(8,), embed_dim=5, attention=False)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 10)))
  assert "attention" not in params["params"]
  np.testing.assert_allclose(net.apply(params, jnp.ones((1, 10)))["class_weights"], 1.0)


def test_zero_bias_mlp_is_scale_equivariant_and_random_biases_break_it():
  """The reason for model.bias_init_std: classes differ only in scale."""
  x = jnp.asarray(circles.make_circles(train_per_class=4, test_per_class=1).train_x)
  for std, equivariant in ((0.0, True), (1.0, False)):
    net = ca_model.MLPEmbedding((32, 32), 8, bias_init_std=std)
    params = net.init(jax.random.PRNGKey(0), x)
    cos = ca_losses.cosine_similarity(net.apply(params, x), net.apply(params, 1.3 * x))
    assert bool(np.all(np.asarray(cos) > 1 - 1e-5)) == equivariant, (std, cos)


# ----------------------------------------------------------------------------
# Data


def test_circles_shapes_balance_and_determinism():
  d = circles.make_circles(radii=(1.0, 1.5, 2.0), noise_std=0.05, num_points=50, train_per_class=20,
                           test_per_class=10, seed=7)
  assert d.train_x.shape == (60, 100) and d.test_x.shape == (30, 100)
  assert d.train_x.dtype == np.float32 and d.train_y.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(d.train_y), [20, 20, 20])
  np.testing.assert_array_equal(np.bincount(d.test_y), [10, 10, 10])
  again = circles.make_circles(radii=(1.0, 1.5, 2.0), noise_std=0.05, num_points=50, train_per_class=20,
                               test_per_class=10, seed=7)
  np.testing.assert_array_equal(d.train_x, again.train_x)
  np.testing.assert_array_equal(d.test_y, again.test_y)
  other = circles.make_circles(radii=(1.0, 1.5, 2.0), noise_std=0.05, num_points=50, train_per_class=20,
                               test_per_class=10, seed=8)
  assert not np.allclose(d.train_x, other.train_x)


def test_circles_split_is_disjoint_and_radii_are_right():
  d = circles.make_circles(train_per_class=100, test_per_class=100, seed=0)
  # Held out: no test sample equals (or nearly equals) a training sample.
  dist = ((d.test_x[:, None, :] - d.train_x[None, :, :]) ** 2).sum(-1)
  assert dist.min() > 1.0
  r = circles.estimate_radius(d.train_x, d.noise_std)
  for c, radius in enumerate(d.radii):
    assert abs(r[d.train_y == c].mean() - radius) < 0.01
  # Random start angle: no single coordinate tells the class (class means ~ 0).
  for c in range(d.num_classes):
    assert np.abs(d.train_x[d.train_y == c].mean(0)).max() < 0.45  # a fixed start would give ~r
  # Sorted by angle: consecutive points are neighbours on the circle.
  pts = d.train_x[:5].reshape(5, -1, 2)
  steps = np.linalg.norm(np.diff(pts, axis=1), axis=-1)
  assert np.median(steps) < 0.3


def test_hard_setting_is_harder_for_the_oracle():
  easy = circles.make_circles(radii=circles.DEFAULT_RADII, test_per_class=300)
  hard = circles.make_circles(radii=circles.HARD_RADII, test_per_class=300)
  acc = lambda d: (circles.oracle_predict(d.test_x, d.radii, d.noise_std) == d.test_y).mean()
  assert acc(easy) > 0.98 and 0.6 < acc(hard) < 0.95


@pytest.mark.parametrize("kwargs,match", [
    (dict(radii=(1.0,)), "at least 2"), (dict(radii=(1.0, -1.0)), "radius"),
    (dict(radii=(1.0, 1.0)), "distinct"), (dict(noise_std=-0.1), "noise_std"),
    (dict(num_points=0), "num_points")])
def test_circles_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    circles.make_circles(**kwargs)


def test_augment_preserves_radius_and_changes_the_view():
  d = circles.make_circles(train_per_class=4, test_per_class=1, noise_std=0.1)
  x = jnp.asarray(d.train_x)
  y = circles.augment(jax.random.PRNGKey(0), x)
  chex.assert_equal_shape((x, y))
  norms = lambda v: np.sort(np.linalg.norm(np.asarray(v).reshape(v.shape[0], -1, 2), axis=-1), axis=1)
  np.testing.assert_allclose(norms(y), norms(x), rtol=1e-5, atol=1e-5)
  assert not np.allclose(y, x)
  noisy = circles.augment(jax.random.PRNGKey(0), x, rotate=False, roll=False, extra_noise_std=0.1)
  assert not np.allclose(noisy, x)
  np.testing.assert_array_equal(circles.augment(jax.random.PRNGKey(0), x, rotate=False, roll=False), x)


# ----------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("preset", [None, "paper", "contrastive", "siamese", "supervised", "siamese,positives_only",
                                    "contrastive,infonce", "contrastive,own_weights", "paper,hard",
                                    "supervised,hard,runlocal", "runlocal"])
def test_presets_validate(preset):
  cc.validate(cc.class_attentive_config(preset))


def test_preset_fields():
  paper = cc.class_attentive_config("paper")
  assert (paper.objective, paper.model.attention) == ("cosine", True)
  assert (paper.optim.learning_rate, paper.optim.num_epochs, paper.eval.probe_epochs) == (1e-3, 20, 100)
  assert (paper.data.num_points * 2, paper.model.embed_dim, paper.data.num_classes) == (200, 64, 4)
  assert cc.class_attentive_config("siamese").model.attention is False
  assert cc.class_attentive_config("supervised").objective == "supervised"
  assert tuple(cc.class_attentive_config("contrastive,hard").data.radii) == circles.HARD_RADII
  assert cc.variant_name(cc.class_attentive_config("siamese,positives_only")) == "siamese/cosine"


def _config_error(cfg):
  with pytest.raises(errors.ConfigError) as e:
    cc.validate(cfg)
  assert "\n" not in str(e.value)
  return str(e.value)


def test_unknown_field_is_named_with_suggestion():
  c = cc.class_attentive_config()
  with c.unlocked():
    c.loss.temprature = 0.5
  msg = _config_error(c)
  assert "loss.temprature" in msg and "loss.temperature" in msg


@pytest.mark.parametrize("field,value", [
    ("objective", "triplet"), ("data.noise_std", -0.1), ("data.radii", (1.0, 1.1, 1.2)),
    ("data.radii", (1.0, 1.0, 1.2, 1.3)), ("data.train_per_class", 1), ("data.global_batch_size", 5000),
    ("optim.learning_rate", 0.0), ("loss.negative_weights", "mine"), ("loss.temperature", 0.0),
    ("loss.margin", 1.5), ("model.embed_dim", 0), ("model.bias_init_std", -1.0), ("data.name", "patches"),
    ("eval.probe_epochs", 0), ("loss.positive", "any"),
])
def test_bad_values_name_the_field(field, value):
  c = cc.class_attentive_config()
  section, _, name = field.rpartition(".")
  node = c[section] if section else c
  node[name] = value
  assert field in _config_error(c)


def test_supervised_with_attention_is_an_error():
  c = cc.class_attentive_config("supervised")
  c.model.attention = True
  assert "model.attention" in _config_error(c)


def test_unknown_preset():
  with pytest.raises(errors.ConfigError, match="unknown preset 'papr'"):
    cc.class_attentive_config("papr")


# ----------------------------------------------------------------------------
# Short runs


def _short_run(preset):
  cfg = cc.class_attentive_config(preset + ",runlocal")
  cfg.optim.num_epochs = 6
  data = ca_run.load_data(cfg)
  net, params, history = loop.train(cfg, data)
  z = ca_eval.embed(net, params, data.test_x)["z"]
  return ca_eval.collapse_std_ratio(z), history


def test_paper_loss_collapses_and_negatives_prevent_it():
  paper_std, paper_hist = _short_run("paper")
  contrastive_std, contrastive_hist = _short_run("contrastive")
  # The paper's loss is minimised by one direction for everything (pos = neg cosine);
  # the negatives keep the embeddings spread.
  # Measured at this size: paper 0.12, contrastive 0.50 (std ratio; untrained ~0.3).
  assert paper_hist[-1]["loss"] < paper_hist[0]["loss"]
  assert paper_hist[-1]["neg_cos"] > 0.9  # different classes point the same way
  assert paper_std < 0.3, paper_std
  assert contrastive_std > 0.4, contrastive_std
  assert contrastive_std > 3 * paper_std
  assert contrastive_hist[-1]["neg_cos"] < paper_hist[-1]["neg_cos"] - 0.15


def test_collapse_diagnostics():
  rng = np.random.default_rng(0)
  spread = rng.normal(size=(500, 16))
  assert 0.9 < ca_eval.collapse_std_ratio(spread) < 1.1
  collapsed = np.ones((500, 16)) + 1e-6 * spread
  assert ca_eval.collapse_std_ratio(collapsed) < 1e-4
  assert ca_eval.effective_rank(spread) > 12 and ca_eval.effective_rank(rng.normal(size=(500, 1)) * np.ones(16)) < 1.01


def test_nan_loss_stops_the_run(monkeypatch):
  cfg = cc.class_attentive_config("paper,runlocal")
  cfg.optim.num_epochs = 1
  monkeypatch.setattr(ca_losses, "class_attentive_cosine_loss", lambda z_i, z_j, w: jnp.full(z_i.shape[:1], jnp.nan))
  with pytest.raises(errors.NonFiniteLossError, match="epoch 1: loss"):
    loop.train(cfg, ca_run.load_data(cfg))


def test_tsne_png(tmp_path):
  pytest.importorskip("matplotlib")
  rng = np.random.default_rng(0)
  path = str(tmp_path / "t.png")
  ca_eval.tsne_png(rng.normal(size=(40, 8)), np.repeat(np.arange(4), 10), path, "test", max_points=30)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------
# Command line


def _main(*args):
  return subprocess.run([sys.executable, "-m", "fgjax.main", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300)


def test_command_line_run_and_table(tmp_path):
  workdir = tmp_path / "default" / "paper_seed0"
  run = _main("--config=configs/class_attentive.py:paper,runlocal", f"--workdir={workdir}")
  assert run.returncode == 0, run.stderr[-2000:]
  with open(workdir / "results.json") as f:
    results = json.load(f)
  trained = results["trained"]
  for key in ("probe_test_top1", "probe_all_top1", "unit_probe_test_top1", "std_ratio", "prototype_test_top1",
              "leaky_probe_test_top1"):
    assert np.isfinite(trained[key]), key
  assert results["run"]["variant"] == "attentive/cosine"
  assert results["reference"]["oracle_test_top1"] > 0.9
  assert os.path.exists(workdir / "results.md") and os.path.exists(workdir / "metrics.jsonl")
  # The launch table of this one run carries its numbers (one seed: no ± part).
  table = tables.class_attentive_table(str(tmp_path), ["default"], seeds=1).splitlines()
  pct = lambda v: f"{100 * v:.2f}"
  row = [line for line in table if line.startswith("| class-attentive, the paper's loss")]
  assert row == [f"| class-attentive, the paper's loss (positives only) `:paper` | 25 % | "
                 f"{pct(trained['probe_test_top1'])} | {pct(trained['probe_all_top1'])} | "
                 f"{pct(trained['unit_probe_test_top1'])} | {pct(trained['prototype_test_top1'])} | "
                 f"{trained['std_ratio']:.3f} | {trained['effective_rank']:.1f} |"], table
  ref = results["reference"]
  assert (f"| linear classifier on the raw 200-d input | - | {pct(ref['raw_probe_test_top1'])} | "
          f"{pct(ref['raw_probe_all_top1'])} | - | - | - | - |") in table
  assert f"Data: {results['run']['data']}. Mean ± std over 1 seeds, in %." in table
  assert not any(line.startswith("| Siamese") for line in table)  # rows without runs are left out


def test_command_line_bad_field_is_one_line():
  for args, match in [(("--config.data.noise_std=-1.0",), "data.noise_std"),
                      (("--config.data.global_batch_size=1",), "data.global_batch_size")]:
    bad = _main("--config=configs/class_attentive.py:runlocal", "--workdir=/tmp/fgjax_ca_never_written", *args)
    assert bad.returncode == 2, bad.stderr[-2000:]
    errors = [line for line in bad.stderr.splitlines() if line.startswith("fgjax: error:")]
    assert len(errors) == 1 and match in errors[0], bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr
