"""``BackendLMMS`` and the ``lmms_eval`` objective: local lmms-eval task YAMLs over the toy world's JSONL
(text) and over a PNG image dataset built by the test (a tiny Qwen2-VL), scored through lmms-eval
0.7.3's own ``simple_evaluate`` on the live ``hf`` backend.

lmms-eval is imported from the ``--no-deps`` folder the set-up makes (``.venv/lmms-eval-ref``, or
``DMO_LMMS_EVAL_REF``); without it the test skips.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

_REF = Path(os.environ.get("DMO_LMMS_EVAL_REF", Path(__file__).resolve().parents[1] / ".venv" / "lmms-eval-ref"))

_UTILS = """
def doc_to_visual(doc):
    return []


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["prompt"]


def doc_to_target(doc):
    return doc["answers"][0]
"""
_TASK = """task: toy_add_lmms
dataset_path: json
dataset_kwargs:
  data_files: {{test: "{data}"}}
  cache_dir: "{cache}"
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
generation_kwargs: {{max_new_tokens: 7, until: ["\\n"], do_sample: false}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""


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
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "utils.py").write_text(_UTILS)
    (tmp_path / "tasks" / "toy_add_lmms.yaml").write_text(_TASK.format(data=data, cache=tmp_path / "cache"))
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
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "utils.py").write_text(_UTILS)
    (tmp_path / "tasks" / "toy_add_lmms.yaml").write_text(_TASK.format(data=data, cache=tmp_path / "cache"))
    raw = json.loads(cfg.model_dump_json())
    raw["objective"] = {"type": "lmms_eval", "tasks": [{"name": "toy_add_lmms", "metric": "exact_match,none"}]}
    raw["objective"].update(include_path=str(tmp_path / "tasks"), subset_size=25, max_new_tokens=7)
    sys.path.insert(0, str(_REF))
    try:
        obj = make_objective(parse_config(raw).objective)
        backend = HFBackend(cfg)
        backend.set_mixture([1.0, 0.0, 0.0])
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
    assert 0 < got.value_se < 0.2 and small.n_examples == {"toy_add_lmms": 10}


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


_VL_UTILS = """
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["prompt"]


def doc_to_target(doc):
    return doc["answers"][0]
"""
_VL_TASK = """task: tiny_vl_images
dataset_path: json
dataset_kwargs:
  data_files: {{test: "{data}"}}
  cache_dir: "{cache}"
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: !function utils.doc_to_target
generation_kwargs: {{max_new_tokens: 4, until: ["\\n"], do_sample: false}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""


@pytest.mark.slow
def test_lmms_eval_image_task_scores_a_vision_language_mixture(tmp_path: Path) -> None:
    """A local image dataset (PNG files + JSONL) and task YAML, scored by the ``lmms_eval`` objective through
    lmms-eval's own code on a tiny Qwen2-VL: the scores equal greedy answers computed with the same images."""
    if not (_REF / "lmms_eval").is_dir():
        pytest.skip(f"lmms-eval's code is not at {_REF}; `make install` puts it there (or set DMO_LMMS_EVAL_REF)")
    pytest.importorskip("torchvision", reason="Qwen2-VL's image processor and lmms-eval need torchvision")
    import yaml

    from dmo_search.backends.hf import HFBackend
    from dmo_search.config import load_config
    from dmo_search.objectives import make_objective
    from dmo_search.objectives.lm_eval_adapter import cut_at_stop
    from tests._tiny_vl import build_tiny_vl

    world = build_tiny_vl(tmp_path / "vl")
    docs = []
    for i, image in enumerate(world.images):
        path = tmp_path / f"img{i}.png"
        image.save(path)
        for prompt in world.prompts[:2]:
            docs.append({"image": str(path), "prompt": prompt})
    study = {
        "study_name": "tiny-vl-lmms",
        "base_model": "vl/base",
        "experts": [
            {"name": "lora", "kind": "lora", "path": "vl/lora"},
            {"name": "full", "kind": "full", "path": "vl/full"},
        ],
        "objective": {
            "type": "lmms_eval",
            "tasks": [{"name": "tiny_vl_images", "metric": "exact_match,none"}],
            "include_path": "tasks",
            "subset_size": len(docs),
            "max_new_tokens": 4,
        },
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    cfg = load_config(tmp_path / "study.yaml")
    backend = HFBackend(cfg)

    def answers(w: list[float]) -> list[str]:
        backend.set_mixture(w)
        prompts = [backend.format_prompt(d["prompt"], chat=True, n_images=1) for d in docs]
        images = [[world.images[i // 2]] for i in range(len(docs))]
        return [
            cut_at_stop(t, ["\n"]) for t in backend.generate(prompts, max_new_tokens=4, batch_size=8, images=images)
        ]

    reference = answers([1.0, 0.0])  # the targets: what the LoRA expert answers for each image
    other = answers([0.0, 1.0])
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({**d, "answers": [a]}) + "\n" for d, a in zip(docs, reference, strict=True)))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "utils.py").write_text(_VL_UTILS)
    (tmp_path / "tasks" / "tiny_vl_images.yaml").write_text(_VL_TASK.format(data=data, cache=tmp_path / "cache"))
    sys.path.insert(0, str(_REF))
    try:
        obj = make_objective(cfg.objective)
        backend.set_mixture([1.0, 0.0])
        same = obj.evaluate(backend)
        backend.set_mixture([0.0, 1.0])
        moved = obj.evaluate(backend)
    finally:
        sys.path.remove(str(_REF))
        backend.close()
    assert same.scores["tiny_vl_images"] == 1.0  # the images reached the model: every answer reproduced
    want = sum(a.strip() == b.strip() for a, b in zip(other, reference, strict=True)) / len(docs)
    assert moved.scores["tiny_vl_images"] == pytest.approx(want) and want < 1.0
