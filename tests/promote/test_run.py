"""One real promotion on the toy world (tiny LoRA SFT runs), its resume, ingest and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest

from dmo_search.cli import main
from dmo_search.promote.store import PromotionStore, load_promotions
from tests._study_helpers import small_config

pytestmark = pytest.mark.slow


def _run(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 0) -> Any:
    capsys.readouterr()
    assert main(argv) == code
    out = capsys.readouterr().out
    return json.loads(out) if "--json" in argv and code == 0 else out


@pytest.fixture(scope="module")
def promoted(toy_world: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("promote")
    root = Path(toy_world.root)
    promotion = {
        "train_data": {d: str(root / "data" / "train" / f"{d}.jsonl") for d in ("add", "shift", "sort")},
        "mode": "exact",
        "n_examples": 40,
        "seed": 0,
        "recipe": {"rank": 4, "alpha": 8, "lr": 0.002, "steps": 2, "batch_size": 4},
        "output_dir": str(out / "runs"),
    }
    cfg = small_config(root, out, name="p", subset=10, n_trials=3, designs=["centre"], promotion=promotion)
    storage = f"sqlite:///{out / 'p.db'}"
    assert main(["launch", str(cfg), "--quiet", "--json", "--backend", "hf"]) == 0
    assert main(["promote", "p", "--storage", storage, "--top", "1", "--calibration", "1", "--json"]) == 0
    return {"storage": storage, "out": out, "cfg": cfg, "first": load_promotions(storage, "p")}


def test_every_run_is_trained_scored_and_stored(promoted: dict[str, Any]) -> None:
    recs = promoted["first"]
    assert [r.role for r in recs] == ["top", "calibration"]
    for r in recs:
        assert r.status == "done", r.error
        assert r.sft_value is not None and 0 <= r.sft_value <= 1
        assert set(r.sft_scores or {}) == {"add", "shift", "sort"}
        assert r.proxy_value is not None and r.proxy_source is not None
        assert r.data_counts is not None and abs(sum(r.data_counts.values()) - 40) <= 2
        assert r.train_seconds is not None and r.train_seconds > 0 and r.eval_seconds is not None
        assert r.final_loss is not None
        assert (Path(str(r.model_dir)) / "config.json").is_file()
        assert abs(sum(r.weights.values()) - 1) < 1e-9
    study = optuna.load_study(study_name="p", storage=promoted["storage"])  # plain Optuna still reads the DB
    assert len(study.trials) == 3
    top = recs[0]
    if top.trial_number is not None:  # a top pick at a trial takes that trial's proxy value
        assert top.proxy_value == study.trials[top.trial_number].value


def test_resume_does_not_retrain_finished_runs(promoted: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    storage = promoted["storage"]
    first = {r.run_key: r for r in promoted["first"]}
    mtimes = {k: (Path(str(r.model_dir)) / "config.json").stat().st_mtime_ns for k, r in first.items()}
    argv = ["promote", "p", "--storage", storage, "--top", "1", "--calibration", "1", "--json"]
    again = {r["run_key"]: r for r in _run(capsys, argv)}
    assert set(again) == set(first)
    for k, r in again.items():
        assert r["train_seconds"] == first[k].train_seconds and r["sft_value"] == first[k].sft_value
        assert (Path(r["model_dir"]) / "config.json").stat().st_mtime_ns == mtimes[k]

    # an interruption after training (trained, not scored) and a failed run
    k_trained, k_failed = list(first)
    store = PromotionStore(storage, "p")
    store.update(k_trained, status="trained", sft_value=None, sft_scores=None)
    store.update(k_failed, status="failed", error="killed")
    store.close()
    after = {r["run_key"]: r for r in _run(capsys, argv)}
    assert after[k_trained]["status"] == "done" and after[k_trained]["train_seconds"] == first[k_trained].train_seconds
    assert (Path(after[k_trained]["model_dir"]) / "config.json").stat().st_mtime_ns == mtimes[k_trained]
    assert after[k_trained]["sft_value"] == first[k_trained].sft_value  # scored again, same model, same score
    assert after[k_failed]["status"] == "done" and after[k_failed]["error"] is None
    assert (Path(after[k_failed]["model_dir"]) / "config.json").stat().st_mtime_ns != mtimes[k_failed]  # retrained


def test_a_run_whose_scoring_fails_keeps_its_trained_model(
    promoted: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training finished and scoring failed (an engine out of memory; here a scorer that raises stands in for
    it): the run stays ``trained`` with the error, and the next ``promote`` scores that model instead of
    training it again (SFT runs take hours; before, the run was ``failed`` and retrained); a ``done`` run
    whose full-validation scoring fails stays ``done``."""
    from dmo_search.promote import score

    storage = promoted["storage"]
    key = promoted["first"][0].run_key
    store = PromotionStore(storage, "p")
    store.update(key, status="failed", error="killed")  # retrained by the next promote
    store.close()
    argv = ["promote", "p", "--storage", storage, "--top", "1", "--calibration", "1", "--json"]
    real = score.PromotionScorer.score

    def out_of_memory(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory (stand-in)")

    monkeypatch.setattr(score.PromotionScorer, "score", out_of_memory)
    _run(capsys, argv, code=1)
    rec = {r.run_key: r for r in load_promotions(storage, "p")}[key]
    assert rec.status == "trained" and "out of memory" in (rec.error or "")
    trained_at = (Path(str(rec.model_dir)) / "config.json").stat().st_mtime_ns
    monkeypatch.setattr(score.PromotionScorer, "score", real)
    again = {r["run_key"]: r for r in _run(capsys, argv)}[key]
    assert again["status"] == "done" and again["error"] is None and again["sft_value"] is not None
    assert (Path(again["model_dir"]) / "config.json").stat().st_mtime_ns == trained_at  # scored, not retrained
    # a done run whose full-validation scoring fails stays done, with the error, and promote exits 1
    monkeypatch.setattr(score.PromotionScorer, "score", out_of_memory)
    _run(capsys, [*argv, "--full-validation"], code=1)
    rec = {r.run_key: r for r in load_promotions(storage, "p")}[key]
    assert rec.status == "done" and "out of memory" in (rec.error or "") and rec.sft_full_value is None
    assert (Path(str(rec.model_dir)) / "config.json").stat().st_mtime_ns == trained_at


def test_ingest_scores_a_model_trained_elsewhere(promoted: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    run = promoted["first"][0]
    adapter = Path(str(run.model_dir)).parent / "adapter"
    weights = ",".join(f"{k}={v}" for k, v in run.weights.items())
    argv = ["promote", "ingest", "p", "--storage", promoted["storage"], "--weights", weights, "--model", str(adapter)]
    rec = _run(capsys, [*argv, "--json"])
    assert rec["role"] == "ingested" and rec["status"] == "done"
    assert rec["sft_value"] == pytest.approx(run.sft_value)  # the same adapter merged again scores the same
    assert rec["proxy_value"] == pytest.approx(run.proxy_value)
    capsys.readouterr()
    assert main([*argv[:-1], str(promoted["out"])]) == 1  # a folder that is neither a checkpoint nor an adapter
    assert "neither a checkpoint" in capsys.readouterr().err


def test_report_json_plot_html(promoted: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png, html = tmp_path / "s.png", tmp_path / "r.html"
    rep = _run(
        capsys, ["report", "p", "--storage", promoted["storage"], "--json", "--plot", str(png), "--html", str(html)]
    )
    assert rep["n_scored"] >= 2 and rep["top1_regret"] is not None and rep["top1_regret"] >= 0
    assert set(rep["spearman"]) == {"estimate", "low", "high", "level", "n_boot"}
    assert rep["recommended"] is not None and set(rep["recommended"]) == {"add", "shift", "sort"}
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert html.stat().st_size > 0
    text = _run(capsys, ["report", "p", "--storage", promoted["storage"]])
    assert "Spearman rho" in text and "top-1 regret" in text


def test_promote_without_a_promotion_section(
    promoted: dict[str, Any], capsys: pytest.CaptureFixture[str], toy_world: Any, tmp_path: Path
) -> None:
    bare = small_config(Path(toy_world.root), tmp_path, name="p", promotion=None)
    capsys.readouterr()
    assert main(["promote", "p", "--storage", promoted["storage"], "--config", str(bare)]) == 1
    err = capsys.readouterr().err
    assert "no promotion: section" in err and "--config" in err


def test_full_validation_scores_every_example_without_retraining(
    promoted: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from dmo_search.backends.hf import HFBackend
    from dmo_search.config import load_config
    from dmo_search.promote.score import full_objective, scoring_config

    storage = promoted["storage"]
    before = {r.run_key: r for r in load_promotions(storage, "p") if r.role != "ingested"}
    argv = ["promote", "p", "--storage", storage, "--top", "1", "--calibration", "1", "--full-validation", "--json"]
    _run(capsys, argv)
    after = {r.run_key: r for r in load_promotions(storage, "p") if r.role != "ingested"}
    assert set(after) == set(before)
    for key, rec in after.items():
        assert (
            rec.train_seconds == before[key].train_seconds and rec.sft_value == before[key].sft_value
        )  # not retrained
        assert rec.sft_full_value is not None and rec.proxy_full_value is not None
    # the stored full score is the objective on every validation example, computed independently here
    cfg = load_config(promoted["cfg"])
    rec = next(iter(after.values()))
    objective = full_objective(cfg)
    backend = HFBackend(scoring_config(cfg, Path(str(rec.model_dir))))
    try:
        result = objective.evaluate(backend)
    finally:
        backend.close()
    assert result.value == pytest.approx(rec.sft_full_value, abs=1e-12)
    assert all(n > 10 for n in result.n_examples.values())  # the study's subsets hold 10 per domain
    rep = _run(capsys, ["report", "p", "--storage", storage, "--json"])
    assert rep["full_validation"]["n_scored"] == len(after) and "estimate" in rep["full_validation"]["spearman"]
    assert "on the full validation sets" in _run(capsys, ["report", "p", "--storage", storage])
