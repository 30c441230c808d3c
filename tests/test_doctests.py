"""The examples in the docstrings of ``fgjax/ops`` run and print what they say."""

import doctest
import importlib
import pkgutil

import pytest

import fgjax.ops

OPS_MODULES = sorted(m.name for m in pkgutil.iter_modules(fgjax.ops.__path__, "fgjax.ops."))


@pytest.mark.parametrize("name", OPS_MODULES)
def test_ops_docstring_examples(name):
  result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
  assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
