"""``dmo-search``: the command line, a thin layer over the library.

Results go to stdout (``--json``: only JSON there); progress, warnings and hints go to stderr.
Errors print one line naming the fix and exit 1; ``DMO_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["main"]

_log = logging.getLogger("dmo_search")


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[dmo-search] %(message)s"))
    _log.handlers[:] = [handler]
    _log.setLevel(logging.DEBUG if verbose else logging.INFO)
    _log.propagate = False
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    if verbose:
        # The vLLM backend quiets vLLM to WARNING (dmo_search.backends.vllm); -v keeps its INFO lines.
        # Read when vllm is first imported and inherited by the engine's processes; a user's setting wins.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")


def _quiet_hf() -> None:
    """transformers draws a progress bar per checkpoint load; a study loads several, so hide them."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _emit(data: Any, as_json: bool, human: str) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print(human)


def _fmt_weights(names: Sequence[str], weights: Sequence[float] | None) -> str:
    if weights is None:
        return "-"
    return " ".join(f"{n}={w:.3f}" for n, w in zip(names, weights, strict=True))


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _parse_weights(text: str, names: Sequence[str]) -> list[float]:
    from dmo_search import simplex

    parts = [p.strip() for p in text.split(",") if p.strip()]
    if parts and all("=" in p for p in parts):
        given = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in parts)}
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(f"--weights names unknown experts {unknown}; experts are {list(names)}")
        return simplex.check_weights([given.get(n, 0.0) for n in names], len(names))
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"--weights {text!r} is not a list of numbers; write e.g. 0.5,0.3,0.2 or {names[0]}=0.5,..."
        ) from None
    return simplex.check_weights(values, len(names))


def _feasible(cfg: Any, weights: Sequence[float], what: str) -> list[float]:
    """``weights`` if they satisfy the config's ``search.constraints``; else an error naming each violation."""
    constraints = cfg.constraints()
    return list(weights) if constraints is None else constraints.check(weights, what)


def _load_cfg(args: argparse.Namespace) -> Any:
    from dmo_search.config import apply_overrides, load_config

    cfg = load_config(args.config)
    return apply_overrides(
        cfg,
        storage=getattr(args, "storage", None),
        study_name=getattr(args, "study_name", None),
        backend=getattr(args, "backend", None),
        seed=getattr(args, "seed", None),
        n_trials=getattr(args, "n_trials", None),
        sampler=getattr(args, "sampler", None),
        batch_size=getattr(args, "batch_size", None),
    )


def _noise(recs: Sequence[Any], cfg: Any) -> dict[str, Any] | None:
    """Whether the completed trials' scores are noise-limited (:mod:`dmo_search.noise`), as a dict."""
    from dmo_search.noise import study_noise

    check = study_noise(recs, cfg.objective.subset_size)
    return None if check is None else check.to_dict()


def _summary(study: Any, cfg: Any) -> dict[str, Any]:
    from dmo_search.study import best_record, recommended_weights, trial_records

    recs = trial_records(study)
    best = best_record(study)
    constraints = cfg.constraints()
    counts: dict[str, int] = {}
    for r in recs:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {
        "study_name": study.study_name,
        "storage": cfg.storage_url(),
        "experts": cfg.expert_names,
        "n_trials_target": cfg.search.n_trials,
        "counts": counts,
        "best": best.to_dict() if best else None,
        "recommended": recommended_weights(study, cfg),
        "sampler": cfg.search.sampler,
        "constraints": None if constraints is None else constraints.describe(),
        "warm_start": (study.user_attrs.get("warm_start") or {}).get("source"),
        "noise": _noise(recs, cfg),
    }


