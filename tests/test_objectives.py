"""Local objective pieces: normalisation, fixed subsets, data errors, aggregation, bootstrap SE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmo_search.objectives import ObjectiveError, aggregate, bootstrap_se
from dmo_search.objectives.data import DataError, load_jsonl, load_validation_set, select_subset
from dmo_search.objectives.metrics import exact_match, normalize_answer


def test_normalize_and_exact_match() -> None:
    assert normalize_answer("  The  Answer!! ") == "the answer"
    assert exact_match("42.", ["42"]) == 1.0
    assert exact_match("4 2", ["42"]) == 0.0
    assert exact_match("abc", ["x", "ABC"]) == 1.0
    assert exact_match("", ["a"]) == 0.0


def test_subset_is_seeded_fixed_and_per_domain() -> None:
    a = select_subset(500, 50, seed=0, domain="x")
    assert a == select_subset(500, 50, seed=0, domain="x")
    assert a == sorted(a) and len(set(a)) == 50
    assert a != select_subset(500, 50, seed=1, domain="x")
    assert a != select_subset(500, 50, seed=0, domain="y")
    assert a != list(range(50))  # not lmms-eval's "first N"
    assert select_subset(10, 50, seed=0, domain="x") == list(range(10))
    assert select_subset(10, None, seed=0, domain="x") == list(range(10))


def test_load_jsonl_errors_name_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "v.jsonl"
    with pytest.raises(DataError, match="does not exist"):
        load_jsonl(p)
    p.write_text(json.dumps({"prompt": "a", "answers": ["b"]}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"v.jsonl:2: not valid JSON"):
        load_jsonl(p)
    p.write_text(json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(DataError, match=r"v.jsonl:1: .*answers"):
        load_jsonl(p)
    p.write_text("\n")
    with pytest.raises(DataError, match="no examples"):
        load_jsonl(p)
    p.write_text(json.dumps({"prompt": "a", "answers": "b"}) + "\n")
    ex, digest = load_jsonl(p)
    assert ex[0].answers == ("b",) and len(digest) == 64


def test_validation_set_record(tmp_path: Path) -> None:
    p = tmp_path / "v.jsonl"
    p.write_text("".join(json.dumps({"prompt": str(i), "answers": [str(i)]}) + "\n" for i in range(30)))
    vs = load_validation_set("d", p, 5, 0)
    rec = vs.record()
    assert rec["n_total"] == 30 and len(rec["indices"]) == 5  # type: ignore[arg-type]
    assert [e.prompt for e in vs.examples] == [str(i) for i in rec["indices"]]  # type: ignore[union-attr]


def test_aggregate_never_drops_a_domain() -> None:
    assert aggregate({"a": 0.2, "b": 0.4}) == pytest.approx(0.3)
    assert aggregate({"a": 0.2, "b": 0.4}, {"a": 3, "b": 1}) == pytest.approx(0.25)
    with pytest.raises(ObjectiveError, match=r"\['b'\].*no score"):
        aggregate({"a": 0.2}, {"a": 1, "b": 1})
    with pytest.raises(ObjectiveError):
        aggregate({})


def test_bootstrap_se_scales_like_binomial() -> None:
    per = {"a": [1.0, 0.0] * 100, "b": [1.0, 0.0] * 100}
    se = bootstrap_se(per, n_boot=400)
    # two independent domains of 200 examples at p=0.5: sd of the mean of means = 0.5/sqrt(200)/sqrt(2)
    assert se == pytest.approx(0.5 / (200**0.5) / (2**0.5), rel=0.2)
    assert bootstrap_se({"a": [1.0] * 50}) == 0.0
