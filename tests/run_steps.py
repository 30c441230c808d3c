"""The test harness of the training steps: a method's first steps on a mesh of N devices, outside the trainer."""

import jax

from fgjax.data import pipeline
from fgjax.infra import parallel
from fgjax.methods import registry
from fgjax.methods import spec


def run_steps(cfg, num_devices, num_steps, *, init_seed=0, step_seed=1, states=None):
  """``num_steps`` steps of ``cfg.method`` on the first ``num_devices`` devices, decoder pre-training first
  where the method has it, on the first training batches (data order seed 0).

  Args:
    states: a list to append the host states to, the initial one and the one after each step (None: not kept).

  Returns:
    ``(setup, final state on the host, [metrics of each step on the host])``.
  """
  data = pipeline.load_splits(cfg)["train"]
  s = registry.setup(cfg, num_train=len(data))
  mesh = parallel.make_mesh(jax.devices()[:num_devices])
  joint, pretrain = registry.step_functions(cfg, s, registry.hparams(cfg, s, num_devices))
  joint = parallel.data_parallel(joint, mesh, donate_state=False)
  if pretrain is not None:
    pretrain = parallel.data_parallel(pretrain, mesh, donate_state=False)
  batches = pipeline.train_batches(data, global_batch_size=cfg.data.global_batch_size, seed=0)
  state = parallel.replicate(mesh, spec.initial_state(s, jax.random.PRNGKey(init_seed)))
  rng = parallel.replicate(mesh, jax.random.PRNGKey(step_seed))
  metrics = []
  if states is not None:
    states.append(jax.device_get(state))
  for i in range(num_steps):
    step = pretrain if pretrain is not None and i < registry.pretrain_steps(cfg) else joint
    state, m = step(state, parallel.shard_batch(mesh, batches[i]), rng)
    metrics.append(jax.device_get(m))
    if states is not None:
      states.append(jax.device_get(state))
  return s, jax.device_get(state), metrics
