r"""Base-Indi (seed B): fine-grained patterns from super-class labels only.

  python -m fgjax.main --config=configs/base_indi.py --workdir=runs/base_indi       # Eq. 4
  python -m fgjax.main --config=configs/base_indi.py:eff --workdir=runs/eff         # Eq. 5
  python -m fgjax.main --config=configs/base_indi.py:base --workdir=runs/base       # Eq. 1
  python -m fgjax.main --config=configs/base_indi.py:indi --workdir=runs/indi       # Eq. 3
  python -m fgjax.main --config=configs/base_indi.py:fine --workdir=runs/fine       # Eq. 2
  python -m fgjax.main --config=configs/base_indi.py:eff,cifar100 --config.data.data_dir=...
  python -m fgjax.main --config=configs/base_indi.py:eff,stanford_online_products ...

Presets are listed in ``fgjax/config/supervised.py``.
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("base_indi", arg)
