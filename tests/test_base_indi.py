"""Base-Indi (seed B): the instance head's layout, the losses against NumPy, the
efficient variant against the masked full softmax, the step on 1 and 2 devices,
and every objective end to end."""

import functools
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
from fgjax import optim
from fgjax.data import pipeline
from fgjax.infra import parallel
from fgjax.methods import base_indi
from fgjax.methods import instance_head as ih
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.ops import instance_losses


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- references


def _np_logsumexp(x):
  m = np.max(x)
  return m + np.log(np.sum(np.exp(x - m)))


def _np_instance_losses(v, weights, biases, ids, super_of, *, restrict):
  """Per image: -log softmax over all instances (Eq. 4) or its own super-class's (Eq. 5).

  weights [n, d] and biases [n] are indexed by instance id (no grouping).
  """
  out = []
  for x, i in zip(v, ids):
    members = np.arange(len(super_of))
    if restrict:
      members = members[super_of == super_of[i]]
    logits = np.array([weights[j] @ x + biases[j] for j in members], np.float64)
    out.append(_np_logsumexp(logits) - logits[list(members).index(i)])
  return np.array(out)


def _np_cross_entropy(logits, labels):
  return np.array([_np_logsumexp(l) - l[y] for l, y in zip(logits.astype(np.float64), labels)])


def _random_problem(seed, super_labels, d=6, b=10):
  """A head (grouped params + the same weights per instance id) and a batch of ids."""
  rng = np.random.default_rng(seed)
  layout = ih.InstanceLayout.from_super_labels(super_labels)
  n = layout.num_instances
  weights = rng.normal(size=(n, d)).astype(np.float32)
  biases = rng.normal(size=n).astype(np.float32)
  kernel = rng.normal(size=(layout.num_groups, layout.group_size, d)).astype(np.float32)  # padding junk
  bias = rng.normal(size=(layout.num_groups, layout.group_size)).astype(np.float32)
  kernel[layout.group_of, layout.slot_of] = weights
  bias[layout.group_of, layout.slot_of] = biases
  ids = rng.choice(n, size=b, replace=False)
  v = rng.normal(size=(b, d)).astype(np.float32)
  return layout, weights, biases, kernel, bias, ids, v


def _args(layout, kernel, bias, ids, v):
  return (jnp.asarray(v), jnp.asarray(kernel), jnp.asarray(bias), jnp.asarray(layout.valid),
          jnp.asarray(layout.group_of[ids]), jnp.asarray(layout.slot_of[ids]))


# Imbalanced super-classes (sizes 5, 2, 4, 1) with shuffled ids.
_SUPER = np.array([0, 2, 1, 0, 2, 0, 3, 2, 0, 1, 2, 0])


# ---------------------------------------------------------------- the layout


def test_layout_maps_every_instance_to_its_super_class():
  layout = ih.InstanceLayout.from_super_labels(_SUPER)
  assert layout.num_instances == 12 and layout.num_groups == 4 and layout.group_size == 5
  np.testing.assert_array_equal(layout.counts, [5, 2, 4, 1])
  np.testing.assert_array_equal(layout.group_of, _SUPER)
  for i in range(12):
    assert layout.instance_at[layout.group_of[i], layout.slot_of[i]] == i
  for g in range(4):  # members in increasing id order, then padding
    row = layout.instance_at[g]
    members = np.flatnonzero(_SUPER == g)
    np.testing.assert_array_equal(row[:len(members)], members)
    assert np.all(row[len(members):] == -1)
  assert layout.valid.sum() == 12


def test_layout_with_a_super_class_that_has_no_training_image():
  layout = ih.InstanceLayout.from_super_labels(np.array([0, 0, 2]), num_super=3)
  np.testing.assert_array_equal(layout.counts, [2, 0, 1])
  assert not layout.valid[1].any()
  with pytest.raises(ValueError, match="num_super"):
    ih.InstanceLayout.from_super_labels(np.array([0, 3]), num_super=3)


def test_auto_capacity_is_a_multiple_of_8_and_at_most_the_batch():
  balanced = ih.InstanceLayout.from_super_labels(np.repeat(np.arange(32), 64))
  assert balanced.auto_capacity(128) == 16  # mean 4, sd ~2 -> 4 + 6 + 1 -> 16
  assert ih.InstanceLayout.single_group(100).auto_capacity(32) == 32


