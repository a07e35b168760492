"""``BackendLMMS`` and the ``lmms_eval`` objective: local lmms-eval task YAMLs over the toy world's JSONL
(text) and over a PNG image dataset built by the test (a tiny Qwen2-VL), scored through lmms-eval
0.7.3's own ``simple_evaluate`` on the live ``hf`` backend.

lmms-eval is imported from the ``--no-deps`` folder the set-up makes (``.venv/lmms-eval-ref``, or
``DMO_LMMS_EVAL_REF``); without it the test skips.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests._lmms_tasks import LMMS_REF as _REF
from tests._lmms_tasks import TEXT_UTILS as _TEXT_UTILS
from tests._lmms_tasks import check_image_task, require_lmms_eval
from tests._lmms_tasks import write_task as _write_task


@pytest.mark.slow
def test_lmms_eval_scores_the_live_backend(toy_world: Any, tmp_path: Path) -> None:
    if not (_REF / "lmms_eval").is_dir():
        pytest.skip(f"lmms-eval's code is not at {_REF}; `make install` puts it there (or set DMO_LMMS_EVAL_REF)")
    sys.path.insert(0, str(_REF))
    try:
        from lmms_eval import evaluator
        from lmms_eval.tasks import TaskManager

        from dmo_search.objectives.lmms_adapter import BackendLMMS
    finally:
        sys.path.remove(str(_REF))
    from dmo_search.backends.hf import HFBackend
    from dmo_search.config import load_config

    cfg = load_config(toy_world.config_path)
    data = cfg.objective.validation["add"]
    _write_task(tmp_path / "tasks", "toy_add_lmms", _TEXT_UTILS, data, 7)
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()][:30]
    backend = HFBackend(cfg)
    tm = TaskManager(include_path=str(tmp_path / "tasks"))
    seen = []
    for w in ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0]):
        backend.set_mixture(w)
        res = evaluator.simple_evaluate(
            model=BackendLMMS(backend), tasks=["toy_add_lmms"], limit=30, task_manager=tm, bootstrap_iters=0
        )
        got = float(res["results"]["toy_add_lmms"]["exact_match,none"])
        preds = backend.generate(
            [backend.format_prompt(r["prompt"], chat=True) for r in rows], max_new_tokens=7, batch_size=64
        )
        want = sum(p.split("\n")[0] == r["answers"][0] for p, r in zip(preds, rows, strict=True)) / len(rows)
        assert got == pytest.approx(want)
        seen.append(got)
    assert seen[0] > seen[1]  # the add expert adds; the sort expert does not (no answer carried over)


@pytest.mark.slow
def test_lmms_eval_objective_scores_its_seeded_subset(toy_world: Any, tmp_path: Path) -> None:
    if not (_REF / "lmms_eval").is_dir():
        pytest.skip(f"lmms-eval's code is not at {_REF}; `make install` puts it there (or set DMO_LMMS_EVAL_REF)")
    from dmo_search.backends.hf import HFBackend
    from dmo_search.config import load_config, parse_config
    from dmo_search.objectives import make_objective

    cfg = load_config(toy_world.config_path)
    data = cfg.objective.validation["add"]
    _write_task(tmp_path / "tasks", "toy_add_lmms", _TEXT_UTILS, data, 7)
    raw = json.loads(cfg.model_dump_json())
    raw["objective"] = {"type": "lmms_eval", "tasks": [{"name": "toy_add_lmms", "metric": "exact_match,none"}]}
    raw["objective"].update(include_path=str(tmp_path / "tasks"), subset_size=25, max_new_tokens=7)
    sys.path.insert(0, str(_REF))
    try:
        obj = make_objective(parse_config(raw).objective)
        backend = HFBackend(cfg)
        backend.set_mixture([0.75, 0.25, 0.0])  # add partly solved: a score strictly inside (0, 1)
        got = obj.evaluate(backend)
        small = obj.evaluate(backend, n=10)
    finally:
        sys.path.remove(str(_REF))
    idx = obj.record()["subsets"]["toy_add_lmms"]["indices"]  # type: ignore[index]
    assert idx != list(range(25)) and len(idx) == 25  # a seeded sample, not lmms-eval's first N
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    preds = backend.generate(
        [backend.format_prompt(rows[i]["prompt"], chat=True) for i in idx], max_new_tokens=7, batch_size=64
    )
    want = sum(p.split("\n")[0] == rows[i]["answers"][0] for p, i in zip(preds, idx, strict=True)) / len(idx)
    assert got.scores["toy_add_lmms"] == pytest.approx(want) and got.n_examples == {"toy_add_lmms": 25}
    assert 0.0 < got.value_se < 0.2  # never 0, even where every example agrees (Laplace-smoothed)
    assert small.n_examples == {"toy_add_lmms": 10}


def test_paper_config_lists_the_14_benchmarks() -> None:
    import csv

    from dmo_search.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper_qwen2vl_4domains.yaml")
    assert cfg.objective.type == "lmms_eval" and cfg.expert_names == ["general", "ocr", "counting", "chart"]
    assert len(cfg.objective.domains) == 14 and len(cfg.designs()) == 20
    ref = Path("/work/shared/reference/benchmarks_metrics.csv")
    if ref.is_file():  # the paper's task names and result keys, as the reference table lists them
        with ref.open() as f:
            rows = {r["lmms_eval_task"]: r["results_json_key"] for r in csv.DictReader(f)}
        got = {
            t.name: t.metric if isinstance(t.metric, str) else " + ".join(t.metric) for t in cfg.objective.tasks or []
        }
        assert got == rows


@pytest.mark.slow
def test_lmms_eval_image_task_scores_a_vision_language_mixture(tmp_path: Path) -> None:
    """A local image dataset (PNG files + JSONL) and task YAML, scored by the ``lmms_eval`` objective through
    lmms-eval's own code on a tiny Qwen2-VL (hf backend): the scores equal greedy answers computed with the
    same images. ``tests/backends/test_vllm_vl.py`` runs the same check on the live vLLM engine."""
    require_lmms_eval()
    pytest.importorskip("torchvision", reason="Qwen2-VL's image processor and lmms-eval need torchvision")
    from dmo_search.backends.hf import HFBackend
    from tests._tiny_vl import build_tiny_vl, tiny_vl_config

    world = build_tiny_vl(tmp_path / "vl")
    backend = HFBackend(tiny_vl_config(world, backend="hf"))
    try:
        check_image_task(backend, world, tmp_path)
    finally:
        backend.close()
