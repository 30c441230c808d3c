"""SimCLR, the worked example of adding a method: its config, its loss against NumPy, its step on 1 and 4 devices."""

import jax
import ml_collections
import numpy as np
import pytest

from fgjax import errors
from fgjax.data import pipeline
from fgjax.infra import parallel
from fgjax.methods import registry
from fgjax.methods import spec

import run_steps


def _cfg(preset="runlocal"):
  cfg = registry.config("simclr", preset)
  cfg.data.global_batch_size = 16
  cfg.model.bn_groups = 4
  return cfg


def test_simclr_config_has_its_block_and_no_other_methods():
  cfg = registry.config("simclr")
  registry.validate(cfg, num_devices=1)
  assert cfg.simclr.temperature == 0.2 and cfg.model.proj_dim == 128
  assert not any(block in cfg for block in ("moco", "simsiam", "perturb"))
  cfg.moco = ml_collections.ConfigDict({"temperature": 0.5})
  with pytest.raises(errors.ConfigError, match="unknown config field 'moco.temperature'"):
    registry.validate(cfg, num_devices=1)
  bad = registry.config("simclr")
  bad.simclr.temperature = 0.0
  with pytest.raises(errors.ConfigError, match="simclr.temperature"):
    registry.validate(bad, num_devices=1)


def _nt_xent_numpy(z1, z2, tau):
  """SimCLR Eq. 1 in float64, both directions averaged per pair."""
  e = np.concatenate([z1, z2]).astype(np.float64)
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  n = len(z1)
  sim = e @ e.T / tau
  out = np.zeros(2 * n)
  for i in range(2 * n):
    p = (i + n) % (2 * n)
    others = [j for j in range(2 * n) if j != i]
    out[i] = -sim[i, p] + np.log(np.sum(np.exp(sim[i, others])))
  return (out[:n] + out[n:]) / 2


def _run(cfg, num_devices, num_steps=2):
  assert registry.get(cfg.method).pretrain_step is None
  return run_steps.run_steps(cfg, num_devices, num_steps)


def test_simclr_loss_is_nt_xent_of_the_global_batch():
  """The step's loss equals SimCLR Eq. 1 recomputed in NumPy (float64) from the same embeddings."""
  from jax.sharding import PartitionSpec

  from fgjax.infra.parallel import DATA_AXIS
  from fgjax.methods import ssl_common
  cfg = _cfg()
  s, _, metrics = _run(cfg, 1, num_steps=1)
  state0 = spec.initial_state(s, jax.random.PRNGKey(0))
  batch = pipeline.train_batches(pipeline.load_splits(cfg)["train"], global_batch_size=16, seed=0)[0]
  hp = registry.hparams(cfg, s, 1)
  rng = jax.random.fold_in(jax.random.PRNGKey(1), 0)

  def embeddings(images):  # the step's views, features and head, without its loss
    x1, x2 = ssl_common.augmented_views(rng, ssl_common.to_float_images(images), hp.image_size, hp.views)
    f1, stats = ssl_common.encode(s.nets.encoder, state0.params["encoder"], state0.batch_stats, x1,
                                  groups=hp.local_bn_groups)
    f2, _ = ssl_common.encode(s.nets.encoder, state0.params["encoder"], stats, x2, groups=hp.local_bn_groups)
    head = lambda f: s.nets.head.apply({"params": state0.params["head"]}, f)  # noqa: E731
    return head(f1), head(f2)

  mesh = parallel.make_mesh(jax.devices()[:1])
  z1, z2 = jax.jit(jax.shard_map(embeddings, mesh=mesh, in_specs=PartitionSpec(DATA_AXIS),  # jit: eager is slow
                                 out_specs=PartitionSpec(DATA_AXIS)))(parallel.shard_batch(mesh, batch)["image"])
  expected = _nt_xent_numpy(np.asarray(z1), np.asarray(z2), cfg.simclr.temperature).mean()
  np.testing.assert_allclose(metrics[0]["loss"], expected, rtol=2e-4)


def test_simclr_same_on_one_and_four_devices_and_learns_finite():
  if len(jax.devices()) < 4:
    pytest.skip("needs JAX_NUM_CPU_DEVICES=4 (set by conftest.py)")
  cfg = _cfg()
  cfg.optim.base_lr = 0.03
  _, one, m1 = _run(cfg, 1)
  _, four, m4 = _run(cfg, 4)
  for a, b in zip(m1, m4):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-4)
    assert np.isfinite(a["loss"])
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  assert int(one.step) == 2
