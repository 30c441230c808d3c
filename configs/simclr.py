r"""SimCLR (Chen et al. 2020): the worked example of adding a method (docs/adding_a_method.md).

  python -m fgjax.main --config=configs/simclr.py --workdir=runs/simclr
  python -m fgjax.main --config=configs/simclr.py:runlocal --workdir=/tmp/simclr

Same data, model, augmentation and schedule as configs/moco.py; the loss is
NT-Xent over the global batch (``simclr.temperature``).
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("simclr", arg)
