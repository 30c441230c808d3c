"""The command line's own checks: the --config file parser and the usage line.

``fgjax.main`` wraps ml_collections' config-file flag parser in
:class:`CheckedConfigFileParser`, so that any failure of the user's config file
(missing, a syntax error, an exception in ``get_config``, an unknown preset) is
raised at flag-parsing time as :class:`ConfigLoadError` naming the file and the
cause, which ``fgjax.main`` prints as one ``fgjax: error:`` line.
"""

from __future__ import annotations

import importlib.util
import os
import re

import ml_collections
from absl import flags
from absl import logging

from fgjax.errors import ConfigLoadError  # (re-exported: raised here)


USAGE = "python -m fgjax.main --config=configs/NAME.py[:preset] --workdir=DIR"
# The repository's configs/ folder (the parent of the package), listed when --config is missing.
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def available_configs(configs_dir: str = CONFIGS_DIR) -> list[str]:
  """Names of the config files in ``configs_dir`` (``[]`` when the folder is absent)."""
  try:
    names = os.listdir(configs_dir)
  except OSError:
    return []
  return sorted(n[:-3] for n in names if n.endswith(".py") and not n.startswith(("_", ".")))


def usage_line() -> str:
  names = available_configs()
  where = ", ".join(names) if names else f"none found in {CONFIGS_DIR}"
  return f"usage: {USAGE}; configs: {where}"


def _describe(e: BaseException) -> str:
  """One line naming an exception: ``SyntaxError: invalid syntax (line 3)``, ``ValueError: x``."""
  if isinstance(e, SyntaxError):  # str() would repeat the file name
    where = f" (line {e.lineno})" if e.lineno else ""
    return f"{type(e).__name__}: {e.msg}{where}"
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


class _DroppedAbslWarning:
  """Drops absl log records containing ``text`` while active (the error line says it instead)."""

  def __init__(self, text: str):
    self.text = text

  def filter(self, record) -> bool:
    return self.text not in record.getMessage()

  def __enter__(self):
    logging.get_absl_logger().addFilter(self)
    return self

  def __exit__(self, *exc):
    logging.get_absl_logger().removeFilter(self)


class CheckedConfigFileParser(flags.ArgumentParser):
  """ml_collections' config-file parser, wrapped: every load failure is raised at parse time.

  The stock parser defers an OSError to the first attribute access
  (``_ErrorConfig``), re-raises TypeError/ValueError with the loader's traceback
  in the message, and lets any other exception (SyntaxError, NameError, ...)
  escape as a traceback. Here any of them becomes `ConfigLoadError` naming the
  file and the cause, which ```fgjax.main._parse_flags``` prints as one line.
  """

  def __init__(self, stock: flags.ArgumentParser):
    self._stock = stock

  def flag_type(self) -> str:
    return self._stock.flag_type()

  def parse(self, path):
    if not isinstance(path, str):  # a ConfigDict set programmatically
      return self._stock.parse(path)
    file = path.split(":", 1)[0]
    if not os.path.isfile(file):
      what = "is a directory" if os.path.isdir(file) else "no such file"
      raise ConfigLoadError(f"cannot load --config {path}: {what}")
    try:
      with _DroppedAbslWarning("get_config() returned None"):
        config = self._stock.parse(path)
      if not isinstance(config, ml_collections.ConfigDict):
        getattr(config, "lock", None)  # a deferred load error (OSError) raises here
    except Exception as e:  # pylint: disable=broad-except -- any failure of the user's file
      cause = e
      # ml_collections re-raises TypeError/ValueError as type(e)('Error whilst parsing
      # config file: <traceback>') and defers an OSError behind another OSError.
      while ("Error whilst parsing config file" in str(cause) or "earlier failure to load" in str(cause)) and (
          cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
      raise ConfigLoadError(f"cannot load --config {path}: {_describe(cause)}") from e
    if not isinstance(config, ml_collections.ConfigDict):
      raise ConfigLoadError(f"cannot load --config {path}: get_config() returned "
                             f"{type(config).__name__}, not a ConfigDict")
    return config


_OVERRIDE = re.compile(r"^--?config\.([\w.]+)(=|$)")
_CONFIG_ARG = re.compile(r"^--?config=(.+)$")


def field_of_another_method(args: list[str]) -> str | None:
  """The one-line error for ``--config.a.b=v`` naming a field of another method, else None.

  Each method's config holds only its own blocks, so ml_collections refuses
  ``configs/moco.py --config.perturb.nu=7`` while parsing the flag and says only
  ``"perturb"``. This names the field and the methods that have it. Any other
  bad override (a typo, a wrong type) is left to the caller's message.
  """
  config_arg = next((m.group(1) for m in map(_CONFIG_ARG.match, args) if m), None)
  fields = [m.group(1) for m in map(_OVERRIDE.match, args) if m]
  if config_arg is None or not fields:
    return None
  file, _, preset = config_arg.partition(":")
  try:
    spec = importlib.util.spec_from_file_location("_fgjax_user_config", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cfg = module.get_config(preset or None)
  except Exception:  # pylint: disable=broad-except -- the caller reports the original error
    return None
  from fgjax.config.fields import flatten  # (imports JAX: only on this error path)
  from fgjax.methods import registry
  have = flatten(cfg)
  for field in fields:
    if field in have:
      continue
    owners = [name for name, method in registry.METHODS.items() if field in flatten(method.config(None))]
    if owners:
      return (f"config field {field!r}: method {cfg.get('method')!r} does not use it (a field of "
              f"{', '.join(owners)}); each method's config holds only its own blocks")
  return None
