"""The embedding explorer of a run: one self-contained HTML page, and the embedding exported.

``fgjax.explore.config`` (the schema of ``configs/explore.py``),
``fgjax.explore.embedding`` (the frozen encoder's features of a split, their
2-D map, the retrieval neighbours and nearest-centroid outliers of
``fgjax.evaluate.retrieval``, thumbnails, the npz/parquet export),
``fgjax.explore.page`` (the Bokeh page) and ``fgjax.explore.make`` (restore the
runs, compute, write ``<workdir>/explorer/index.html``). Bokeh is the optional
extra ``explore``.
"""
