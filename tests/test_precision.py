"""Mixed precision: bf16 compute, float32 everything that accumulates; unsupported devices."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgjax import errors
from fgjax import train
from fgjax.data import pipeline
from fgjax.infra import parallel
from fgjax.infra import precision
from fgjax.infra.parallel import DATA_AXIS
from fgjax.methods import moco
from fgjax.methods import perturb_ssl
from fgjax.methods import registry
from fgjax.methods import simsiam
from fgjax.methods import spec
from fgjax.ops import contrastive_losses
from fgjax.ops import gradcam
from fgjax.ops import losses
from fgjax.ops import perturb


STEPS = 6


def _loss_curve(method, dtype, seed, steps=STEPS):
  """Losses of the first ``steps`` training steps of the tiny preset, and the final state."""
  cfg = registry.config(method, "runlocal")
  cfg.model.dtype = dtype
  cfg.seed = seed
  mesh = parallel.make_mesh(jax.devices()[:1])
  data = pipeline.load_splits(cfg)
  setup = registry.setup(cfg, len(data["train"]), train_source=data["train"])
  joint, _ = registry.step_functions(cfg, setup, registry.hparams(cfg, setup, 1))
  step = parallel.data_parallel(joint, mesh)
  init_rng, step_rng = registry.rngs(cfg)
  state = parallel.replicate(mesh, spec.initial_state(setup, init_rng))
  step_rng = parallel.replicate(mesh, step_rng)
  batches = pipeline.train_batches(data["train"], global_batch_size=cfg.data.global_batch_size, seed=0)
  curve = []
  for i in range(steps):
    state, metrics = step(state, parallel.shard_batch(mesh, batches[i]), step_rng)
    curve.append(metrics["loss"])
  return np.asarray(jax.device_get(curve)), jax.device_get(state), metrics


@pytest.fixture(scope="module")
def moco_curves():
  f32, _, _ = _loss_curve("moco", "float32", seed=0)
  f32_other_seed, _, _ = _loss_curve("moco", "float32", seed=1)
  bf16, bf16_state, bf16_metrics = _loss_curve("moco", "bfloat16", seed=0)
  return f32, f32_other_seed, bf16, bf16_state, bf16_metrics


def test_bf16_loss_curve_matches_float32_within_noise(moco_curves):
  f32, f32_other_seed, bf16, _, _ = moco_curves
  # Tolerance: bf16 keeps 8 significant bits, a relative rounding of up to
  # 2**-8 = 0.4 % per op; through the ~20 layers of the encoder and head these
  # add up like a random walk to ~1 % of the features, and an InfoNCE loss at
  # temperature 0.2 moves by about as much (measured on the first embedded data:
  # 0.9 % at most over these steps). The images of data version 2 are more alike (one
  # object colour, a flat background), so a batch's features and logits are closer
  # together and the same rounding moves the loss further: measured 2.3 % at the
  # first step (before any update) and 3.0 % at most. Allowed: 4 % of the loss, and
  # at most 1/4 of the run-to-run noise a user sees -- the gap between two float32
  # runs with other seeds (other initial weights and augmentations).
  seed_gap = np.max(np.abs(f32 - f32_other_seed))
  bf16_gap = np.abs(bf16 - f32)
  assert np.all(np.isfinite(bf16))
  assert np.max(bf16_gap) <= 0.25 * seed_gap, (f32, bf16, f32_other_seed)
  assert np.max(bf16_gap / f32) <= 0.04, (f32, bf16)
  assert not np.array_equal(bf16, f32)  # bf16 really ran in bf16


def test_bf16_step_keeps_state_and_metrics_float32(moco_curves):
  *_, state, metrics = moco_curves
  for name in ("params", "opt_state", "batch_stats", "momentum_params", "momentum_batch_stats", "queue"):
    # (optax keeps an int32 step count in the optimizer state)
    assert "float32" in precision.tree_dtypes(getattr(state, name)) <= {"float32", "int32"}, name
  assert precision.tree_dtypes((state.step, state.queue_ptr)) == {"int32"}
  assert {str(v.dtype) for v in metrics.values()} == {"float32"}


def test_losses_are_float32_for_bf16_inputs():
  rng = np.random.default_rng(0)
  bf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.bfloat16)  # noqa: E731
  q, k, queue = losses.l2_normalize(bf(4, 8)), losses.l2_normalize(bf(4, 8)), losses.l2_normalize(bf(16, 8))
  args = (q, k, queue, bf(4, 8), bf(4, 8), bf(4, 2, 8), bf(16, 8))

  @jax.jit  # one program (op-by-op dispatch compiles every small op on CPU)
  def outputs(q, k, queue, p, z, views, bank):
    return {
        "infonce": losses.infonce_with_queue(query=q, key=k, queue=queue, temperature=0.2),
        "nt_xent": losses.nt_xent(z_a=q, z_b=k, temperature=0.2),
        "simsiam": losses.simsiam_loss(p1=p, z2=z, p2=z, z1=p),
        "supcon": contrastive_losses.supcon_loss(views, jnp.array([0, 0, 1, 1]), temperature=0.1)[0],
        "bank_variance": perturb.feature_bank_variance(bank),
        "gradcam": gradcam.gradcam_feature_scores(lambda v: jnp.sum(v * v, axis=-1), p),
    }

  outputs = outputs(*args)
  for name, value in outputs.items():
    assert value.dtype == jnp.float32, name


def _nets(method, dtype):
  cfg = registry.config(method, "runlocal")
  cfg.model.dtype = dtype
  return cfg, registry.setup(cfg).nets


def test_moco_gradcam_head_runs_in_float32():
  cfg, nets16 = _nets("perturb_moco", "bfloat16")
  _, nets32 = _nets("perturb_moco", "float32")
  n = 32  # runlocal: width 4 * 8
  rng = np.random.default_rng(0)
  v = jnp.asarray(rng.normal(size=(6, n)), jnp.float32)
  keys = losses.l2_normalize(jnp.asarray(rng.normal(size=(6, cfg.model.proj_dim)), jnp.float32))
  queue = losses.l2_normalize(jnp.asarray(rng.normal(size=(16, cfg.model.proj_dim)), jnp.float32))
  head_params = nets32.head.init(jax.random.PRNGKey(0), v)["params"]
  scores = lambda nets: jax.jit(  # noqa: E731
      lambda p: perturb_ssl.gradcam_scores(
          moco.gradcam_loss({"head": p}, {"keys": keys, "queue": queue}, {}, nets=nets, hp=hp), v,
          sign="-loss"))(head_params)
  hp = types.SimpleNamespace(moco=types.SimpleNamespace(temperature=0.2))
  eta16, eta32 = scores(nets16), scores(nets32)
  assert eta16.dtype == jnp.float32
  np.testing.assert_allclose(eta16, eta32, rtol=1e-6, atol=1e-9)  # a bf16 head is ~1e-2 off


def test_simsiam_gradcam_heads_run_in_float32():
  _, nets16 = _nets("perturb_simsiam", "bfloat16")
  _, nets32 = _nets("perturb_simsiam", "float32")
  rng = np.random.default_rng(1)
  v = jnp.asarray(rng.normal(size=(1, 6, 32)), jnp.float32)  # [devices=1, b, n]
  z2 = jnp.asarray(rng.normal(size=(1, 6, 32)), jnp.float32)  # runlocal simsiam.proj_dim = 32
  head = nets32.head.clone(bn_axis_name=None)
  head_params = head.init(jax.random.PRNGKey(0), v[0], train=False)["params"]
  pred_params = nets32.predictor.clone(bn_axis_name=None).init(jax.random.PRNGKey(1), z2[0], train=False)["params"]
  params = {"head": head_params, "predictor": pred_params}
  # vmap over a device axis of size 1 binds the BN axis name, as shard_map does.
  scores = lambda nets: jax.jit(jax.vmap(  # noqa: E731
      lambda a, b: perturb_ssl.gradcam_scores(simsiam.gradcam_loss(params, {}, {"z2": b}, nets=nets, hp=None),
                                              a, sign="-loss"), axis_name=DATA_AXIS))(v, z2)
  eta16, eta32 = scores(nets16), scores(nets32)
  assert eta16.dtype == jnp.float32
  np.testing.assert_allclose(eta16, eta32, rtol=1e-6, atol=1e-9)


def _device(kind, capability=None, platform="gpu"):
  return types.SimpleNamespace(id=0, platform=platform, device_kind=kind, compute_capability=capability)


def test_bf16_needs_a_gpu_with_bf16_units():
  v100 = _device("Tesla V100-SXM2-16GB", "7.0")
  with pytest.raises(errors.ConfigError, match=r"model.dtype.*V100.*compute capability 7.0"):
    precision.check_compute_dtype("bfloat16", [v100])
  precision.check_compute_dtype("float32", [v100])
  for ok in (_device("NVIDIA A100-SXM4-80GB", "8.0"), _device("NVIDIA H100 80GB HBM3", "9.0"),
             _device("TPU v4", platform="tpu"), jax.devices()[0]):
    precision.check_compute_dtype("bfloat16", [ok])
  line = precision.describe("bfloat16", jax.devices()[:1])
  assert ("emulated" in line) != precision.cpu_has_bf16_instructions() and "stay float32" in line


def test_training_on_an_old_gpu_in_bf16_stops_before_anything_is_written(tmp_path, monkeypatch):
  real_mesh = parallel.make_mesh

  def mesh_with_a_v100(devices=None):
    mesh = real_mesh(devices)
    fake = types.SimpleNamespace(size=mesh.size, devices=np.array([_device("Tesla V100-SXM2-16GB", "7.0")]))
    return fake

  monkeypatch.setattr(train.parallel, "make_mesh", mesh_with_a_v100)
  cfg = registry.config("moco", "runlocal,bf16")
  with pytest.raises(errors.ConfigError, match="Tesla V100"):
    train.train_and_evaluate(cfg, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert not (tmp_path / "run").exists()
