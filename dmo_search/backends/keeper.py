"""One backend kept across a sequence of jobs that each need a different model served.

A job first tries to put its model into the running backend in place (a checkpoint loaded, a merge
method switched: fractions of a second), and only where that does not apply or fails is a new backend
started for it (a vLLM engine start: ~20 s for the toy world, minutes for a large model).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from dmo_search.backends.base import Backend, BackendError

if TYPE_CHECKING:
    from dmo_search.config import StudyConfig

__all__ = ["KeptBackend"]

_log = logging.getLogger(__name__)
_K = TypeVar("_K", bound="KeptBackend")


class KeptBackend:
    """A backend reused from job to job; a context manager (:meth:`close` stops it).

    Attributes:
        backend: the running backend, or None.
        started_cfg: the config it was started from.
        starts: backends started so far.
        last_load: how the last job's model was put in place, for progress lines.
    """

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.started_cfg: StudyConfig | None = None
        self.starts = 0
        self.last_load = ""

    def get(self, start_cfg: StudyConfig, in_place: Callable[[Backend], bool], what: str) -> Backend:
        """The backend, serving the job's model.

        Args:
            start_cfg: the config a new backend is started from when needed.
            in_place: puts the job's model into a running backend; False where it does not apply
                (another backend kind or mode). An exception it raises is a failed attempt.
            what: the in-place action, for :attr:`last_load` (``"checkpoint loaded"``).

        Raises:
            BackendError: the new backend did not start (with why the in-place attempt failed, if it did).
        """
        from dmo_search.backends import make_backend

        t0 = time.perf_counter()
        refused = ""
        if self.backend is not None:
            try:
                if in_place(self.backend):
                    self.last_load = f"{what} in place in {time.perf_counter() - t0:.2f}s"
                    return self.backend
            except Exception as e:  # a dead engine, another architecture: a new backend is tried
                _log.debug("in-place load failed", exc_info=e)
                refused = f"in-place load failed ({type(e).__name__}: {e}); "
        self.close()
        try:
            self.backend, self.started_cfg = make_backend(start_cfg), start_cfg
        except Exception as e:
            if not refused:
                raise
            raise BackendError(f"{refused}a new backend on it failed too: {type(e).__name__}: {e}") from e
        self.starts += 1
        self.last_load = f"{refused}backend started in {time.perf_counter() - t0:.1f}s"
        return self.backend

    def close(self) -> None:
        """Stop the backend (the next :meth:`get` starts a new one)."""
        if self.backend is not None:
            self.backend.close()
            self.backend, self.started_cfg = None, None

    def __enter__(self: _K) -> _K:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
