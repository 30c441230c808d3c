r"""Perturb-BYOL: Perturb-SSL (decoder, Grad-CAM / low-variance perturbation, pair loss) wrapped around BYOL.

  python -m fgjax.main --config=configs/perturb_byol.py --workdir=runs/perturb_byol
  python -m fgjax.main --config=configs/perturb_byol.py:runlocal --workdir=/tmp/pb

No Perturb code of its own: fgjax.methods.perturb_ssl.wrap(byol.BASE). Grad-CAM scores
BYOL's loss of the clean image's features; the pair loss is BYOL's loss between the
two reconstructions' encodings. The perturb block and its presets are Perturb-MoCo's.
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("perturb_byol", arg)
