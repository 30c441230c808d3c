"""grain input pipelines: a split's records -> shuffled, repeated, per-process batches.

Every data set, embedded or real, is a *record source* (``fgjax.data.records``):
random access to ``{'image', 'fine_label'[, 'super_label'], 'index'}``. The
training stream is a ``grain.MapDataset`` over it, so the batch at position
``i`` is a pure function of ``(seed, i)``: a resumed run re-opens the stream at
the step it stopped at (the step counter is the data position saved with the
checkpoint), and every process of a multi-host run reads only its own
block of each global batch of the same global stream.

Decoding and resizing (``fgjax.data.transforms``) run in the pipeline, in
threads (``data.read_threads``) and, with ``data.num_workers > 0``, in grain
worker processes. The MoCo v2 augmentation itself runs on device inside the
step (seeded by the step and the example's position), so the host hands over
uint8 images only.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any
from typing import Iterator

import grain
import ml_collections
import numpy as np

from fgjax.data import records
from fgjax.data import synthetic
from fgjax.data import transforms
from fgjax.errors import ConfigError


DataError = records.DataError
FOLDER_NAMES = ("folder", "cub_layout")


class ArraySource:
  """A record source over a dict of equally long numpy arrays (the embedded data).

  ``source[i]`` is ``{name: array[i]}``; ``index`` (the position in the split)
  is always present, for instance-level methods and for debugging.
  """

  def __init__(self, arrays: dict[str, np.ndarray], *, fine_names=None, super_names=None,
               description: str = "in-memory arrays"):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f"ArraySource: arrays of different lengths {lengths}")
    self._arrays = dict(arrays)
    self._len = next(iter(lengths.values()))
    if "index" not in self._arrays:
      self._arrays["index"] = np.arange(self._len, dtype=np.int32)
    self.fine_labels = self._arrays.get("fine_label")
    self.super_labels = self._arrays.get("super_label")
    self.fine_names = fine_names
    self.super_names = super_names
    self.description = description
    self.num_skipped = 0

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {k: v[i] for k, v in self._arrays.items()}


class _SuperFromMap:
  """A record source with a super-class level added from a fine -> super map file."""

  def __init__(self, source: Any, path: str):
    self._source = source
    self._super_of_fine, self.super_names = records.load_super_map(path, source.fine_names)
    self.fine_names = source.fine_names
    self.fine_labels = source.fine_labels
    self.super_labels = self._super_of_fine[np.asarray(source.fine_labels)]
    self.description = f"{source.description}, super classes from {path}"
    self.num_skipped = getattr(source, "num_skipped", 0)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict[str, Any]:
    record = dict(self._source[i])
    record["super_label"] = self._super_of_fine[int(record["fine_label"])]
    return record


EMBEDDED_NAMES = ("patches", "hierarchy", "source")


def _embedded(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The generated data sets: *patches* (``fgjax.data.synthetic``), the two-level
  genus -> species *hierarchy* (``fgjax.data.hierarchy``) or the generic *source*
  set of the source encoder (``fgjax.data.source``: 128 classes in 32 categories)."""
  d = cfg.data
  sizes = dict(num_super=d.num_super, fine_per_super=d.fine_per_super, train_per_class=d.train_per_class,
               test_per_class=d.test_per_class, image_size=d.image_size, seed=d.data_seed,
               version=d.version, background=d.background)
  if d.name == "hierarchy":
    from fgjax.data import hierarchy
    data = hierarchy.make_hierarchy(**sizes)
    fine_names, super_names = data["fine_names"], data["super_names"]
    levels = ("species", "genera")
  elif d.name == "source":
    from fgjax.data import source
    sizes.pop("version")
    data = source.make_source(**sizes)
    fine_names, super_names = data["fine_names"], data["super_names"]
    levels = ("classes", "categories")
  else:
    data = synthetic.make_patches(**sizes)
    fine_names = [f"super{i // d.fine_per_super}_fine{i % d.fine_per_super}"
                  for i in range(d.num_super * d.fine_per_super)]
    super_names = [f"super{i}" for i in range(d.num_super)]
    levels = ("fine", "super classes")
  return {split: ArraySource({k: data[split][k] for k in ("image", "fine_label", "super_label", "index")
                              if k in data[split]},
                             fine_names=fine_names, super_names=super_names,
                             description=f"{d.name}:{split} ({len(data[split]['image'])} images, "
                             f"{len(fine_names)} {levels[0]} / {len(super_names)} {levels[1]})")
          for split in ("train", "test")}


def _open_split(cfg: ml_collections.ConfigDict, split: str) -> Any:
  d = cfg.data
  if d.name == "folder":
    from fgjax.data import folder_source
    return folder_source.image_folder(d.root, split, skip_corrupt=d.skip_corrupt,
                                      max_image_pixels=d.max_image_pixels)
  if d.name == "cub_layout":
    from fgjax.data import folder_source
    return folder_source.cub200(d.root, split, skip_corrupt=d.skip_corrupt,
                                max_image_pixels=d.max_image_pixels)
  from fgjax.data import tfds_source  # imports tensorflow_datasets only when needed
  return tfds_source.TfdsRecords(d.name, split, data_dir=d.data_dir or None)


