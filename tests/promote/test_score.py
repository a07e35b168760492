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
        assert scorer.last_load.startswith("engine started")
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
