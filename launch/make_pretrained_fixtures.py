"""Writes tests/fixtures/pretrained/<arch>.npz: reference outputs of torch/timm models on drawn weights.

Run from the repository root with an environment that has torch and timm (never
fgjax's own)::

    /work/torchenv/bin/python launch/make_pretrained_fixtures.py [--only swin_t] [--out DIR]

For each architecture, the model is built without pretrained weights, every
floating-point state_dict entry is replaced by ``tests/reference_weights.py``'s
``draw_weights(names, shapes, seed)`` (integer and non-persistent buffers stay
as the library makes them), and the model runs in eval mode, float32, on
``draw_images(n, size, seed)``. The .npz stores no weights, only what the fgjax
test needs to draw them again (names, shapes, seed), the image size and count,
the reference outputs, and the torch / library versions. The tests
(``tests/test_swin.py``, ``tests/test_pretrained.py``) read it without torch.

Layout of an .npz (plain arrays, no pickles; the same keys for every architecture):
  tensors: str, JSON ``[[name, shape], ...]`` of the drawn state_dict entries, in state_dict order;
  seed, image_size, num_images: int64 scalars (the weights' and images' seed, the square image side);
  eval_features [num_images, num_features] float32: the pooled pre-logits features in eval mode;
  versions: str, e.g. "torch 2.14.1+cu130, timm 1.0.31";
  and per architecture, e.g. Swin's feature_map [num_images, h, w, num_features] float32 (NHWC, final norm).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 0
NUM_IMAGES = 2


def _reference_weights():
  """``tests/reference_weights.py``, imported by path (pure NumPy; tests/ is not a package)."""
  path = os.path.join(_ROOT, "tests", "reference_weights.py")
  spec = importlib.util.spec_from_file_location("reference_weights", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _fill(model: torch.nn.Module, seed: int) -> tuple[list[str], list[tuple[int, ...]]]:
  """Replaces every floating-point state_dict entry by the drawn weights; returns their names and shapes."""
  rw = _reference_weights()
  state = model.state_dict()
  names = [k for k, v in state.items() if torch.is_floating_point(v)]
  shapes = [tuple(state[k].shape) for k in names]
  drawn = rw.draw_weights(names, shapes, seed)
  for name in names:
    state[name] = torch.from_numpy(drawn[name])
  model.load_state_dict(state, strict=True)
  return names, shapes


def _tensors_spec(names: list[str], shapes: list[tuple[int, ...]]) -> np.ndarray:
  """The drawn entries as a JSON string array: ``[[name, [d0, d1, ...]], ...]``."""
  return np.array(json.dumps([[n, list(s)] for n, s in zip(names, shapes)]))


def _versions(library: str, version: str) -> np.ndarray:
  return np.array(f"torch {torch.__version__}, {library} {version}")


def swin_t(seed: int = SEED) -> dict[str, np.ndarray]:
  """timm ``swin_tiny_patch4_window7_224`` on 2 drawn 224 px images: pooled features and final token map."""
  import timm  # noqa: PLC0415 (only this architecture needs it)

  size = 224
  model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).float()
  names, shapes = _fill(model, seed)
  model.eval()
  images = _reference_weights().draw_images(NUM_IMAGES, size, seed)  # NHWC
  with torch.no_grad():
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW for torch
    fmap = model.forward_features(x)  # NHWC [B, 7, 7, 768], after the final norm
    # pre_logits: the head's average pool (and its no-op dropout), without the classifier.
    features = model.forward_head(fmap, pre_logits=True)
  return dict(
      tensors=_tensors_spec(names, shapes), seed=np.int64(seed), image_size=np.int64(size),
      num_images=np.int64(NUM_IMAGES), eval_features=features.numpy().astype(np.float32),
      feature_map=fmap.numpy().astype(np.float32), versions=_versions("timm", timm.__version__))


# fgjax's swin_cpu (not a published size) at image sizes where timm clamps, pads and shifts differently:
# (token maps of stages 1..3 with 2 px patches and window 4)
SWIN_CPU_SIZES = (
    (32, 32),  # 16x16, 8x8, 4x4: the embedded data's size; the last stage one unshifted window
    (48, 48),  # 24x24, 12x12, 6x6: the last stage padded to 8x8 and shifted by 2
    (32, 48),  # 16x24, 8x12, 4x6: the last stage's window 4x4, shifted along w only, padded to 4x8
    (16, 40),  # 8x20, 4x10, 2x5: the last stage's window clamped to 2x4 (a non-square bias table)
)


def swin_cpu(seed: int = SEED) -> dict[str, np.ndarray]:
  """timm ``SwinTransformer`` with fgjax's swin_cpu sizes, at each of `SWIN_CPU_SIZES` (timm's ``img_size``).

  The relative position tables follow the clamped windows, so each size has its own
  tensors spec (``tensors_<i>``) and features (``eval_features_<i>``); ``sizes`` [k, 2].
  """
  import timm  # noqa: PLC0415
  from timm.models.swin_transformer import SwinTransformer  # noqa: PLC0415

  out = dict(sizes=np.array(SWIN_CPU_SIZES, np.int64), seed=np.int64(seed), num_images=np.int64(NUM_IMAGES),
             versions=_versions("timm", timm.__version__))
  rng_images = _reference_weights().draw_images(NUM_IMAGES, max(max(s) for s in SWIN_CPU_SIZES), seed)
  for i, (h, w) in enumerate(SWIN_CPU_SIZES):
    model = SwinTransformer(img_size=(h, w), patch_size=2, embed_dim=48, depths=(2, 2, 2), num_heads=(3, 6, 12),
                            window_size=4, mlp_ratio=4.0, drop_path_rate=0.0).float()
    names, shapes = _fill(model, seed)
    model.eval()
    images = rng_images[:, :h, :w]  # top-left crops of the drawn images
    with torch.no_grad():
      x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
      features = model.forward_head(model.forward_features(x), pre_logits=True)
    out[f"tensors_{i}"] = _tensors_spec(names, shapes)
    out[f"eval_features_{i}"] = features.numpy().astype(np.float32)
  return out


def _nchw(images: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def resnet50(seed: int = SEED) -> dict[str, np.ndarray]:
  """torchvision ``resnet50`` on 4 drawn 64 px images: pooled features in eval mode and in train mode
  (batch statistics), and the stem BatchNorm's running mean after that one train-mode pass."""
  import torchvision  # noqa: PLC0415

  size, count = 64, 4
  model = torchvision.models.resnet50(weights=None).float()
  names, shapes = _fill(model, seed)
  trunk = torch.nn.Sequential(*list(model.children())[:-1])  # without fc: [B, 2048, 1, 1]
  x = _nchw(_reference_weights().draw_images(count, size, seed))
  with torch.no_grad():
    model.eval()
    eval_features = trunk(x).flatten(1)
    model.train()
    train_features = trunk(x).flatten(1)
  return dict(
      tensors=_tensors_spec(names, shapes), seed=np.int64(seed), image_size=np.int64(size),
      num_images=np.int64(count), eval_features=eval_features.numpy().astype(np.float32),
      train_features=train_features.numpy().astype(np.float32),
      train_bn1_running_mean=model.bn1.running_mean.numpy().astype(np.float32),
      versions=_versions("torchvision", torchvision.__version__))


