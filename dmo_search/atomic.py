"""Write a folder so that it appears whole or not at all (a model checkpoint, an export)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_folder"]


@contextlib.contextmanager
def atomic_folder(dest: Path) -> Iterator[Path]:
    """Yield ``DEST.partial`` to write into; it becomes ``dest`` only when the block ends normally.

    On an exception (Ctrl-C and a full disk included) the partial folder is removed. A process killed in
    the block (SIGKILL, OOM) leaves only ``DEST.partial``, never a ``dest`` that looks whole; the next call
    removes it first. An existing ``dest`` is replaced: an empty one by the rename itself, another is
    moved aside to ``DEST.old`` and removed after.
    """
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.is_dir() and any(dest.iterdir()):
        dest.rename(old)
    tmp.rename(dest)  # replaces an empty folder
    shutil.rmtree(old, ignore_errors=True)
