"""The generated pairs' loss L_Cp (Perturb-SSL step 8): shuffle-BN, the readings' switches, pairing.

* Shuffle-BN: unshuffled, ``x_hat`` and ``x_hat_p`` pass the encoder as two batches whose
  BatchNorm groups hold the same images in the same order, so a pair shares its batch
  statistics (the leak). With ``perturb.pair_shuffle_bn`` (the default) they do not -- on one
  device with 4 BN groups and on 4 devices with one group each.
* The switches of the paper's ambiguous readings (Grad-CAM sign, noise scale, pair augmentation)
  do what their documentation says; an unknown value is one line naming the field (exit 2).
* Paired runs: a Perturb run's joint step ``t`` draws the base's keys and reads the base's batch
  of step ``t``.
"""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax.data import pipeline
from fgjax.infra import parallel
from fgjax.methods import perturb_ssl
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.methods import ssl_common
from fgjax.ops import losses
from fgjax.ops import perturb as perturb_lib


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 32  # 8 images per BN group (4 groups)


def _setup(**perturb_fields):
  cfg = registry.config("perturb_moco", "runlocal")
  cfg.model.bn_groups = 4
  cfg.data.global_batch_size = BATCH
  for name, value in perturb_fields.items():
    cfg.perturb[name] = value
  setup = registry.setup(cfg)
  return cfg, setup.nets, spec.initial_state(setup, jax.random.PRNGKey(0))


def _pair_features(num_devices, x_hat, x_hat_p, **perturb_fields):
  """``perturb_ssl.pair_features`` under shard_map on ``num_devices``; global ``(f_hat, f_hat_p)``."""
  cfg, nets, state = _setup(**perturb_fields)
  mesh = parallel.make_mesh(jax.devices()[:num_devices])
  setup = spec.Setup(nets=nets, tx=None, decoder_tx=None, init_state=None, joint_steps=10)
  hp = registry.hparams(cfg, setup, num_devices)

  def step(variables, batch, rng):
    shuffle_key, augment_key = jax.random.split(rng)
    f_hat, f_hat_p = perturb_ssl.pair_features(nets.encoder, variables[0], variables[1], batch["a"], batch["b"],
                                               shuffle_key, augment_key, hp=hp)
    gather = lambda f: jax.lax.all_gather(f, parallel.DATA_AXIS, tiled=True)
    return variables, (gather(f_hat), gather(f_hat_p))

  run = parallel.data_parallel(step, mesh, donate_state=False)
  variables = parallel.replicate(mesh, (state.params["encoder"], state.batch_stats))
  batch = parallel.shard_batch(mesh, {"a": np.asarray(x_hat), "b": np.asarray(x_hat_p)})
  _, (f_hat, f_hat_p) = run(variables, batch, parallel.replicate(mesh, jax.random.PRNGKey(3)))
  return np.asarray(f_hat), np.asarray(f_hat_p)


def _images(seed=0):
  return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (BATCH, 16, 16, 3)), np.float32)


def _needs_devices(n):
  if len(jax.devices()) < n:
    pytest.skip(f"needs JAX_NUM_CPU_DEVICES={n} (set by conftest.py)")


@pytest.mark.parametrize("num_devices", [1, 4])
def test_unshuffled_pairs_share_their_batch_statistics(num_devices):
  """The leak, shown: identical reconstructions get identical features only through identical BN groups."""
  _needs_devices(num_devices)
  x = _images()
  f_hat, f_hat_p = _pair_features(num_devices, x, x, pair_shuffle_bn=False)
  np.testing.assert_array_equal(f_hat, f_hat_p)


@pytest.mark.parametrize("num_devices", [1, 4])
def test_shuffled_pairs_do_not_share_their_batch_statistics(num_devices):
  """With the default shuffle-BN the same images, regrouped, are normalised with other statistics."""
  _needs_devices(num_devices)
  x = _images()
  f_hat, f_hat_p = _pair_features(num_devices, x, x)
  gap = np.abs(f_hat - f_hat_p).max(axis=1)
  scale = np.abs(f_hat).max()
  assert np.all(gap > 1e-3 * scale), gap / scale  # every pair: other statistics
  # (That the features come back in their images' order: test_shuffle_across_devices_is_undone.)