def vit_s16(seed: int = SEED) -> dict[str, np.ndarray]:
  """timm ``vit_small_patch16_224`` on 2 drawn 224 px images; and the same weights loaded by timm into a
  64 px model (``checkpoint_filter_fn`` resamples the position embeddings), its features and ``pos_embed``."""
  import timm  # noqa: PLC0415
  from timm.models.vision_transformer import checkpoint_filter_fn  # noqa: PLC0415

  rw = _reference_weights()
  model = timm.create_model("vit_small_patch16_224", pretrained=False).float()
  names, shapes = _fill(model, seed)
  model.eval()
  small = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=64).float()
  small.load_state_dict(checkpoint_filter_fn(model.state_dict(), small), strict=True)
  small.eval()
  with torch.no_grad():
    features = model.forward_head(model.forward_features(_nchw(rw.draw_images(NUM_IMAGES, 224, seed))),
                                  pre_logits=True)
    small_features = small.forward_head(small.forward_features(_nchw(rw.draw_images(NUM_IMAGES, 64, seed))),
                                        pre_logits=True)
  return dict(
      tensors=_tensors_spec(names, shapes), seed=np.int64(seed), image_size=np.int64(224),
      num_images=np.int64(NUM_IMAGES), eval_features=features.numpy().astype(np.float32),
      small_image_size=np.int64(64), small_eval_features=small_features.numpy().astype(np.float32),
      small_pos_embed=small.pos_embed.detach().numpy().astype(np.float32),
      versions=_versions("timm", timm.__version__))


# fixture file stem -> function making its arrays
FIXTURES = {
    "resnet50": resnet50,
    "swin_cpu": swin_cpu,
    "swin_t": swin_t,
    "vit_s16": vit_s16,
}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--only", action="append", choices=sorted(FIXTURES),
                      help="write only this fixture (repeatable); all by default")
  parser.add_argument("--out", default=os.path.join(_ROOT, "tests", "fixtures", "pretrained"),
                      help="output directory (default: tests/fixtures/pretrained)")
  args = parser.parse_args(argv)
  torch.manual_seed(0)
  torch.use_deterministic_algorithms(True)
  torch.set_default_dtype(torch.float32)
  os.makedirs(args.out, exist_ok=True)
  for stem in args.only or sorted(FIXTURES):
    arrays = FIXTURES[stem]()
    path = os.path.join(args.out, f"{stem}.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({os.path.getsize(path)} bytes): "
          + ", ".join(f"{k} {v.shape}" for k, v in arrays.items() if k.startswith(("eval_features", "feature_map"))))


if __name__ == "__main__":
  main(sys.argv[1:])
