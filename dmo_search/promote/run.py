"""A promotion, end to end and resumable: select, record, score proxies, build data, train, score.

Every run is a row of ``dmo_promotions`` keyed by its mixture and training spec. Rows are written
before any training, and each step updates its row as it finishes, so an interrupted promotion started
again skips ``done`` runs, scores ``trained`` ones without retraining, and retrains only the rest.
All runs are trained first, then all are scored on one engine (each checkpoint loaded into it in
place where the backend can), so no engine holds accelerator memory while a run trains.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmo_search.promote.config import PromotionConfig
from dmo_search.promote.score import PromotionScorer
from dmo_search.promote.store import PromotionRecord, PromotionStore
from dmo_search.sampler import VALUE_SE_ATTR

if TYPE_CHECKING:
    import optuna

    from dmo_search.config import StudyConfig
    from dmo_search.objectives import Objective

__all__ = ["default_output_dir", "ingest_model", "promote", "run_key", "train_spec"]

_log = logging.getLogger("dmo_search")
Say = Callable[[str], None]


def train_spec(p: PromotionConfig) -> dict[str, Any]:
    """What defines a training run besides the mixture (data mode, size, seed, recipe, command)."""
    return {
        "mode": p.mode,
        "n_examples": p.n_examples,
        "seed": p.seed,
        "recipe": p.recipe.model_dump(),
        "command": p.command,
        "train_data": {k: str(v) for k, v in p.train_data.items()},
    }


def run_key(weights: Sequence[float], spec: dict[str, Any]) -> str:
    """A stable id of a run: the mixture (rounded to 1e-6) and its training spec."""
    payload = json.dumps({"w": [round(float(x), 6) for x in weights], "spec": spec}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_output_dir(cfg: StudyConfig) -> Path:
    """``promotions/`` next to a SQLite study DB; ``studies/<study>/promotions`` for a server DB."""
    url = cfg.storage_url()
    if url.startswith("sqlite:///") and url.removeprefix("sqlite:///") not in ("", ":memory:"):
        return Path(url.removeprefix("sqlite:///")).parent / "promotions"
    return Path("studies") / cfg.study_name / "promotions"


def _trial_proxy(study: optuna.Study, number: int) -> dict[str, Any] | None:
    t = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if t is None or t.value is None:
        return None
    return {
        "proxy_value": float(t.value),
        "proxy_value_se": t.user_attrs.get(VALUE_SE_ATTR),
        "proxy_scores": t.user_attrs.get("scores"),
        "proxy_source": f"trial {number}",
    }


def _fill_proxies(
    study: optuna.Study,
    scorer: PromotionScorer,
    store: PromotionStore,
    recs: list[PromotionRecord],
    objective: Objective,
    full: Objective | None,
    say: Say,
) -> None:
    """Record each mixture's proxy score: its trial's, else the merged proxy scored now; with ``full``,
    also the merged proxy on every validation example. What must be scored is scored on ``scorer``'s backend."""
    todo: list[tuple[PromotionRecord, list[Objective]]] = []
    for r in recs:
        needed = []
        if r.proxy_value is None:
            stored = _trial_proxy(study, r.trial_number) if r.trial_number is not None else None
            if stored is not None:
                store.update(r.run_key, **stored)
            else:
                needed.append(objective)
        if full is not None and r.proxy_full_value is None:
            needed.append(full)
        if needed:
            todo.append((r, needed))
    if not todo:
        return
    say(f"scoring the merged proxy of {len(todo)} mixture(s) ...")
    results = scorer.score_mixtures([(list(r.weights.values()), needed) for r, needed in todo])
    for (r, needed), scores in zip(todo, results, strict=True):
        fields: dict[str, Any] = {}
        for o, s in zip(needed, scores, strict=True):
            if o is objective:
                fields.update(proxy_value=s.value, proxy_value_se=s.value_se, proxy_scores=s.scores)
                fields["proxy_source"] = "evaluated"
            else:
                fields.update(proxy_full_value=s.value, proxy_full_value_se=s.value_se, proxy_full_scores=s.scores)
        store.update(r.run_key, **fields)


