r"""SupCon on species labels (seed H), vs the CE baseline and HCL on the same backbone and data.

  python -m fgjax.main --config=configs/supcon.py --workdir=runs/supcon
  python -m fgjax.main --config=configs/supcon.py:vit --workdir=runs/supcon_vit      # a small ViT
  python -m fgjax.main --config=configs/supcon.py:df20_mini --config.data.root=DIR \
      --config.data.super_map=species_to_genus.txt --workdir=runs/supcon_df20

Presets are listed in ``fgjax/config/supervised.py`` (``hcl_config``).
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("supcon", arg)
