r"""The source encoder: cross-entropy on the embedded *source* set, the ImageNet stand-in.

The papers start every method from ImageNet weights; fgjax ships the quarter-width
ResNet-18 this config trains (``model.init_from=source``; the file, its manifest and
the transfer figures: ``docs/pretrained.md``). It is Base-Indi's ``fine`` objective
(cross-entropy on the fine labels: here the 128 source classes) with the ``source``
preset (``fgjax/config/supervised.py``).

  python -m fgjax.main --config=configs/source.py --workdir=runs/source
  bash launch/make_source_encoder.sh        # train, export, measure the transfer, write the manifest
"""

from fgjax.methods import registry


def get_config(arg=None):
  return registry.config("fine", "source" + (f",{arg}" if arg else ""))
