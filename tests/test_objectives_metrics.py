"""The lmms-eval metrics in ``objectives/metrics.py`` against lmms-eval 0.7.3's own code.

lmms-eval needs torchvision, which does not load next to the CPU torch in ``.venv``; its metric
modules do not. The set-up (``Makefile``) installs lmms-eval with ``--no-deps`` (plus loguru and
tenacity, which its ``tasks`` package imports) into ``.venv/lmms-eval-ref``, outside ``sys.path``;
``DMO_LMMS_EVAL_REF`` points elsewhere. With it, the live tests call lmms-eval's functions on the same
predictions (fixed cases and hypothesis-generated ones). Without it they skip, and the recorded values
below (printed by lmms-eval's functions: ``python tests/test_objectives_metrics.py``, which needs the
folder) still check ours.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmo_search.objectives.metrics import (
    anls,
    evalai_normalize,
    exact_match_hf,
    extract_choice_letter,
    relaxed_correctness,
    vqa_accuracy,
)

_REF = Path(os.environ.get("DMO_LMMS_EVAL_REF", Path(__file__).resolve().parents[1] / ".venv" / "lmms-eval-ref"))

VQA: list[tuple[str, list[str]]] = [
    ("Two dogs.", ["2 dogs", "two dogs", "2", "dogs", "2 dogs", "two", "2 dogs", "2 dogs", "a dog", "2"]),
    ("yes", ["yes"] * 10),
    ("Yes", ["yes", "no", "yes", "no", "no", "no", "no", "no", "no", "no"]),
    ("the red car", ["red", "red car", "red", "red car", "red", "red", "red car", "Red", "red", "red"]),
    (
        "dont know",
        ["don't know", "dont know", "unknown", "dont know", "unknown", "unknown", "dont know", "x", "y", "z"],
    ),
    ("1,000", ["1000", "1,000", "1000", "1000", "one thousand", "1 000", "1000", "1000", "1000", "1000"]),
    ("it's", ["it 's"] * 3 + ["its"] * 7),
]
ANLS: list[tuple[str, list[str]]] = [
    ("Hello World", ["hello world"]),
    ("hello wrld", ["hello world", "hi"]),
    ("abc", ["xyz"]),
    ("", ["a"]),
    (" 12/05/2020 ", ["12/05/2020", "May 12"]),
]
RELAXED = [("10.4", "10"), ("10.6", "10"), ("50%", "0.5"), ("Blue", "blue"), ("0", "0"), ("0.1", "0"), ("12%", "12")]
MCQ = [
    "The answer is (B).",
    "B",
    "I think C. Actually A",
    "none of them",
    "(A) cat (B) dog answer: D",
    "Option D is right",
    "a",
    "答案是C",
]
EM = [("Left.", "left", True, True), ("Left.", "left", False, False), ("The Cat", "the cat", True, False)]

# Printed by lmms-eval 0.7.3's functions on the cases above (see _reference_values).
RECORDED = {
    "VQA_EVALAI": [1, 1, 0.6, 0.9, 1, 1, 0.9],
    "VQA_VQAV2": [1, 1, 0.6, 0.9, 1, 1, 0.0],
    "ANLS": [1.0, 0.9090909090909091, 0, 0, 1.0],
    "RELAXED": [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0],
    "MCQ": ["B", "B", "A", "", "D", "D", "", "C"],
    "EM": [1.0, 0.0, 1.0],
}


def _ours() -> dict[str, list[Any]]:
    return {
        "VQA_EVALAI": [vqa_accuracy(p, a) for p, a in VQA],
        "VQA_VQAV2": [vqa_accuracy(p, a, style="vqav2") for p, a in VQA],
        "ANLS": [anls(p, r) for p, r in ANLS],
        "RELAXED": [relaxed_correctness(p, t) for p, t in RELAXED],
        "MCQ": [extract_choice_letter(r) for r in MCQ],
        "EM": [exact_match_hf(p, r, ignore_case=c, ignore_punctuation=q) for p, r, c, q in EM],
    }


def _load_lmms() -> SimpleNamespace:
    """lmms-eval's metric functions, imported from the reference folder (sys.path restored after)."""
    sys.path.insert(0, str(_REF))
    try:
        from lmms_eval.api import metrics as m
        from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer
        from lmms_eval.tasks._task_utils.vqa_eval_metric import EvalAIAnswerProcessor
        from lmms_eval.tasks.chartqa.utils import relaxed_correctness as rc
        from lmms_eval.tasks.textvqa.utils import textvqa_process_results
        from lmms_eval.tasks.vqav2.utils import vqav2_process_results
    finally:
        sys.path.remove(str(_REF))

    def vqa_evalai(p: str, a: list[str]) -> float:
        return float(textvqa_process_results({"answers": list(a), "question_id": 0}, [p])["exact_match"])

    def vqa_vqav2(p: str, a: list[str]) -> float:
        answers = [{"answer": x, "answer_id": i} for i, x in enumerate(a)]
        return float(vqav2_process_results({"answers": answers, "question_id": 0}, [p])["exact_match"])

    def em(p: str, r: str, c: bool, q: bool) -> float:
        return float(m.exact_match_hf_evaluate([p], [r], ignore_case=c, ignore_punctuation=q)["exact_match"])

    return SimpleNamespace(
        vqa_evalai=vqa_evalai,
        vqa_vqav2=vqa_vqav2,
        anls=lambda p, r: float(m.anls(list(r), [p])["anls"]),
        relaxed=lambda p, t: float(rc(p, t)),
        mcq=extract_mcq_answer,
        em=em,
        normalize=EvalAIAnswerProcessor(),
        processor_cls=EvalAIAnswerProcessor,
    )


