r"""Plain MoCo v2: the baseline of Perturb-MoCo, same data, model and schedule.

  python -m fgjax.main --config=configs/moco.py --workdir=runs/moco
  python -m fgjax.main --config=configs/moco.py:cub200 --workdir=runs/moco_cub
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("moco", arg)
