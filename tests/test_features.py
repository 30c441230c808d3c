"""Tests for fgjax.evaluate.features: the frozen encoder's features of a split."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fgjax.data import augment
from fgjax.data import pipeline
from fgjax.evaluate import features as features_lib
from fgjax.methods import registry
from fgjax.methods import spec
from fgjax.models import resnet


@functools.cache
def _encoder_and_split():
  encoder = resnet.build_encoder("resnet18", width=4, cifar_stem=True)
  source = pipeline.load_splits(registry.config("moco", "runlocal"))["test"]  # 16 embedded 16 px images
  return encoder, source


def _model(encoder, seed):
  init = jax.jit(functools.partial(encoder.init, train=False))  # (rbg keys: a quick compile)
  variables = init(jax.random.key(seed, impl="rbg"), jnp.zeros((1, 16, 16, 3)))
  return spec.FrozenModel(encoder=encoder, params=variables["params"], batch_stats=variables["batch_stats"])


def test_features_are_the_encoders_and_one_program_serves_every_set_of_weights():
  """Two encoders of one shape: each split's features are ``encoder.apply`` of the normalised images (the last
  batch padded and cut), and the second evaluation reuses the first one's compiled program (the weights are an
  argument: a monitor step does not recompile)."""
  encoder, source = _encoder_and_split()
  models = [_model(encoder, seed) for seed in (0, 1)]
  compiled_before = features_lib.pooled_features._cache_size()
  outs = [features_lib.extract_split(m, source, batch_size=6) for m in models]  # 16 = 6 + 6 + 4 (padded)
  assert features_lib.pooled_features._cache_size() - compiled_before <= 1
  images = np.stack([source[i]["image"] for i in range(len(source))])
  apply = jax.jit(lambda variables, x: encoder.apply(variables, x, train=False))  # (eager: op by op, slow)
  for model, out in zip(models, outs):
    x = augment.normalize(jnp.asarray(images, jnp.float32) / 255.0)
    expected = apply({"params": model.params, "batch_stats": model.batch_stats}, x)
    np.testing.assert_allclose(out["features"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["fine"], [source[i]["fine_label"] for i in range(len(source))])
  assert not np.allclose(outs[0]["features"], outs[1]["features"])
