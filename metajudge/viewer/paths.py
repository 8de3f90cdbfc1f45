"""What of a run directory the explorer may read: paths inside the run, links resolved.

An ``iter_NN`` folder, a stage file, ``summary.csv`` or ``config.yaml`` that is a link resolving
outside the run is treated as absent, and the index file itself may not be a link at all
(symbolic or hard: :func:`refuse_linked_index`): the explorer never reads or writes through a
link out of the run.
"""

from __future__ import annotations

import os
from pathlib import Path

INDEX_NAME = ".explorer.sqlite"
#: the files SQLite keeps beside an index while it is open
COMPANIONS = ("", "-wal", "-shm", "-journal")


def inside(path: Path, root: Path) -> bool:
    """Does ``path``, links resolved, lie inside ``root`` (links resolved too)? A path under
    ``root`` by its names with no link and no ``..`` below ``root`` is inside without resolving
    (the server asks this of every stage file before each request)."""
    try:
        below = path.relative_to(root).parts
    except ValueError:
        below = None
    if below is not None and ".." not in below:
        step = root
        for part in below:
            step = step / part
            if os.path.islink(step):
                break
        else:
            return True
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def iterations_of(run: Path) -> list[int]:
    """Iteration numbers with a directory in the run (not a link out of it)."""
    return sorted(int(p.name[5:]) for p in run.glob("iter_[0-9][0-9]")
                  if p.is_dir() and inside(p, run))


class IndexRefused(ValueError):
    """The index cannot be written where it was asked for (a link, a read-only run); the
    message names the way out."""


def refuse_linked_index(path: Path) -> None:
    """Raise when the index file (or one of SQLite's companions) is a symbolic link, or a file
    with another hard link: SQLite would create, extend or switch to WAL mode whatever file it
    points at."""
    for suffix in COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.is_symlink():
            raise IndexRefused(
                f"{companion} is a symbolic link (to {companion.readlink()}); the explorer "
                "writes no file through a link: remove it, or name another index file with "
                "--index")
        try:
            links = companion.lstat().st_nlink
        except OSError:  # not there (yet)
            continue
        if links > 1:  # a hard link: the same file may lie outside the run
            raise IndexRefused(
                f"{companion} has {links} hard links; the explorer writes no file that is also "
                "another path (it may lie outside the run): remove it, or name another index "
                "file with --index")
