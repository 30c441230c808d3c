"""grain input pipelines: a split's records -> shuffled, repeated, per-process batches.

The training stream is a ``grain.MapDataset`` (random access), so the batch at
position ``i`` is a pure function of ``(seed, i)``: a resumed run re-opens the
stream at the step it stopped at (the step counter is the data position saved
with the checkpoint), and every process of a multi-host run reads its own
interleaved slice of the same global stream.

Augmentation happens on device inside the step (seeded by the step), so the
host pipeline only gathers uint8 images and labels.
"""

from __future__ import annotations

from typing import Any, Iterator

import grain
import ml_collections
import numpy as np

from fgjax import config_lib
from fgjax.data import synthetic


class ArraySource:
  """A grain random-access source over a dict of equally long numpy arrays.

  ``source[i]`` is ``{name: array[i]}``; ``index`` (the position in the split)
  is always present, for instance-level methods and for debugging.
  """

  def __init__(self, arrays: dict[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"ArraySource: arrays of different lengths {lengths}")
    self._arrays = dict(arrays)
    self._len = next(iter(lengths.values()))
    if "index" not in self._arrays:
      self._arrays["index"] = np.arange(self._len, dtype=np.int32)

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self._arrays.items()}


def load_splits(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """Loads the configured data set: ``{'train': arrays, 'test': arrays, 'num_fine_classes', ...}``.

  Raises:
    config_lib.ConfigError: for a data set this version cannot read (the
      message names ``data.name``).
  """
  d = cfg.data
  if d.name == "patches":
    return synthetic.make_patches(
        num_super=d.num_super, fine_per_super=d.fine_per_super, train_per_class=d.train_per_class,
        test_per_class=d.test_per_class, image_size=d.image_size, seed=d.data_seed)
  raise config_lib.ConfigError(
      f"config field 'data.name': {d.name!r} cannot be read yet; the embedded 'patches' set is "
      "available now, tfds and image-folder sources come with the real-data issue")


def train_batches(arrays: dict[str, np.ndarray], *, global_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """The training stream of this process as a random-access dataset of batches.

  Global batch ``i`` holds positions ``[i*B, (i+1)*B)`` of an infinitely
  repeated stream that is reshuffled every epoch; process ``p`` gets positions
  ``p, p+P, p+2P, ...`` of it, ``B / P`` per batch.
  """
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes")
  ds = grain.MapDataset.source(ArraySource(arrays)).seed(seed).shuffle().repeat(None)
  ds = ds[process_index::process_count]
  return ds.batch(global_batch_size // process_count, drop_remainder=True)


def iterate_from(batches: grain.MapDataset, start: int, *, read_threads: int = 2,
                 prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Iterates batches ``start, start+1, ...`` with background prefetching threads."""
  opts = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)
  return iter(batches[start:].to_iter_dataset(opts))