def _human_best(summary: dict[str, Any], names: Sequence[str]) -> str:
    best = summary["best"]
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(summary["counts"].items())) or "no trials"
    lines = [f"study {summary['study_name']}: {counts} (target {summary['n_trials_target']} completed)"]
    if best is None:
        lines.append("no completed trial yet")
        return "\n".join(lines)
    se = best.get("value_se")
    lines.append(
        f"best mixture (trial {best['number']}): {_fmt_weights(names, best['weights'])}"
        f"  value {best['value']:.4f}" + (f" ± {se:.4f}" if se is not None else "")
    )
    scores = best.get("scores") or {}
    lines.append(_table([[d, f"{s:.4f}"] for d, s in scores.items()], ["domain", "score"]))
    rec = summary.get("recommended")
    if rec is not None and summary.get("sampler") == "gp-simplex":
        lines.append(f"recommended mixture (argmax of the GP posterior mean): {_fmt_weights(names, rec)}")
    if summary.get("constraints"):
        lines.append(f"constraints: {summary['constraints']}")
    warm = summary.get("warm_start")
    if warm:
        lines.append(f"warm-started from study {warm.get('study')!r} ({warm.get('storage', '?')})")
    if summary.get("noise"):
        lines.append(summary["noise"]["message"])
    return "\n".join(lines)


def _join_options(args: argparse.Namespace) -> dict[str, Any]:
    """What ``resume`` and ``worker`` pass on to :func:`~dmo_search.worker.join_study`."""
    return {"n_trials": args.n_trials, "backend": args.backend, "force": args.force, "batch_size": args.batch_size}


def _run(args: argparse.Namespace, resume: bool) -> int:
    from dmo_search.backends import make_backend
    from dmo_search.objectives import make_objective
    from dmo_search.study import nothing_to_run, prepare_study, reap_stale_trials, run_study
    from dmo_search.worker import join_study, store_budget

    study: Any = None
    if resume:
        study, cfg = join_study(args.study, args.storage, **_join_options(args))
        reap_stale_trials(study, say=_log.warning)
    else:
        cfg = _load_cfg(args)
    _log.info(f"study {cfg.study_name!r} in {cfg.storage_url()}")
    warm = _warm_start(cfg, args) if not resume else None
    _quiet_hf()
    objective = make_objective(cfg.objective)
    if not resume and args.no_run:  # create the study for `dmo-search worker` processes, run nothing
        study = prepare_study(cfg, force=args.force)
        _apply_warm_start(study, warm)
        _emit(_summary(study, cfg), args.json, f"study {cfg.study_name!r} ready in {cfg.storage_url()}; start workers")
        return 0
    if not resume and (study := _finished_study(cfg, force=args.force)) is not None:
        _apply_warm_start(study, warm)
    done = None if study is None else nothing_to_run(study, cfg)
    if done is not None:
        if resume:
            store_budget(study, args.n_trials)
        _log.info(done)
    else:
        _log.info(f"loading base and {cfg.n_domains} experts on backend {cfg.backend.name!r} ...")
        backend = make_backend(cfg)
        try:
            if resume:
                store_budget(study, args.n_trials)
            else:  # only now, with data and models valid: a bad input leaves no study behind
                study = prepare_study(cfg, force=args.force)
                _apply_warm_start(study, warm)
                reap_stale_trials(study, say=_log.warning)
            run_study(study, cfg, backend, objective, n_trials=cfg.search.n_trials, progress=not args.quiet)
        finally:
            backend.close()
    summary = _summary(study, cfg)
    _emit(summary, args.json, _human_best(summary, cfg.expert_names))
    return 0


def _finished_study(cfg: Any, *, force: bool) -> Any:
    """The config's study if it exists, has nothing left to run and matches the config (it needs no
    backend, whose start takes minutes on a GPU); else None, and the backend loads first, so that a bad
    model file is reported as such rather than as a setup that differs from the study's."""
    from dmo_search.study import StudyError, existing_study, nothing_to_run, prepare_study

    found = existing_study(cfg)
    if found is None or nothing_to_run(found, cfg) is None:
        return None
    try:
        return prepare_study(cfg, force=force)
    except (StudyError, OSError):  # a setup that differs, a model file missing
        return None


