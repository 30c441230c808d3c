"""Draws the pictures of the embedded data sets in docs/images/ (the ones docs/data.md shows).

  python launch/data_pictures.py [OUT_DIR=docs/images]

patches_v2.png: the default patches data (version 2, 'tinted'), one row per super-class,
two instances of each of its 4 fine classes; patches_backgrounds.png: the same classes on
the three backgrounds and in version 1; hierarchy_v2.png: one image per species of the
hierarchy data (rows: genera).
"""

import os
import sys

import matplotlib


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fgjax.data import hierarchy  # noqa: E402
from fgjax.data import synthetic  # noqa: E402


def grid(images, row_labels, col_labels, path, title):
  rows, cols = len(images), len(images[0])
  fig, axes = plt.subplots(rows, cols, figsize=(0.95 * cols + 1.2, 0.95 * rows + 0.6), dpi=100,
                           squeeze=False)
  for r in range(rows):
    for c in range(cols):
      ax = axes[r, c]
      ax.imshow(images[r][c], interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
      if r == 0:
        ax.set_title(col_labels[c], fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def first_of(split, fine, k):
  return split["image"][np.nonzero(split["fine_label"] == fine)[0][k]]


def main(out):
  os.makedirs(out, exist_ok=True)
  d = synthetic.make_patches(train_per_class=4, test_per_class=1, seed=0)["train"]
  names = synthetic.scene.MARKING_NAMES
  p = synthetic.super_prototypes(8)
  rows = [f"super {c}\n{synthetic.scene.SILHOUETTE_NAMES[p['silhouette'][c]]}, "
          f"{synthetic.scene.TEXTURE_NAMES[p['texture'][c]]}" for c in range(8)]
  grid([[first_of(d, 4 * c + j, k) for j in range(4) for k in range(2)] for c in range(8)], rows,
       [f"fine {j}: {names[j]}" if k == 0 else "" for j in range(4) for k in range(2)],
       os.path.join(out, "patches_v2.png"),
       "patches, version 2 ('tinted'): super-class = silhouette + texture, fine class = marking")

  settings = [("v2 tinted", dict(background="tinted")), ("v2 blank", dict(background="blank")),
              ("v2 gradient", dict(background="gradient")),
              ("v1 (gradient)", dict(version=1, background="gradient"))]
  images = []
  for _, kw in settings:
    s = synthetic.make_patches(train_per_class=3, test_per_class=1, seed=1, **kw)["train"]
    images.append([first_of(s, f, k) for f in (0, 1, 5, 18) for k in range(3)])
  grid(images, [name for name, _ in settings],
       [f"fine class {f}" if k == 0 else "" for f in (0, 1, 5, 18) for k in range(3)],
       os.path.join(out, "patches_backgrounds.png"),
       "the same classes on the three backgrounds of version 2, and in version 1 (3 instances each)")

  h = hierarchy.make_hierarchy(train_per_class=2, test_per_class=1, seed=0)
  grid([[first_of(h["train"], 6 * g + j, 0) for j in range(6)] for g in range(6)],
       [f"genus {g}\n{hierarchy.GENUS_TEXTURE_NAMES[g]}" for g in range(6)],
       [f"species {j}" for j in range(6)], os.path.join(out, "hierarchy_v2.png"),
       "hierarchy, version 2: genus = texture + hue family; species = marking + hue offset")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "docs/images")