def load_splits(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """Opens the configured data set: ``{'train': source, 'test': source}`` (record sources).

  ``data.name`` is ``'patches'`` (embedded, generated), ``'folder'``
  (``data.root/<split>/<class>/*.jpg``), ``'cub_layout'`` (CUB_200_2011 as
  distributed, at ``data.root``) or a tfds name read with ``tfds.data_source``
  from ``data.data_dir``. ``data.super_map`` adds a super-class level to a
  source without one.

  Raises:
    DataError: the data cannot be read as configured (names the path, split or
      class).
  """
  d = cfg.data
  if d.name in EMBEDDED_NAMES:
    return _embedded(cfg)
  if d.name in FOLDER_NAMES and not d.root:
    raise ConfigError(f"config field 'data.root': data.name={d.name!r} needs the data "
                                 "directory, e.g. --config.data.root=/data/fgvc_aircraft")
  splits = {}
  for role, split in (("train", d.train_split), ("test", d.test_split)):
    source = _open_split(cfg, split)
    if len(source) == 0:
      raise DataError(f"the {split!r} split of {source.description} is empty")
    if d.super_map:
      if source.super_names is not None:
        raise DataError(f"data.super_map={d.super_map!r} given, but {source.description} has "
                        "super-class labels of its own")
      source = _SuperFromMap(source, d.super_map)
    splits[role] = source
  if list(splits["train"].fine_names) != list(splits["test"].fine_names):
    raise DataError(f"the train and test splits of {splits['train'].description} name different "
                    "fine classes")
  return splits


def train_transform(cfg: ml_collections.ConfigDict, source: Any) -> grain.transforms.Map | None:
  """Decoded record -> base image for the on-device augmentation (None: arrays are ready)."""
  if isinstance(source, ArraySource):
    return None
  return transforms.TrainResize(cfg.data.base_size or cfg.data.image_size)


def eval_transform(cfg: ml_collections.ConfigDict, source: Any) -> grain.transforms.Map | None:
  """Decoded record -> resized, centre-cropped evaluation image (None: arrays are ready)."""
  if isinstance(source, ArraySource):
    return None
  return transforms.EvalResize(cfg.data.image_size, cfg.data.eval_crop_fraction)


def train_batches(source: Any, *, global_batch_size: int, seed: int, process_index: int = 0,
                  process_count: int = 1, transform: grain.transforms.Map | None = None
                  ) -> grain.MapDataset:
  """The training stream of this process as a random-access dataset of batches.

  Global batch ``i`` holds positions ``[i*B, (i+1)*B)`` of an infinitely
  repeated stream that is reshuffled every epoch; process ``p`` gets the
  ``p``-th contiguous block of it, positions ``[i*B + p*b, i*B + (p+1)*b)``
  with ``b = B / P``. ``jax.make_array_from_process_local_data`` concatenates
  the blocks in process order, so the mesh sees the same global batch, in the
  same order, on any number of processes (BatchNorm groups and the per-example
  augmentation seeds depend on the order). Each process reads (decodes) only
  its own block: the dataset is lazy and random access.

  Args:
    source: a record source, or a dict of arrays (wrapped in ``ArraySource``).
    transform: applied to each record before batching (decode + resize).
  """
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes")
  if isinstance(source, dict):
    source = ArraySource(source)
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
  if transform is not None:
    ds = ds.map(transform)
  # Blocks of b consecutive positions; global batch i is blocks i*P .. i*P + P-1.
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  return ds[process_index::process_count]


def joint_phase_from_start(batches: grain.MapDataset, pretrain_steps: int) -> grain.MapDataset:
  """The batches of a run with ``pretrain_steps`` steps before its joint phase (Perturb-SSL's decoder).

  The pre-training reads batches ``0 .. P-1``; the joint phase then reads the
  stream from its start again, so joint step ``t`` sees batch ``t`` -- the batch
  that step ``t`` of the base method (no pre-training) sees with the same seed.
  That pairs a method with its base: same initialisation, same data order.
  Position ``i`` of the result is the training loop's step ``i`` (resume unchanged).
  """
  if pretrain_steps <= 0:
    return batches
  return grain.MapDataset.concatenate([batches[:pretrain_steps], batches])


def eval_batches(source: Any, *, batch_size: int, transform: grain.transforms.Map | None = None,
                 process_index: int = 0, process_count: int = 1) -> grain.MapDataset:
  """A split in order, in batches (the last one may be short); process p reads rows p, p+P, ..."""
  ds = grain.MapDataset.source(source)[process_index::process_count]
  if transform is not None:
    ds = ds.map(transform)
  return ds.batch(batch_size, drop_remainder=False)


def iterate_from(batches: grain.MapDataset, start: int, *, read_threads: int = 2,
                 prefetch: int = 2, num_workers: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Iterates batches ``start, start+1, ...`` with prefetching threads (and worker processes).

  ``num_workers > 0`` decodes in that many grain worker processes (the
  records must pickle); 0 keeps everything in this process.
  """
  opts = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)
  ds = batches[start:].to_iter_dataset(opts)
  if num_workers > 0:
    from absl import flags
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (library use, tests)
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                        worker_init_fn=_init_worker)
  return iter(ds)


PARENT_POLL_S = 1.0  # how often a grain worker checks that the trainer is alive


def _init_worker(worker_index: int, worker_count: int) -> None:
  """Runs in each grain worker at start.

  * Ctrl-C reaches the whole process group, and the workers must not die with a
    traceback while the trainer saves its step (fgjax.infra.preemption); the
    trainer stops them when it closes the iterator.
  * A trainer killed outright (SIGKILL, the OOM killer) closes nothing: the
    worker would live on as an orphan (parent 1), holding its shared memory and
    multiprocessing's resource tracker. A daemon thread polls the parent and
    exits the worker once the parent is gone; the resource tracker, whose pipe
    the workers held, then exits too and unlinks what they left. (A polled
    parent, not prctl's parent-death signal: that fires when the *thread* that
    started the worker ends, which in grain is not the process.)
  """
  del worker_index, worker_count
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  parent = os.getppid()

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(PARENT_POLL_S)
    os._exit(1)  # no cleanup handlers: the parent that would receive anything is gone

  threading.Thread(target=watch, name="fgjax-parent-watch", daemon=True).start()