def _warm_start(cfg: Any, args: argparse.Namespace) -> Any:
    """The warm start asked for by ``--warm-start`` (built before the study exists: a bad source leaves none)."""
    if args.warm_start is None:
        if args.warm_start_storage is not None or args.warm_start_designs_only:
            raise ValueError("--warm-start-storage / --warm-start-designs-only need --warm-start STUDY")
        return None
    from dmo_search.warmstart import load_warm_start

    warm = load_warm_start(cfg, args.warm_start, args.warm_start_storage, prior=not args.warm_start_designs_only)
    m = warm.mapping
    _log.info(
        f"warm start from study {args.warm_start!r}: {warm.source['n_trials_used']} of its "
        f"{warm.source['n_trials_seen']} completed trials; shared domains {m['shared']}"
        + (f", new {m['new']}" if m["new"] else "")
        + (f", dropped {m['dropped']}" if m["dropped"] else "")
    )
    return warm


def _apply_warm_start(study: Any, warm: Any) -> None:
    if warm is None:
        return
    from dmo_search.warmstart import enqueue_warm_start

    n = enqueue_warm_start(study, warm)
    if n:
        prior = (
            "the GP's prior mean is the source's posterior mean"
            if warm.use_prior
            else "no GP prior (--warm-start-designs-only)"
        )
        _log.info(f"enqueued the source's {n} best mixtures; {prior}")


