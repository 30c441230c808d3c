"""The embedded *circles* data set of the class-attentive paper (seed A), generated from a seed.

"Four classes, each representing circular shapes with slightly varied radii and
minor noise perturbations. Each sample is a flattened 200-dimensional vector
representing coordinates with added Gaussian noise" (Sec. 4.1). The paper gives
no radii, noise level or point layout; ours:

* **A sample** is ``num_points`` points (100 -> a 200-d vector) on the circle of its
  class's radius ``r_y`` centred at the origin, each coordinate with i.i.d. Gaussian
  noise of std ``noise_std``:  ``p_k = r_y (cos t_k, sin t_k) + eps_k``,
  ``eps_k ~ N(0, noise_std^2 I_2)``. The vector is ``[x_1, y_1, x_2, y_2, ...]``.
* **Point order.** The angles are i.i.d. uniform and then *sorted*, counted from a
  random start angle ``phi ~ U[0, 2 pi)`` per sample: ``t_k = phi + u_(k)`` with
  ``u_(1) <= ... <= u_(P)`` the sorted draws of ``U[0, 2 pi)``. So neighbouring entries
  of the vector are neighbouring points on the circle (the order means "walk
  round the circle"), but where the walk starts is random. Why: with a fixed start
  (``phi = 0``) the first coordinate alone would be ``~ r_y`` and a linear model on
  the raw vector could read the class off one entry; with a random start every
  coordinate has mean 0 in every class, and the class lives only in a second-order
  statistic (the points' distance to the centre), which is what makes the
  problem "fine-grained": a linear classifier on raw inputs is at chance
  (measured: 24.4 % held-out), a single point barely tells the classes apart, the whole sample does.
* **Radii.** Default ``(1.0, 1.1, 1.2, 1.3)`` with ``noise_std = 0.1``: per point the
  classes overlap heavily (spacing = noise std), but the mean of 100 points
  separates them (the radius estimate's std is ~``noise_std / sqrt(P)`` = 0.01, a
  tenth of the spacing). The ``HARD_RADII`` setting ``(1.0, 1.025, 1.05, 1.075)`` puts
  the classes 2.5 estimate-stds apart: even the generator-aware oracle
  (:func:`oracle_predict`) is at ~83 % (default seed), so methods that learn a
  good radius read-out separate from those that do not. Both were fixed from this
  arithmetic, before any method was trained.

Classes are balanced (``train_per_class`` / ``test_per_class`` samples each); train
and test are drawn from independent streams of one seed
(``numpy.random.SeedSequence(seed).spawn``), so they are disjoint draws and the
data set does not depend on the training seed.

**Augmentation (positive pairs; :func:`augment`, on device).** Two label-preserving
transforms that keep a sample *inside* the data distribution: a random rotation
of all points about the centre (the start angle ``phi`` is uniform anyway), and a
random cyclic shift of the point order (the walk starts at another point: also
"sorted from a random start"). Neither changes the radius nor the noise level.
Fresh Gaussian noise (``extra_noise_std``) is available but off by default: added
noise raises the noise level of the training views above that of the test
samples (std ``sqrt(noise_std^2 + extra^2)``), a train/test mismatch on exactly the
quantity that decides the class.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


DEFAULT_RADII = (1.0, 1.1, 1.2, 1.3)
HARD_RADII = (1.0, 1.025, 1.05, 1.075)


@dataclasses.dataclass(frozen=True)
class CirclesData:
  """A generated circles data set (numpy arrays).

  Attributes:
    train_x: [N_train, 2 * num_points] float32, ``[x_1, y_1, x_2, y_2, ...]``.
    train_y: [N_train] int32 class ids in [0, C).
    test_x: [N_test, 2 * num_points] float32.
    test_y: [N_test] int32.
    radii: the C class radii.
    noise_std: per-coordinate Gaussian noise std.
    num_points: points per sample.
  """
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  radii: tuple[float, ...]
  noise_std: float
  num_points: int

  @property
  def num_classes(self) -> int:
    return len(self.radii)


def sample_circles(rng: np.random.Generator, labels: np.ndarray, *, radii, noise_std: float,
                   num_points: int) -> np.ndarray:
  """Draws one noisy circle per label (the layout of the module docstring).

  Args:
    rng: numpy generator.
    labels: [N] int class ids in [0, len(radii)).
    radii: [C] class radii.
    noise_std: std of the Gaussian noise on every coordinate (>= 0).
    num_points: P points per sample.

  Returns:
    [N, 2P] float32, point k at columns (2k, 2k+1).
  """
  labels = np.asarray(labels)
  radius = np.asarray(radii, np.float64)[labels]  # [N]
  n = labels.shape[0]
  start = rng.uniform(0.0, 2.0 * np.pi, size=(n, 1))
  angles = start + np.sort(rng.uniform(0.0, 2.0 * np.pi, size=(n, num_points)), axis=1)  # [N, P]
  points = radius[:, None, None] * np.stack([np.cos(angles), np.sin(angles)], axis=-1)  # [N, P, 2]
  points = points + noise_std * rng.standard_normal(points.shape)
  return points.reshape(n, 2 * num_points).astype(np.float32)


def make_circles(*, radii=DEFAULT_RADII, noise_std: float = 0.1, num_points: int = 100,
                 train_per_class: int = 500, test_per_class: int = 500, seed: int = 0) -> CirclesData:
  """Generates the train and test splits (balanced, shuffled; see the module docstring).

  Raises:
    ValueError: a radius <= 0, noise_std < 0 (or not finite), fewer than 2
      classes, num_points < 1, or a split with < 1 sample per class.
  """
  radii = tuple(float(r) for r in radii)
  if len(radii) < 2:
    raise ValueError(f"circles need at least 2 classes (radii), got {radii}")
  if not all(np.isfinite(r) and r > 0 for r in radii):
    raise ValueError(f"every radius must be a finite number > 0, got {radii}")
  if len(set(radii)) != len(radii):
    raise ValueError(f"radii must be distinct (two classes would be identical), got {radii}")
  if not (np.isfinite(noise_std) and noise_std >= 0):
    raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
  if num_points < 1 or train_per_class < 1 or test_per_class < 1:
    raise ValueError("num_points, train_per_class and test_per_class must be >= 1, got "
                     f"{num_points}, {train_per_class}, {test_per_class}")
  train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
  splits = []
  for rng, per_class in ((train_rng, train_per_class), (test_rng, test_per_class)):
    labels = rng.permutation(np.repeat(np.arange(len(radii), dtype=np.int32), per_class))
    splits.append((sample_circles(rng, labels, radii=radii, noise_std=noise_std,
                                  num_points=num_points), labels))
  (train_x, train_y), (test_x, test_y) = splits
  return CirclesData(train_x, train_y, test_x, test_y, radii, float(noise_std), int(num_points))


def estimate_radius(x: np.ndarray, noise_std: float) -> np.ndarray:
  """Per-sample radius estimate ``sqrt(max(mean_k |p_k|^2 - 2 sigma^2, 0))`` (unbiased in r^2).

  Args:
    x: [N, 2P] samples.
    noise_std: the generator's sigma (E|p_k|^2 = r^2 + 2 sigma^2).

  Returns:
    [N] float64.
  """
  x = np.asarray(x, np.float64)
  sq = (x.reshape(x.shape[0], -1, 2) ** 2).sum(-1).mean(-1)
  return np.sqrt(np.maximum(sq - 2.0 * noise_std ** 2, 0.0))


def oracle_predict(x: np.ndarray, radii, noise_std: float) -> np.ndarray:
  """A reference, not a method: the class whose radius is nearest to :func:`estimate_radius`.

  It knows the generator (radii and sigma), so its accuracy is roughly the best
  any learned model can do; it says how hard a setting is.

  Returns:
    [N] int class ids.
  """
  r = estimate_radius(x, noise_std)
  return np.abs(r[:, None] - np.asarray(radii)[None, :]).argmin(axis=1)


def augment(key: jax.Array, x: jax.Array, *, rotate: bool = True, roll: bool = True,
            extra_noise_std: float = 0.0) -> jax.Array:
  """One random view per sample: rotation about the centre, cyclic shift of the points, noise.

  Label-preserving: rotation and shift leave every point's distance to the centre
  unchanged (see the module docstring for why fresh noise is off by default).

  Args:
    key: PRNG key.
    x: [B, 2P] samples.
    rotate: rotate all points of a sample by one angle ~ U[0, 2 pi).
    roll: shift the point order cyclically by an integer ~ U{0..P-1}.
    extra_noise_std: std of fresh Gaussian noise on every coordinate (0: none).

  Returns:
    [B, 2P], same dtype as ``x``.
  """
  batch, dim = x.shape
  points = x.reshape(batch, dim // 2, 2)
  k_rot, k_roll, k_noise = jax.random.split(key, 3)
  if rotate:
    angle = jax.random.uniform(k_rot, (batch,), maxval=2.0 * jnp.pi)
    cos, sin = jnp.cos(angle)[:, None], jnp.sin(angle)[:, None]
    points = jnp.stack([cos * points[..., 0] - sin * points[..., 1],
                        sin * points[..., 0] + cos * points[..., 1]], axis=-1)
  if roll:
    shift = jax.random.randint(k_roll, (batch,), 0, dim // 2)
    points = jax.vmap(lambda p, s: jnp.roll(p, s, axis=0))(points, shift)
  if extra_noise_std > 0:
    points = points + extra_noise_std * jax.random.normal(k_noise, points.shape, points.dtype)
  return points.reshape(batch, dim).astype(x.dtype)
