r"""BYOL (Grill et al. 2020): online network predicting an EMA target's projection of the other view.

  python -m fgjax.main --config=configs/byol.py --workdir=runs/byol
  python -m fgjax.main --config=configs/byol.py:runlocal --workdir=/tmp/byol

Same data, model, augmentation and schedule as configs/moco.py; the loss is BYOL's
normalised MSE, the target's EMA rises from byol.momentum to byol.final_momentum.
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("byol", arg)
