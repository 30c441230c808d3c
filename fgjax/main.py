r"""Command-line entry point: ``python -m fgjax.main --config=configs/x.py[:preset] --workdir=DIR``.

Kept short on purpose: flags -> config -> ``train.train_and_evaluate``, or, for
``configs/evaluate.py`` (``mode='evaluate'``), ``checkpoint_eval.evaluate_workdir``
on an existing run, or for ``configs/pictures.py`` (``mode='pictures'``),
``pictures.make.make_pictures``. Errors a
user can fix (a config field, the workdir, a NaN loss) end the run with one
line naming the cause and exit status 2 (config/workdir) or 1 (NaN).
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from fgjax import config_lib
from fgjax import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/perturb_moco.py[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
# Multi-process runs (fgjax/distributed.py); each falls back to its FGJAX_* environment variable.
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Start jax.distributed, detecting the cluster "
                                 "(TPU pod, SLURM, MPI) unless the flags below are given.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0 (FGJAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes (FGJAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index, 0..N-1 (FGJAX_PROCESS_ID).")
_DISTRIBUTED_TIMEOUT = flags.DEFINE_float("distributed_timeout", 0, "Seconds to wait for the coordinator and "
                                          "the other processes (FGJAX_DISTRIBUTED_TIMEOUT; default 300).")


class _QuietLibraries:
  """Drops INFO chatter of orbax/grain from the absl log; warnings still show."""

  def filter(self, record) -> bool:
    noisy = any(name in record.pathname for name in ("orbax", "/grain/", "xla_bridge"))
    return record.levelno >= 30 or not noisy


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from fgjax import train  # JAX is imported here, after flag parsing
  from fgjax.data import records
  from fgjax.evaluate import checkpoint_eval
  from fgjax.pictures.draw import PicturesError

  try:
    cfg = _CONFIG.value
    cfg.get("method")  # a config file that failed to load raises here
  except OSError as e:  # ml_collections defers config-file load errors to here
    cause = str(e).strip().splitlines()[-1].strip()
    print(f"fgjax: error: cannot load --config: {cause}", file=sys.stderr)
    sys.exit(2)
  workdir = _WORKDIR.value or cfg.get("workdir", "")
  try:  # before anything creates JAX's backends
    cluster = distributed.maybe_initialize(
        distributed=_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value, timeout_s=_DISTRIBUTED_TIMEOUT.value)
  except distributed.DistributedError as e:
    print(f"fgjax: error: {e}", file=sys.stderr)
    sys.exit(2)
  where = distributed.process_label(cluster)  # 'process i of N: ' on error lines of a multi-process run
  # Process 0 logs progress; the others only warnings and errors.
  logging.set_verbosity(logging.INFO if cluster is None or cluster.process_id == 0 else logging.WARNING)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    if cluster is not None:
      distributed.check_same_config(cfg, workdir=workdir, timeout_s=cluster.timeout_s)
    if cfg.get("mode") == "evaluate":
      cfg.workdir = workdir
      checkpoint_eval.evaluate_workdir(cfg)
    elif cfg.get("mode") == "pictures":
      from fgjax.pictures import make as pictures
      cfg.workdir = workdir
      pictures.make_pictures(cfg)
    elif cfg.get("method") == "class_attentive":
      from fgjax.methods import class_attentive
      class_attentive.train_and_evaluate(cfg, workdir)
    else:
      train.train_and_evaluate(cfg, workdir)
    # The others wait for process 0's evaluation: a process that exits early
    # would fail the runtime's shutdown barrier (300 s) and with it process 0.
    distributed.barrier("run_end", timeout_s=distributed.EVALUATION_TIMEOUT_S)
  except (config_lib.ConfigError, train.WorkdirError, checkpoint_eval.EvaluationError,
          records.DataError, PicturesError, distributed.DistributedError) as e:
    print(f"fgjax: error: {where}{e}", file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLossError as e:
    print(f"fgjax: stopped: {where}{e}", file=sys.stderr)
    sys.exit(1)


def _parse_flags(argv):
  """absl flag parsing, with config override errors turned into one line.

  ``--config.perturb.kapa=0.1`` (a field the config does not have) or a value of
  the wrong type fails inside ml_collections' flag parser; the user gets the
  field and the reason, not a traceback.
  """
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, OSError, flags.Error) as e:
    text = str(e).replace("\\n", "\n").replace("\\'", "'")
    if "Traceback" in text:  # config-file load errors embed the loader's traceback
      text = text[text.rindex("Error: ") + len("Error: "):] if "Error: " in text else text
    reason = " ".join(text.split()).replace("'", "")
    print(f"fgjax: error: bad command-line flag: {reason}", file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