def _train_one(
    cfg: StudyConfig, p: PromotionConfig, rec: PromotionRecord, run_dir: Path, train_sets: dict[str, Any]
) -> dict[str, Any]:
    from dmo_search.promote.data import build_mixture, write_jsonl
    from dmo_search.promote.sft import run_external, train_lora_sft

    mix = build_mixture(train_sets, rec.weights, mode=p.mode, n_examples=p.n_examples, seed=p.seed)
    data_path = run_dir / "data.jsonl"
    write_jsonl(data_path, mix.examples)
    (run_dir / "mixture.json").write_text(
        json.dumps({"weights": rec.weights, "counts": mix.counts, "spec": rec.train_spec}, indent=2)
    )
    if p.command:
        res = run_external(
            p.command,
            data=data_path,
            output_dir=run_dir,
            weights=rec.weights,
            base_model=cfg.base_model,
            log_path=run_dir / "train.log",
        )
    else:
        res = train_lora_sft(
            cfg.base_model, mix.examples, run_dir, recipe=p.recipe, chat=cfg.objective.chat_template, seed=p.seed
        )
    return {
        "status": "trained",
        "data_counts": mix.counts,
        "model_dir": str(res.model_dir),
        "train_seconds": res.train_seconds,
        "final_loss": res.final_loss,
        "error": None,
    }


def _has_model(rec: PromotionRecord) -> bool:
    """The run's trained model is on disk (a checkpoint's ``config.json``)."""
    return rec.model_dir is not None and (Path(rec.model_dir) / "config.json").is_file()


def _finished(rec: PromotionRecord, full: Objective | None) -> bool:
    """Trained and scored (on every example too when ``full`` is asked for)."""
    return rec.status == "done" and (full is None or rec.sft_full_value is not None)


def _score_one(
    scorer: PromotionScorer,
    store: PromotionStore,
    rec: PromotionRecord,
    objective: Objective,
    full: Objective | None = None,
) -> PromotionRecord:
    """Score the run's model on the study's subsets (unless done) and, with ``full``, on every example."""
    assert rec.model_dir is not None
    need_subset = rec.status != "done"
    need_full = full is not None and rec.sft_full_value is None
    objectives = [o for o, needed in ((objective, need_subset), (full, need_full)) if needed and o is not None]
    scores = scorer.score(Path(rec.model_dir), objectives)
    fields: dict[str, Any] = {"error": None}
    if need_subset:
        s = scores.pop(0)
        fields.update(status="done", sft_value=s.value, sft_value_se=s.value_se, sft_scores=s.scores)
        fields["eval_seconds"] = s.eval_seconds
    if need_full:
        s = scores.pop(0)
        fields.update(sft_full_value=s.value, sft_full_value_se=s.value_se, sft_full_scores=s.scores)
    return store.update(rec.run_key, **fields)


def _objective(study: optuna.Study, cfg: StudyConfig) -> Objective:
    from dmo_search.objectives import make_objective
    from dmo_search.study import check_objective

    objective = make_objective(cfg.objective)
    check_objective(study, objective)  # the same validation files and subsets as the trials
    return objective


def _train_step(
    cfg: StudyConfig,
    promotion: PromotionConfig,
    store: PromotionStore,
    rec: PromotionRecord,
    out_dir: Path,
    train_sets: dict[str, Any],
    tag: str,
    say: Say,
) -> None:
    """Train one run and store it ``trained``; a failure is stored ``failed`` with its error."""
    say(f"{tag}: training ...")
    try:
        rec = store.update(rec.run_key, **_train_one(cfg, promotion, rec, out_dir, train_sets))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
        store.update(rec.run_key, status="failed", error=error[:2000])
        say(f"{tag}: FAILED: {error}")
        return
    say(f"{tag}: trained in {rec.train_seconds:.1f}s")


