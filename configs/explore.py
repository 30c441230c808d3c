r"""The embedding explorer of a trained run: one self-contained HTML page in <workdir>/explorer/.

  python -m fgjax.main --config=configs/explore.py --config.workdir=runs/hcl
  python -m fgjax.main --config=configs/explore.py --config.workdir=runs/hcl \
      --config.compare_workdirs=runs/ce,runs/supcon              # CE vs SupCon vs HCL, selection linked
  python -m fgjax.main --config=configs/explore.py --config.workdir=runs/hcl --config.export=npz

The frozen encoder's features of the test split (``--config.split=train`` for
the other one) as a t-SNE map (``--config.map=umap`` with umap-learn installed),
coloured by fine or super-class; hover shows the image and its labels, a click
its k nearest neighbours (the retrieval metrics' ranking), a toggle the
nearest-centroid outliers. Opens from the file system: no server, no network.
``--config.export=npz|parquet`` writes the features, labels, outlier flags,
neighbours and 2-D coordinates beside it. Needs the extra ``explore``
(``pip install -e '.[explore]'``). Presets: ``runlocal`` (small map, few neighbours).
"""

from fgjax.explore import config


def get_config(arg=None):
  c = config.explore_config()
  if arg == "runlocal":
    c.max_points = 500
    c.k = 4
  elif arg:
    raise ValueError(f"unknown preset {arg!r} (known: runlocal)")
  return c
