r"""The figures of the papers, drawn from a trained run: PNG files in <workdir>/pictures/.

  python -m fgjax.main --config=configs/pictures.py --config.workdir=runs/perturb_moco
  python -m fgjax.main --config=configs/pictures.py --config.workdir=runs/perturb_moco \
      --config.compare_workdirs=runs/moco                     # Grad-CAM side by side
  python -m fgjax.main --config=configs/pictures.py --config.workdir=runs/base_indi/base_seed0 \
      --config.compare_workdirs=runs/base_indi/indi_seed0,runs/base_indi/fine_seed0 \
      --config.pictures.which=attention,retrieval             # seed B, Figs. 2 and 3

Draws every picture that applies to the run's method (``pictures.which='auto'``):
Grad-CAM of the SSL loss, generated pairs, the lowest/highest-variance feature
dimensions, spatial attention maps, t-SNE by fine and super-class, retrieval
examples; links them from the run's results.md. Needs the extra ``plots``
(``pip install -e '.[plots]'``). Presets: ``runlocal`` (small t-SNE, few images).
"""

from fgjax.pictures import make


def get_config(arg=None):
  c = make.pictures_config()
  if arg == "runlocal":
    c.pictures.num_images = 3
    c.pictures.tsne_max_points = 200
    c.pictures.retrieval_queries = 2
    c.pictures.retrieval_k = 3
    c.pictures.batch_size = 32
  elif arg:
    raise ValueError(f"unknown preset {arg!r} (known: runlocal)")
  return c
