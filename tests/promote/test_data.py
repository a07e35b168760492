"""Mixture SFT data: exact counts, the paper's stop at the first exhausted set, seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmo_search.promote.data import build_mixture, load_train_set


def _sets(**sizes: int) -> dict[str, list[dict[str, object]]]:
    return {d: [{"prompt": f"{d}{i}", "answers": [str(i)]} for i in range(n)] for d, n in sizes.items()}


def test_exact_counts_are_rounded_weights_and_seeded() -> None:
    train = _sets(a=100, b=100, c=100)
    w = {"a": 0.5, "b": 0.3, "c": 0.2}
    mix = build_mixture(train, w, mode="exact", n_examples=33, seed=1)
    assert mix.counts == {"a": round(16.5), "b": round(9.9), "c": round(6.6)}
    assert len(mix.examples) == sum(mix.counts.values())
    assert {d: sum(e["domain"] == d for e in mix.examples) for d in w} == mix.counts
    assert len({e["prompt"] for e in mix.examples}) == len(mix.examples)  # without replacement
    same = build_mixture(train, w, mode="exact", n_examples=33, seed=1)
    other = build_mixture(train, w, mode="exact", n_examples=33, seed=2)
    assert same.examples == mix.examples
    assert other.examples != mix.examples and other.counts == mix.counts


def test_exact_needs_enough_examples() -> None:
    with pytest.raises(ValueError, match="domain 'a' has 10 training examples but the mixture needs 50"):
        build_mixture(_sets(a=10, b=100), {"a": 0.5, "b": 0.5}, mode="exact", n_examples=100, seed=0)


def test_paper_mode_stops_at_the_first_exhausted_set() -> None:
    train = _sets(a=5, b=1000)
    w = {"a": 0.1, "b": 0.9}
    mix = build_mixture(train, w, mode="paper", n_examples=None, seed=0)
    assert mix.counts["a"] == 5  # a ran out, which ended the mixture long before b could
    assert 5 < mix.counts["b"] < 1000
    assert len(mix.examples) == sum(mix.counts.values())
    again = build_mixture(train, w, mode="paper", n_examples=None, seed=0)
    assert again == mix


def test_paper_mode_ignores_zero_weights_and_honours_the_cap() -> None:
    train = _sets(a=50, b=3)
    mix = build_mixture(train, {"a": 1.0, "b": 0.0}, mode="paper", n_examples=None, seed=0)
    assert mix.counts == {"a": 50, "b": 0}  # b is never drawn, so its small size does not stop the mixture
    capped = build_mixture(train, {"a": 1.0, "b": 0.0}, mode="paper", n_examples=7, seed=0)
    assert capped.counts == {"a": 7, "b": 0}


def test_domains_must_match() -> None:
    with pytest.raises(ValueError, match="weights name domains"):
        build_mixture(_sets(a=3), {"b": 1.0}, mode="paper", n_examples=None, seed=0)


def test_load_train_set(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"prompt": "p", "answers": ["x"]}) + "\n\n" + json.dumps({"prompt": "q", "answer": "y"}))
    assert load_train_set(f) == [{"prompt": "p", "answers": ["x"]}, {"prompt": "q", "answers": ["y"]}]
    (tmp_path / "bad.jsonl").write_text('{"prompt": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1"):
        load_train_set(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="does not exist"):
        load_train_set(tmp_path / "missing.jsonl")


def test_image_paths_resolve_against_the_jsonl_folder(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "t.jsonl").write_text(
        '{"prompt": "p", "answers": ["x"], "image": "a.png"}\n{"prompt": "q", "answers": ["y"]}\n'
    )
    rows = load_train_set(tmp_path / "t.jsonl")
    assert rows[0]["images"] == [str(tmp_path / "a.png")] and "images" not in rows[1]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p", "answers": ["x"], "images": ["nope.png"]}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: image files not found"):
        load_train_set(tmp_path / "bad.jsonl")
