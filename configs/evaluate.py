r"""Evaluate any fgjax checkpoint without retraining: every protocol of the papers.

  python -m fgjax.main --config=configs/evaluate.py --config.workdir=runs/perturb_moco
  python -m fgjax.main --config=configs/evaluate.py:runlocal --config.workdir=runs/x \
      --config.checkpoint_step=100 --config.eval.probe_fractions='(1.0, 0.1)'

  # pretrained weights as they are, no training (e.g. the Perturb-SSL paper's ImageNet ResNet-50 row):
  python -m fgjax.main --config=configs/evaluate.py --config.init_from=/weights/resnet50.safetensors \
      --config.train_config=configs/moco.py:folder --config.data.root=/data/cub --workdir=runs/in1k_baseline

Reads the run's config.json, restores its latest checkpoint (or
``checkpoint_step``), and appends the tables (linear probe at each label
fraction, kNN, leave-one-out retrieval, nearest-centroid outliers, the model's
own super-class head where it has one) to results.md and results.json. With
``init_from``, the encoder is the file's (or another run's), the model and data
are ``train_config``'s, and the section is ``imported``.
Presets: ``runlocal`` (a short probe, for smoke tests).
"""

from fgjax.evaluate import checkpoint_eval


def get_config(arg=None):
  c = checkpoint_eval.evaluate_config()
  if arg == "runlocal":
    c.eval.probe_epochs = 5
    c.eval.knn_ks = (3,)
    c.eval.batch_size = 16
    c.eval.chunk_size = 8
  elif arg:
    raise ValueError(f"unknown preset {arg!r} (known: runlocal)")
  return c
