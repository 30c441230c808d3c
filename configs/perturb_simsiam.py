r"""Perturb-SimSiam: seed method P on the SimSiam base.

  python -m fgjax.main --config=configs/perturb_simsiam.py --workdir=runs/perturb_simsiam
  python -m fgjax.main --config=configs/perturb_simsiam.py:gradcam_only --workdir=runs/ps_gradcam

Grad-CAM of the SimSiam loss, low-variance noise from the memory bank, the
decoder with L_R, and L_Cp as the SimSiam loss between the encodings of the
clean and the perturbed reconstruction. Ablation presets: gradcam_only,
lowvar_only, no_pairs (sweep --config.perturb.alpha).
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("perturb_simsiam", arg)