def test_instance_head_grows_with_the_training_set():
  shapes = {}
  for per_class in (4, 8):
    cfg = registry.config("base_indi", "runlocal")
    cfg.data.train_per_class = per_class
    source = pipeline.load_splits(cfg)["train"]
    nets = base_indi.build_networks(cfg, source)
    params = jax.eval_shape(nets.instance_head.init, jax.random.PRNGKey(0), jnp.zeros((2, 32)))["params"]
    shapes[per_class] = params["kernel"].shape
    assert nets.layout.num_instances == len(source) == 4 * per_class
    np.testing.assert_array_equal(nets.layout.group_of, source.super_labels)
  assert shapes[4] == (2, 8, 32) and shapes[8] == (2, 16, 32)


# ---------------------------------------------------------------- the losses


def test_instance_loss_all_matches_numpy():
  layout, weights, biases, kernel, bias, ids, v = _random_problem(0, _SUPER)
  got = instance_losses.instance_loss_all(*_args(layout, kernel, bias, ids, v))
  want = _np_instance_losses(v, weights, biases, ids, _SUPER, restrict=False)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("capacity", [3, 5, 10])
def test_within_super_matches_numpy_and_the_masked_full_softmax(capacity):
  # capacity 3 < the 4 images of super-class 0 in this batch: the exact fallback runs.
  layout, weights, biases, kernel, bias, ids, v = _random_problem(1, _SUPER)
  args = _args(layout, kernel, bias, ids, v)
  got, overflow = instance_losses.instance_loss_within_super(*args, capacity=capacity)
  masked = instance_losses.instance_loss_within_super_masked(*args)
  want = _np_instance_losses(v, weights, biases, ids, _SUPER, restrict=True)
  np.testing.assert_allclose(np.asarray(masked), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(got), np.asarray(masked), rtol=1e-6, atol=1e-6)
  max_count = np.bincount(_SUPER[ids]).max()
  assert bool(overflow) == (max_count > capacity)


def test_grouped_path_equals_masked_in_value_and_gradient():
  layout, _, _, kernel, bias, ids, v = _random_problem(2, _SUPER)
  args = _args(layout, kernel, bias, ids, v)

  def total(fn, v, kernel, bias):
    return jnp.sum(fn(v, kernel, bias, *args[3:]))

  grouped = functools.partial(instance_losses._instance_loss_grouped, capacity=10)
  for argnum in (0, 1, 2):
    g1 = jax.grad(functools.partial(total, grouped), argnums=argnum)(*args[:3])
    g2 = jax.grad(functools.partial(total, instance_losses.instance_loss_within_super_masked), argnums=argnum)(*args[:3])
    np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-5, atol=1e-6)


def test_grouped_path_builds_no_n_wide_logits():
  """Eq. 5's cost: nothing of the grouped computation is [b, G*m] (or has G*m columns)."""
  super_labels = np.repeat(np.arange(7), 11)  # G*m = 77: a width no other array has
  layout, _, _, kernel, bias, ids, v = _random_problem(3, super_labels, d=5, b=9)
  args = _args(layout, kernel, bias, ids, v)
  jaxpr = jax.make_jaxpr(jax.value_and_grad(
      lambda v: jnp.sum(instance_losses._instance_loss_grouped(v, *args[1:], capacity=8))))(args[0])
  shapes = [var.aval.shape for eqn in jaxpr.jaxpr.eqns for var in eqn.outvars]
  assert not [s for s in shapes if 77 in s], "the grouped path formed an n-wide array"
  jaxpr_all = jax.make_jaxpr(lambda v: instance_losses.instance_loss_all(v, *args[1:]))(args[0])
  assert any(77 in var.aval.shape for eqn in jaxpr_all.jaxpr.eqns for var in eqn.outvars)


def test_base_indi_loss_matches_numpy():
  rng = np.random.default_rng(4)
  logits = rng.normal(size=(6, 3)).astype(np.float32)
  labels = rng.integers(0, 3, size=6)
  inst = rng.uniform(size=6).astype(np.float32)
  got = instance_losses.base_indi_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(inst), 0.7)
  np.testing.assert_allclose(np.asarray(got), _np_cross_entropy(logits, labels) + 0.7 * inst, rtol=1e-5)


