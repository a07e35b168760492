"""``promotion.command``: the external trainer runs with its placeholders filled, fails loudly, and is
stopped with everything it started when the process running it dies (real shell commands, no model)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dmo_search.promote.sft import SFTError, SFTResult, run_external

_WRITES_A_CHECKPOINT = (
    "printf '%s\\n' {data} {weights} {base_model} > {output_dir}/args.txt && "
    'echo \'{{"model_type": "qwen2"}}\' > {output_dir}/config.json'
)


def _run(tmp_path: Path, template: str) -> SFTResult:
    return run_external(
        template,
        data=tmp_path / "my data.jsonl",
        output_dir=tmp_path / "run",
        weights={"add": 0.25, "sort": 0.75},
        base_model=tmp_path / "base",
        log_path=tmp_path / "run.log",
    )


def test_the_command_gets_its_placeholders_and_its_checkpoint_is_the_model(tmp_path: Path) -> None:
    res = _run(tmp_path, _WRITES_A_CHECKPOINT)
    trained = tmp_path / "run" / "trained"
    assert res.model_dir == trained and res.train_seconds > 0
    args = (trained / "args.txt").read_text().splitlines()
    assert args == [str(tmp_path / "my data.jsonl"), "add=0.25,sort=0.75", str(tmp_path / "base")]


def test_a_failing_command_names_its_exit_code_and_log(tmp_path: Path) -> None:
    with pytest.raises(SFTError, match=r"exited with 3; see .*run\.log"):
        _run(tmp_path, "echo training {data} {output_dir}; exit 3")
    assert "training" in (tmp_path / "run.log").read_text()
    with pytest.raises(SFTError, match="neither a checkpoint"):
        _run(tmp_path, "true {data} {output_dir}")


_OWNER = """
import sys
from pathlib import Path
from dmo_search.promote.sft import run_external

tmp = Path(sys.argv[1])
template = "echo $$ > " + str(tmp / "pid") + "; sleep 600 & sleep 600; true {data} {output_dir}"
run_external(template, data=tmp / "d.jsonl", output_dir=tmp / "run", weights={"a": 1.0},
             base_model=tmp / "base", log_path=tmp / "run.log")
"""


def test_the_command_stops_when_the_promotion_is_killed(tmp_path: Path) -> None:
    """SIGKILL the process running the command: the command and its children are stopped (a resumed
    promotion retrains the run into the same folder, and must not find a copy still training there)."""
    owner = subprocess.Popen([sys.executable, "-c", _OWNER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        tree: list[psutil.Process] = []
        while len(tree) < 3 and time.monotonic() < deadline:  # the shell and its two sleeps
            if (tmp_path / "pid").is_file() and (text := (tmp_path / "pid").read_text().strip()):
                shell = psutil.Process(int(text))
                tree = [shell, *shell.children(recursive=True)]
            time.sleep(0.05)
        assert len(tree) == 3, f"the command did not start: {(tmp_path / 'run.log').read_text()}"
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert not alive, f"the command outlived the promotion: {[p.pid for p in alive]}"
    finally:
        owner.kill()
        owner.wait()
        for p in tree:
            if p.is_running():
                p.kill()


def test_a_command_whose_watchdog_cannot_start_never_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No watchdog, no unguarded command: the watchdog starts first, and its failure is raised before the
    command runs."""
    fails = tmp_path / "python"  # stands in for the watchdog's interpreter: it fails
    fails.write_text("#!/bin/sh\nexit 3\n")
    fails.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fails))
    started = tmp_path / "started"
    with pytest.raises(RuntimeError, match="exit code 3"):
        _run(tmp_path, f"touch {started}; true {{data}} {{output_dir}}")
    assert not started.exists(), "the command ran without a watchdog"
