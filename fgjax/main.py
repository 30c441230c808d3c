r"""Command-line entry point: ``python -m fgjax.main --config=configs/x.py[:preset] --workdir=DIR``.

Kept short on purpose: flags -> config -> ``train.train_and_evaluate``, or, for
``configs/evaluate.py`` (``mode='evaluate'``), ``checkpoint_eval.evaluate_workdir``
on an existing run. Errors a
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

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/perturb_moco.py[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")


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

  try:
    cfg = _CONFIG.value
    cfg.get("method")  # a config file that failed to load raises here
  except OSError as e:  # ml_collections defers config-file load errors to here
    cause = str(e).strip().splitlines()[-1].strip()
    print(f"fgjax: error: cannot load --config: {cause}", file=sys.stderr)
    sys.exit(2)
  workdir = _WORKDIR.value or cfg.get("workdir", "")
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  try:
    if cfg.get("mode") == "evaluate":
      cfg.workdir = workdir
      checkpoint_eval.evaluate_workdir(cfg)
    elif cfg.get("method") == "class_attentive":
      from fgjax.methods import class_attentive
      class_attentive.train_and_evaluate(cfg, workdir)
    else:
      train.train_and_evaluate(cfg, workdir)
  except (config_lib.ConfigError, train.WorkdirError, checkpoint_eval.EvaluationError,
          records.DataError) as e:
    print(f"fgjax: error: {e}", file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLossError as e:
    print(f"fgjax: stopped: {e}", file=sys.stderr)
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
