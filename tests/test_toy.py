"""The toy world: deterministic domains, a working tokenizer, and a real mixture problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dmo_search.toy import DOMAINS, domain_examples, normalize_answer, toy_config

REPO = Path(__file__).parents[1]


def test_domains_are_deterministic_and_disjoint() -> None:
    for d in DOMAINS:
        a = domain_examples(d, 50, seed=3)
        assert a == domain_examples(d, 50, seed=3)
        assert a != domain_examples(d, 50, seed=4)
        b = domain_examples(d, 50, seed=5, exclude={e["prompt"] for e in a})
        assert not {e["prompt"] for e in a} & {e["prompt"] for e in b}
        assert all(isinstance(e["prompt"], str) and e["answers"] for e in a)


def test_normalize_answer() -> None:
    assert normalize_answer("  A  b. ") == "a b"


def test_committed_config_matches_the_generator() -> None:
    committed = yaml.safe_load((REPO / "configs" / "toy.yaml").read_text())
    generated = toy_config(Path("studies/toy-world"), Path("configs"))
    for key in ("base_model", "experts", "search", "promotion"):
        assert committed[key] == generated[key], key
    # The demo scores with one live vLLM engine; the toy world's own config (the tests') with transformers.
    assert committed["backend"] == {**generated["backend"], "name": "vllm"}
    assert committed["objective"]["validation"] == generated["objective"]["validation"]


@pytest.mark.slow
def test_tokenizer_round_trip_and_chat_template(toy_world: Any) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_world.root / "base")
    for d in toy_world.domains:
        ex = domain_examples(d, 3, seed=9)[0]
        ids = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == ex["prompt"]
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert "hi" in text and text.endswith("assistant\n")


@pytest.mark.slow
def test_it_is_a_real_mixture_problem(toy_world: Any) -> None:
    """Measured with the project's own merge and objective on the full validation sets: each expert is
    best on its own domain, and the best mixture of the build's grid beats every vertex."""
    from dmo_search.backends.hf import HFBackend
    from dmo_search.config import apply_overrides, load_config
    from dmo_search.objectives import make_objective
    from dmo_search.study import evaluate_mixture

    cfg = load_config(toy_world.config_path)
    raw_obj = cfg.objective.model_copy(update={"subset_size": None})
    cfg = apply_overrides(cfg.model_copy(update={"objective": raw_obj}))
    backend = HFBackend(cfg)
    objective = make_objective(cfg.objective)
    k = cfg.n_domains
    vertex = []
    for i in range(k):
        w = [float(i == j) for j in range(k)]
        vertex.append(evaluate_mixture(backend, objective, w)[0])
    domains = list(cfg.objective.validation)
    for i, expert in enumerate(cfg.expert_names):
        own = domains[i]
        assert expert == own
        others = [vertex[j].scores[own] for j in range(k) if j != i]
        assert vertex[i].scores[own] > max(others), (own, vertex[i].scores, others)
    best = toy_world.manifest["accuracy"]["best_grid"]
    assert max(best["weights"]) < 1.0  # the build's best grid mixture is not a vertex
    mixed = evaluate_mixture(backend, objective, best["weights"])[0]
    assert mixed.value > max(v.value for v in vertex)


def test_a_rebuild_stopped_half_way_leaves_no_finished_marker(tmp_path: Path) -> None:
    """``toy.yaml`` marks a finished world (``make demo``, ``DMO_TOY_DIR``): a rebuild into an existing world
    that is stopped (here by Ctrl-C at its first stage) removes the old one first, so the half-built world is
    not taken for a finished one."""
    from dmo_search.toy import build_toy_world

    for marker in ("toy.yaml", "manifest.json"):
        (tmp_path / marker).write_text("from an earlier build\n")

    def interrupt(_line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_toy_world(tmp_path, progress=interrupt)
    assert not (tmp_path / "toy.yaml").exists() and not (tmp_path / "manifest.json").exists()