def cmd_launch(args: argparse.Namespace) -> int:
    """Create (or continue) a study from a config and run it to its trial budget."""
    return _run(args, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a study from its DB after a crash or to add trials."""
    return _run(args, resume=True)


def cmd_worker(args: argparse.Namespace) -> int:
    """Join a study from its DB and run its trials until the study's budget is complete (any number at once)."""
    from dmo_search.worker import run_worker

    _quiet_hf()
    data = run_worker(args.study, args.storage, **_join_options(args), progress=not args.quiet, say=_log.info)
    human = (
        f"worker {data['worker']}: completed {data['completed_by_this_worker']}, "
        f"failed {data['failed_by_this_worker']}; "
        f"study {data['study_name']} has {data['study_complete']}/{data['n_trials_target']} completed trials"
    )
    _emit(data, args.json, human)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show every trial of a study."""
    from dmo_search.study import load_study, trial_records

    study, cfg = load_study(args.study, args.storage)
    records = trial_records(study)
    recs = [r.to_dict() for r in records]
    if args.json:
        _emit({**_summary(study, cfg), "trials": recs}, True, "")
        return 0
    rows = []
    for r in recs:
        val = (
            "-"
            if r["value"] is None
            else f"{r['value']:.4f}" + (f" ± {r['value_se']:.3f}" if r["value_se"] is not None else "")
        )
        w = "-" if r["weights"] is None else ",".join(f"{x:.3f}" for x in r["weights"])
        t = "-" if r["eval_seconds"] is None else f"{r['merge_seconds']:.2f}+{r['eval_seconds']:.1f}"
        rows.append([str(r["number"]), r["state"], w, val, t, (r["error"] or "")[:60]])
    print(f"study {cfg.study_name} ({cfg.storage_url()}), experts: {', '.join(cfg.expert_names)}")
    print(_table(rows, ["#", "state", "weights", "value", "merge+eval s", "error"]))
    noise = _noise(records, cfg)
    if noise:
        print(noise["message"])
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    """Show the best mixture of a study with its per-domain scores."""
    from dmo_search.study import load_study

    study, cfg = load_study(args.study, args.storage)
    summary = _summary(study, cfg)
    _emit(summary, args.json, _human_best(summary, cfg.expert_names))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Score one mixture from a config, without a study."""
    from dmo_search.backends import make_backend
    from dmo_search.objectives import make_objective
    from dmo_search.study import evaluate_mixture

    cfg = _load_cfg(args)
    weights = _feasible(cfg, _parse_weights(args.weights, cfg.expert_names), "--weights")
    objective = make_objective(cfg.objective)
    _quiet_hf()
    backend = make_backend(cfg)
    try:
        result, merge_s, eval_s = evaluate_mixture(backend, objective, weights)
    finally:
        backend.close()
    data = {
        "weights": dict(zip(cfg.expert_names, weights, strict=True)),
        "value": result.value,
        "value_se": result.value_se,
        "scores": result.scores,
        "n_examples": result.n_examples,
        "merge_seconds": merge_s,
        "eval_seconds": eval_s,
    }
    human = (
        f"mixture {_fmt_weights(cfg.expert_names, weights)}: value {result.value:.4f} ± {result.value_se:.4f}"
        f" (merge {merge_s:.3f}s, eval {eval_s:.1f}s)\n"
        + _table(
            [[d, f"{s:.4f}", str(result.n_examples[d])] for d, s in result.scores.items()], ["domain", "score", "n"]
        )
    )
    _emit(data, args.json, human)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write a merged checkpoint (a study's trial, or a config + weights) that transformers and vLLM load."""
    from dmo_search.export import export_merged
    from dmo_search.study import best_record, load_study

    source = Path(args.source)
    weights: list[float] | None
    if source.suffix in (".yaml", ".yml") and source.is_file():
        args.config = str(source)
        cfg = _load_cfg(args)
        if args.weights is None:
            raise ValueError("export from a config needs --weights w1,...,wK")
        weights = _feasible(cfg, _parse_weights(args.weights, cfg.expert_names), "--weights")
    else:
        if args.weights is not None:
            raise ValueError("--weights is for export from a CONFIG; for a study use --trial N")
        study, cfg = load_study(args.source, args.storage)
        if args.trial is None:
            best = best_record(study)
            if best is None:
                raise ValueError(f"study {args.source!r} has no completed trial to export")
            weights, number = best.weights, best.number
        else:
            matches = [t for t in study.get_trials(deepcopy=False) if t.number == args.trial]
            if not matches or "weights" not in matches[0].user_attrs:
                raise ValueError(f"study {args.source!r} has no trial {args.trial} with weights")
            weights, number = matches[0].user_attrs["weights"], args.trial
        if weights is None:
            raise ValueError(f"trial {number} of study {args.source!r} records no weights")
        weights = _feasible(cfg, weights, f"trial {number}'s mixture (constraints changed since it ran?)")
        _log.info(f"exporting trial {number}")
    _quiet_hf()
    out = export_merged(cfg, weights, Path(args.out_dir))
    _emit(
        {"out_dir": str(out), "weights": dict(zip(cfg.expert_names, weights, strict=True))},
        args.json,
        f"wrote merged model {_fmt_weights(cfg.expert_names, weights)} to {out}",
    )
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Serve optuna-dashboard and the mixture views of every study in a DB (read-only) until Ctrl-C."""
    from dmo_search.dashboard.server import serve_dashboard

    serve_dashboard(
        args.storage_url,
        host=args.host,
        port=args.port,
        allow_public=args.allow_public,
        allow_writes=args.allow_writes,
    )
    return 0


def cmd_toy_build(args: argparse.Namespace) -> int:
    """Build the toy world (tokenizer, base, experts, data, config) offline."""
    from dmo_search.toy import build_toy_world

    world = build_toy_world(Path(args.dir), seed=args.seed, progress=lambda m: _log.info(m))
    data = {
        "root": str(world.root),
        "config": str(world.config_path),
        "domains": world.domains,
        "build_seconds": world.build_seconds,
        "manifest": world.manifest,
    }
    _emit(
        data, args.json, f"toy world built in {world.build_seconds:.0f}s at {world.root}\nconfig: {world.config_path}"
    )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Train real mixture-SFT models for a study's top and calibration mixtures and score them the same way
    (`promote ingest STUDY --weights ... --model PATH` records a model trained elsewhere)."""
    from dmo_search.promote.render import promotions_text
    from dmo_search.promote.run import ingest_model, promote
    from dmo_search.study import load_study

    _quiet_hf()
    ingest = args.study == "ingest"
    name = args.ingest_study if ingest else args.study
    if name is None:
        raise ValueError("`promote ingest` needs the study: dmo-search promote ingest STUDY --weights ... --model PATH")
    if not ingest and (args.weights or args.model or args.ingest_study):
        raise ValueError(
            "--weights/--model are for `dmo-search promote ingest STUDY`; for a promotion use --top/--calibration"
        )
    study, cfg = load_study(name, args.storage)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if ingest:
        if args.full_validation:
            raise ValueError("--full-validation is for a promotion; `promote ingest` scores on the study's subsets")
        if not args.weights or not args.model:
            raise ValueError("`promote ingest` needs --weights w1,...,wK and --model PATH (a checkpoint or adapter)")
        weights = _parse_weights(args.weights, cfg.expert_names)
        rec = ingest_model(study, cfg, weights, Path(args.model), output_dir=out_dir, say=_log.info)
        _emit(rec.to_dict(), args.json, promotions_text([rec]))
        return 0
    promotion = cfg.promotion
    if args.config:
        from dmo_search.config import load_config

        promotion = load_config(args.config).promotion
    if promotion is None:
        raise ValueError(
            f"study {name!r} has no promotion: section; pass --config YAML holding one (see README: Promotion)"
        )
    recs = promote(
        study,
        cfg,
        promotion,
        top=args.top,
        calibration=args.calibration,
        output_dir=out_dir,
        full_validation=args.full_validation,
        say=_log.info,
    )
    _emit([r.to_dict() for r in recs], args.json, promotions_text(recs))
    failed = [r for r in recs if r.status != "done" or r.error]  # a done run's error: its full validation
    if failed:
        _log.warning(f"{len(failed)} run(s) did not finish; run the same command again to retry them")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Proxy-vs-SFT rank correlation of a study's promotions (Spearman, Kendall, bootstrap CIs), top-1 regret,
    the recommended mixture, and optionally a scatter PNG and an HTML report."""
    from dmo_search.promote.render import report_text
    from dmo_search.promote.stats import compute_report
    from dmo_search.promote.store import load_promotions
    from dmo_search.study import load_study, recommended_weights

    if args.compare_methods:  # bad flags fail before anything loads
        from dmo_search.promote.compare import parse_method_params, parse_methods

        methods = parse_methods(args.compare_methods)
        params = parse_method_params(args.method_params, methods)
    elif args.method_params:
        raise ValueError("--method-params needs --compare-methods METHODS")
    study, cfg = load_study(args.study, args.storage)
    url = cfg.storage_url()
    recs = load_promotions(url, study.study_name)
    rec_w = recommended_weights(study, cfg)
    recommended = None if rec_w is None else dict(zip(cfg.expert_names, rec_w, strict=True))
    rep = compute_report(recs, study_name=study.study_name, recommended=recommended, n_boot=args.n_boot)
    if args.plot:
        from dmo_search.promote.plot import write_scatter

        write_scatter(recs, Path(args.plot), title=f"{study.study_name}: proxy vs SFT")
        _log.info(f"wrote {args.plot}")
    if args.html:
        from dmo_search.dashboard.html_report import write_html_report

        write_html_report(url, study.study_name, Path(args.html))
        _log.info(f"wrote {args.html}")
    out, text = rep.to_dict(), report_text(rep)
    if args.compare_methods:
        from dmo_search.promote.compare import compare_methods, comparison_text, study_scorer
        from dmo_search.promote.proxy_cache import ProxyCache

        _quiet_hf()
        cache = ProxyCache(url, study.study_name)
        try:
            with study_scorer(cfg, _log.info) as scorer:
                cmp = compare_methods(
                    recs, cfg, methods, params=params, scorer=scorer, cache=cache, n_boot=args.n_boot, say=_log.info
                )
        finally:
            cache.close()
        out["method_comparison"], text = cmp.to_dict(), f"{text}\n\n{comparison_text(cmp)}"
    _emit(out, args.json, text)
    return 0


_BATCH_HELP = "trials claimed and scored at once (overrides worker.batch_size; 1: one at a time)"


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="study DB URL (default sqlite:///studies/<study>/study.db)")
    p.add_argument("--study-name", help="override study_name")
    p.add_argument("--backend", choices=["hf", "vllm"], help="override backend.name")
    p.add_argument("--seed", type=int, help="override search.seed")
    p.add_argument("--n-trials", type=int, help="override search.n_trials (completed trials in total)")
    p.add_argument("--sampler", help="override search.sampler")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dmo-search``."""
    parser = argparse.ArgumentParser(
        prog="dmo-search",
        description="Search data-mixture weights with merged-expert proxies and Bayesian optimisation.",
        epilog="Examples:\n  dmo-search toy build\n  dmo-search launch configs/toy.yaml\n"
        "  dmo-search status toy\n  dmo-search eval configs/toy.yaml --weights 0.5,0.3,0.2 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help_: str, json_flag: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=fn.__doc__)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print only JSON on stdout")
        p.set_defaults(fn=fn)
        return p

    p = add("launch", cmd_launch, "create a study from CONFIG and run it")
    p.add_argument("config", help="study YAML, e.g. configs/toy.yaml")
    _add_overrides(p)
    p.add_argument("--batch-size", type=int, metavar="Q", help=_BATCH_HELP)
    p.add_argument("--force", action="store_true", help="continue a stored study even if its setup differs")
    p.add_argument("--no-run", action="store_true", help="only create (or check) the study; `worker`s run it")
    p.add_argument(
        "--warm-start",
        metavar="STUDY",
        help="start from another study's trials (domains matched by name): its best mixtures first, its "
        "posterior mean as the GP's prior",
    )
    p.add_argument(
        "--warm-start-storage",
        metavar="URL",
        help="the --warm-start study's DB (default: --storage/storage if set, else studies/STUDY/study.db)",
    )
    p.add_argument(
        "--warm-start-designs-only",
        action="store_true",
        help="use only the --warm-start study's best mixtures, not its posterior mean as the GP's prior",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("resume", cmd_resume, "continue STUDY from its DB")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help="study DB URL (default sqlite:///studies/<study>/study.db)")
    p.add_argument("--n-trials", type=int, help="new total of completed trials")
    p.add_argument("--backend", choices=["hf", "vllm"], help="override backend.name")
    p.add_argument("--batch-size", type=int, metavar="Q", help=_BATCH_HELP)
    p.add_argument("--force", action="store_true", help="continue even if the model files changed since launch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add("worker", cmd_worker, "join STUDY and run trials until its budget is complete")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help="study DB URL, e.g. postgresql+psycopg://user:pw@host:5432/db")
    p.add_argument("--n-trials", type=int, help="new total of completed trials for the study (stored)")
    p.add_argument("--backend", choices=["hf", "vllm"], help="override backend.name for this worker")
    p.add_argument("--batch-size", type=int, metavar="Q", help=_BATCH_HELP + "; this worker only")
    p.add_argument("--force", action="store_true", help="run even if the model files changed since launch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    for name, fn, help_ in (
        ("status", cmd_status, "list the trials of STUDY"),
        ("best", cmd_best, "show the best mixture of STUDY"),
    ):
        p = add(name, fn, help_)
        p.add_argument("study", help="study name")
        p.add_argument("--storage", help="study DB URL (default sqlite:///studies/<study>/study.db)")

    p = add("eval", cmd_eval, "score one mixture from CONFIG")
    p.add_argument("config", help="study YAML")
    p.add_argument("--weights", required=True, help="w1,...,wK (or name=w,...), summing to 1")
    _add_overrides(p)

    p = add("export", cmd_export, "write a merged checkpoint to OUT_DIR")
    p.add_argument("source", help="a study name, or a CONFIG yaml (then --weights)")
    p.add_argument("out_dir", help="output folder")
    p.add_argument("--trial", type=int, help="trial number (default: the best trial)")
    p.add_argument("--weights", help="w1,...,wK with a CONFIG source")
    _add_overrides(p)

    p = add("dashboard", cmd_dashboard, "serve optuna-dashboard + mixture views of a study DB", json_flag=False)
    p.add_argument("storage_url", help="study DB URL, e.g. sqlite:///studies/toy/study.db")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=_port, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--allow-public", action="store_true", help="allow a non-loopback --host (no authentication!)")
    p.add_argument(
        "--allow-writes", action="store_true", help="let optuna-dashboard save notes, change trials (default read-only)"
    )

    p = add("promote", cmd_promote, "train and score real mixture-SFT models of STUDY's best mixtures")
    p.add_argument("study", help="study name, or 'ingest' followed by the study name")
    p.add_argument("ingest_study", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--storage", help="study DB URL (default sqlite:///studies/<study>/study.db)")
    p.add_argument("--top", type=int, default=3, help="best candidates to promote (default 3)")
    p.add_argument("--calibration", type=int, default=2, help="calibration mixtures spread out (default 2)")
    p.add_argument("--config", help="YAML whose promotion: section to use (default: the study's stored config)")
    p.add_argument("--output-dir", help="where runs write data and models (default promotion.output_dir)")
    p.add_argument("--weights", help="ingest: the mixture the model was trained on, w1,...,wK or name=w,...")
    p.add_argument("--model", help="ingest: the trained checkpoint or peft adapter folder")
    p.add_argument(
        "--full-validation",
        action="store_true",
        help="also score every SFT model and merged proxy on all validation examples (report shows both)",
    )

    p = add("report", cmd_report, "proxy-vs-SFT rank correlation, regret and recommended mixture of STUDY")
    p.add_argument("study", help="study name")
    p.add_argument("--storage", help="study DB URL (default sqlite:///studies/<study>/study.db)")
    p.add_argument("--plot", metavar="FILE.png", help="write the proxy-vs-SFT scatter plot")
    p.add_argument("--html", metavar="FILE.html", help="write the study's self-contained HTML report")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the CIs (default 2000)")
    p.add_argument(
        "--compare-methods",
        metavar="M1,M2,...|all",
        help="also rank-correlate each merge method's proxy with SFT, side by side (scores are cached in the DB)",
    )
    p.add_argument("--method-params", metavar="JSON", help='per-method parameters, e.g. \'{"wudi": {"steps": 20}}\'')

    toy = sub.add_parser("toy", help="the embedded toy world")
    toy_sub = toy.add_subparsers(dest="toy_command", required=True, metavar="TOY_COMMAND")
    p = toy_sub.add_parser("build", help="build the toy world offline", description=cmd_toy_build.__doc__)
    p.add_argument("dir", nargs="?", default="studies/toy-world", help="output folder (default studies/toy-world)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print only JSON on stdout")
    p.set_defaults(fn=cmd_toy_build)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that it unwinds as on Ctrl-C (engines closed, DB released)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (``kill``, a scheduler's preemption, ``docker stop``) raises :class:`Terminated` in the main
    thread instead of ending the process where it stands, which skipped every ``finally``."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave the handler alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _port(text: str) -> int:
    """An ``int`` in 0-65535 (argparse type of ``--port``)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number: use 0-65535 (0: any free one)")
    return port


def _joined_weights(argv: Sequence[str]) -> list[str]:
    """``--weights -0.1,...`` as ``--weights=-0.1,...``: argparse reads a value that starts with ``-``
    as an option ("expected one argument"), where the weights' own check names the problem."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--weights" and re.match(r"-[\d.]", arg):
            out[-1] = f"--weights={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dmo-search`` console script."""
    args = build_parser().parse_args(_joined_weights(sys.argv[1:] if argv is None else argv))
    _setup_logging(args.verbose)
    try:
        with _sigterm_unwinds():
            return int(args.fn(args))
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        what = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"{what}; `dmo-search resume STUDY` continues where this stopped", file=sys.stderr)
        return 128 + signal.SIGTERM if terminated else 130
    except Exception as e:
        if os.environ.get("DMO_DEBUG"):
            traceback.print_exc()
        print(f"dmo-search: error: {e}", file=sys.stderr)
        if not os.environ.get("DMO_DEBUG"):
            print("(set DMO_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
