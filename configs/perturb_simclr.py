r"""Perturb-SimCLR: Perturb-SSL wrapped around SimCLR (fgjax.methods.perturb_ssl.wrap(simclr.BASE)).

  python -m fgjax.main --config=configs/perturb_simclr.py --workdir=runs/perturb_simclr
  python -m fgjax.main --config=configs/perturb_simclr.py:runlocal --workdir=/tmp/ps

Grad-CAM scores SimCLR's NT-Xent with the clean image as the anchor; the pair loss is
NT-Xent between the two reconstructions' encodings, as for Perturb-MoCo.
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("perturb_simclr", arg)
