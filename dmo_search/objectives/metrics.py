"""Answer normalisation and metrics for local validation sets.

Besides the project's own normalised :func:`exact_match`, the metrics of the paper's lmms-eval
benchmarks, restated so a local objective scores as lmms-eval 0.7.3 does: :func:`exact_match_hf`
(GQA), :func:`vqa_accuracy` (VQAv2, TextVQA, OK-VQA, VizWiz), :func:`anls` (DocVQA, InfoVQA),
:func:`relaxed_correctness` (ChartQA), :func:`extract_choice_letter` (multiple choice).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

__all__ = [
    "GENERATION_METRICS",
    "anls",
    "evalai_digit_article",
    "evalai_normalize",
    "evalai_punctuation",
    "exact_match",
    "exact_match_hf",
    "extract_choice_letter",
    "normalize_answer",
    "relaxed_correctness",
    "vqa_accuracy",
]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_SPACE = re.compile(r"\s+")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, collapse whitespace (the usual 'normalised exact match')."""
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised reference answer, else 0.0."""
    pred = normalize_answer(prediction)
    return 1.0 if any(pred == normalize_answer(a) for a in answers) else 0.0


# ----------------------------------------------------------------------------------------------------
# lmms-eval 0.7.3's metrics, restated (tests/test_objectives_metrics.py checks them against lmms-eval).


def exact_match_hf(
    prediction: str, reference: str, *, ignore_case: bool = False, ignore_punctuation: bool = False
) -> float:
    """lmms-eval's ``exact_match`` metric (``exact_match_hf_evaluate``) for one prediction: GQA uses
    ``ignore_case`` and ``ignore_punctuation``."""
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return 1.0 if prediction == reference else 0.0


_CONTRACTIONS_TABLE = (
    "aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've "
    "couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've "
    "hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's "
    "howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd "
    "itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't "
    "mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've "
    "neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at "
    "'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've "
    "shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd "
    "somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's "
    "someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll "
    "someones:someone's somethingd:something'd somethingd've:something'd've "
    "something'dve:something'd've somethingll:something'll thats:that's thered:there'd "
    "thered've:there'd've there'dve:there'd've therere:there're theres:there's theyd:they'd "
    "theyd've:they'd've they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas "
    "wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll whatre:what're "
    "whats:what's whatve:what've whens:when's whered:where'd wheres:where's whereve:where've whod:who'd "
    "whod've:who'd've who'dve:who'd've wholl:who'll whos:who's whove:who've whyll:why'll whyre:why're "
    "whys:why's wont:won't wouldve:would've wouldnt:wouldn't wouldnt've:wouldn't've "
    "wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll yall'd've:y'all'd've "
    "y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've you'dve:you'd've "
    "youll:you'll youre:you're youve:you've"
)
_CONTRACTIONS = dict(pair.split(":", 1) for pair in _CONTRACTIONS_TABLE.split())
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5"}
_NUMBERS |= {"six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = ("a", "an", "the")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: EvalAI's pattern (a negative lookahead for "<=\d")
_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")
_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")


def evalai_punctuation(text: str) -> str:
    """EvalAI's punctuation step: drop or space out punctuation, strip periods not in numbers."""
    out = text
    for p in _VQA_PUNCT:
        if (p + " " in text or " " + p in text) or _COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def evalai_digit_article(text: str) -> str:
    """EvalAI's word step: lower-case, number words to digits, drop articles, restore contractions."""
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def evalai_normalize(text: str) -> str:
    """EvalAI's full answer normalisation (lmms-eval's ``EvalAIAnswerProcessor()(text)``)."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return evalai_digit_article(evalai_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str], *, style: str = "evalai") -> float:
    """VQA accuracy: the mean over the 10 leave-one-out subsets of the human answers of
    ``min(1, matches / 3)``.

    Args:
        prediction: the model's answer.
        answers: the human answers (10 in VQAv2, TextVQA, OK-VQA, VizWiz).
        style: ``"evalai"``: both sides through :func:`evalai_normalize` (lmms-eval's textvqa, ok_vqa,
            vizwiz_vqa); ``"vqav2"``: tabs/newlines to spaces, strip, then only the punctuation and
            digit/article steps (lmms-eval's vqav2).
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    if style == "evalai":
        pred, gts = evalai_normalize(prediction), [evalai_normalize(a) for a in answers]
    elif style == "vqav2":

        def norm(s: str) -> str:
            return evalai_digit_article(evalai_punctuation(s.replace("\n", " ").replace("\t", " ").strip()))

        pred, gts = norm(prediction), [norm(a) for a in answers]
    else:
        raise ValueError(f"unknown vqa_accuracy style {style!r}; choose 'evalai' or 'vqav2'")
    accs = [min(1.0, sum(g == pred for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))]
    return sum(accs) / len(accs)


def _levenshtein(a: str, b: str) -> int:
    if len(a) > len(b):
        a, b = b, a
    prev = list(range(len(a) + 1))
    for i, cb in enumerate(b):
        cur = [i + 1]
        for j, ca in enumerate(a):
            cur.append(prev[j] if ca == cb else 1 + min(prev[j], prev[j + 1], cur[-1]))
        prev = cur
    return prev[-1]


def anls(prediction: str, references: Sequence[str], *, threshold: float = 0.5) -> float:
    """ANLS (DocVQA, InfographicVQA): ``1 - min`` normalised Levenshtein distance over the references
    (case and whitespace folded), 0 below ``threshold``."""
    if not references:
        raise ValueError("anls needs at least one reference answer")
    det = " ".join(prediction.strip().lower().split())
    dists = []
    for ref in references:
        gt = " ".join(ref.strip().lower().split())
        length = max(len(ref.upper()), len(prediction.upper()))
        dists.append(0.0 if length == 0 else _levenshtein(gt, det) / length)
    score = 1 - min(dists)
    return 0.0 if score < threshold else score


def relaxed_correctness(prediction: str, target: str, *, max_relative_change: float = 0.05) -> float:
    """ChartQA's relaxed accuracy: numbers (``%`` read as /100) within ``max_relative_change`` of a
    non-zero target, anything else by case-insensitive equality."""

    def to_float(text: str) -> float | None:
        try:
            return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
        except ValueError:
            return None

    p, t = to_float(prediction), to_float(target)
    if p is not None and t:
        return 1.0 if abs(p - t) / abs(t) <= max_relative_change else 0.0
    return 1.0 if prediction.lower() == target.lower() else 0.0


_MCQ_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
    "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)  # fmt: skip
_MCQ_PRIORITY = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4}
_MCQ_PRIORITY |= {"right_paren": 3, "space": 2, "fallback": 0}


