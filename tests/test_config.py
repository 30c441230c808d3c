"""Config presets and validation: bad input stops before anything compiles, naming the field."""

import pytest

from fgjax import config_lib


def _cfg(preset=None, method="perturb_moco"):
  return config_lib.ssl_config(method, preset)


@pytest.mark.parametrize("method", config_lib.SSL_METHODS)
@pytest.mark.parametrize("preset", [None, "runlocal", "cub200", "cub200,runlocal"])
def test_presets_validate(method, preset):
  config_lib.validate(_cfg(preset, method), num_devices=1)


def test_cub200_matches_paper_settings():
  c = _cfg("cub200")
  assert (c.model.encoder, c.data.image_size, c.data.global_batch_size, c.optim.num_epochs) == (
      "resnet50", 224, 128, 100.0)
  assert (c.perturb.bank_size, c.perturb.alpha, c.perturb.nu) == (5632, 1.0, 0.5)
  assert (c.perturb.eps_g, c.perturb.eps_var, c.perturb.kappa) == (0.1, 0.05, 0.02)
  assert (c.moco.queue_size, c.moco.momentum, c.moco.temperature) == (65536, 0.999, 0.2)
  assert (c.optim.base_lr, c.optim.lr_batch_base, c.optim.schedule) == (0.03, 256, "cosine")
  # The paper preset keeps MoCo v2's own recipe, not the CPU default's small-image one.
  assert (c.optim.warmup_steps, c.moco.final_momentum) == (0, 0.999)
  assert c.augment.to_dict() == config_lib.augment_config().to_dict()  # aug+
  assert tuple(c.augment.jitter) == (0.4, 0.4, 0.4, 0.1) and c.augment.blur_prob == 0.5


def test_moco_and_perturb_share_data_model_schedule():
  a, b = _cfg(None, "moco"), _cfg(None, "perturb_moco")
  for section in ("data", "model", "moco", "optim"):
    assert a[section].to_dict() == b[section].to_dict(), section


def _error(cfg, **kw):
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(cfg, **{"num_devices": 1, **kw})
  msg = str(e.value)
  assert "\n" not in msg
  return msg


def test_unknown_field_is_named_with_suggestion():
  c = _cfg()
  with c.unlocked():
    c.perturb.kapa = 0.1
  msg = _error(c)
  assert "perturb.kapa" in msg and "perturb.kappa" in msg


@pytest.mark.parametrize("field,value,devices", [
    ("moco.temperature", -0.1, 1),
    ("moco.queue_size", 4000, 1),  # not a multiple of the global batch 128
    ("data.global_batch_size", 126, 4),  # not divisible by 4 devices
    ("perturb.eps_g", -1.0, 1),
    ("perturb.bank_size", 100, 1),
    ("model.bn_groups", 3, 1),
    ("optim.base_lr", 0.0, 1),
    ("model.encoder", "resnet19", 1),
])
def test_impossible_values_name_the_field(field, value, devices):
  c = _cfg()
  section, name = field.split(".")
  c[section][name] = value
  msg = _error(c, num_devices=devices)
  assert field in msg


def test_unknown_preset():
  with pytest.raises(config_lib.ConfigError, match="unknown preset 'cub2000'"):
    _cfg("cub2000")


def test_steps_follow_epochs():
  c = _cfg()
  assert config_lib.steps_per_epoch(c) == 8 * 4 * 64 // 64
  assert config_lib.total_train_steps(c) == round(c.optim.num_epochs * 32)


def test_cub200_schedule_uses_the_cub_training_split():
  c = _cfg("cub200")
  assert config_lib.total_train_steps(c) == 100 * (5994 // 128)


def test_a_saved_config_of_an_older_version_gains_new_fields_at_their_defaults():
  import ml_collections
  saved = config_lib.ssl_config("moco", "runlocal").to_dict()
  del saved["train"]["profile_steps"]  # a field added after the run was written
  saved["moco"]["temperature"] = 0.5
  cfg = config_lib.with_defaults(ml_collections.ConfigDict(saved))
  assert cfg.train.profile_steps == config_lib.train_config().profile_steps
  assert cfg.moco.temperature == 0.5 and cfg.data.image_size == saved["data"]["image_size"]
  config_lib.validate(cfg, num_devices=1)
  saved["moco"]["temprature"] = 0.1  # an unknown field is kept, so validation names it
  with pytest.raises(config_lib.ConfigError, match="moco.temprature"):
    config_lib.validate(config_lib.with_defaults(ml_collections.ConfigDict(saved)), num_devices=1)


def test_a_run_of_an_older_version_keeps_what_it_ran_with():
  """Fields whose defaults changed: an old config.json loads with its old behaviour."""
  import ml_collections
  saved = config_lib.ssl_config("moco").to_dict()
  for block, field in (("data", "version"), ("data", "background"), ("moco", "final_momentum")):
    del saved[block][field]
  del saved["augment"]
  saved["moco"]["momentum"] = 0.99
  cfg = config_lib.with_defaults(ml_collections.ConfigDict(saved))
  assert cfg.data.version == 1 and cfg.data.background == "gradient"  # the first generator
  assert tuple(cfg.augment.jitter) == (0.4, 0.4, 0.4, 0.1) and cfg.augment.blur_prob == 0.5  # aug+
  assert cfg.moco.final_momentum == 0.99  # constant momentum
  config_lib.validate(cfg, num_devices=1)


@pytest.mark.parametrize("field, value, match", [
    ("data.version", 3, "data.version"),
    ("data.background", "clutter", "data.background"),
    ("data.num_super", 33, "data.num_super"),
    ("augment.jitter", (0.4, 0.4, 0.4), "augment.jitter"),
    ("augment.blur_prob", 1.5, "augment.blur_prob"),
    ("augment.scale", (0.0, 1.0), "augment.scale"),
    ("moco.final_momentum", 1.5, "moco.final_momentum"),
])
def test_new_fields_are_checked(field, value, match):
  cfg = config_lib.ssl_config("moco")
  block, name = field.split(".")
  cfg[block][name] = value
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(cfg, num_devices=1)


def test_version_1_needs_its_gradient_background():
  cfg = config_lib.ssl_config("moco")
  cfg.data.version = 1
  with pytest.raises(config_lib.ConfigError, match="data.background.*gradient"):
    config_lib.validate(cfg, num_devices=1)
  cfg.data.background = "gradient"
  config_lib.validate(cfg, num_devices=1)
