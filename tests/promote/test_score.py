"""Scoring trained checkpoints on one engine (:class:`~dmo_search.promote.score.CheckpointScorer`).

On a vLLM engine in dense mode and on ``hf`` the second checkpoint is loaded into the running
backend, not started anew, and scores exactly as on a backend started on it.
The checkpoints are the toy world's own: its base and its full fine-tune.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dmo_search.config import StudyConfig, load_config
from dmo_search.objectives import make_objective
from dmo_search.promote.score import CheckpointScorer

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


def test_vllm_scores_later_checkpoints_in_place_as_a_fresh_engine_would(toy_world: Any) -> None:
    pytest.importorskip("vllm", reason="vLLM is not importable here")
    cfg = _cfg(toy_world, {"name": "vllm", "mode": "dense", "dtype": "float32"})
    base, full = _checkpoints(cfg)
    objective = make_objective(cfg.objective)
    with CheckpointScorer(cfg) as scorer:
        first = scorer.score(base, [objective])[0]
        assert scorer.last_load.startswith("backend started")
        in_place = scorer.score(full, [objective])[0]
        assert scorer.starts == 1 and scorer.last_load.startswith("checkpoint loaded in place"), scorer.last_load
        print(f"in place: {scorer.last_load}")
    with CheckpointScorer(cfg) as fresh:
        alone = fresh.score(full, [objective])[0]
        print(f"fresh: {fresh.last_load}")
    assert (in_place.value, in_place.scores) == (alone.value, alone.scores)
    assert in_place.value != first.value, "the full fine-tune should score differently from the base"


def test_hf_scores_later_checkpoints_in_place_as_a_fresh_backend_would(toy_world: Any) -> None:
    cfg = _cfg(toy_world, {"name": "hf"})
    base, full = _checkpoints(cfg)
    objective = make_objective(cfg.objective)
    with CheckpointScorer(cfg) as scorer:
        first = scorer.score(base, [objective])[0]
        in_place = scorer.score(full, [objective])[0]
        assert scorer.starts == 1 and scorer.last_load.startswith("checkpoint loaded in place")
    assert scorer.backend is None  # closed on exit
    with CheckpointScorer(cfg) as fresh:
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
    with CheckpointScorer(cfg) as scorer:
        scorer.score(base, [objective])
        with pytest.raises(BackendError) as err:
            scorer.score(other, [objective])
        msg = str(err.value)
        assert "in-place load failed (BackendError:" in msg and "(hidden_size: " in msg, msg
        assert "a new backend on it failed too: ExpertError: " in msg, msg
        assert scorer.backend is None and scorer.starts == 1
        scorer.score(full, [objective])
        assert scorer.starts == 2 and scorer.last_load.startswith("backend started in")