def test_losses_are_finite_with_an_empty_group_and_a_single_member():
  super_labels = np.array([0, 0, 0, 2])  # group 1 empty, group 2 a single instance
  layout, _, _, kernel, bias, _, v = _random_problem(5, super_labels, b=4)
  ids = np.array([0, 1, 2, 3])
  args = _args(layout, kernel, bias, ids, v[:4])
  loss, _ = instance_losses.instance_loss_within_super(*args, capacity=4)
  assert np.all(np.isfinite(np.asarray(loss)))
  assert float(loss[3]) == pytest.approx(0.0, abs=1e-6)  # the only member of its super-class
  grads = jax.grad(lambda v: jnp.sum(instance_losses.instance_loss_within_super(v, *args[1:], capacity=4)[0]))(args[0])
  assert np.all(np.isfinite(np.asarray(grads)))


# ---------------------------------------------------------------- schedule, config


def test_step_schedule_decays_at_the_fractions():
  cfg = registry.config("base", "cifar100")
  lr = optim.learning_rate(cfg, 1000)
  assert float(lr(0)) == pytest.approx(0.1)
  assert float(lr(299)) == pytest.approx(0.1)
  assert float(lr(300)) == pytest.approx(0.02)
  assert float(lr(600)) == pytest.approx(0.004)
  assert float(lr(999)) == pytest.approx(0.0008)


@pytest.mark.parametrize("field,value,match", [
    ("augment.crop", "random", "augment.crop"),
    ("optim.decay_at", (0.6, 0.3), "optim.decay_at"),
    ("optim.schedule", "linear", "optim.schedule"),
    ("base_indi.instance_weight", 0.0, "base_indi.instance_weight"),
    ("augment.scale", (0.5, 0.2), "augment.scale"),
])
def test_bad_fields_name_the_field(field, value, match):
  cfg = registry.config("base_indi", "runlocal")
  section, name = field.split(".")
  cfg[section][name] = value
  with pytest.raises(errors.ConfigError, match=match):
    registry.validate(cfg, num_devices=1)


def test_presets_and_unknown_fields():
  assert registry.config("base_indi", "eff").method == "base_indi_eff"
  for preset in ("base", "fine", "indi", "eff", "cifar100", "stanford_online_products"):
    cfg = registry.config("base_indi", preset)
    registry.validate(cfg, num_devices=1)
  with pytest.raises(errors.ConfigError, match="unknown preset"):
    registry.config("base_indi", "cifar10")
  cfg = registry.config("base_indi")
  cfg.moco = {"queue_size": 3}  # an SSL section does not belong here
  with pytest.raises(errors.ConfigError, match="unknown config field"):
    registry.validate(cfg, num_devices=1)


def test_super_class_objectives_need_super_labels():
  cfg = registry.config("base", "runlocal")
  source = pipeline.ArraySource({"image": np.zeros((4, 16, 16, 3), np.uint8),
                                 "fine_label": np.arange(4, dtype=np.int32)},
                                fine_names=list("abcd"), description="no-super test data")
  with pytest.raises(errors.ConfigError, match="super-class labels"):
    registry.setup(cfg, train_source=source)
  cfg.method = "indi"  # instance ids need no labels: one group
  s = registry.setup(cfg, train_source=source)
  assert s.nets.layout.num_groups == 1 and s.nets.layout.num_instances == 4


# ---------------------------------------------------------------- the step


def _step_run(method, num_devices, steps=2):
  cfg = registry.config(method, "runlocal")
  cfg.data.global_batch_size = 16
  cfg.data.train_per_class = 8
  cfg.model.bn_groups = 2  # the same BN groups on 1 and on 2 devices
  data = pipeline.load_splits(cfg)
  s = registry.setup(cfg, train_source=data["train"])
  mesh = parallel.make_mesh(jax.devices()[:num_devices])
  hp = registry.hparams(cfg, s, num_devices)
  step, _ = registry.step_functions(cfg, s, hp)
  step = parallel.data_parallel(step, mesh, donate_state=False)
  state = parallel.replicate(mesh, spec.initial_state(s, jax.random.PRNGKey(0)))
  rng = parallel.replicate(mesh, jax.random.PRNGKey(1))
  batches = pipeline.train_batches(data["train"], global_batch_size=16, seed=0)
  metrics = []
  for i in range(steps):
    state, m = step(state, parallel.shard_batch(mesh, batches[i]), rng)
    metrics.append(jax.device_get(m))
  return jax.device_get(state), metrics


