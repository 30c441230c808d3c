r"""Perturb-MoCo v2 (seed method P): MoCo v2 + decoder + Grad-CAM / low-variance perturbation.

Default (CPU, embedded patches data, a few minutes on 2 cores):
  python -m fgjax.main --config=configs/perturb_moco.py --workdir=runs/perturb_moco
The paper's settings (ResNet-50, 224 px, CUB-200-2011; needs the real-data issue):
  python -m fgjax.main --config=configs/perturb_moco.py:cub200 --workdir=runs/pm_cub
Seconds-long smoke run:
  python -m fgjax.main --config=configs/perturb_moco.py:runlocal --workdir=/tmp/pm
Ablations are config fields, e.g. --config.perturb.lowvar_noise=False (Grad-CAM
noise only), --config.perturb.gradcam_noise=False (low-variance noise only),
--config.perturb.pair_loss=False (L_C + alpha * L_R only).
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("perturb_moco", arg)
