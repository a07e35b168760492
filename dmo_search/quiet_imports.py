"""Imports of libraries that warn about their own use of torch, with that warning hidden.

linear_operator (imported with BoTorch and gpytorch) and optuna-dashboard decorate functions with
``torch.jit.script``, which torch deprecates with a FutureWarning at import time: it printed in the
middle of a study's progress bar, at the top of ``report`` and when the dashboard started, and no user
of dmo-search can act on it. Only that warning is hidden, and only while these imports run.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

__all__ = ["import_botorch", "jit_deprecation_hidden"]


@contextlib.contextmanager
def jit_deprecation_hidden() -> Iterator[None]:
    """Hide torch's ``torch.jit.script`` FutureWarning inside the block (other warnings show)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        yield


@functools.cache
def import_botorch() -> None:
    """Import BoTorch (with gpytorch and linear_operator) once, quietly. dmo-search reaches BoTorch
    through :func:`dmo_search.gp.torch_context` and :func:`dmo_search.gp.model_errors`, which call this
    first, so its first import is the quiet one."""
    with jit_deprecation_hidden():
        import botorch  # noqa: F401
