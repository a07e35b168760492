"""``atomic_folder``: a folder appears whole or not at all, with real files and a real SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dmo_search.atomic import atomic_folder


def _siblings(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir())


def test_the_folder_appears_when_the_block_ends(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    with atomic_folder(dest) as tmp:
        (tmp / "config.json").write_text("{}")
        assert not dest.exists()
    assert (dest / "config.json").read_text() == "{}"
    assert _siblings(dest) == ["model"]


@pytest.mark.parametrize("existing", ["empty", "full"])
def test_an_existing_folder_is_replaced(tmp_path: Path, existing: str) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    if existing == "full":
        (dest / "old.bin").write_text("old")
    with atomic_folder(dest) as tmp:
        (tmp / "new.bin").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.bin"]
    assert _siblings(dest) == ["model"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_an_exception_leaves_the_old_folder_and_no_partial_one(tmp_path: Path, error: type[BaseException]) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "old.bin").write_text("old")
    with pytest.raises(error), atomic_folder(dest) as tmp:
        (tmp / "config.json").write_text("{}")
        raise error()
    assert sorted(p.name for p in dest.iterdir()) == ["old.bin"]
    assert _siblings(dest) == ["model"]


_KILLED = """
import os, signal, sys
from pathlib import Path
from dmo_search.atomic import atomic_folder

with atomic_folder(Path(sys.argv[1])) as tmp:
    (tmp / "config.json").write_text("{}")  # a checkpoint's first file; its weights never come
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_no_folder_that_looks_whole(tmp_path: Path) -> None:
    """SIGKILL inside the block: no ``dest`` (only ``DEST.partial``), and the next write removes the leftover."""
    dest = tmp_path / "model"
    res = subprocess.run([sys.executable, "-c", _KILLED, str(dest)], capture_output=True, text=True, timeout=60)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not dest.exists() and (tmp_path / "model.partial" / "config.json").is_file()
    with atomic_folder(dest) as tmp:
        (tmp / "weights.bin").write_text("w")
    assert sorted(p.name for p in dest.iterdir()) == ["weights.bin"]
    assert _siblings(dest) == ["model"]
