"""The CLI end to end on the toy world: launch, status/best/eval --json, export, and resume after SIGKILL or SIGTERM."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from dmo_search.cli import main
from tests._study_helpers import db_states, small_config

pytestmark = pytest.mark.slow


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def launched(toy_world: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("cli")
    cfg = small_config(toy_world.root, out, name="c", n_trials=3, designs=["centre"])
    assert main(["launch", str(cfg), "--quiet", "--json"]) == 0
    return {"cfg": cfg, "storage": f"sqlite:///{out / 'c.db'}", "out": out}


def test_status_json(launched: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    data = _json(capsys, ["status", "c", "--storage", launched["storage"], "--json"])
    assert data["counts"] == {"COMPLETE": 3}
    t0 = data["trials"][0]
    assert set(t0) >= {"number", "state", "weights", "value", "scores", "merge_seconds", "eval_seconds", "value_se"}
    assert t0["weights"] == pytest.approx([1 / 3] * 3)
    assert abs(sum(data["trials"][2]["weights"]) - 1) < 1e-9


def test_best_and_eval_agree(launched: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    best = _json(capsys, ["best", "c", "--storage", launched["storage"], "--json"])["best"]
    w = ",".join(repr(x) for x in best["weights"])
    ev = _json(capsys, ["eval", str(launched["cfg"]), "--weights", w, "--json"])
    assert ev["value"] == pytest.approx(best["value"], abs=1e-12)
    assert ev["scores"] == pytest.approx(best["scores"])
    assert set(ev) >= {"value", "scores", "value_se", "weights"}


def test_human_output(launched: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["best", "c", "--storage", launched["storage"]]) == 0
    out = capsys.readouterr().out
    assert "best mixture" in out and "domain" in out and "±" in out


def test_export_loads_in_transformers(launched: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM

    from dmo_search.backends.hf import HFBackend
    from dmo_search.config import load_config

    dest = launched["out"] / "export"
    data = _json(capsys, ["export", "c", str(dest), "--storage", launched["storage"], "--trial", "0", "--json"])
    assert Path(data["out_dir"]) == dest
    model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32)
    ref = HFBackend(load_config(launched["cfg"]))
    ref.set_mixture([1 / 3] * 3)
    exported = dict(model.named_parameters())
    assert all(torch.equal(p, exported[n]) for n, p in ref.model.named_parameters())
    assert (dest / "tokenizer_config.json").is_file()
    # a second export into a non-empty folder is refused
    assert main(["export", "c", str(dest), "--storage", launched["storage"]]) == 1
    assert "not empty" in capsys.readouterr().err
    # and one onto a file (the config, say) names that
    assert main(["export", "c", str(launched["cfg"]), "--storage", launched["storage"]]) == 1
    assert f"{launched['cfg']} is a file, not a folder; choose a new OUT_DIR" in capsys.readouterr().err


def test_a_finished_study_is_reported_without_loading_a_backend(
    launched: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`launch`, `resume` and `worker` on a study that has its budget say so and start no engine (on a GPU
    its start takes minutes); a launch with another setup is still refused, and `resume --n-trials` with
    more loads it and runs the rest."""
    with sqlite3.connect(launched["out"] / "c.db") as src, sqlite3.connect(tmp_path / "c.db") as dst:
        src.backup(dst)  # a copy (with what the WAL holds): the module's study stays at 3 trials
    storage = ["--storage", f"sqlite:///{tmp_path / 'c.db'}"]
    for argv in (["launch", str(launched["cfg"]), *storage], ["resume", "c", *storage], ["worker", "c", *storage]):
        capsys.readouterr()
        assert main([*argv, "--quiet"]) == 0
        err = capsys.readouterr().err
        assert "study 'c' already has 3 completed trials (target 3)" in err, argv
        assert f"dmo-search resume c --storage sqlite:///{tmp_path / 'c.db'} --n-trials N" in err
        assert "loading base" not in err, argv
    other = tmp_path / "other.yaml"
    raw = yaml.safe_load(launched["cfg"].read_text())
    raw["objective"]["subset_size"] += 1
    other.write_text(yaml.safe_dump(raw))
    assert main(["launch", str(other), *storage, "--quiet"]) == 1  # checked once loaded: a bad model is named first
    assert re.search(r"different setup:\n  objective\.subset_size", capsys.readouterr().err)
    assert main(["resume", "c", *storage, "--n-trials", "4", "--quiet", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "loading base and 3 experts" in err
    assert json.loads(out)["counts"] == {"COMPLETE": 4}


def test_a_killed_export_leaves_no_folder_that_looks_whole(
    launched: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL ``export`` while it writes the weights (its ``config.json`` is written): no OUT_DIR, which
    ``promote ingest --model`` would have taken for a model; exporting again works."""
    dest = launched["out"] / "killed-export"
    argv = ["export", "c", str(dest), "--storage", launched["storage"], "--trial", "0"]
    res = subprocess.run(
        [sys.executable, "-m", "tests._killpoint", "save", "1", "--", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert not dest.exists()
    assert (dest.with_name(dest.name + ".partial") / "config.json").is_file()  # what it had written
    assert main(argv) == 0
    assert (dest / "model.safetensors").is_file() and (dest / "dmo_mixture.json").is_file()
    assert not dest.with_name(dest.name + ".partial").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "nope", "--storage", "sqlite:////nonexistent/x.db"], "no study DB"),
        (["eval", "missing.yaml", "--weights", "0.5,0.5"], "does not exist"),
    ],
)
def test_errors_are_one_line_with_exit_1(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(("port", "message"), [("99999", "use 0-65535"), ("x", "'x' is not a port number")])
def test_dashboard_port_out_of_range_is_an_argument_error(
    port: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:  # argparse's exit code for a bad argument
        main(["dashboard", "sqlite:///unused.db", "--port", port])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --port" in err and message in err and "Traceback" not in err


def test_bad_weights_message(launched: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(launched["cfg"]), "--weights", "0.5,0.7,0.1"]) == 1
    assert "sum to 1" in capsys.readouterr().err
    assert main(["eval", str(launched["cfg"]), "--weights", "-0.5,0.5,1"]) == 1  # not read as an option
    assert "weights must be >= 0, got [-0.5, 0.5, 1.0]" in capsys.readouterr().err
    assert main(["eval", str(launched["cfg"]), "--weights", "0.5,0.5"]) == 1
    assert "expected 3 weights" in capsys.readouterr().err


def test_launch_with_warm_start_records_the_source_and_runs_its_best_first(
    toy_world: Any, launched: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    out = launched["out"]
    cfg = small_config(toy_world.root, out, name="w", n_trials=3, sampler="gp-simplex")
    argv = ["launch", str(cfg), "--quiet", "--json", "--warm-start", "c", "--warm-start-storage", launched["storage"]]
    data = _json(capsys, argv)
    assert data["counts"] == {"COMPLETE": 3}
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{out / 'w.db'}")
    rec = study.user_attrs["warm_start"]
    assert rec["source"]["study"] == "c" and rec["source"]["storage"] == launched["storage"]
    assert rec["mapping"] == {"shared": ["add", "shift", "sort"], "new": [], "dropped": []}
    assert data["warm_start"]["study"] == "c"  # `best`/`status` say where the prior came from
    source = optuna.load_study(study_name="c", storage=launched["storage"])
    best = max(source.trials, key=lambda t: t.value)
    assert study.trials[0].params == pytest.approx(best.params)  # the source's best mixture runs first
    # a missing source fails before anything is created
    bad = small_config(toy_world.root, out, name="w2", n_trials=1)
    assert (
        main(["launch", str(bad), "--quiet", "--warm-start", "nope", "--warm-start-storage", launched["storage"]]) == 1
    )
    assert "no study 'nope' to warm-start from" in capsys.readouterr().err
    assert not (out / "w2.db").exists()


def test_a_launch_killed_between_the_warm_start_record_and_its_designs_enqueues_them_again(
    toy_world: Any, launched: dict[str, Any]
) -> None:
    """SIGKILL ``launch --warm-start`` after it recorded the warm start, before it enqueued the source's best
    mixtures: launching again enqueues them (before, the record made a second launch skip them for good)."""
    import optuna

    out = launched["out"]
    cfg = small_config(toy_world.root, out, name="wk", n_trials=3, sampler="gp-simplex")
    argv = ["launch", str(cfg), "--no-run", "--warm-start", "c", "--warm-start-storage", launched["storage"]]
    setup_writes = 3 + 1  # the study's marks and fingerprints, its config (no designs of its own)
    res = subprocess.run(  # write setup_writes + 1 is the warm-start record; die before the next one
        [sys.executable, "-m", "tests._killpoint", "setup", str(setup_writes + 2), "--", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    study = optuna.load_study(study_name="wk", storage=f"sqlite:///{out / 'wk.db'}")
    rec = study.user_attrs["warm_start"]
    assert rec["designs"] and not study.trials and rec["designs_enqueued"] is False
    assert main([*argv, "--quiet"]) == 0
    study = optuna.load_study(study_name="wk", storage=f"sqlite:///{out / 'wk.db'}")
    assert study.user_attrs["warm_start"]["designs_enqueued"] is True
    assert len(study.trials) == len(rec["designs"]) and all(t.user_attrs.get("warm_start") for t in study.trials)
    assert main([*argv, "--quiet"]) == 0  # once enqueued, a third launch adds nothing
    assert len(optuna.load_study(study_name="wk", storage=f"sqlite:///{out / 'wk.db'}").trials) == len(rec["designs"])


def test_noise_limited_study_is_told_and_its_advice_works(
    toy_world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two examples per domain: the toy scores' noise explains most (or all) of their spread; `status` and
    `best` say so and suggest a subset size, and the same 8 mixtures scored on the sizes it suggests stop
    being noise-limited within two new studies, their standard error falling as 1/sqrt(examples)."""
    import statistics

    from dmo_search.noise import MIN_TRIALS, NO_SIGNAL_FACTOR, NOISE_LIMITED_SHARE

    told = "more trials will not tell them apart"
    n_val = 200  # examples per domain in the toy world's validation sets: larger subsets use them all

    def launch(subset: int) -> dict[str, Any]:
        cfg = small_config(toy_world.root, tmp_path, name=f"n{subset}", subset=subset, n_trials=MIN_TRIALS)
        capsys.readouterr()
        assert main(["launch", str(cfg), "--json"]) == 0  # with the progress bar (on stderr)
        out, err = capsys.readouterr()
        summary = json.loads(out)
        assert err.count(told) == (1 if summary["noise"]["limited"] else 0)  # the bar says it once
        return _json(capsys, ["status", f"n{subset}", "--storage", f"sqlite:///{tmp_path / f'n{subset}.db'}", "--json"])

    small = launch(2)
    done = [t for t in small["trials"] if t["state"] == "COMPLETE"]
    noise = small["noise"]
    assert noise["n_trials"] == MIN_TRIALS == len(done)
    assert noise["se"] == pytest.approx(statistics.fmean(t["value_se"] ** 2 for t in done) ** 0.5)
    assert noise["sd"] == pytest.approx(statistics.stdev(t["value"] for t in done))
    assert noise["limited"] and noise["share"] >= NOISE_LIMITED_SHARE
    suggested = noise["suggested_subset_size"]
    assert suggested >= NO_SIGNAL_FACTOR * 2  # a noise-limited study is told at least 4x the examples
    about = "about" if noise["signal_seen"] else "at least"
    for argv in (["status", "n2"], ["best", "n2"]):
        capsys.readouterr()
        assert main([*argv, "--storage", f"sqlite:///{tmp_path / 'n2.db'}"]) == 0
        out = capsys.readouterr().out
        assert f"objective.subset_size 2 -> {about} {suggested}" in out and told in out

    followed = [(2, small)]
    while followed[-1][1]["noise"]["limited"]:
        subset, previous = followed[-1]
        assert len(followed) < 3, f"still noise-limited after following the advice twice: {previous['noise']}"
        assert subset < n_val, f"noise-limited on the whole validation sets: {previous['noise']}"
        larger_subset = min(previous["noise"]["suggested_subset_size"], n_val)
        larger = launch(larger_subset)
        for a, b in zip(larger["trials"], small["trials"], strict=True):  # the same mixtures, on more examples
            assert a["weights"] == pytest.approx(b["weights"])
        # the standard error falls as 1/sqrt(examples) (within 2x either way: it also moves with the accuracies)
        expected = previous["noise"]["se"] * (subset / larger_subset) ** 0.5
        assert expected / 2 < larger["noise"]["se"] < 2 * expected, (previous["noise"], larger["noise"])
        followed.append((larger_subset, larger))


def test_eval_refuses_a_mixture_outside_the_constraints(
    toy_world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    cfg = small_config(toy_world.root, tmp_path, name="k", sampler="gp-simplex")
    raw = yaml.safe_load(cfg.read_text())
    raw["search"]["constraints"] = {"max_weight": {"add": 0.2}}
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["eval", str(cfg), "--weights", "0.5,0.25,0.25"]) == 1
    err = capsys.readouterr().err
    assert "--weights violates the study's constraints: w[add] = 0.5 > max 0.2" in err
    assert "nearest feasible mixture is add=0.2000, shift=0.4000, sort=0.4000" in err
    assert main(["export", str(cfg), str(tmp_path / "x"), "--weights", "0.5,0.25,0.25"]) == 1
    assert "violates" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_kill_then_resume(toy_world: Any, tmp_path: Path, sig: signal.Signals) -> None:
    """Kill `launch` mid-trial, then `resume`: the budget completes, the killed trial is FAILED (not
    RUNNING forever), nothing completed is lost and trial numbers never repeat. SIGTERM unwinds (exit
    143, with the resume hint); SIGKILL cannot."""
    cfg = small_config(
        toy_world.root,
        tmp_path,
        name="k",
        n_trials=5,
        subset=32,
        worker={"heartbeat_interval": 1, "grace_period": 3, "max_consecutive_failures": 3},
    )
    db = tmp_path / "k.db"
    exe = [sys.executable, "-m", "dmo_search.cli"]
    log = (tmp_path / "launch.log").open("w")
    proc = subprocess.Popen(
        [*exe, "launch", str(cfg), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            states = db_states(db) if db.exists() else []
            if sum(s == "COMPLETE" for _, s in states) >= 2 and any(s == "RUNNING" for _, s in states):
                break
            assert proc.poll() is None, (tmp_path / "launch.log").read_text()
            time.sleep(0.05)
        else:
            pytest.fail("launch did not reach a running third trial in time")
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, (tmp_path / "launch.log").read_text()[-2000:]
        assert "terminated (SIGTERM); `dmo-search resume STUDY` continues" in (tmp_path / "launch.log").read_text()
    else:
        assert proc.returncode == -signal.SIGKILL
    before = db_states(db)
    completed_before = {n for n, s in before if s == "COMPLETE"}
    assert any(s == "RUNNING" for _, s in before)

    res = subprocess.run(
        [*exe, "resume", "k", "--storage", f"sqlite:///{db}", "--quiet", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    after = db_states(db)
    numbers = [n for n, _ in after]
    assert len(numbers) == len(set(numbers))
    assert sum(s == "COMPLETE" for _, s in after) == 5
    assert not any(s == "RUNNING" for _, s in after)
    assert any(s == "FAIL" for _, s in after)
    assert completed_before <= {n for n, s in after if s == "COMPLETE"}
    assert "FAILED" in res.stderr  # the user is told which trial was failed
    summary = json.loads(res.stdout)
    assert summary["counts"]["COMPLETE"] == 5
    shown = subprocess.run(
        [*exe, "status", "k", "--storage", f"sqlite:///{db}"], capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and "stopped before reporting" in shown.stdout  # why the killed trial failed


def test_launch_on_the_vllm_backend_end_to_end(toy_world: Any, tmp_path: Path) -> None:
    """The README's main job in a subprocess: `launch` on one live vLLM engine. Its stdout is JSON only,
    and without -v vLLM's INFO lines (its engine config, a line per weight swap) stay off stderr, and so do
    its start-up advisories and torch's deprecation notes (every WARNING line of a start on this CPU)."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed in this environment")
    cfg = small_config(toy_world.root, tmp_path, name="v", n_trials=3, designs=["centre"])
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}  # earlier in-process imports set it
    res = subprocess.run(
        [sys.executable, "-m", "dmo_search.cli", "launch", str(cfg), "--backend", "vllm", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["counts"] == {"COMPLETE": 3}
    assert "vLLM engine (dense mode) ready" in res.stderr
    assert [line for line in res.stderr.splitlines() if " INFO " in line] == []
    noise = [ln for ln in res.stderr.splitlines() if " WARNING " in ln or "is deprecated" in ln or "torch/" in ln]
    assert noise == [], "\n".join(noise)
