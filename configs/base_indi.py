r"""Base-Indi (seed B): fine-grained patterns from super-class labels only.

  python -m fgjax.main --config=configs/base_indi.py --workdir=runs/base_indi       # Eq. 4
  python -m fgjax.main --config=configs/base_indi.py:eff --workdir=runs/eff         # Eq. 5
  python -m fgjax.main --config=configs/base_indi.py:base --workdir=runs/base       # Eq. 1
  python -m fgjax.main --config=configs/base_indi.py:indi --workdir=runs/indi       # Eq. 3
  python -m fgjax.main --config=configs/base_indi.py:fine --workdir=runs/fine       # Eq. 2
  python -m fgjax.main --config=configs/base_indi.py:eff,cifar100 --config.data.data_dir=...
  python -m fgjax.main --config=configs/base_indi.py:eff,stanford_online_products ...

Presets are listed in ``fgjax/supervised_config.py``.
"""

from fgjax import supervised_config


def get_config(arg=None):
  return supervised_config.base_indi_config("base_indi", arg)
