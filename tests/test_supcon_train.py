"""Seed H training: CE, SupCon and HCL configs end to end, the step on 1 and 2 devices,
the ViT backbone, and config errors."""

import chex
import jax
import numpy as np
import pytest

from fgjax import errors
from fgjax.data import pipeline
from fgjax.infra import parallel
from fgjax.methods import registry
from fgjax.methods import spec


def _step_run(cfg, num_devices, steps=2):
  data = pipeline.load_splits(cfg)
  s = registry.setup(cfg, train_source=data["train"])
  mesh = parallel.make_mesh(jax.devices()[:num_devices])
  step, _ = registry.step_functions(cfg, s, registry.hparams(cfg, s, num_devices))
  step = parallel.data_parallel(step, mesh, donate_state=False)
  state = parallel.replicate(mesh, spec.initial_state(s, jax.random.PRNGKey(0)))
  rng = parallel.replicate(mesh, jax.random.PRNGKey(1))
  batches = pipeline.train_batches(data["train"], global_batch_size=cfg.data.global_batch_size, seed=0)
  metrics = []
  for i in range(steps):
    state, m = step(state, parallel.shard_batch(mesh, batches[i]), rng)
    metrics.append(jax.device_get(m))
  return jax.device_get(state), metrics


def test_hcl_step_is_the_same_on_one_and_two_devices():
  """The all-gathered contrast set makes the 2-device step the 1-device step on the global batch."""
  if len(jax.devices()) < 2:
    pytest.skip("needs JAX_NUM_CPU_DEVICES >= 2 (set by conftest.py)")
  cfg = registry.config("hcl", "runlocal")
  cfg.model.bn_groups = 2
  s1, m1 = _step_run(cfg, 1)
  s2, m2 = _step_run(cfg, 2)
  for a, b in zip(m1, m2):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
  chex.assert_trees_all_close(s1.params, s2.params, rtol=1e-4, atol=1e-5)


def test_vit_backbone_trains_without_batch_norm():
  cfg = registry.config("supcon", "vit,runlocal")
  state, metrics = _step_run(cfg, 1, steps=3)
  assert state.batch_stats == {}
  assert all(np.isfinite(m["loss"]) for m in metrics)
  assert metrics[-1]["loss"] != metrics[0]["loss"]  # the parameters moved


# (SupCon's step is HCL's with another loss; it trains in the ViT test.)
@pytest.mark.parametrize("method", ["ce", "hcl"])
def test_configs_train_and_count_genus_outliers(tmp_path, method):
  from fgjax import train
  cfg = registry.config(method, "runlocal")
  results = train.train_and_evaluate(cfg, str(tmp_path), devices=jax.devices()[:1])
  trained = results["trained"]
  assert results["run"]["method"] == method
  assert 0 <= trained["outliers_super"] <= 16 and trained["outlier_share_super"] == trained["outliers_super"] / 16
  assert "knn3_top1_fine" in trained and "probe100_top1_fine" in trained


@pytest.mark.parametrize("field,value,match", [
    ("supcon.soft_weight", 1.0, "supcon.soft_weight"),
    ("supcon.soft_weight", 0.0, "supcon.soft_weight"),
    ("supcon.contrast_mode", "some", "supcon.contrast_mode"),
    ("supcon.temperature", 0.0, "supcon.temperature"),
    ("optim.optimizer", "lamb", "optim.optimizer"),
    ("model.encoder", "vit_huge", "model.encoder"),
])
def test_bad_fields_name_the_field(field, value, match):
  cfg = registry.config("hcl", "runlocal")
  section, name = field.split(".")
  cfg[section][name] = value
  with pytest.raises(errors.ConfigError, match=match):
    registry.validate(cfg, num_devices=1)


def test_hcl_needs_genus_labels():
  cfg = registry.config("hcl", "runlocal")
  source = pipeline.ArraySource({"image": np.zeros((4, 16, 16, 3), np.uint8),
                                 "fine_label": np.arange(4, dtype=np.int32)},
                                fine_names=list("abcd"), description="species-only data")
  with pytest.raises(errors.ConfigError, match="genus"):
    registry.setup(cfg, train_source=source)
  cfg.method = "supcon"  # species labels suffice
  registry.setup(cfg, train_source=source)


def test_presets_validate():
  for method in registry.names(docs='supcon_hcl'):
    for preset in ("", "vit", "swin", "df20_mini", "df20_mini,swin_t"):
      cfg = registry.config(method, preset)
      if preset.startswith("df20_mini"):
        cfg.data.root = "/data/df20_mini"
        # The paper fine-tunes ImageNet weights: the preset names them and asks for the file.
        assert ("ViT-S/16" if preset == "df20_mini" else "Swin-T") in cfg.model.init_from
        with pytest.raises(errors.ConfigError, match="model.init_from"):
          registry.validate(cfg, num_devices=1)
        cfg.model.init_from = "none"
      registry.validate(cfg, num_devices=1)