def extract_choice_letter(response: str, choices: Sequence[str] | None = None) -> str:
    """The choice letter a free-form answer gives (lmms-eval's ``extract_mcq_answer``), or ``""``.

    Formats ``(B)``, ``B.``, ``B:``, ``B)``, ``B ``, answer phrases, a leading or trailing lone letter;
    the highest-priority format wins, the last occurrence within it.
    """
    if not response or not response.strip():
        return ""
    letters = list(choices) if choices else list("ABCDEFGH")
    text = response.strip()
    for ch in ",.!?;:'\"":
        text = text.strip(ch)
    text = f" {text} "
    cands: list[tuple[str, int, str]] = []
    for fmt, pat in (
        ("parentheses", "({})"),
        ("period", "{}."),
        ("colon", "{}:"),
        ("right_paren", "{})"),
        ("space", "{} "),
    ):
        cands += [(c, text.rfind(pat.format(c)), fmt) for c in letters if pat.format(c) in text]
    lower = text.lower()
    for phrase in _MCQ_PHRASES:
        i = lower.find(phrase)
        if i != -1:
            cands += [
                (c, text.find(c, i + len(phrase)), "phrase") for c in letters if text.find(c, i + len(phrase)) != -1
            ]
    s = text.strip()
    cands += [(c, 0, "start") for c in letters if s.startswith(c) and (len(s) == 1 or not s[1].isalpha())]
    cands += [(c, len(text) - 1, "end") for c in letters if s.endswith(c) and (len(s) == 1 or not s[-2].isalpha())]
    if not cands:
        cands = [(c, text.rfind(c), "fallback") for c in letters if c in text]
    if not cands:
        return ""
    cands.sort(key=lambda x: (_MCQ_PRIORITY.get(x[2], 0), x[1]), reverse=True)
    return cands[0][0]


def _best(fn: Callable[[str, str], float]) -> Callable[[str, Sequence[str]], float]:
    return lambda pred, answers: max(fn(pred, a) for a in answers)


# ``objective.metric`` for ``type: exact_match``: (prediction, reference answers) -> score in [0, 1].
GENERATION_METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "exact_match": exact_match,
    "exact_match_hf": _best(lambda p, a: exact_match_hf(p, a, ignore_case=True, ignore_punctuation=True)),
    "vqa_accuracy": lambda p, answers: vqa_accuracy(p, answers),
    "anls": lambda p, answers: anls(p, answers),
    "relaxed_accuracy": _best(lambda p, a: relaxed_correctness(p, a)),
    "choice_letter": _best(lambda p, a: 1.0 if extract_choice_letter(p) == a.strip().upper() else 0.0),
}
