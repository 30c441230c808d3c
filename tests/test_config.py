"""Config presets and validation: bad input stops before anything compiles, naming the field."""

import pytest

from fgjax import errors
from fgjax.config import blocks as config_blocks
from fgjax.config import ssl as ssl_config
from fgjax.methods import registry


def _cfg(preset=None, method="perturb_moco"):
  return registry.config(method, preset)


@pytest.mark.parametrize("method", registry.names(benchmark=True))
@pytest.mark.parametrize("preset", [None, "runlocal", "cub200", "cub200,runlocal"])
def test_presets_validate(method, preset):
  cfg = _cfg(preset, method)
  if preset == "cub200":  # the paper starts from ImageNet weights: the preset asks for them (runlocal does not)
    with pytest.raises(errors.ConfigError, match="config field 'model.init_from': this preset starts from pretrained"):
      registry.validate(cfg, num_devices=1)
    cfg.model.init_from = "none"
  registry.validate(cfg, num_devices=1)


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
  assert c.augment.to_dict() == ssl_config.augment_config().to_dict()  # aug+
  assert tuple(c.augment.jitter) == (0.4, 0.4, 0.4, 0.1) and c.augment.blur_prob == 0.5


def test_moco_and_perturb_share_data_model_schedule():
  a, b = _cfg(None, "moco"), _cfg(None, "perturb_moco")
  for section in ("data", "moco", "optim", "augment", "train", "eval"):
    assert a[section].to_dict() == b[section].to_dict(), section
  # Perturb-MoCo's model block is MoCo's plus the decoder's sizes, nothing else.
  decoder = {k: v for k, v in b.model.items() if k not in a.model}
  assert decoder == {"decoder_channels": 128, "decoder_upsamples": 3}
  assert {k: b.model[k] for k in a.model} == a.model.to_dict()
  assert "perturb" not in a and "perturb" in b


@pytest.mark.parametrize("config_file, field, owners", [
    ("moco", "perturb.nu", "perturb_moco"), ("simsiam", "moco.temperature", "moco"),
    ("moco", "simsiam.proj_dim", "simsiam"), ("simsiam", "model.proj_dim", "moco"),
    ("moco", "model.decoder_channels", "perturb_moco"), ("ce", "supcon.temperature", "supcon"),
    ("base_indi", "base_indi.instance_weight", None),
])
def test_a_field_of_another_method_is_a_one_line_error(config_file, field, owners):
  """A field the chosen method does not use is refused, not silently accepted."""
  import ml_collections
  cfg = registry.config(config_file)
  block, name = field.split(".")
  if config_file == "base_indi":  # the block exists for base_indi: check 'base' lacks it
    cfg = registry.config("base_indi", "base")
    assert "base_indi" not in cfg
  if block not in cfg:
    cfg[block] = ml_collections.ConfigDict()
  cfg[block][name] = 7
  with pytest.raises(errors.ConfigError, match=f"unknown config field {field!r}"):
    registry.validate(cfg, num_devices=1)
  if owners:
    assert field.split(".")[1] in registry.config(owners)[block]


def _error(cfg, **kw):
  with pytest.raises(errors.ConfigError) as e:
    registry.validate(cfg, **{"num_devices": 1, **kw})
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
  with pytest.raises(errors.ConfigError, match="unknown preset 'cub2000'"):
    _cfg("cub2000")


def test_steps_follow_epochs():
  c = _cfg()
  assert config_blocks.steps_per_epoch(c) == 8 * 4 * 64 // 64
  assert config_blocks.total_train_steps(c) == round(c.optim.num_epochs * 32)


