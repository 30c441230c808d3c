r"""Benchmark of the input pipeline: JPEG decode + resize on the host, aug+ two views on device.

  python -m fgjax.tools.data_bench                       # a generated CUB-like JPEG folder
  python -m fgjax.tools.data_bench --root=/data/cub --split=train --batches=20

Without ``--root`` it writes ``--num_images`` JPEGs of CUB-200's typical size
(500 x 375 and 375 x 500, quality 90, smooth random content so the files are
as large as photos) into a temporary folder. Then, for ``--workers`` (default
0 and 2 grain worker processes), it times the host pipeline of the training
stream (decode + resize to the ``--base_size`` base image + batching) over
``--batches`` batches of ``--batch_size`` after one warm-up batch, and times
the on-device part (two MoCo v2 aug+ views at ``--image_size`` from the base
images, jitted) on the same batches. The combined figure is what one process
delivers when the two run one after the other; in training they overlap (the
host prefetches while the device computes), and the share of step time the
loop waits for data is logged by the training loop itself ("data wait" in the
progress line and in results.md).

Measure on a quiet machine: other processes on the same cores distort it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

from absl import app
from absl import flags


def write_jpeg_folder(root: str, num_images: int, *, num_classes: int = 8, seed: int = 0) -> str:
  """``root/train/class_k/img_i.jpg``: CUB-sized smooth random JPEGs (quality 90)."""
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(seed)
  for i in range(num_images):
    size = (500, 375) if i % 2 == 0 else (375, 500)
    coarse = rng.integers(0, 256, size=(size[1] // 25, size[0] // 25, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.BICUBIC)
    folder = os.path.join(root, "train", f"class_{i % num_classes}")
    os.makedirs(folder, exist_ok=True)
    image.save(os.path.join(folder, f"img_{i:05d}.jpg"), quality=90)
  return root


def host_images_per_s(source, *, base_size: int, batch_size: int, batches: int, workers: int,
                      read_threads: int = 2) -> tuple[float, list]:
  """Images/s of the training stream's host side (decode + resize + batch), after a warm-up batch."""
  from fgjax.data import pipeline
  from fgjax.data import transforms
  ds = pipeline.train_batches(source, global_batch_size=batch_size, seed=0,
                              transform=transforms.TrainResize(base_size))
  it = pipeline.iterate_from(ds, 0, read_threads=read_threads, prefetch=2, num_workers=workers)
  kept = [next(it)]  # warm-up: starts the threads / worker processes
  t0 = time.perf_counter()
  for _ in range(batches):
    kept.append(next(it))
  elapsed = time.perf_counter() - t0
  return batches * batch_size / elapsed, kept[1:3]


def device_images_per_s(batch_images, *, image_size: int, repeats: int = 3) -> float:
  """Images/s of two jitted aug+ views of uint8 base images [B, S0, S0, 3] (median of repeats)."""
  import statistics

  import jax
  from jax.sharding import PartitionSpec as P

  from fgjax.infra import parallel
  from fgjax.methods import ssl_common

  def two_views(rng, images):
    return ssl_common.augmented_views(rng, ssl_common.to_float_images(images), image_size)

  # As in the training step: per-example keys come from the position in the
  # global batch, so the views are computed under the data mesh (one device).
  mesh = parallel.make_mesh(jax.devices()[:1])
  views = jax.jit(jax.shard_map(two_views, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                                out_specs=P(parallel.DATA_AXIS), check_vma=False))

  images = parallel.shard_batch(mesh, batch_images)
  rng = jax.random.PRNGKey(0)
  jax.block_until_ready(views(rng, images))
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(views(jax.random.fold_in(rng, i), images))
    times.append(time.perf_counter() - t0)
  return batch_images.shape[0] / statistics.median(times)


def main(argv):
  del argv
  f = flags.FLAGS
  from fgjax.data import folder_source
  with tempfile.TemporaryDirectory() as tmp:
    root = f.root or write_jpeg_folder(tmp, f.num_images)
    source = folder_source.image_folder(root, f.split)
    print(f"data: {source.description}", flush=True)
    rows = []
    for workers in (int(w) for w in f.workers):
      rate, sample = host_images_per_s(source, base_size=f.base_size, batch_size=f.batch_size,
                                       batches=f.batches, workers=workers)
      rows.append({"workers": workers, "host_images_per_s": rate})
      print(f"host (decode + resize to {f.base_size} + batch), {workers} workers: {rate:.1f} img/s",
            flush=True)
    import numpy as np
    device_rate = device_images_per_s(np.asarray(sample[0]["image"]), image_size=f.image_size)
    print(f"device (two aug+ views {f.base_size} -> {f.image_size}, batch {f.batch_size}): "
          f"{device_rate:.1f} img/s", flush=True)
    for row in rows:
      row["device_images_per_s"] = device_rate
      row["serial_images_per_s"] = 1.0 / (1.0 / row["host_images_per_s"] + 1.0 / device_rate)
      print(f"decode + two-view aug+ one after the other, {row['workers']} workers: "
            f"{row['serial_images_per_s']:.1f} img/s", flush=True)
    if f.out:
      with open(f.out, "w") as out:
        json.dump({"data": source.description, "rows": rows}, out, indent=2)


def _define_flags():
  flags.DEFINE_string("root", "", "Image folder root (root/<split>/<class>/*.jpg); '' = generate.")
  flags.DEFINE_string("split", "train", "Split folder to read.")
  flags.DEFINE_integer("num_images", 512, "Generated images (without --root).")
  flags.DEFINE_integer("batch_size", 128, "Images per batch.")
  flags.DEFINE_integer("batches", 8, "Timed batches per setting.")
  flags.DEFINE_integer("base_size", 448, "Host-side base image side (cub200 preset: 448).")
  flags.DEFINE_integer("image_size", 224, "Training image side.")
  flags.DEFINE_list("workers", ["0", "2"], "grain worker process counts to time.")
  flags.DEFINE_string("out", None, "Optional JSON file for the figures.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
