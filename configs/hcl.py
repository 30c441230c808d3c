r"""HCL (seed H): SupCon with genus soft positives, vs CE and SupCon on the same backbone and data.

  python -m fgjax.main --config=configs/hcl.py --workdir=runs/hcl
  python -m fgjax.main --config=configs/hcl.py:vit --workdir=runs/hcl_vit      # a small ViT
  python -m fgjax.main --config=configs/hcl.py:df20_mini --config.data.root=DIR \
      --config.data.super_map=species_to_genus.txt --workdir=runs/hcl_df20

Presets are listed in ``fgjax/supervised_config.py`` (``hcl_config``).
"""

from fgjax import supervised_config


def get_config(arg=None):
  return supervised_config.hcl_config("hcl", arg)