def test_cub200_schedule_uses_the_cub_training_split():
  c = _cfg("cub200")
  assert config_blocks.total_train_steps(c) == 100 * (5994 // 128)


def test_a_saved_config_of_an_older_version_gains_new_fields_at_their_defaults():
  import ml_collections
  saved = registry.config("moco", "runlocal").to_dict()
  del saved["train"]["profile_steps"]  # a field added after the run was written
  saved["moco"]["temperature"] = 0.5
  cfg = registry.with_defaults(ml_collections.ConfigDict(saved))
  assert cfg.train.profile_steps == config_blocks.train_config().profile_steps
  assert cfg.moco.temperature == 0.5 and cfg.data.image_size == saved["data"]["image_size"]
  registry.validate(cfg, num_devices=1)
  saved["moco"]["temprature"] = 0.1  # an unknown field is kept, so validation names it
  with pytest.raises(errors.ConfigError, match="moco.temprature"):
    registry.validate(registry.with_defaults(ml_collections.ConfigDict(saved)), num_devices=1)


def test_a_run_of_an_older_version_keeps_what_it_ran_with():
  """Fields whose defaults changed: an old config.json loads with its old behaviour."""
  import ml_collections
  saved = registry.config("moco").to_dict()
  for block, field in (("data", "version"), ("data", "background"), ("moco", "final_momentum")):
    del saved[block][field]
  del saved["augment"]
  saved["moco"]["momentum"] = 0.99
  cfg = registry.with_defaults(ml_collections.ConfigDict(saved))
  assert cfg.data.version == 1 and cfg.data.background == "gradient"  # the first generator
  assert tuple(cfg.augment.jitter) == (0.4, 0.4, 0.4, 0.1) and cfg.augment.blur_prob == 0.5  # aug+
  assert cfg.moco.final_momentum == 0.99  # constant momentum
  registry.validate(cfg, num_devices=1)


@pytest.mark.parametrize("field, value, match", [
    ("data.version", 3, "data.version"),
    ("data.background", "clutter", "data.background"),
    ("data.num_super", 33, "data.num_super"),
    ("augment.jitter", (0.4, 0.4, 0.4), "augment.jitter"),
    ("augment.blur_prob", 1.5, "augment.blur_prob"),
    ("augment.scale", (0.0, 1.0), "augment.scale"),
    ("moco.final_momentum", 1.5, "moco.final_momentum"),
    ("model.conv_impl", "im2col", "model.conv_impl"),
])
def test_new_fields_are_checked(field, value, match):
  cfg = registry.config("moco")
  block, name = field.split(".")
  cfg[block][name] = value
  with pytest.raises(errors.ConfigError, match=match):
    registry.validate(cfg, num_devices=1)


def test_version_1_needs_its_gradient_background():
  cfg = registry.config("moco")
  cfg.data.version = 1
  with pytest.raises(errors.ConfigError, match="data.background.*gradient"):
    registry.validate(cfg, num_devices=1)
  cfg.data.background = "gradient"
  registry.validate(cfg, num_devices=1)


@pytest.mark.parametrize("method", ["moco", "simsiam", "perturb_simsiam", "ce", "base"])
def test_a_config_json_of_one_schema_for_all_methods_still_loads(method):
  """Before each method had its own schema, every SSL config.json held the moco, simsiam
  and perturb blocks and the decoder's sizes (and every supervised one the supcon /
  base_indi blocks); they never did anything for the other methods, so loading drops
  them and the run validates as today's config of its method."""
  import ml_collections
  today = registry.config(method, "runlocal")
  saved = today.to_dict()
  if method in ("ce", "base"):
    saved.setdefault("supcon", {"temperature": 0.07, "base_temperature": 0.07, "contrast_mode": "all",
                                "soft_weight": 0.5})
    saved.setdefault("base_indi", {"instance_weight": 1.0, "group_capacity": 0})
    if method == "ce":  # the SupCon head's sizes were in every seed-H config
      saved["model"].update(head_hidden_dim=0, proj_dim=8)
  else:
    everything = registry.config("perturb_moco", "runlocal").to_dict()
    for block in ("moco", "perturb"):
      saved.setdefault(block, everything[block])
    saved.setdefault("simsiam", registry.config("simsiam", "runlocal").to_dict()["simsiam"])
    for field in ("decoder_channels", "decoder_upsamples", "head_hidden_dim", "proj_dim"):
      saved["model"].setdefault(field, everything["model"][field])
  cfg = registry.with_defaults(ml_collections.ConfigDict(saved))
  registry.validate(cfg, num_devices=1)
  assert cfg.to_dict() == today.to_dict()
