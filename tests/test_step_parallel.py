"""The Perturb-MoCo step computes the same function on 1 device and on 4 devices.

Per-device BatchNorm would make a naive 1-vs-4 comparison meaningless, so the
step normalises in ``model.bn_groups`` groups whatever the device count: one
device with 4 BN groups must equal 4 devices with one group each -- same
parameters, BN statistics, momentum network, MoCo queue and memory bank.
"""

import functools

import chex
import jax
import numpy as np
import pytest

from fgjax import optim
from fgjax.data import pipeline
from fgjax.infra import parallel
from fgjax.methods import moco
from fgjax.methods import perturb_ssl
from fgjax.methods import registry
from fgjax.methods import spec


NUM_STEPS = 2
ATOL = 5e-5


def _setup():
  cfg = registry.config("perturb_moco", "runlocal")
  # 8 images per BN group: with 2-image groups, the normalisation of nearly
  # identical reconstruction pairs amplifies float rounding (checked: 1e-2
  # relative vs 3e-4 here), which would hide a real discrepancy in noise.
  cfg.model.bn_groups = 4
  cfg.data.global_batch_size = 32
  cfg.data.train_per_class = 16
  cfg.moco.queue_size = 64
  cfg.perturb.bank_size = 64
  # MoCo v2's ImageNet lr (0.03 per 256), at which ATOL was set: the CPU recipe's 0.3
  # scales the updates, and with them the decoder's rounding-level sign flips that
  # reach the encoder (below), 10x (measured: 3e-4 on a BN bias).
  cfg.optim.base_lr = 0.03
  perturb_moco = perturb_ssl.wrap(moco.BASE)
  nets = perturb_moco.networks(cfg)
  tx = optim.joint_optimizer(cfg, 10)
  decoder_tx = optim.decoder_optimizer(cfg)
  state = perturb_moco.create_state(cfg, nets, jax.random.PRNGKey(0), tx)
  data = pipeline.load_splits(cfg)
  batches = pipeline.train_batches(data["train"], global_batch_size=cfg.data.global_batch_size, seed=0)
  return cfg, nets, tx, decoder_tx, state, [batches[i] for i in range(NUM_STEPS + 1)]


def _run(num_devices, cfg, nets, tx, decoder_tx, state, batches):
  mesh = parallel.make_mesh(jax.devices()[:num_devices])
  chex.clear_trace_counter()  # the counter is per function name; each mesh compiles its own
  setup = spec.Setup(nets=nets, tx=tx, decoder_tx=decoder_tx, init_state=None, joint_steps=10)
  hp = registry.hparams(cfg, setup, num_devices)

  @chex.assert_max_traces(n=1)
  def joint(state, batch, rng):
    return registry.get("perturb_moco").joint_step(state, batch, rng, nets=nets, hp=hp, tx=tx)

  pretrain = parallel.data_parallel(
      functools.partial(perturb_ssl.decoder_pretrain_step, nets=nets, hp=hp, decoder_tx=decoder_tx), mesh, donate_state=False)
  joint = parallel.data_parallel(joint, mesh, donate_state=False)
  rng = parallel.replicate(mesh, jax.random.PRNGKey(1))
  state = parallel.replicate(mesh, state)
  state, _ = pretrain(state, parallel.shard_batch(mesh, batches[0]), rng)
  metrics = []
  for batch in batches[1:]:
    state, m = joint(state, parallel.shard_batch(mesh, batch), rng)
    metrics.append(jax.device_get(m))
  return jax.device_get(state), metrics


@pytest.fixture(scope="module")
def one_and_four():
  if len(jax.devices()) < 4:
    pytest.skip("needs JAX_NUM_CPU_DEVICES=4 (set by conftest.py)")
  setup = _setup()
  return _run(1, *setup), _run(4, *setup)


def test_same_parameters_and_buffers(one_and_four):
  (s1, _), (s4, _) = one_and_four
  assert int(s1.step) == int(s4.step) == NUM_STEPS + 1
  # atol 5e-5: the Adam-trained decoder (below) feeds L_R's gradient back into the
  # encoder, so its rounding-level sign flips reach encoder parameters at ~1e-5.
  # A real discrepancy (psum vs pmean, other BN groups, a device-local negative
  # set) moves them by the size of an update, >= 20x this (see the last test).
  chex.assert_trees_all_close({k: v for k, v in s1.params.items() if k != "decoder"},
                              {k: v for k, v in s4.params.items() if k != "decoder"}, rtol=1e-4, atol=ATOL)
  # The decoder is trained with Adam, whose first steps are ~lr * sign(grad): an
  # element whose gradient is ~0 can flip sign under another summation order.
  # Require tight agreement almost everywhere and |diff| <= 2 lr per Adam step.
  lr = _setup()[0].perturb.decoder_lr
  adam_steps = NUM_STEPS + 1
  a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(s1.params["decoder"])])
  b = np.concatenate([np.ravel(x) for x in jax.tree.leaves(s4.params["decoder"])])
  assert np.isclose(a, b, rtol=1e-4, atol=1e-5).mean() > 0.99
  assert np.max(np.abs(a - b)) <= 2 * lr * adam_steps
  m1, m4 = s1.base, s4.base  # MoCo's own state inside Perturb-MoCo's
  chex.assert_trees_all_close(m1.momentum_params, m4.momentum_params, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(s1.batch_stats, s4.batch_stats, rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(m1.momentum_batch_stats, m4.momentum_batch_stats, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m1.queue, m4.queue, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(s1.feature_bank, s4.feature_bank, rtol=1e-4, atol=1e-5)
  assert int(m1.queue_ptr) == int(m4.queue_ptr) and int(s1.bank_count) == int(s4.bank_count)


def test_same_losses(one_and_four):
  (_, m1), (_, m4) = one_and_four
  for a, b in zip(m1, m4):
    for term in ("loss_c", "loss_r", "loss_cp"):
      np.testing.assert_allclose(a[term], b[term], rtol=1e-4, err_msg=term)


def test_the_step_changed_something(one_and_four):
  (s1, m1), _ = one_and_four
  # Guards against a vacuous comparison (e.g. zero learning rate, no enqueue).
  init = _setup()[4]
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(s1.params["encoder"]),
                                                            jax.tree.leaves(init.params["encoder"])))
  assert moved > 20 * ATOL
  assert not np.allclose(s1.base.queue, init.base.queue)
  assert all(np.isfinite(m["loss"]) for m in m1)
