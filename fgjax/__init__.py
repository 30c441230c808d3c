"""fgjax: fine-grained representation learning in JAX/Flax.

Four method families (see README): Perturb-SSL (MoCo v2 / SimSiam + decoder and
feature perturbation), SupCon/HCL, class-attentive contrastive, Base-Indi.
"""

__version__ = "0.1.0"
