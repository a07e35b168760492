"""vLLM's start-up advisories dropped, its other warnings kept (:mod:`dmo_search.backends.vllm_logging`).

A whole engine start is checked by ``tests/test_cli.py::test_launch_on_the_vllm_backend_end_to_end``
(no WARNING line, no torch deprecation note on its stderr); here the filter, the logging config as
vLLM's own processes apply it (in a fresh interpreter, as an engine process is), the variables set
during a start and restored after it, and the user's settings that turn it all off.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmo_search.backends import vllm_logging
from dmo_search.backends.vllm_logging import ADVISORIES, DropAdvisories, quiet_engine_start

_ENV_KEYS = ("VLLM_LOGGING_CONFIG_PATH", "TORCH_LOGS", "PYTHONWARNINGS", "VLLM_CONFIGURE_LOGGING")


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("vllm.platforms.cpu", logging.WARNING, __file__, 1, msg, args, None)


def test_the_filter_drops_advisories_only() -> None:
    f = DropAdvisories()
    assert not f.filter(_record("libtcmalloc is not found in LD_PRELOAD. For best performance, ..."))
    assert not f.filter(_record("[shutdown] Process manager: force killing remaining process %s pid %d", "X", 1))
    assert f.filter(_record("Casting torch.bfloat16 to torch.float32."))
    assert f.filter(_record("max_model_len %d is larger than the model's context", 4096))
    assert f.filter(_record("an error mentioning Model Runner V2 requires Triton later in the text"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in _ENV_KEYS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "WARNING")
    monkeypatch.setenv("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # as dmo_search.backends.vllm sets it


@pytest.mark.usefixtures("clean_env")
def test_an_engine_process_applying_the_config_drops_advisories_and_keeps_warnings(tmp_path: Path) -> None:
    pytest.importorskip("vllm", reason="vLLM is not importable here")
    os.environ["PYTHONWARNINGS"] = "default::UserWarning"  # a user's own setting is kept beside ours
    with quiet_engine_start(tmp_path):
        env = dict(os.environ)
    assert os.environ["PYTHONWARNINGS"] == "default::UserWarning"  # restored after the start
    assert "VLLM_LOGGING_CONFIG_PATH" not in os.environ and "TORCH_LOGS" not in os.environ
    path = Path(env["VLLM_LOGGING_CONFIG_PATH"])
    assert path.parent == tmp_path and json.loads(path.read_text())["handlers"]["vllm"]["filters"]
    assert env["TORCH_LOGS"] == "-torch._opaque_base,-torch._library.opaque_object,-torch.utils.cpp_extension"
    assert env["PYTHONWARNINGS"].startswith("default::UserWarning,ignore:`torch.distributed.reduce_op`")
    # what an engine process does as it starts: vLLM's logging config from the parent's variables
    script = (
        "import logging, warnings\n"
        "from vllm.config.logging import LoggingConfig\n"
        "from vllm.logger import configure_logging, init_logger\n"
        "configure_logging(LoggingConfig())\n"
        "log = init_logger('vllm.v1.worker.cpu_worker')\n"
        "log.warning('libiomp is not found in LD_PRELOAD. For best performance, ...')\n"
        "log.warning('a real warning %d', 7)\n"
        "logging.getLogger('torch._opaque_base').warning('torch._opaque_base is deprecated')\n"
        "warnings.warn('`torch.distributed.reduce_op` is deprecated, please use ReduceOp', FutureWarning)\n"
        "warnings.warn('another FutureWarning', FutureWarning)\n"
    )
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "a real warning 7" in res.stderr and "another FutureWarning" in res.stderr
    for dropped in ("libiomp", "torch._opaque_base is deprecated", "reduce_op"):
        assert dropped not in res.stderr, res.stderr
    # the same interpreter without the variables prints them all (the check above is not vacuous)
    bare = {k: v for k, v in env.items() if k not in _ENV_KEYS}
    res = subprocess.run([sys.executable, "-c", script], env=bare, capture_output=True, text=True, timeout=300)
    assert all(s in res.stderr for s in ("libiomp", "torch._opaque_base is deprecated", "reduce_op")), res.stderr


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    "setting",
    [
        {"VLLM_LOGGING_LEVEL": "INFO"},  # dmo-search -v
        {"VLLM_LOGGING_CONFIG_PATH": "/users/own.json"},
        {"VLLM_CONFIGURE_LOGGING": "0"},
    ],
)
def test_the_users_settings_turn_it_off(
    setting: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in setting.items():
        monkeypatch.setenv(k, v)
    before = dict(os.environ)
    with quiet_engine_start(tmp_path):
        assert dict(os.environ) == before
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("clean_env")
def test_a_users_torch_logs_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vllm", reason="vLLM is not importable here")
    monkeypatch.setenv("TORCH_LOGS", "+dynamo")
    with quiet_engine_start(tmp_path):
        assert os.environ["TORCH_LOGS"] == "+dynamo" and "VLLM_LOGGING_CONFIG_PATH" in os.environ


def test_advisories_are_start_of_message_texts() -> None:
    """Each entry is matched at the start of a message: none may be empty (it would drop every line)."""
    assert all(a.strip() == a and len(a) > 15 for a in ADVISORIES)
    assert vllm_logging.QUIET_TORCH_LOGGERS and all(n.startswith("torch.") for n in vllm_logging.QUIET_TORCH_LOGGERS)
