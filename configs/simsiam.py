r"""Plain SimSiam (Chen & He 2021): the second base of Perturb-SSL, same data, model and schedule.

  python -m fgjax.main --config=configs/simsiam.py --workdir=runs/simsiam

3-layer projector with BN and the bottleneck predictor (2048-512-2048 in the
cub200 preset; 512-128-512 with the quarter-width CPU default), symmetric
negative cosine with stop-gradient, SGD lr 0.05 per 256 images (cosine), the
predictor at a fixed learning rate (``simsiam.fixed_predictor_lr``).
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("simsiam", arg)
