"""The watchdog (:mod:`dmo_search.reaper`) with real processes: an owner SIGKILLed, one that releases, a fork,
and a watchdog started before the processes it guards (``adopt=True``).

No vLLM here (``tests/backends/test_vllm.py`` kills the owner of a real engine): the owner is a small
script that starts a process tree (one target with a child of its own, one that ignores SIGTERM) and a
folder, and hands them to :func:`dmo_search.reaper.watch`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

_SLEEPER = "import time; time.sleep(600)"
_STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
)
# The owner scripts' targets: one with a child of its own, one that ignores SIGTERM (started and ready).
_START_TARGETS = f"""
tree = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                         "subprocess.Popen([sys.executable, '-c', {_SLEEPER!r}]); time.sleep(600)"])
stubborn = subprocess.Popen([sys.executable, "-c", {_STUBBORN!r}], stdout=subprocess.PIPE)
stubborn.stdout.readline()
while not __import__("psutil").Process(tree.pid).children():
    time.sleep(0.05)
"""
_OWNER = f"""
import json, os, subprocess, sys, time
from pathlib import Path
from dmo_search import reaper

mode, folder = sys.argv[1], Path(sys.argv[2])
folder.mkdir()
(folder / "adapter.safetensors").write_bytes(b"weights")
{_START_TARGETS}watchdog = reaper.watch([tree.pid, stubborn.pid], remove=folder, grace_s=1.0)
holder = None
if mode == "fork":  # a child made by a plain fork holds the owner's end of the watchdog's pipe too
    holder = os.fork()
    if holder == 0:
        time.sleep(600)
        os._exit(0)
if mode == "release":
    watchdog.release()
print(json.dumps({{"targets": [tree.pid, stubborn.pid], "watchdog": watchdog.pid, "holder": holder}}), flush=True)
time.sleep(600)
"""


def _start_owner(mode: str, folder: Path) -> tuple[subprocess.Popen[str], dict[str, Any], list[psutil.Process]]:
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, mode, str(folder)], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    info = json.loads(owner.stdout.readline())
    targets = [psutil.Process(pid) for pid in info["targets"]]
    tree = targets + [c for t in targets for c in t.children(recursive=True)]
    assert len(tree) == 3, "the first target's own child is missing"
    return owner, info, tree


def _cleanup(owner: subprocess.Popen[str], info: dict[str, Any], tree: list[psutil.Process]) -> None:
    extra = [info["holder"]] if info.get("holder") else []
    for p in [*tree, *(psutil.Process(pid) for pid in extra if psutil.pid_exists(pid))]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    owner.kill()
    owner.wait()


def _gone_within(procs: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=seconds)
    return alive


@pytest.mark.parametrize("mode", ["plain", "fork"])
def test_owner_killed_stops_the_tree_and_removes_the_folder(tmp_path: Path, mode: str) -> None:
    """SIGKILL the owner: every watched process and its child exit (the one ignoring SIGTERM by SIGKILL)
    and the folder is removed; with ``fork`` the watchdog sees the death by polling, not by the pipe."""
    folder = tmp_path / "engine-tmp"
    owner, info, tree = _start_owner(mode, folder)
    try:
        assert all(p.is_running() for p in tree) and folder.is_dir()
        watchdog = psutil.Process(info["watchdog"])
        t0 = time.monotonic()
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        alive = _gone_within(tree, 30)
        assert not alive, f"still running after the owner's death: {[p.pid for p in alive]}"
        deadline = time.monotonic() + 10
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not folder.exists()
        # the stubborn target ignored SIGTERM: it went at SIGKILL, after the 1 s grace
        assert time.monotonic() - t0 >= 1.0
        assert not _gone_within([watchdog], 10), "the watchdog did not exit after its work"
    finally:
        _cleanup(owner, info, tree)


def test_release_leaves_everything_alone(tmp_path: Path) -> None:
    """After ``release`` (a normal shutdown) the watchdog exits, and the owner's death signals nothing."""
    folder = tmp_path / "engine-tmp"
    owner, info, tree = _start_owner("release", folder)
    try:
        assert not psutil.pid_exists(info["watchdog"]), "release() returns once the watchdog has exited"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        time.sleep(2.5)  # longer than the watchdog's poll and grace
        assert all(p.is_running() for p in tree)
        assert (folder / "adapter.safetensors").is_file()
    finally:
        _cleanup(owner, info, tree)


