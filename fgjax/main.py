r"""Command-line entry point: ``python -m fgjax.main --config=configs/x.py[:preset] --workdir=DIR``.

Kept short on purpose (the checks of the command line itself are in
``fgjax.command_line``): flags -> config -> ``train.train_and_evaluate``, or, for
``configs/evaluate.py`` (``mode='evaluate'``), ``checkpoint_eval.evaluate_workdir``
on an existing run, for ``configs/pictures.py`` (``mode='pictures'``),
``pictures.make.make_pictures``, or for ``configs/explore.py`` (``mode='explore'``),
``explore.make.make_explorer``. Errors a
user can fix (a config field, the workdir, a NaN loss) end the run with one
line naming the cause and exit status 2 (config/workdir) or 1 (NaN). So do
mistakes on the command line itself: no ``--config`` (the line lists the
configs), a config file that does not load (it names the file and the cause:
a syntax error, an exception in ``get_config``, an unknown preset), a bad
``--config.x`` override, or a stray positional argument.
"""

from __future__ import annotations

import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from fgjax import command_line
from fgjax import errors
from fgjax.infra import distributed


def _error(message: str) -> None:
  """Ends the run with one line on stderr and exit status 2."""
  print(f"fgjax: error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)


_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/perturb_moco.py[:preset].",
                                          lock_config=True)
flags.FLAGS["config"].parser = command_line.CheckedConfigFileParser(flags.FLAGS["config"].parser)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
# Multi-process runs (fgjax/infra/distributed.py); each falls back to its FGJAX_* environment variable.
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
  _check_command_line(argv)
  from fgjax import train  # JAX is imported here, after flag parsing
  from fgjax.evaluate import checkpoint_eval
  from fgjax.infra import preemption

  cfg = _CONFIG.value
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
    elif cfg.get("mode") == "explore":
      from fgjax.explore import make as explore
      cfg.workdir = workdir
      explore.make_explorer(cfg)
    else:
      from fgjax.methods import registry
      method = registry.get(cfg.get("method"))
      if method.run is not None:  # a method with its own loop (class-attentive, on vectors)
        method.run(cfg, workdir)
      else:
        train.train_and_evaluate(cfg, workdir)
    # The others wait for process 0's evaluation: a process that exits early
    # would fail the runtime's shutdown barrier (300 s) and with it process 0.
    distributed.barrier("run_end", timeout_s=distributed.EVALUATION_TIMEOUT_S)
  except errors.UserError as e:  # config, workdir, data, evaluation, pictures, explorer, cluster
    print(f"fgjax: error: {where}{e}", file=sys.stderr)
    sys.exit(2)
  except errors.NonFiniteLossError as e:
    print(f"fgjax: stopped: {where}{e}", file=sys.stderr)
    sys.exit(1)
  except errors.Preempted as e:  # SIGTERM/SIGINT: the current step is saved
    print(f"fgjax: stopped: {where}{e}", file=sys.stderr)
    sys.exit(preemption.EXIT_PREEMPTED)
  except OSError as e:
    if not errors.is_disk_full(e):
      raise
    # A full disk outside a checkpoint save (which names its step itself): the
    # metrics, results or pictures. What is on disk is kept; a rerun resumes.
    print(f"fgjax: error: {where}disk full: cannot write {e.filename or 'the run directory'} ({e.strerror}); "
          f"free some space and rerun the same command to resume from the newest checkpoint", file=sys.stderr)
    sys.exit(2)


_HELP_OR_FLAGFILE = re.compile(r"^--?(\?|h|help|helpfull|helpshort|helpxml|flagfile)(=|$)")
_CONFIG_FLAG = re.compile(r"^--?config(=|$)")


def _check_command_line(argv) -> None:
  """What absl parsed: no positional arguments, and a --config."""
  if len(argv) > 1:
    _error(f"unexpected arguments: {argv[1:]}")
  if _CONFIG.value is None:
    _error(f"no --config given; {command_line.usage_line()}")


def _parse_flags(argv):
  """absl flag parsing, with every command-line mistake turned into one line.

  ``--config.perturb.kapa=0.1`` (a field the config does not have) or a value of
  the wrong type fails inside ml_collections' flag parser, a config file that
  does not load inside `_CheckedConfigFileParser`; the user gets the field or
  the file and the reason, not a traceback. A missing ``--config`` is named
  (with the list of configs) before the overrides of it could fail as unknown flags.
  """
  args = list(argv[1:])
  args = args[:args.index("--")] if "--" in args else args
  if not any(_CONFIG_FLAG.match(a) or _HELP_OR_FLAGFILE.match(a) for a in args):
    _error(f"no --config given; {command_line.usage_line()}")
  try:
    argv = flags.FLAGS(argv)
  except command_line.ConfigLoadError as e:
    _error(str(e))
  except (AttributeError, KeyError, TypeError, ValueError, OSError, flags.Error) as e:
    foreign = command_line.field_of_another_method(args)
    if foreign:  # e.g. --config.perturb.nu on configs/moco.py: ml_collections would say only "perturb"
      _error(foreign)
    text = str(e).replace("\\n", "\n").replace("\\'", "'")
    if "Traceback" in text:  # config-file load errors embed the loader's traceback
      text = text[text.rindex("Error: ") + len("Error: "):] if "Error: " in text else text
    reason = " ".join(text.split()).replace("'", "")
    _error(f"bad command-line flag: {reason}")
  _check_command_line(argv)
  return argv


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
