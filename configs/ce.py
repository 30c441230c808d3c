r"""Cross-entropy on species labels (seed H): the baseline of SupCon and HCL, on the same backbone and data.

  python -m fgjax.main --config=configs/ce.py --workdir=runs/ce
  python -m fgjax.main --config=configs/ce.py:vit --workdir=runs/ce_vit      # a small ViT
  python -m fgjax.main --config=configs/ce.py:df20_mini --config.data.root=DIR \
      --config.data.super_map=species_to_genus.txt --workdir=runs/ce_df20

Presets are listed in ``fgjax/config/supervised.py`` (``hcl_config``).
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("ce", arg)
