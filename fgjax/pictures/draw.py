"""Drawing: arrays in, one PNG out (matplotlib, non-GUI backend).

Every function here takes plain NumPy arrays -- images as uint8 ``[N, H, W, 3]``
in their real colours, maps in [0, 1] -- and writes one figure. What to draw
(model outputs, neighbours, embeddings) is computed in ``fgjax.pictures.views``;
keeping the two apart lets the figures be tested on hand-made arrays.

matplotlib is an optional dependency (``pip install -e '.[plots]'``); a missing
install is one ``PicturesError`` naming the extra.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fgjax.errors import PicturesError  # (re-exported: raised here)


DPI = 100
_CELL = 1.25  # inches per image cell: a 32 px image is drawn at 125 px, readable
_WRONG = "#d62728"  # red frame: a neighbour of another class (seed B, Fig. 3)
_RIGHT = "#2ca02c"


def pyplot():
  """``matplotlib.pyplot`` on the Agg backend (no display needed), or a PicturesError."""
  try:
    import matplotlib
  except ImportError:
    raise PicturesError("pictures need matplotlib, an optional extra: pip install -e '.[plots]'") from None
  matplotlib.use("Agg", force=True)
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=DPI)
  pyplot().close(fig)
  return path


def _image_axis(ax, image: np.ndarray, *, title: str | None = None, overlay: np.ndarray | None = None,
                frame: str | None = None, fontsize: int = 8) -> None:
  """One image cell: the image, an optional heat-map overlay, an optional coloured frame."""
  ax.imshow(image, interpolation="nearest")
  if overlay is not None:
    ax.imshow(overlay, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0, interpolation="bilinear",
              extent=(-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5))
  ax.set_xticks([])
  ax.set_yticks([])
  if frame is not None:
    for spine in ax.spines.values():
      spine.set_edgecolor(frame)
      spine.set_linewidth(3)
  if title:
    ax.set_title(title, fontsize=fontsize)


def _two_lines(label: str) -> str:
  """'method (workdir)' -> two lines, so that narrow image columns keep their titles apart."""
  return label.replace(" (", "\n(", 1)


def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise PicturesError(f"{name} must be uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
  return images


def map_overlays(path: str, images: np.ndarray, maps: dict[str, np.ndarray], *, title: str,
                 row_labels: Sequence[str] | None = None, colorbar_label: str = "attention") -> str:
  """Images in the first column, then one column of heat-map overlays per model.

  Used for Grad-CAM (seed P, Fig. 3) and spatial attention (seed B, Fig. 2).

  Args:
    images: uint8 ``[N, H, W, 3]``.
    maps: column title -> ``[N, H, W]`` maps in [0, 1] (already upsampled).
    row_labels: one label per image (e.g. its class), shown at the left.
  """
  plt = pyplot()
  images = _check_images(images)
  n, cols = images.shape[0], 1 + len(maps)
  fig, axes = plt.subplots(n, cols, figsize=(_CELL * cols + 0.9, _CELL * n + 0.6), squeeze=False)
  for i in range(n):
    _image_axis(axes[i, 0], images[i], title="image" if i == 0 else None)
    if row_labels is not None:
      axes[i, 0].set_ylabel(row_labels[i], fontsize=7)
    for j, (name, m) in enumerate(maps.items()):
      m = np.asarray(m)
      if m.shape != images.shape[:3]:
        raise PicturesError(f"map {name!r} has shape {m.shape}, the images {images.shape[:3]}")
      _image_axis(axes[i, j + 1], images[i], overlay=m[i], title=_two_lines(name) if i == 0 else None)
  mappable = plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0.0, 1.0))
  fig.suptitle(title, fontsize=9)
  fig.tight_layout(rect=(0, 0, 0.9, 0.95))
  cax = fig.add_axes((0.91, 0.15, 0.02, 0.7))
  fig.colorbar(mappable, cax=cax).set_label(colorbar_label, fontsize=8)
  return _save(fig, path)


def image_rows(path: str, rows: dict[str, np.ndarray], *, title: str,
               column_labels: Sequence[str] | None = None) -> str:
  """Rows of images, one row per name (seed P, Fig. 4: x, x_hat, x_hat_p).

  Args:
    rows: row name -> uint8 ``[N, H, W, 3]``, all with the same N.
  """
  plt = pyplot()
  rows = {name: _check_images(r, name) for name, r in rows.items()}
  n = next(iter(rows.values())).shape[0]
  fig, axes = plt.subplots(len(rows), n, figsize=(_CELL * n + 0.8, _CELL * len(rows) + 0.6), squeeze=False)
  for i, (name, images) in enumerate(rows.items()):
    for j in range(n):
      label = column_labels[j] if (column_labels is not None and i == 0) else None
      _image_axis(axes[i, j], images[j], title=label, fontsize=7)
    axes[i, 0].set_ylabel(name, fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.95))
  return _save(fig, path)


def two_dimension_scatter(path: str, x: np.ndarray, y: np.ndarray, labels: np.ndarray, *,
                          class_names: dict[int, str], x_label: str, y_label: str, title: str) -> str:
  """Seed P, Fig. 2: classes along two feature dimensions, with per-class density curves.

  Args:
    x, y: ``[N]`` coordinates (feature values along the two dimensions).
    labels: ``[N]`` class ids, each a key of ``class_names``.
  """
  from scipy import stats

  plt = pyplot()
  fig = plt.figure(figsize=(5.6, 5.8))
  grid = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), hspace=0.05, wspace=0.05)
  ax = fig.add_subplot(grid[1, 0])
  top = fig.add_subplot(grid[0, 0], sharex=ax)
  right = fig.add_subplot(grid[1, 1], sharey=ax)
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for k, (c, name) in enumerate(class_names.items()):
    sel = labels == c
    colour = colours[k % len(colours)]
    ax.scatter(x[sel], y[sel], s=10, alpha=0.7, color=colour, label=name)
    for values, axis, vertical in ((x[sel], top, False), (y[sel], right, True)):
      if values.size < 2 or np.ptp(values) == 0:
        continue  # no density for a constant or single value
      grid_values = np.linspace(values.min() - np.ptp(values) * 0.2, values.max() + np.ptp(values) * 0.2, 200)
      density = stats.gaussian_kde(values)(grid_values)
      if vertical:
        axis.plot(density, grid_values, color=colour)
      else:
        axis.plot(grid_values, density, color=colour)
  ax.set_xlabel(x_label, fontsize=8)
  ax.set_ylabel(y_label, fontsize=8)
  ax.legend(fontsize=7)
  top.set_ylabel("density", fontsize=7)
  right.set_xlabel("density", fontsize=7)
  top.tick_params(labelbottom=False, labelsize=6)
  right.tick_params(labelleft=False, labelsize=6)
  ax.tick_params(labelsize=7)
  fig.suptitle(title, fontsize=9)
  fig.subplots_adjust(top=0.86)
  return _save(fig, path)


def embedding_scatter(path: str, panels: dict[str, tuple[np.ndarray, np.ndarray, Sequence[str]]], *,
                      title: str, max_legend: int = 20) -> str:
  """2-d embeddings (t-SNE), one panel per (run, label level), coloured by class.

  Args:
    panels: panel title -> ``(xy [N, 2], labels [N] int, class names)``;
      a legend is drawn when the panel has at most ``max_legend`` classes, else
      the number of classes is written in the title.
  """
  plt = pyplot()
  n = len(panels)
  cols = min(n, 2)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.3 * rows), squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis("off")
  for ax, (name, (xy, labels, names)) in zip(axes.flat, panels.items()):
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if classes.size <= 10 else "tab20" if classes.size <= 20 else "turbo")
    for k, c in enumerate(classes):
      sel = labels == c
      colour = cmap(k / max(classes.size - 1, 1)) if classes.size > 20 else cmap(k)
      ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=colour, label=names[c] if c < len(names) else str(c))
    ax.set_xlabel("t-SNE 1", fontsize=8)
    ax.set_ylabel("t-SNE 2", fontsize=8)
    ax.tick_params(labelsize=6)
    if classes.size <= max_legend:
      ax.legend(fontsize=6, markerscale=2, loc="best", ncol=1 if classes.size <= 10 else 2)
      ax.set_title(name, fontsize=9)
    else:
      ax.set_title(f"{name} ({classes.size} classes)", fontsize=9)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout(rect=(0, 0, 1, 0.96))
  return _save(fig, path)


def retrieval_grid(path: str, blocks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                   query_labels: Sequence[str], title: str) -> str:
  """Seed B, Fig. 3: each query and its top-k neighbours; wrong-class neighbours framed red.

  Args:
    blocks: model name -> ``(queries uint8 [Q, H, W, 3], neighbours uint8
      [Q, k, H, W, 3], correct bool [Q, k])``; one row per (query, model).
    query_labels: ``[Q]`` the queries' class names.
  """
  plt = pyplot()
  names = list(blocks)
  q, k = blocks[names[0]][2].shape
  rows = q * len(names)
  fig, axes = plt.subplots(rows, k + 1, figsize=(_CELL * (k + 1) + 1.2, _CELL * rows + 0.6), squeeze=False)
  for i in range(q):
    for m, name in enumerate(names):
      queries, neighbours, correct = blocks[name]
      r = i * len(names) + m
      _image_axis(axes[r, 0], queries[i], title="query" if r == 0 else None)
      axes[r, 0].set_ylabel(f"{name}\n{query_labels[i]}", fontsize=7)
      for j in range(k):
        _image_axis(axes[r, j + 1], neighbours[i, j], frame=_RIGHT if correct[i, j] else _WRONG,
                    title=f"top {j + 1}" if r == 0 else None)
  fig.suptitle(title + "  (red frame: another fine class)", fontsize=9)
  fig.tight_layout(rect=(0, 0, 1, 0.96))
  return _save(fig, path)


SINGLE_THREAD_TSNE = 2000  # up to this many points the t-SNE runs on one OpenMP thread


def tsne(features: np.ndarray, *, seed: int) -> np.ndarray:
  """2-d t-SNE (scikit-learn) of ``features [N, d]`` -> ``[N, 2]``; perplexity min(30, (N-1)/3)."""
  from sklearn.manifold import TSNE
  from threadpoolctl import threadpool_limits

  features = np.asarray(features, np.float64)
  if features.shape[0] < 4:
    raise PicturesError(f"tsne: needs at least 4 points, got {features.shape[0]}")
  perplexity = min(30.0, (features.shape[0] - 1) / 3.0)

  def fit() -> np.ndarray:
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)

  if features.shape[0] > SINGLE_THREAD_TSNE:
    return fit()
  # scikit-learn's OpenMP threads wait on each other about 1,000 times per fit: on a busy 2-core machine a
  # 16-point t-SNE took 20 s with two threads and 0.04 s with one. (The limit reaches libraries already
  # loaded: the import above loads scikit-learn's OpenMP runtime first.)
  with threadpool_limits(limits=1, user_api="openmp"):
    return fit()
