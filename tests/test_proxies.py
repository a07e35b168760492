"""Scoring mixtures under another merge method on the toy world (transformers backend)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dmo_search.config import ConfigError, StudyConfig, load_config, parse_config
from dmo_search.proxies import config_with_method, score_with_method


@pytest.fixture(scope="module")
def cfg(toy_world: Any) -> StudyConfig:
    data = json.loads(load_config(toy_world.config_path).to_json())
    data["objective"]["subset_size"] = 6
    return parse_config(data)


def test_config_with_method(cfg: StudyConfig) -> None:
    m = config_with_method(cfg, "dare_ties", {"drop_rate": 0.1}, seed=3)
    assert (m.merge.method, m.merge.params, m.merge.seed) == ("dare_ties", {"drop_rate": 0.1}, 3)
    assert m.merge.exclude_lora == cfg.merge.exclude_lora and m.objective == cfg.objective
    assert config_with_method(m, "linear").merge.params == {}
    with pytest.raises(ConfigError, match=r"not parameters of method 'tsv'.*scope"):
        config_with_method(cfg, "tsv", {"mask_rate": 0.5})
    lora = parse_config({**json.loads(cfg.to_json()), "backend": {"name": "vllm", "mode": "lora"}})
    assert config_with_method(lora, "ties").backend.mode == "auto"
    assert config_with_method(lora, "linear").backend.mode == "lora"


def test_score_with_method_scores_each_mixture(cfg: StudyConfig) -> None:
    mixtures = [[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]]
    lin = score_with_method(cfg, "linear", mixtures)
    tsv = score_with_method(cfg, "tsv", mixtures)
    assert len(lin) == len(tsv) == 2
    for r in lin + tsv:
        assert set(r.scores) == {"add", "shift", "sort"} and all(n == 6 for n in r.n_examples.values())
        assert 0.0 <= r.value <= 1.0
    assert score_with_method(cfg, "linear", mixtures[:1])[0] == lin[0]  # deterministic


def test_a_method_scorer_switches_methods_in_place_with_the_scores_of_fresh_backends(cfg: StudyConfig) -> None:
    """Linear, TSV, then linear again on ONE hf backend (the method switched in place, base and experts
    kept): each gives what a backend started for that method gives."""
    from dmo_search.backends import BackendError
    from dmo_search.proxies import MethodScorer

    mixtures = [[0.6, 0.2, 0.2], [0.2, 0.2, 0.6]]
    fresh = {m: score_with_method(cfg, m, mixtures) for m in ("linear", "tsv")}
    with MethodScorer(cfg) as scorer:
        for m in ("linear", "tsv", "linear"):
            assert scorer.score(m, mixtures) == fresh[m], m
        assert scorer.starts == 1 and scorer.last_load.startswith("method switched in place"), scorer.last_load
        assert scorer.backend is not None
        other = config_with_method(cfg, "ties").merge.model_copy(update={"exclude_lora": ["embed_tokens"]})
        with pytest.raises(BackendError, match="other exclusions changes which tensors merge"):
            scorer.backend.set_merge(other)  # type: ignore[attr-defined]
    assert [r.value for r in fresh["linear"]] != [r.value for r in fresh["tsv"]]
