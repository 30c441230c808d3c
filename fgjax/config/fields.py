"""Config helpers every schema uses: one-line checks that name the field, unknown-field detection, presets.

A check that fails raises :class:`fgjax.errors.ConfigError` with the dotted
field name and the reason, before anything compiles.
"""

from __future__ import annotations

import difflib
import math
from typing import Any
from typing import Callable
from typing import Mapping

import ml_collections

from fgjax.errors import ConfigError


def require(condition: bool, field: str, message: str) -> None:
  """Raises ConfigError naming ``field`` unless ``condition``."""
  if not condition:
    raise ConfigError(f"config field {field!r}: {message}")


def is_finite_number(value: Any) -> bool:
  """An int or float (not a bool) that is neither NaN nor infinite."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_positive(value: Any, field: str) -> None:
  """A learning rate, temperature, ...: a finite number > 0 (``inf``, ``nan``, 0, -1 are errors)."""
  require(is_finite_number(value) and value > 0, field, f"must be a finite number > 0, got {value!r}")


def require_nonnegative(value: Any, field: str) -> None:
  """A weight or decay: a finite number >= 0."""
  require(is_finite_number(value) and value >= 0, field, f"must be a finite number >= 0, got {value!r}")


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in cfg.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flatten(value, path + "."))
    else:
      out[path] = value
  return out


def check_known_fields(cfg: ml_collections.ConfigDict, schema: ml_collections.ConfigDict,
                       prefix: str = "") -> None:
  """Raises ConfigError for a field the schema does not have (with a suggestion)."""
  known = flatten(schema, prefix)
  for path in flatten(cfg, prefix):
    if path not in known:
      close = difflib.get_close_matches(path, known, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise ConfigError(f"unknown config field {path!r}{hint}")


def split_presets(preset: str | None, known: Any, *, exclusive: dict[str, tuple[str, ...]] | None = None,
                  undone_by: dict[str, tuple[str, ...]] | None = None) -> list[str]:
  """``'a,b'`` -> ``['a', 'b']``, each checked against ``known`` (the names of a schema's presets).

  Presets apply left to right, each overwriting the fields it sets, so some
  combinations would silently drop what an earlier one chose. Those raise:

  Args:
    exclusive: ``{what: presets}``: at most one of ``presets`` may be given, as
      each chooses ``what`` (the data set, the model, the objective).
    undone_by: ``{preset: later}``: the presets of ``later`` reset fields that
      ``preset`` sets (e.g. ``cub200`` resets the sizes ``runlocal`` shrinks),
      so they may not come after it.

  Raises:
    ConfigError: an unknown preset, or a combination that would override itself.
  """
  names = [p.strip() for p in (preset or "").split(",") if p.strip()]
  for name in names:
    if name not in known:
      raise ConfigError(f"unknown preset {name!r}: expected one of {sorted(known)}")
  for what, group in (exclusive or {}).items():
    chosen = list(dict.fromkeys(n for n in names if n in group))
    if len(chosen) > 1:
      raise ConfigError(f"presets {chosen[0]!r} and {chosen[1]!r} both choose the {what} "
                        f"(the later one would silently replace the earlier); keep one")
  for i, name in enumerate(names):
    later = [n for n in names[i + 1:] if n in (undone_by or {}).get(name, ())]
    if later:
      raise ConfigError(f"preset {later[0]!r} after {name!r} would silently undo {name!r} (it resets "
                        f"the fields {name!r} sets); give {later[0]!r} first: {later[0]},{name}")
  return names


def apply_presets(c: ml_collections.ConfigDict, preset: str | None,
                  presets: Mapping[str, Callable[[ml_collections.ConfigDict], None]], *,
                  exclusive: dict[str, tuple[str, ...]] | None = None,
                  undone_by: dict[str, tuple[str, ...]] | None = None) -> ml_collections.ConfigDict:
  """Applies the comma-separated ``preset`` to ``c`` left to right (checked by :func:`split_presets`)."""
  for name in split_presets(preset, presets, exclusive=exclusive, undone_by=undone_by):
    presets[name](c)
  return c
