r"""Class-attentive contrastive learning (seed A; "Fine-Grained Classification via
Class-Attentive Contrastive Representation Learning", Sec. 3-4), made to work.

  python -m fgjax.main --config=configs/class_attentive.py:contrastive --workdir=runs/ca

The paper's pieces: an embedding ``z = f(x)`` (an MLP 200 -> 64), a class-attentive
module giving bounded per-class weights ``w_c``, the attentive embedding
``z' = z (.) w_y`` and the loss ``l_mod = 1 - cos(z'_i, z'_j)`` on positive pairs.
With positive pairs only, ``l_mod`` is minimised by mapping every sample to one
direction (collapse); the ``cosine`` objective keeps that loss exactly, to show
it, and the working variants add different-class negatives (``margin``,
``infonce``). Full notes: docs/class_attentive.md.

Where each part lives:

* ``config``   -- schema, presets, validation (``configs/class_attentive.py`` wraps it);
* ``model``    -- the Flax modules (MLP embedding, class attention, the net);
* ``fgjax.ops.class_attentive_losses`` -- the pure losses;
* ``loop``     -- the training loop (one ``lax.scan`` per epoch);
* ``evaluate`` -- label-free held-out evaluation, collapse diagnostics, t-SNE;
* ``run``      -- :func:`train_and_evaluate`, the entry ``fgjax.main`` calls;
* ``fgjax.tools.tables`` -- the table of ``launch/class_attentive.sh``'s runs.
"""

from fgjax.methods.class_attentive.run import train_and_evaluate


__all__ = ["train_and_evaluate"]