def test_a_watchdog_that_does_not_start_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watchdog that exits before it says it is watching raises, with its exit code (not a silent no-op)."""
    from dmo_search import reaper

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(RuntimeError, match="exit code 3"):
        reaper.watch([os.getpid()])


_ADOPTING_OWNER = f"""
import json, os, subprocess, sys, time
from pathlib import Path
from dmo_search import reaper

mode, folder = sys.argv[1], Path(sys.argv[2])
folder.mkdir()
before = subprocess.Popen([sys.executable, "-c", {_SLEEPER!r}])  # a child the watchdog must leave alone
watchdog = reaper.watch([], remove=folder, adopt=True, grace_s=1.0)
{_START_TARGETS}targets, spared = [tree.pid, stubborn.pid], [before.pid]
if mode == "stop":  # a forked child holds the owner's end of the pipe: stop() must not wait for its end
    holder = os.fork()
    if holder == 0:
        time.sleep(600)
        os._exit(0)
    targets.append(holder)  # adopted too
if mode == "set-watched":  # from now on only the tree: the stubborn one and what starts later are spared
    watchdog.set_watched([tree.pid])
    later = subprocess.Popen([sys.executable, "-c", {_SLEEPER!r}])
    targets, spared = [tree.pid], [before.pid, stubborn.pid, later.pid]
else:
    time.sleep(0.5)  # a few of the watchdog's looks at the owner's children
if mode == "stop":
    t0 = time.monotonic()
    watchdog.stop()
    print(json.dumps({{"stop_s": time.monotonic() - t0}}), flush=True)
print(json.dumps({{"targets": targets, "spared": spared, "watchdog": watchdog.pid}}), flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("mode", ["kill", "set-watched", "stop"])
def test_an_adopting_watchdog_stops_what_the_owner_started_after_it(tmp_path: Path, mode: str) -> None:
    """``adopt=True``: the processes the owner starts after the watchdog are stopped with it (``kill``: SIGKILL
    the owner) until ``set_watched`` names them (``set-watched``: only the named one is stopped); ``stop``
    stops them at once, though a forked child holds the pipe; children from before are never touched."""
    folder = tmp_path / "engine-tmp"
    owner = subprocess.Popen(
        [sys.executable, "-c", _ADOPTING_OWNER, mode, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert owner.stdout is not None
    procs: list[psutil.Process] = []
    try:
        if mode == "stop":
            assert json.loads(owner.stdout.readline())["stop_s"] < 10, "stop() waited for the forked holder"
        info = json.loads(owner.stdout.readline())
        targets = [psutil.Process(pid) for pid in info["targets"]]
        tree = targets + [c for t in targets for c in t.children(recursive=True)]
        spared = [psutil.Process(pid) for pid in info["spared"]]
        procs = tree + spared
        if mode != "stop":
            assert all(p.is_running() for p in procs) and folder.is_dir()
            owner.send_signal(signal.SIGKILL)
            owner.wait()
        deadline = time.monotonic() + 30
        while (alive := [p.pid for p in tree if _running(p)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive, f"still running after the owner's death or stop(): {alive}"
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not folder.exists()
        assert all(_running(p) for p in spared), "a process the watchdog did not adopt was stopped"
    finally:
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        owner.kill()
        owner.wait()


def _running(p: psutil.Process) -> bool:
    """Not exited: a zombie (a stopped child its owner has not waited for) counts as stopped."""
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
