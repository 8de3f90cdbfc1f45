"""``python -m tests.property.killpoint K DIR -- <metajudge arguments>``: the metajudge CLI,
killed with SIGKILL of its process group just before its K-th write under DIR.

A write is opening a file for writing or appending, or renaming or moving one (``os.replace``,
``os.rename``, ``shutil.move``): the points where a stage's files change. A kill drawn as a time
lands between the records a stage appends; one drawn as a write count lands between two files
of a stage that writes several (the pairs stage's three files, a settings file and its records,
a checkpoint's rename), which a timer almost never hits. The count is deterministic, so a
failing sequence replays and shrinks.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import signal
import sys
from typing import Any


def install(limit: int, root: str) -> None:
    """Count writes under ``root``; the ``limit``-th kills this process group first."""
    root = os.path.realpath(root)
    seen = [0]

    def tick(path: Any) -> None:
        try:
            where = os.path.realpath(os.fspath(path))
        except TypeError:  # a file descriptor
            return
        if where == root or where.startswith(root + os.sep):
            seen[0] += 1
            if os.environ.get("KILLPOINT_TRACE"):
                print(f"killpoint: write #{seen[0]}: {where}", file=sys.stderr)
            if seen[0] >= limit:
                os.killpg(os.getpgid(0), signal.SIGKILL)

    original_open = builtins.open

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+"):
            tick(file)
        return original_open(file, mode, *args, **kwargs)

    def renaming(original: Any) -> Any:
        def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            tick(dst)
            return original(src, dst, *args, **kwargs)
        return rename

    builtins.open = io.open = open_  # type: ignore[assignment]
    os.replace, os.rename = renaming(os.replace), renaming(os.rename)  # type: ignore[assignment]
    shutil.move = renaming(shutil.move)  # type: ignore[assignment]


def main() -> int:
    limit, root, dashes, *argv = sys.argv[1:]
    assert dashes == "--", "usage: killpoint K DIR -- <metajudge arguments>"
    install(int(limit), root)
    from metajudge.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
