"""Pictures of the four papers' figures, drawn from any run: PNG files in the workdir.

``fgjax.pictures.make`` (what to draw for a run, ``configs/pictures.py``),
``fgjax.pictures.views`` (model outputs: Grad-CAM and attention maps,
reconstructions, neighbours, t-SNE), ``fgjax.pictures.draw`` (matplotlib
figures from arrays). matplotlib is the optional extra ``plots``.
"""