def _score_step(
    scorer: PromotionScorer,
    store: PromotionStore,
    rec: PromotionRecord,
    objective: Objective,
    full: Objective | None,
    tag: str,
    say: Say,
) -> None:
    """Score one trained run; a failure keeps its model (the next promote scores it) with the error."""
    say(f"{tag}: scoring ...")
    try:
        rec = _score_one(scorer, store, rec, objective, full)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # an engine out of memory, say: the trained model is kept
        error = f"{type(e).__name__}: {e}"
        store.update(rec.run_key, error=error[:2000])
        say(f"{tag}: FAILED while scoring: {error}; the trained model is kept, the next promote scores it")
        return
    full_note = "" if full is None else f"; full validation: SFT {rec.sft_full_value:.4f}"
    say(
        f"{tag}: SFT {rec.sft_value:.4f} (proxy {rec.proxy_value:.4f}), eval {rec.eval_seconds:.1f}s "
        f"({scorer.last_load})" + full_note
    )


def promote(
    study: optuna.Study,
    cfg: StudyConfig,
    promotion: PromotionConfig,
    *,
    top: int,
    calibration: int,
    output_dir: Path | None = None,
    full_validation: bool = False,
    say: Say = _log.info,
) -> list[PromotionRecord]:
    """Promote ``top`` best and ``calibration`` spread mixtures of ``study``: train and score each.

    Runs already ``done`` (same mixture and training spec) are not retrained; ``trained`` ones are
    only scored. A run that fails is recorded ``failed`` with its error (one whose scoring failed keeps
    its status, ``trained`` or ``done``, with the error: its model is scored, not retrained, next time),
    and the others go on. Every run is trained first; then one :class:`PromotionScorer` scores the merged
    proxies not taken from a trial and the trained models (no engine holds memory while a run trains).

    Args:
        study: the study (from :func:`dmo_search.study.load_study`).
        cfg: its config (objective, backend, base model).
        promotion: the ``promotion:`` section (data, recipe, output dir, optional command).
        top: best candidates to promote.
        calibration: calibration mixtures spread over the simplex.
        output_dir: where runs write data and models; default ``promotion.output_dir`` or
            :func:`default_output_dir`.
        full_validation: also score each SFT model and each merged proxy on every validation example
            (runs done earlier get these scores without retraining).
        say: progress lines.

    Returns:
        The records of this promotion's runs, in selection order.

    Raises:
        ValueError: no completed trial, bad counts, or training data that do not fit the mixture.
    """
    from dmo_search.promote.data import load_train_set
    from dmo_search.promote.select import select_candidates
    from dmo_search.study import recommended_weights, study_gp

    missing = [n for n in cfg.expert_names if n not in promotion.train_data]
    if missing:
        raise ValueError(
            f"promotion.train_data has no training JSONL for the experts {missing}; "
            "map each expert name to its training JSONL"
        )
    out_root = Path(output_dir or promotion.output_dir or default_output_dir(cfg))
    objective = _objective(study, cfg)
    full = None
    if full_validation:
        from dmo_search.promote.score import full_objective

        full = full_objective(cfg)
    recommended = recommended_weights(study, cfg) if top else None
    candidates = select_candidates(
        study,
        cfg.n_domains,
        top=top,
        calibration=calibration,
        min_distance=promotion.min_distance,
        seed=promotion.seed,
        recommended=recommended,
        constraints=cfg.constraints(),
        gp=study_gp(study, cfg),
    )
    spec = train_spec(promotion)
    store = PromotionStore(cfg.storage_url(), study.study_name)
    try:
        keys = []
        for c in candidates:
            key = run_key(c.weights, spec)
            keys.append(key)
            store.add(
                key,
                c.role,
                dict(zip(cfg.expert_names, c.weights, strict=True)),
                trial_number=c.trial_number,
                rank_score=c.rank_score,
                ranked_by=c.ranked_by,
                data_mode=promotion.mode,
                train_spec=spec,
            )
        recs = [r for k in keys if (r := store.get(k)) is not None]
        say(f"promoting {len(recs)} mixture(s): " + ", ".join(f"{r.role} {_short(r.weights)}" for r in recs))
        train_sets = {n: load_train_set(Path(promotion.train_data[n])) for n in cfg.expert_names}
        tags = {}
        for i, key in enumerate(keys, start=1):  # all training first: no engine holds memory meanwhile
            rec = store.get(key)
            assert rec is not None
            tags[key] = tag = f"[{i}/{len(keys)}] {rec.role} {_short(rec.weights)}"
            if _finished(rec, full):
                say(f"{tag}: done earlier (SFT {rec.sft_value:.4f}); not retrained")
            elif rec.status in ("trained", "done") and _has_model(rec):
                say(f"{tag}: trained earlier; to be scored")
            else:
                _train_step(cfg, promotion, store, rec, out_root / key, train_sets, tag, say)
        with PromotionScorer(cfg) as scorer:  # then all scoring, on one engine where it can: proxies first
            _fill_proxies(study, scorer, store, recs, objective, full, say)
            for key in keys:
                rec = store.get(key)
                assert rec is not None
                if rec.status in ("trained", "done") and _has_model(rec) and not _finished(rec, full):
                    _score_step(scorer, store, rec, objective, full, tags[key], say)
        return [r for k in keys if (r := store.get(k)) is not None]
    finally:
        store.close()


