"""The ``lm_eval`` objective: local lm-eval task YAMLs over JSONL data built here, scored through
lm-eval's own ``evaluate`` on the toy world's live ``hf`` backend.

(a) a ``generate_until`` task with lm-eval's ``exact_match`` gives the local exact-match objective's
score on the same seeded documents, per candidate (no answer carried over between candidates);
(b) a ``multiple_choice`` task's ``acc`` is the argmax of the backend's log-likelihoods;
(c) unknown tasks, missing result keys and out-of-range scores fail; config errors name the field;
(d) ``n`` scores a nested sub-sample (multi-fidelity).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval")

from dmo_search.backends.hf import HFBackend
from dmo_search.config import ConfigError, StudyConfig, load_config, parse_config
from dmo_search.objectives import ObjectiveError, make_objective
from dmo_search.objectives.harness import LMEvalObjective
from dmo_search.objectives.lm_eval_adapter import cut_at_stop

_GEN = """task: add
dataset_path: json
dataset_kwargs:
  data_files: {{test: "{data}"}}
  cache_dir: "{cache}"
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answers[0]}}}}"
generation_kwargs: {{until: ["\\n"], max_gen_toks: 7, do_sample: false}}
metric_list:
  - {{metric: exact_match, aggregation: mean, higher_is_better: true}}
