r"""Cross-entropy on species labels (seed H): the baseline of SupCon and HCL, on the same backbone and data.

  python -m fgjax.main --config=configs/ce.py --workdir=runs/ce
  python -m fgjax.main --config=configs/ce.py:vit --workdir=runs/ce_vit      # a small ViT
  python -m fgjax.main --config=configs/ce.py:df20_mini --config.data.root=DIR \
      --config.data.super_map=species_to_genus.txt --workdir=runs/ce_df20

Presets are listed in ``fgjax/supervised_config.py`` (``hcl_config``).
"""

from fgjax import supervised_config


def get_config(arg=None):
  return supervised_config.hcl_config("ce", arg)