def ingest_model(
    study: optuna.Study,
    cfg: StudyConfig,
    weights: Sequence[float],
    model: Path,
    *,
    output_dir: Path | None = None,
    train_seconds: float | None = None,
    say: Say = _log.info,
) -> PromotionRecord:
    """Record and score a model trained elsewhere on the mixture ``weights``.

    ``model`` is a checkpoint folder, or a peft adapter of the base (merged into a checkpoint under
    the output dir). Its proxy is the trial at the same weights if any, else the merged proxy, scored now.

    Raises:
        SFTError: ``model`` is neither a checkpoint nor an adapter.
    """
    from dmo_search.promote.sft import materialize_model

    model = Path(model).resolve()
    out_root = Path(output_dir or (cfg.promotion.output_dir if cfg.promotion else None) or default_output_dir(cfg))
    objective = _objective(study, cfg)
    wdict = dict(zip(cfg.expert_names, weights, strict=True))
    key = run_key(weights, {"ingested": str(model)})
    store = PromotionStore(cfg.storage_url(), study.study_name)
    try:
        trial = next(
            (
                t.number
                for t in study.get_trials(deepcopy=False)
                if t.value is not None
                and isinstance(t.user_attrs.get("weights"), list)
                and max(abs(a - b) for a, b in zip(t.user_attrs["weights"], weights, strict=True)) < 1e-9
            ),
            None,
        )
        rec = store.add(key, "ingested", wdict, trial_number=trial, train_seconds=train_seconds)
        if rec.status == "done":
            say(f"model {model} was ingested earlier (SFT {rec.sft_value:.4f})")
            return rec
        model_dir = materialize_model(model, cfg.base_model, out_root / key / "model")
        rec = store.update(key, status="trained", model_dir=str(model_dir))
        with PromotionScorer(cfg) as scorer:  # the proxy (unless its trial has it), then the model: one engine
            _fill_proxies(study, scorer, store, [rec], objective, None, say)
            say(f"scoring {model_dir} ...")
            return _score_one(scorer, store, rec, objective)
    finally:
        store.close()


def _short(weights: dict[str, float]) -> str:
    return "(" + ",".join(f"{v:.2f}" for v in weights.values()) + ")"
