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


def test_bootstrap_se_is_not_zero_when_every_example_agrees() -> None:
    """2 of 2 correct says little about the accuracy: the SE is Laplace-smoothed, ``p(1 - p) / n`` with
    ``p = (correct + 1) / (n + 2)``, not the plain bootstrap's 0; one right of 2 keeps the plain SE."""

    def laplace(correct: int, n: int) -> float:
        p = (correct + 1) / (n + 2)
        return float((p * (1 - p) / n) ** 0.5)

    for n in (2, 8, 50):
        assert bootstrap_se({"a": [1.0] * n}, n_boot=4000) == pytest.approx(laplace(n, n), rel=0.1)
        assert bootstrap_se({"a": [0.0] * n}, n_boot=4000) == pytest.approx(laplace(0, n), rel=0.1)
    assert bootstrap_se({"a": [1.0, 0.0]}, n_boot=4000) == pytest.approx(0.5 / 2**0.5, rel=0.1)
    # three domains of 2 examples each, all right: the mean of three such means
    assert bootstrap_se({d: [1.0, 1.0] for d in "abc"}, n_boot=4000) == pytest.approx(laplace(2, 2) / 3**0.5, rel=0.1)
    # partial credit in [0, 1] is smoothed the same way; scores outside [0, 1] (log-likelihoods) and a single
    # corpus-level score are not
    assert bootstrap_se({"a": [0.5] * 100}, n_boot=4000) > 0.0
    assert bootstrap_se({"a": [-2.0] * 10}) == 0.0
    assert bootstrap_se({"a": [0.7]}) == 0.0