@pytest.mark.parametrize("method", ["base_indi_eff", "fine"])
def test_step_is_the_same_on_one_and_two_devices(method):
  if len(jax.devices()) < 2:
    pytest.skip("needs JAX_NUM_CPU_DEVICES >= 2 (set by conftest.py)")
  s1, m1 = _step_run(method, 1)
  s2, m2 = _step_run(method, 2)
  for a, b in zip(m1, m2):
    for key in a:
      np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5, err_msg=key)
  chex.assert_trees_all_close(s1.params, s2.params, rtol=1e-4, atol=1e-5)


def test_each_objective_trains_only_its_heads():
  expected = {"base": {"super_head"}, "fine": {"fine_head"}, "indi": {"instance_head"},
              "base_indi": {"super_head", "instance_head"}, "base_indi_eff": {"super_head", "instance_head"}}
  for method, heads in expected.items():
    cfg = registry.config(method, "runlocal")
    data = pipeline.load_splits(cfg)
    state = jax.eval_shape(registry.setup(cfg, train_source=data["train"]).init_state, jax.random.PRNGKey(0))
    assert set(state.params) == {"encoder"} | heads, method


def test_eff_and_full_base_indi_give_the_same_loss_on_the_same_state():
  """Eq. 5 restricted to one super-class equals Eq. 4 when there is one super-class."""
  cfg = registry.config("base_indi", "runlocal")
  patches = pipeline.load_splits(cfg)["train"]
  one_super = pipeline.ArraySource(
      {"image": patches._arrays["image"], "fine_label": patches.fine_labels,
       "super_label": np.zeros(len(patches), np.int32)},
      fine_names=patches.fine_names, super_names=["all"], description="one super-class")
  batch = pipeline.train_batches(one_super, global_batch_size=8, seed=0)[0]
  values = {}
  for method in ("base_indi", "base_indi_eff"):
    cfg.method = method
    s = registry.setup(cfg, train_source=one_super)
    state = spec.initial_state(s, jax.random.PRNGKey(0))
    hp = registry.hparams(cfg, s, 1)
    images = jnp.asarray(batch["image"], jnp.float32) / 255.0
    loss, (metrics, _) = base_indi.loss_terms(state.params, state.batch_stats, images,
                                               jax.tree.map(jnp.asarray, batch), nets=s.nets, hp=hp)
    values[method] = float(metrics["loss_instance"])
  assert values["base_indi"] == pytest.approx(values["base_indi_eff"], rel=1e-6)


# ---------------------------------------------------------------- end to end


# ('fine' trains in the 1-vs-2-device test; 'base_indi' in the CLI test.)
@pytest.mark.parametrize("preset", ["base", "indi", "eff"])
def test_objectives_train_and_report_their_metrics(tmp_path, preset):
  from fgjax import train
  cfg = registry.config("base_indi", f"{preset},runlocal")
  cfg.optim.num_epochs = 1.0
  results = train.train_and_evaluate(cfg, str(tmp_path), devices=jax.devices()[:1])["trained"]
  for level in ("fine", "super"):
    for k in (1, 2, 4, 8):
      assert 0.0 <= results[f"recall@{k}_{level}"] <= 1.0
  assert ("head_top1_super" in results) == (preset in ("base", "eff"))
  with open(tmp_path / "results.json") as f:
    assert json.load(f)["run"]["method"] == cfg.method


def test_cli_trains_and_evaluates_a_checkpoint(tmp_path):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="1")
  run = subprocess.run([sys.executable, "-m", "fgjax.main", "--config=configs/base_indi.py:runlocal",
                        f"--workdir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-2000:]
  with open(tmp_path / "results.json") as f:
    trained = json.load(f)["trained"]
  run = subprocess.run([sys.executable, "-m", "fgjax.main", "--config=configs/evaluate.py",
                        f"--config.workdir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-2000:]
  with open(tmp_path / "results.json") as f:
    evaluated = json.load(f)["evaluations"]
  (step_eval,) = evaluated.values()
  assert step_eval["trained"]["head_top1_super"] == trained["head_top1_super"]
  assert step_eval["trained"]["recall@1_fine"] == trained["recall@1_fine"]


def test_cli_bad_field_is_one_line(tmp_path):
  run = subprocess.run([sys.executable, "-m", "fgjax.main", "--config=configs/base_indi.py:runlocal",
                        "--config.augment.crop=zoom", f"--workdir={tmp_path}"], cwd=REPO,
                       capture_output=True, text=True)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1].startswith("fgjax: error: config field 'augment.crop'")
