"""Scoring a promotion's merged proxies and trained checkpoints on one engine
(:class:`~dmo_search.promote.score.PromotionScorer`).

On a vLLM engine in dense mode and on ``hf`` a checkpoint is loaded into the running backend, not
started anew, and scores exactly as on a backend started on it; proxies after it merge on the base again.
The checkpoints are the toy world's own: its base and its full fine-tune.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dmo_search.config import StudyConfig, load_config
from dmo_search.objectives import make_objective
from dmo_search.promote.score import PromotionScorer

pytestmark = pytest.mark.slow


def _cfg(toy_world: Any, backend: dict[str, Any]) -> StudyConfig:
    data = json.loads(load_config(Path(toy_world.config_path)).model_dump_json())
    data["backend"].update(backend)
    data["objective"]["subset_size"] = 12
    return StudyConfig.model_validate(data)


def _checkpoints(cfg: StudyConfig) -> tuple[Path, Path]:
    full = next((e for e in cfg.experts if e.kind == "full"), None)
    if full is None:
        pytest.skip("the world has no full fine-tune")
    return Path(cfg.base_model), Path(full.path)


def test_hf_scores_later_checkpoints_in_place_as_a_fresh_backend_would(toy_world: Any) -> None:
    cfg = _cfg(toy_world, {"name": "hf"})
    base, full = _checkpoints(cfg)
    objective = make_objective(cfg.objective)
    with PromotionScorer(cfg) as scorer:
        first = scorer.score(base, [objective])[0]
        in_place = scorer.score(full, [objective])[0]
        assert scorer.starts == 1 and scorer.last_load.startswith("checkpoint loaded in place")
    assert scorer.backend is None  # closed on exit
    with PromotionScorer(cfg) as fresh:
        alone = fresh.score(full, [objective])[0]
    assert (in_place.value, in_place.scores) == (alone.value, alone.scores)
    assert in_place.value != first.value


def test_a_checkpoint_refused_in_place_gets_a_new_backend_whose_failure_names_both(
    toy_world: Any, tmp_path: Path
) -> None:
    """A checkpoint of another architecture (a wider random Qwen2 here) is refused in place; a new backend
    is started on it, which cannot hold the study's experts either: the error says both, and the next
    checkpoint gets a backend again."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from dmo_search.backends import BackendError

    cfg = _cfg(toy_world, {"name": "hf"})
    base, full = _checkpoints(cfg)
    conf = AutoConfig.from_pretrained(str(base))
    conf.hidden_size *= 2
    other = tmp_path / "wider"
    AutoModelForCausalLM.from_config(conf).save_pretrained(str(other))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(other))
    objective = make_objective(cfg.objective)
    with PromotionScorer(cfg) as scorer:
        scorer.score(base, [objective])
        with pytest.raises(BackendError) as err:
            scorer.score(other, [objective])
        msg = str(err.value)
        assert "in-place load failed (BackendError:" in msg and "(hidden_size: " in msg, msg
        assert "a new backend on it failed too: ExpertError: " in msg, msg
        assert scorer.backend is None and scorer.starts == 1
        scorer.score(full, [objective])
        assert scorer.starts == 2 and scorer.last_load.startswith("backend started in")


@pytest.mark.parametrize("backend", [{"name": "hf"}, {"name": "vllm", "mode": "dense", "dtype": "float32"}])
def test_proxies_then_checkpoints_share_one_backend(toy_world: Any, backend: dict[str, Any]) -> None:
    """A promotion's merged proxies and then its checkpoints on one backend start: a checkpoint loaded in
    place scores as on a backend started on it, and a merge after a served checkpoint has the base back under
    it (scores as before it). For vLLM this is also the in-place checkpoint test (dense mode)."""
    if backend["name"] == "vllm":
        pytest.importorskip("vllm", reason="vLLM is not importable here")
    cfg = _cfg(toy_world, backend)
    _base, full = _checkpoints(cfg)
    objective = make_objective(cfg.objective)
    mixtures = [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]]
    with PromotionScorer(cfg) as scorer:
        proxies = scorer.score_mixtures([(w, [objective]) for w in mixtures])
        assert scorer.starts == 1 and scorer.last_load.startswith("backend started")
        in_place = scorer.score(full, [objective])[0]
        assert scorer.starts == 1 and scorer.last_load.startswith("checkpoint loaded in place"), scorer.last_load
        again = scorer.score_mixtures([(mixtures[0], [objective])])[0][0]
        assert scorer.starts == 1 and scorer.last_load.startswith("study backend kept"), scorer.last_load
    with PromotionScorer(cfg) as fresh:
        alone = fresh.score(full, [objective])[0]
    if backend["name"] == "hf":  # the proxies above were scored on a fresh backend too (an engine start less)
        with PromotionScorer(cfg) as fresh:
            fresh_proxies = fresh.score_mixtures([(w, [objective]) for w in mixtures])
        assert [(p[0].value, p[0].scores) for p in proxies] == [(p[0].value, p[0].scores) for p in fresh_proxies]
    assert (in_place.value, in_place.scores) == (alone.value, alone.scores)
    assert (again.value, again.scores) == (proxies[0][0].value, proxies[0][0].scores)
    assert proxies[0][0].scores != proxies[1][0].scores, "two mixtures this far apart should score differently"


def test_proxies_after_a_backend_started_on_a_checkpoint_get_the_study_backend(toy_world: Any) -> None:
    """A backend started on a checkpoint would merge relative to it, not to the study's base: proxies after it
    start the study's backend anew and score as a fresh one does."""
    cfg = _cfg(toy_world, {"name": "hf"})
    _base, full = _checkpoints(cfg)
    objective = make_objective(cfg.objective)
    w = [0.2, 0.5, 0.3]
    with PromotionScorer(cfg) as scorer:
        scorer.score(full, [objective])
        assert scorer.starts == 1
        after = scorer.score_mixtures([(w, [objective])])[0][0]
        assert scorer.starts == 2 and scorer.last_load.startswith("backend started"), scorer.last_load
    with PromotionScorer(cfg) as fresh:
        alone = fresh.score_mixtures([(w, [objective])])[0][0]
    assert (after.value, after.scores) == (alone.value, alone.scores)
