"""The grain training stream: deterministic random access, per-process slices, resume position."""

import numpy as np
import pytest

from fgjax.data import pipeline


def _arrays(n=20):
  return {"image": np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1),
          "fine_label": np.arange(n, dtype=np.int32) % 5}


def test_every_epoch_is_a_permutation_and_epochs_differ():
  ds = pipeline.train_batches(_arrays(), global_batch_size=4, seed=3)
  first = np.concatenate([ds[i]["index"] for i in range(5)])
  second = np.concatenate([ds[i]["index"] for i in range(5, 10)])
  assert sorted(first) == list(range(20)) and sorted(second) == list(range(20))
  assert not np.array_equal(first, second)


def test_same_seed_same_stream_other_seed_other_stream():
  a = pipeline.train_batches(_arrays(), global_batch_size=4, seed=3)
  b = pipeline.train_batches(_arrays(), global_batch_size=4, seed=3)
  c = pipeline.train_batches(_arrays(), global_batch_size=4, seed=4)
  np.testing.assert_array_equal(a[7]["index"], b[7]["index"])
  assert any(not np.array_equal(a[i]["index"], c[i]["index"]) for i in range(5))


def test_processes_split_the_global_batch():
  whole = pipeline.train_batches(_arrays(), global_batch_size=4, seed=0)
  parts = [pipeline.train_batches(_arrays(), global_batch_size=4, seed=0, process_index=p, process_count=2)
           for p in range(2)]
  for i in range(6):
    # Contiguous blocks in process order: the global batch of one process, in the same order.
    got = np.concatenate([parts[0][i]["index"], parts[1][i]["index"]])
    np.testing.assert_array_equal(got, whole[i]["index"])


def test_iterating_from_a_position_resumes_the_stream():
  ds = pipeline.train_batches(_arrays(), global_batch_size=4, seed=0)
  it = pipeline.iterate_from(ds, 7, read_threads=2, prefetch=2)
  for i in range(7, 12):
    batch = next(it)
    np.testing.assert_array_equal(batch["index"], ds[i]["index"])
    np.testing.assert_array_equal(batch["image"], _arrays()["image"][ds[i]["index"]])


def test_bad_inputs():
  with pytest.raises(ValueError, match="different lengths"):
    pipeline.ArraySource({"image": np.zeros((3, 1)), "label": np.zeros(4)})
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    pipeline.train_batches(_arrays(), global_batch_size=4, seed=0, process_count=3)
