"""Run the doctests of the modules that have them."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["metajudge.config", "metajudge.extras", "metajudge.seeds",
           "metajudge.analysis.logistic", "metajudge.analysis.bradley_terry",
           "metajudge.analysis.style", "metajudge.analysis.agreement", "metajudge.analysis.bias",
           "metajudge.backends.openai_server"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
