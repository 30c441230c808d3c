r"""HCL (seed H): SupCon with genus soft positives, vs CE and SupCon on the same backbone and data.

  python -m fgjax.main --config=configs/hcl.py --workdir=runs/hcl
  python -m fgjax.main --config=configs/hcl.py:vit --workdir=runs/hcl_vit      # a small ViT
  python -m fgjax.main --config=configs/hcl.py:df20_mini --config.data.root=DIR \
      --config.data.super_map=species_to_genus.txt --workdir=runs/hcl_df20

Presets are listed in ``fgjax/config/supervised.py`` (``hcl_config``).
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("hcl", arg)
