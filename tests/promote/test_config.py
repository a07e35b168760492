"""The promotion: config section: paths, defaults and errors that name the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dmo_search.config import ConfigError, parse_config


def _raw(**promotion: Any) -> dict[str, Any]:
    return {
        "study_name": "s",
        "base_model": "base",
        "experts": [{"name": "a", "kind": "lora", "path": "ea"}, {"name": "b", "kind": "full", "path": "eb"}],
        "objective": {"validation": {"a": "va.jsonl", "b": "vb.jsonl"}},
        "promotion": {"train_data": {"a": "ta.jsonl", "b": "tb.jsonl"}, "n_examples": 10, **promotion},
    }


def test_paths_resolve_and_defaults(tmp_path: Path) -> None:
    cfg = parse_config(_raw(output_dir="runs"), base_dir=tmp_path)
    assert cfg.promotion is not None
    assert cfg.promotion.train_data["a"] == tmp_path / "ta.jsonl"
    assert cfg.promotion.output_dir == tmp_path / "runs"
    assert (cfg.promotion.mode, cfg.promotion.recipe.rank, cfg.promotion.command) == ("exact", 16, None)
    assert parse_config({k: v for k, v in _raw().items() if k != "promotion"}).promotion is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"train_data": {"a": "ta.jsonl"}}, "no training JSONL for the experts ['b']"),
        ({"n_examples": None}, "needs promotion.n_examples"),
        ({"command": "train {data}"}, "must use {data} and {output_dir}"),
        ({"command": "train {data} {output_dir} {lr}"}, "unknown placeholders ['lr']"),
        ({"recipe": {"rank": 0}}, "promotion.recipe.rank"),
        ({"mode": "mixed"}, "promotion.mode"),
    ],
)
def test_errors_name_the_field(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(**extra))
    assert message in str(e.value)


def test_paper_mode_needs_no_count() -> None:
    cfg = parse_config(_raw(mode="paper", n_examples=None, command="t {data} {output_dir} {weights} {base_model}"))
    assert cfg.promotion is not None and cfg.promotion.n_examples is None


def test_train_data_of_other_domains_is_allowed() -> None:
    """A promotion section shared across studies may list more domains than this study's experts."""
    raw = _raw()
    raw["promotion"]["train_data"] = {**raw["promotion"]["train_data"], "other": "to.jsonl"}
    assert parse_config(raw).promotion is not None