def test_shuffled_pairs_agree_on_one_and_four_devices():
  """One device with 4 BN groups computes what 4 devices with one group each compute."""
  _needs_devices(4)
  x, x_p = _images(0), _images(1)
  for a, b in zip(_pair_features(1, x, x_p), _pair_features(4, x, x_p)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_shuffle_across_devices_is_undone():
  """Each device gets other rows than its own, and the un-shuffle restores global order."""
  _needs_devices(4)
  mesh = parallel.make_mesh(jax.devices()[:4])
  rows = np.arange(BATCH, dtype=np.float32)[:, None]

  def step(state, batch, rng):
    shuffled, perm = ssl_common.shuffle_across_devices(batch, rng)
    everything = jax.lax.all_gather(shuffled, parallel.DATA_AXIS, tiled=True)
    return state, (everything, ssl_common.unshuffle_to_global(shuffled, perm))

  _, (shuffled, restored) = parallel.data_parallel(step, mesh, donate_state=False)(
      0.0, parallel.shard_batch(mesh, rows), parallel.replicate(mesh, jax.random.PRNGKey(0)))
  np.testing.assert_array_equal(restored, rows)
  assert sorted(np.asarray(shuffled)[:, 0].tolist()) == list(range(BATCH))
  same_group = [set(np.asarray(shuffled)[g * 8:(g + 1) * 8, 0]) == set(range(g * 8, (g + 1) * 8)) for g in range(4)]
  assert not any(same_group)


def test_pair_augmentation_draws_other_views_of_each_reconstruction():
  x = _images()
  plain = _pair_features(1, x, x, pair_augment="none", pair_shuffle_bn=False)
  augmented = _pair_features(1, x, x, pair_augment="aug+", pair_shuffle_bn=False)
  assert not np.allclose(plain[0], augmented[0])
  assert not np.allclose(augmented[0], augmented[1])  # x_hat and x_hat_p: independent draws
  np.testing.assert_array_equal(augmented[0], _pair_features(1, x, x, pair_augment="aug+",
                                                             pair_shuffle_bn=False)[0])  # seeded


def test_gradcam_signs_split_the_product_by_its_sign():
  """'loss': ReLU(g v) (Eq. 3 as printed); '-loss': ReLU(-g v) (what helps minimise the loss)."""
  w = jnp.array([1.0, -2.0, 0.5, 0.0])
  loss = lambda v: v @ w  # dL/dv = w
  v = jnp.array([[1.0, 1.0, -2.0, 3.0], [-1.0, 0.5, 2.0, 1.0]])
  product = np.asarray(v * w)
  np.testing.assert_allclose(perturb_ssl.gradcam_scores(loss, v, sign="loss"), np.maximum(product, 0))
  np.testing.assert_allclose(perturb_ssl.gradcam_scores(loss, v, sign="-loss"), np.maximum(-product, 0))
  with pytest.raises(ValueError, match="gradcam sign"):
    perturb_ssl.gradcam_scores(loss, v, sign="+")


def test_noise_scale_reads_the_second_argument_as_std_or_variance():
  eta = jnp.array([[0.0, 1.0, 3.0]])  # minmax -> 0, 1/3, 1
  s = jnp.array([0.0, 0.5, 1.0])
  expected = 0.1 * np.array([1.0, 2 / 3, 0.0])
  np.testing.assert_allclose(perturb_lib.gradcam_noise_std(eta, eps_g=0.1), [expected], rtol=1e-6)
  np.testing.assert_allclose(perturb_lib.gradcam_noise_std(eta, eps_g=0.1, noise_scale="variance"),
                             [np.sqrt(expected)], rtol=1e-6)
  np.testing.assert_allclose(perturb_lib.lowvar_noise_std(s, eps_var=0.05, kappa=2.0, noise_scale="variance"),
                             np.sqrt(0.05 * np.array([1.0, 0.5, 0.0])), rtol=1e-6)
  # The draws scale with it: same key, sqrt(eps (1 - .)) / (eps (1 - .)) larger.
  kwargs = dict(gradcam_scores=jnp.zeros((1, 3)), bank_variance=jnp.ones(3), eps_g=0.1, eps_var=0.0, kappa=0.0)
  v = jnp.zeros((1, 3))
  std_draw, _ = perturb_lib.perturb_features(jax.random.PRNGKey(0), v, **kwargs)
  var_draw, _ = perturb_lib.perturb_features(jax.random.PRNGKey(0), v, noise_scale="variance", **kwargs)
  np.testing.assert_allclose(var_draw, std_draw * np.sqrt(0.1) / 0.1, rtol=1e-5)


def test_pair_top1_accuracy():
  z = jnp.eye(4)
  assert float(losses.pair_top1_accuracy(z, z)) == 1.0  # each partner identical, the rest orthogonal
  swapped = z[jnp.array([1, 0, 2, 3])]  # pairs 0 and 1 exchanged partners: 4 of 8 anchors miss
  assert float(losses.pair_top1_accuracy(z, swapped)) == 0.5
  chex.assert_shape(losses.pair_top1_accuracy(z, z), ())


def test_a_perturb_joint_step_draws_its_bases_keys_and_batches():
  """Paired runs: joint step t of Perturb-MoCo uses MoCo's key and batch of step t."""
  cfg, nets, state = _setup()
  setup = spec.Setup(nets=nets, tx=None, decoder_tx=None, init_state=None, joint_steps=10)
  hp = registry.hparams(cfg, setup, 1)
  pretrain = hp.joint_start_step
  assert pretrain == cfg.perturb.decoder_pretrain_steps > 0
  rng = jax.random.PRNGKey(5)
  at = lambda step: state.replace(base=state.base.replace(step=jnp.asarray(step, jnp.int32)))  # noqa: E731
  base_key = perturb_ssl.step_keys(rng, at(pretrain + 7), hp)[0]
  np.testing.assert_array_equal(jax.random.key_data(base_key) if base_key.dtype != jnp.uint32 else base_key,
                                jax.random.fold_in(rng, 7))
  # The stream: the decoder's pre-training reads batches 0..P-1, then joint step t reads batch t.
  batches = pipeline.train_batches({"image": np.arange(40, dtype=np.uint8)[:, None]}, global_batch_size=4, seed=0)
  stream = pipeline.joint_phase_from_start(batches, 3)
  for t in range(12):
    np.testing.assert_array_equal(stream[3 + t]["image"], batches[t]["image"])
  np.testing.assert_array_equal(stream[1]["image"], batches[1]["image"])
  assert pipeline.joint_phase_from_start(batches, 0) is batches
  # ... and the encoder starts from the same initialisation as MoCo's with the same seed.
  moco_cfg = registry.config("moco", "runlocal")
  moco_cfg.model.bn_groups = 4
  moco_cfg.data.global_batch_size = BATCH
  moco_state = spec.initial_state(registry.setup(moco_cfg), jax.random.PRNGKey(0))
  chex.assert_trees_all_equal(moco_state.params["encoder"], state.params["encoder"])


@pytest.mark.parametrize("field, value", [("gradcam_sign", "up"), ("noise_scale", "sigma"),
                                          ("pair_augment", "jitter")])
def test_an_unknown_reading_is_one_line_naming_the_field(tmp_path, field, value):
  run = subprocess.run([sys.executable, "-m", "fgjax.main", "--config=configs/perturb_moco.py:runlocal",
                        f"--config.perturb.{field}={value}", f"--workdir={tmp_path / 'run'}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "JAX_NUM_CPU_DEVICES"})
  assert run.returncode == 2, run.stderr[-2000:]
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
  assert f"config field 'perturb.{field}'" in lines[0] and repr(value) in lines[0], lines[0]
