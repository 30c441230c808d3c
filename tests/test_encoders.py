"""Every method trains every encoder family (fgjax.models.encoders): ResNet, ViT and Swin, by model.encoder."""

import math

import jax
import pytest

from fgjax import errors
from fgjax import train
from fgjax.config import blocks as config_blocks
from fgjax.methods import registry
from fgjax.models import encoders


def test_names_and_feature_dims():
  names = encoders.names()
  assert {"resnet18", "resnet50", "vit_tiny", "vit_s16", "swin_cpu", "swin_t"} <= set(names)
  cfg = registry.config("moco", "runlocal")
  for name, n in (("resnet18", 32), ("vit_s16", 384), ("swin_t", 768), ("swin_cpu", 192)):
    cfg.model.encoder = name
    assert encoders.feature_dim(cfg.model) == n == encoders.build(cfg.model).num_features


@pytest.mark.parametrize("method, encoder", [("moco", "swin_cpu"), ("base", "vit_tiny")])
def test_a_method_trains_an_encoder_without_batchnorm(tmp_path, method, encoder):
  # MoCo: a key encoder and no BatchNorm statistics to group; Base: the super-class head on a ViT.
  cfg = registry.config(method, "runlocal")
  cfg.model.encoder = encoder
  cfg.train.max_steps = 2
  results = train.train_and_evaluate(cfg, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert all(math.isfinite(v) for v in results["trained"].values() if isinstance(v, float))
  assert results["run"]["steps"].startswith("2 of ")


def test_an_image_size_the_encoder_cannot_take_names_both_fields():
  cfg = registry.config("hcl", "runlocal")  # 16 px
  cfg.model.encoder = "swin_t"  # needs multiples of 32
  with pytest.raises(errors.ConfigError, match="config fields 'model.encoder' and 'data.image_size': 16 px: swin_t "
                                               "needs a multiple of 32"):
    registry.validate(cfg, num_devices=1)
  cfg.model.encoder = "vit_s16"
  with pytest.raises(errors.ConfigError, match="vit_s16's patch size 16 must divide it"):
    cfg.data.image_size = 24
    registry.validate(cfg, num_devices=1)
  assert config_blocks.expects_weights(registry.config("hcl", "df20_mini,swin_t").model.init_from)
