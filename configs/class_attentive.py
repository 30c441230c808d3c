r"""Class-attentive contrastive learning (seed A) on the embedded circles data.

  python -m fgjax.main --config=configs/class_attentive.py:contrastive --workdir=runs/ca_contrastive
  python -m fgjax.main --config=configs/class_attentive.py:paper --workdir=runs/ca_paper
  python -m fgjax.main --config=configs/class_attentive.py:siamese,hard --workdir=runs/ca_siamese_hard
  bash launch/class_attentive.sh            # every preset x 3 seeds, default and hard data, the table

Presets (comma-separated, left to right): ``contrastive`` (the default: attention +
margin loss with different-class negatives), ``paper`` (the paper's loss exactly:
1 - cos(z'_i, z'_j) on positive pairs; collapses), ``siamese`` (margin loss, no
attention), ``supervised`` (MLP classifier on raw inputs), ``positives_only``,
``infonce``, ``own_weights``, ``hard`` (closer radii), ``runlocal`` (seconds).
Schema and validation: fgjax/methods/class_attentive/config.py.
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("class_attentive", arg)
