"""The one config system of fgjax: shared blocks, helpers, and the schemas of the method families.

* ``fields``     -- one-line checks naming the field, unknown-field detection, presets.
* ``blocks``     -- the ``data``, ``train`` and ``eval`` blocks every image method
                    shares, their checks, the schedule's length.
* ``ssl``        -- the SSL schema: shared blocks + each method's own blocks
                    (``ssl.Block``: MoCo's, SimSiam's, Perturb-SSL's).
* ``supervised`` -- Base-Indi (seed B) and CE / SupCon / HCL (seed H).
* ``upgrade``    -- a saved ``config.json`` completed for today's code.

Which method uses which schema and blocks is said once, in the methods' table
(``fgjax.methods.registry``): build a config with ``registry.config(name,
preset)``, check one with ``registry.validate(cfg, ...)``. The class-attentive
toy method has its own schema (``fgjax.methods.class_attentive``).
"""

from fgjax.config.blocks import num_train_examples
from fgjax.config.blocks import steps_per_epoch
from fgjax.config.blocks import total_train_steps
from fgjax.errors import ConfigError


__all__ = ["ConfigError", "num_train_examples", "steps_per_epoch", "total_train_steps"]