def _reference_values(ref: SimpleNamespace) -> dict[str, list[Any]]:
    return {
        "VQA_EVALAI": [ref.vqa_evalai(p, a) for p, a in VQA],
        "VQA_VQAV2": [ref.vqa_vqav2(p, a) for p, a in VQA],
        "ANLS": [ref.anls(p, r) for p, r in ANLS],
        "RELAXED": [ref.relaxed(p, t) for p, t in RELAXED],
        "MCQ": [ref.mcq(r) for r in MCQ],
        "EM": [ref.em(*c) for c in EM],
    }


@pytest.fixture(scope="module")
def lmms() -> SimpleNamespace:
    if not (_REF / "lmms_eval").is_dir():
        pytest.skip(f"lmms-eval's code is not at {_REF}; `make install` puts it there (or set DMO_LMMS_EVAL_REF)")
    return _load_lmms()


def test_recorded_lmms_eval_values() -> None:
    ours = _ours()
    for key, want in RECORDED.items():
        assert ours[key] == pytest.approx(want), key


def test_fixed_cases_equal_lmms_eval(lmms: SimpleNamespace) -> None:
    ours, theirs = _ours(), _reference_values(lmms)
    for key in RECORDED:
        assert ours[key] == pytest.approx(theirs[key]), key
        assert theirs[key] == pytest.approx(RECORDED[key]), key


def test_evalai_tables_equal_lmms_eval(lmms: SimpleNamespace) -> None:
    from dmo_search.objectives import metrics

    cls = lmms.processor_cls
    assert dict(metrics._CONTRACTIONS) == cls.CONTRACTIONS
    # lmms-eval's process_digit_article calls NUMBER_MAP.setdefault(word, word): the class dict grows
    # with every word it has seen, always as word -> word, so only its original entries map anything.
    assert all(cls.NUMBER_MAP[k] == v for k, v in metrics._NUMBERS.items())
    assert all(k == v for k, v in cls.NUMBER_MAP.items() if k not in metrics._NUMBERS)
    assert list(metrics._ARTICLES) == cls.ARTICLES
    assert list(metrics._VQA_PUNCT) == cls.PUNCTUATIONS


# Text from pieces that exercise every branch: articles, number words, contractions, punctuation
# (with and without neighbouring spaces), digits with commas/periods, percentages, choice letters.
_PIECES = [
    "a", "the", "An", "two", "Ten", "none", "dont", "Im", "it's", "cat", "Dog", "red",
    "1", "10", "3.5", "1,000", "50%", "0", "-2", ".", ",", "?", "!", "(", ")", "/", "-", ":", ";", '"', "'",
    "A", "B", "C", "D", "(B)", "C.", "answer is", "\n", "\t", " ", "答案是", "é",
]  # fmt: skip
_text = st.lists(st.sampled_from(_PIECES), max_size=8).map(lambda xs: "".join(xs))
_spaced = st.lists(st.sampled_from(_PIECES), max_size=6).map(lambda xs: " ".join(xs))
_any = st.one_of(_text, _spaced)


