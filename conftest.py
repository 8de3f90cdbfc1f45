"""Doctests run for every module of the package (``--doctest-modules``); modules whose optional
dependency is missing here are left out of collection, not failed."""

from __future__ import annotations

import importlib.util

collect_ignore = ["metajudge/cli/__main__.py", "metajudge/processes.py",
                  "tests/data/arena_hard_auto_v0.1",  # the official tools' code, unchanged
                  "tests/data/arena_hard_auto_v2.0"]
if importlib.util.find_spec("vllm") is None:
    collect_ignore.append("metajudge/backends/vllm_offline.py")
if importlib.util.find_spec("matplotlib") is None:
    collect_ignore.append("metajudge/report/plots.py")
