"""Tests of fgjax.ops.queue: ring-buffer enqueue and the momentum (EMA) update."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import absltest

from fgjax.ops import queue as queue_lib


class EnqueueTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_wraps_around(self):
    # K = 5, B = 2, pointer = 4: rows 4 and 0 are written, pointer -> 1.
    queue = jnp.arange(10, dtype=jnp.float32).reshape(5, 2)
    keys = jnp.array([[-1.0, -2.0], [-3.0, -4.0]])
    new_queue, pointer = self.variant(queue_lib.enqueue)(queue, keys, jnp.int32(4))
    expected = np.arange(10, dtype=np.float32).reshape(5, 2)
    expected[4] = [-1, -2]
    expected[0] = [-3, -4]
    np.testing.assert_array_equal(new_queue, expected)
    self.assertEqual(int(pointer), 1)
    self.assertEqual(pointer.dtype, jnp.int32)
    chex.assert_shape(pointer, ())

  @chex.variants(with_jit=True, without_jit=True)
  def test_capacity_multiple_of_batch_cycles(self):
    # K = 6, B = 2: three pushes fill the buffer in order and the pointer
    # returns to 0; a fourth push overwrites the oldest rows (0, 1).
    enqueue = self.variant(queue_lib.enqueue)
    queue, pointer = jnp.zeros((6, 3)), jnp.int32(0)
    for step in range(4):
      keys = jnp.full((2, 3), float(step + 1))
      queue, pointer = enqueue(queue, keys, pointer)
      self.assertEqual(int(pointer), (2 * (step + 1)) % 6)
    np.testing.assert_array_equal(queue[:, 0], [4, 4, 2, 2, 3, 3])

  def test_batch_larger_than_capacity_raises(self):
    with self.assertRaises(ValueError):
      queue_lib.enqueue(jnp.zeros((3, 2)), jnp.zeros((4, 2)), jnp.int32(0))
    with self.assertRaises(ValueError):
      jax.jit(queue_lib.enqueue)(jnp.zeros((3, 2)), jnp.zeros((4, 2)), jnp.int32(0))

  def test_mismatched_row_shape_raises(self):
    with self.assertRaises(ValueError):
      queue_lib.enqueue(jnp.zeros((3, 2)), jnp.zeros((1, 3)), jnp.int32(0))

  def test_traced_pointer_compiles_once(self):
    # The pointer is a traced argument: new values must not trigger a retrace.
    enqueue = jax.jit(chex.assert_max_traces(queue_lib.enqueue, n=1))
    queue, pointer = jnp.zeros((5, 1)), jnp.int32(0)
    written = []
    for step in range(7):
      queue, pointer = enqueue(queue, jnp.full((2, 1), float(step)), pointer)
      written.append(int(pointer))
    self.assertEqual(written, [2, 4, 1, 3, 0, 2, 4])
    # After 14 writes into 5 rows: rows hold steps 6,6 at 2,3; 5,5 at 0,1; 4 at 4.
    np.testing.assert_array_equal(queue[:, 0], [5, 5, 6, 6, 4])

  def test_keys_cast_to_queue_dtype(self):
    new_queue, _ = queue_lib.enqueue(
        jnp.zeros((4, 2), jnp.bfloat16), jnp.ones((2, 2), jnp.float32), jnp.int32(1))
    self.assertEqual(new_queue.dtype, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(new_queue, np.float32)[:, 0], [0, 1, 1, 0])


class MomentumUpdateTest(chex.TestCase):

  def _trees(self):
    online = {"dense": {"kernel": jnp.array([[1.0, 2.0]]), "bias": jnp.array([4.0])},
              "scale": jnp.array(10.0)}
    target = {"dense": {"kernel": jnp.array([[3.0, 0.0]]), "bias": jnp.array([0.0])},
              "scale": jnp.array(0.0)}
    return online, target

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_values_nested(self):
    online, target = self._trees()
    got = self.variant(
        lambda o, t: queue_lib.momentum_update(online=o, target=t, momentum=0.75))(online, target)
    # 0.75 * target + 0.25 * online.
    expected = {"dense": {"kernel": np.array([[2.5, 0.5]]), "bias": np.array([1.0])},
                "scale": np.array(2.5)}
    chex.assert_trees_all_close(got, expected, rtol=1e-7)

  def test_extremes(self):
    online, target = self._trees()
    chex.assert_trees_all_equal(
        queue_lib.momentum_update(online=online, target=target, momentum=1.0), target)
    chex.assert_trees_all_equal(
        queue_lib.momentum_update(online=online, target=target, momentum=0.0), online)

  def test_traced_momentum_and_dtype(self):
    online = {"w": jnp.ones((2,), jnp.bfloat16)}
    target = {"w": jnp.zeros((2,), jnp.bfloat16)}
    got = jax.jit(lambda m: queue_lib.momentum_update(
        online=online, target=target, momentum=m))(jnp.float32(0.5))
    self.assertEqual(got["w"].dtype, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(got["w"], np.float32), [0.5, 0.5])

  def test_structure_mismatch_raises(self):
    with self.assertRaises(ValueError):
      queue_lib.momentum_update(online={"a": jnp.zeros(1)}, target={"b": jnp.zeros(1)},
                                momentum=0.9)


if __name__ == "__main__":
  absltest.main()


def test_cosine_momentum_schedule():
  """BYOL / solo-learn's schedule: base at step 0, final at T and after, a cosine between."""
  from fgjax.ops.queue import cosine_momentum
  m = lambda t: float(cosine_momentum(t, base=0.99, final=0.999, total_steps=100))
  assert m(0) == pytest.approx(0.99) and m(100) == pytest.approx(0.999)
  assert m(50) == pytest.approx((0.99 + 0.999) / 2)
  assert m(250) == pytest.approx(0.999)
  values = [m(t) for t in range(0, 101, 10)]
  assert all(a <= b for a, b in zip(values, values[1:]))
  # base == final is MoCo v2's constant momentum; a traced step works under jit.
  assert float(jax.jit(lambda t: cosine_momentum(t, base=0.99, final=0.99, total_steps=10))(3)) == pytest.approx(0.99)