def _check(ours: Callable[..., Any], theirs: Callable[..., Any], *args: Any) -> None:
    assert ours(*args) == pytest.approx(theirs(*args)), args


@settings(max_examples=300, deadline=None)
@given(pred=_any, answers=st.lists(_any, min_size=1, max_size=10))
def test_vqa_accuracy_equals_lmms_eval(lmms: SimpleNamespace, pred: str, answers: list[str]) -> None:
    _check(lambda p, a: vqa_accuracy(p, a), lmms.vqa_evalai, pred, answers)
    _check(lambda p, a: vqa_accuracy(p, a, style="vqav2"), lmms.vqa_vqav2, pred, answers)
    assert evalai_normalize(pred) == lmms.normalize(pred)


@settings(max_examples=300, deadline=None)
@given(pred=_any, refs=st.lists(_any, min_size=1, max_size=4), target=_any)
def test_anls_relaxed_mcq_em_equal_lmms_eval(lmms: SimpleNamespace, pred: str, refs: list[str], target: str) -> None:
    _check(anls, lmms.anls, pred, refs)
    _check(relaxed_correctness, lmms.relaxed, pred, target)
    assert extract_choice_letter(pred) == lmms.mcq(pred)
    for c in (False, True):
        for q in (False, True):
            assert exact_match_hf(pred, target, ignore_case=c, ignore_punctuation=q) == lmms.em(pred, target, c, q)


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("x", [])
    with pytest.raises(ValueError, match="style"):
        vqa_accuracy("x", ["x"], style="nope")
    with pytest.raises(ValueError, match="at least one"):
        anls("x", [])


if __name__ == "__main__":  # print lmms-eval's values for the fixed cases (to refresh RECORDED)
    for k, v in _reference_values(_load_lmms()).items():
        print(f"{k!r}: {v},")


def test_generation_metrics_table() -> None:
    from dmo_search.objectives.metrics import GENERATION_METRICS as M

    assert M["exact_match"]("The answer.", ["answer", "the answer"]) == 1.0
    assert M["exact_match_hf"]("Left.", ["right", "left"]) == 1.0
    assert M["vqa_accuracy"]("two", ["2"] * 2 + ["3"] * 8) == pytest.approx(0.6)
    assert M["anls"]("hello wrld", ["hello world"]) == pytest.approx(1 - 1 / 11)
    assert M["relaxed_accuracy"]("10.4", ["7", "10"]) == 1.0
    assert M["choice_letter"]("I pick (c).", ["C"]) == 0.0  # lmms-eval reads upper-case letters only
    assert M["choice_letter"]("The answer is (C).", ["c"]) == 1.0


@pytest.mark.slow
def test_objective_metric_option_scores_with_it(toy_world: Any) -> None:
    import json as _json

    from dmo_search.backends.hf import HFBackend
    from dmo_search.config import ConfigError, load_config, parse_config
    from dmo_search.objectives import make_objective
    from dmo_search.objectives.metrics import GENERATION_METRICS

    raw = _json.loads(load_config(toy_world.config_path).model_dump_json())
    raw["objective"]["subset_size"] = 20
    cfg = parse_config(raw)
    backend = HFBackend(cfg)
    backend.set_mixture([1 / 3] * 3)
    objs = {}
    for metric in ("exact_match", "anls", "relaxed_accuracy"):
        raw["objective"]["metric"] = metric
        objs[metric] = make_objective(parse_config(raw).objective)
    sets = objs["anls"].sets  # type: ignore[attr-defined]
    preds = {
        d: backend.generate(
            [backend.format_prompt(e.prompt, chat=True) for e in vs.examples],
            max_new_tokens=cfg.objective.max_new_tokens,
            batch_size=64,
        )
        for d, vs in sets.items()
    }
    for metric, obj in objs.items():
        got = obj.evaluate(backend).scores
        for d, vs in sets.items():
            want = [GENERATION_METRICS[metric](p, e.answers) for p, e in zip(preds[d], vs.examples, strict=True)]
            assert got[d] == pytest.approx(sum(want) / len(want)), (metric, d)
    raw["objective"].update(type="loglik", metric="anls")
    with pytest.raises(ConfigError, match=r"needs objective\.type: exact_match"):
        parse_config(raw)