"""
_MC = """task: add_mc
dataset_path: json
dataset_kwargs:
  data_files: {{test: "{data}"}}
  cache_dir: "{cache}"
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
"""


@pytest.fixture(scope="module")
def world(toy_world: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Task YAMLs over the toy world's ``add`` validation data (a copy, and an MC version of it)."""
    root = tmp_path_factory.mktemp("lm-eval-tasks")
    cfg = load_config(toy_world.config_path)
    rows = [json.loads(line) for line in cfg.objective.validation["add"].read_text().splitlines() if line.strip()]
    rng = random.Random(0)
    mc = []
    for r in rows:
        ans = int(r["answers"][0])
        choices = [str(ans), str(ans + 1), str(ans - 10)]
        rng.shuffle(choices)
        mc.append({"prompt": r["prompt"], "choices": choices, "label": choices.index(str(ans))})
    (root / "add.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "add_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    tasks = root / "tasks"
    tasks.mkdir()
    cache = root / "hf-cache"
    (tasks / "add.yaml").write_text(_GEN.format(data=root / "add.jsonl", cache=cache))
    (tasks / "add_mc.yaml").write_text(_MC.format(data=root / "add_mc.jsonl", cache=cache))
    return {"cfg": cfg, "tasks": tasks, "mc": mc}


def _lm_eval_cfg(cfg: StudyConfig, **objective: Any) -> StudyConfig:
    raw = json.loads(cfg.model_dump_json())
    raw["objective"] = {"type": "lm_eval", "subset_size": 40, "subset_seed": 0, "max_new_tokens": 7, **objective}
    return parse_config(raw)


@pytest.fixture(scope="module")
def backend(world: dict[str, Any]) -> HFBackend:
    return HFBackend(world["cfg"])


@pytest.fixture(scope="module")
def objective(world: dict[str, Any]) -> LMEvalObjective:
    cfg = _lm_eval_cfg(
        world["cfg"], tasks=["add", {"name": "add_mc", "metric": "acc,none"}], include_path=str(world["tasks"])
    )
    obj = make_objective(cfg.objective)
    assert isinstance(obj, LMEvalObjective)
    return obj


def test_generate_until_matches_local_exact_match_per_candidate(
    world: dict[str, Any], backend: HFBackend, objective: LMEvalObjective
) -> None:
    raw = json.loads(world["cfg"].model_dump_json())
    raw["objective"].update(subset_size=40, subset_seed=0, validation={"add": raw["objective"]["validation"]["add"]})
    local = make_objective(parse_config(raw).objective)
    assert objective.record()["subsets"]["add"]["indices"] == local.record()["subsets"]["add"]["indices"]  # type: ignore[index]
    seen = []
    for w in ([0.75, 0.25, 0.0], [0.0, 0.0, 1.0], [0.75, 0.25, 0.0]):
        backend.set_mixture(w)
        got = objective.evaluate(backend)
        want = local.evaluate(backend)
        assert got.scores["add"] == pytest.approx(want.scores["add"])
        assert got.n_examples == {"add": 40, "add_mc": 40}
        assert 0.0 < got.value_se < 0.2  # never 0, even where every example agrees (Laplace-smoothed)
        seen.append(got.scores["add"])
    assert seen[0] != seen[1] and seen[0] == seen[2]  # each candidate is scored afresh


def test_multiple_choice_acc_is_argmax_of_backend_loglik(
    world: dict[str, Any], backend: HFBackend, objective: LMEvalObjective
) -> None:
    backend.set_mixture([1.0, 0.0, 0.0])
    got = objective.evaluate(backend).scores["add_mc"]
    idx = objective.tasks["add_mc"].indices
    hits = []
    for i in idx:
        doc = world["mc"][i]
        prompt = backend.format_prompt(doc["prompt"], chat=True)
        lls = backend.loglikelihood([prompt] * len(doc["choices"]), doc["choices"], batch_size=8)
        best = max(range(len(lls)), key=lambda j: lls[j][0])
        hits.append(float(best == doc["label"]))
    assert got == pytest.approx(sum(hits) / len(hits))
    assert got > 0.5  # the add expert prefers the right sum over 2 distractors (chance: 1/3)


def test_nested_fidelity_subset(backend: HFBackend, objective: LMEvalObjective) -> None:
    res = objective.evaluate(backend, n=10)
    assert res.n_examples == {"add": 10, "add_mc": 10}


def test_errors_name_the_fix(world: dict[str, Any], backend: HFBackend) -> None:
    tasks = str(world["tasks"])
    with pytest.raises(ObjectiveError, match="no task"):
        make_objective(_lm_eval_cfg(world["cfg"], tasks=["add", "no_such_task_xyz"], include_path=tasks).objective)
    bad_key = make_objective(
        _lm_eval_cfg(world["cfg"], tasks=[{"name": "add", "metric": "acc,none"}], include_path=tasks).objective
    )
    with pytest.raises(ObjectiveError, match=r"reports no \['acc,none'\].*exact_match,none"):
        bad_key.evaluate(backend, n=3)
    tiny = make_objective(
        _lm_eval_cfg(world["cfg"], tasks=[{"name": "add", "scale": 0.001}], include_path=tasks).objective
    )
    backend.set_mixture([1.0, 0.0, 0.0])
    with pytest.raises(ObjectiveError, match=r"outside \[0, 1\]; set objective.tasks\[\].scale"):
        tiny.evaluate(backend, n=5)
    with pytest.raises(ConfigError, match=r"objective\.tasks is empty"):
        _lm_eval_cfg(world["cfg"], tasks=[])
    with pytest.raises(ConfigError, match=r"need objective\.type: lm_eval or lmms_eval"):
        raw = json.loads(world["cfg"].model_dump_json())
        raw["objective"]["tasks"] = ["add"]
        parse_config(raw)


def test_cut_at_stop() -> None:
    assert cut_at_stop("12\n34", ["\n"]) == "12"
    assert cut_at_stop("abcSTOPdef", ["", "X", "STOP", "c"]) == "ab"
    assert cut_at_stop("abc", []) == "abc"


def test_include_path_is_resolved_against_the_yaml(tmp_path: Path, world: dict[str, Any]) -> None:
    raw = json.loads(world["cfg"].model_dump_json())
    raw["objective"] = {"type": "lm_eval", "tasks": ["add"], "include_path": "tasks"}
    (tmp_path / "s.yaml").write_text(json.dumps(raw))
    assert load_config(tmp_path / "s.yaml").objective.include_path == (tmp_path / "tasks").resolve()


@pytest.mark.slow
def test_vllm_backend_gives_the_hf_scores(
    world: dict[str, Any], backend: HFBackend, objective: LMEvalObjective
) -> None:
    """The same lm-eval code path on the vLLM engine (one engine, started here: 35-80 s on CPU)."""
    try:
        import vllm  # noqa: F401
    except Exception as e:  # ImportError, or a vLLM build that cannot load here
        pytest.skip(f"vLLM is not importable here ({type(e).__name__}: {e})")
    from dmo_search.backends.vllm import VLLMBackend

    raw = json.loads(world["cfg"].model_dump_json())
    raw["backend"] = {**raw["backend"], "name": "vllm", "mode": "dense", "dtype": "float32"}
    engine = VLLMBackend(StudyConfig.model_validate(raw))
    try:
        for w in ([1.0, 0.0, 0.0], [0.2, 0.3, 0.5]):
            backend.set_mixture(w)
            engine.set_mixture(w)
            ref, got = objective.evaluate(backend), objective.evaluate(engine)
            # Greedy near-ties may flip an answer or two between engines (float32 kernels differ).
            assert got.scores["add"] == pytest.approx(ref.scores["add"], abs=2 / 40)
            assert got.scores["add_mc"] == pytest.approx(ref.scores["add_mc"], abs=2 / 40)
    finally:
        engine.close()
