"""Bad inputs against a study with completed trials: each exits non-zero with one message naming the
problem and the fix, and leaves the study DB exactly as it was (a full SQL dump compared before/after)."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmo_search.cli import main
from dmo_search.config import ConfigError, load_config, parse_config
from dmo_search.study import StudyError, load_study, run_study
from tests._study_helpers import small_config

pytestmark = pytest.mark.slow

FAST_WORKER = {"heartbeat_interval": 1, "grace_period": 3, "max_consecutive_failures": 2}


@pytest.fixture(scope="module")
def world(toy_world: Any, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Study ``bad`` with 2 completed trials; its experts are copies that tests may break (and restore)."""
    out = tmp_path_factory.mktemp("bad")
    experts = out / "experts"
    shutil.copytree(toy_world.root / "experts", experts)
    path = small_config(toy_world.root, out, name="bad", n_trials=2, subset=8, worker=FAST_WORKER)
    raw = yaml.safe_load(path.read_text())
    for e in raw["experts"]:
        e["path"] = str(experts / Path(e["path"]).name)
    path.write_text(yaml.safe_dump(raw))
    assert main(["launch", str(path), "--quiet"]) == 0
    return SimpleNamespace(out=out, cfg=path, raw=raw, db=out / "bad.db", url=f"sqlite:///{out / 'bad.db'}")


def _dump(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return list(con.iterdump())


def _config(world: SimpleNamespace, tmp: Path, mutate: Any) -> Path:
    raw = copy.deepcopy(world.raw)
    mutate(raw)
    p = tmp / "variant.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _refused(world: SimpleNamespace, capsys: pytest.CaptureFixture[str], argv: list[str], *patterns: str) -> str:
    """Run the CLI: exit 1, stderr matches every pattern (problem and fix), no traceback, DB unchanged."""
    before = _dump(world.db)
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    for pat in patterns:
        assert re.search(pat, err, re.IGNORECASE | re.DOTALL), f"{pat!r} not in: {err}"
    assert "Traceback" not in err
    assert _dump(world.db) == before
    return err


def _launch(world: SimpleNamespace, cfg: Path) -> list[str]:
    return ["launch", str(cfg), "--quiet", "--storage", world.url]


def _set_expert(name: str, path: Path) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        next(e for e in raw["experts"] if e["name"] == name)["path"] = str(path)

    return mutate


def _rewrite_full_expert(world: SimpleNamespace, dest: Path, edit: Any) -> Path:
    from safetensors.torch import load_file, save_file

    src = Path(next(e["path"] for e in world.raw["experts"] if e["kind"] == "full"))
    shutil.copytree(src, dest)
    f = dest / "model.safetensors"
    tensors = load_file(f)
    edit(tensors)
    save_file(tensors, f, metadata={"format": "pt"})
    return dest


def test_corrupt_safetensors(world: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    f = Path(next(e["path"] for e in world.raw["experts"] if e["kind"] == "full")) / "model.safetensors"
    backup = f.read_bytes()
    try:
        f.write_bytes(backup[: len(backup) // 3])  # a truncated copy
        _refused(world, capsys, ["resume", "bad", "--storage", world.url], r"model files changed", r"--force")
        # the study has its 2 trials: a worker with nothing to run loads no model; asked for a third, it
        # loads them, fails, and does not store the new budget
        worker = ["worker", "bad", "--storage", world.url, "--force", "--n-trials", "3"]
        _refused(world, capsys, worker, r"sort", r"corrupt", r"re-export")
    finally:
        f.write_bytes(backup)


def test_adapter_of_another_base(world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests._tiny import build_tiny

    other = build_tiny(tmp_path / "other", hidden=48)
    cfg = _config(world, tmp_path, _set_expert("add", other.lora[0]))
    _refused(world, capsys, _launch(world, cfg), r"'add'", r"does not fit the base|shape", r"base")


def test_tensor_shape_mismatch(world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def widen(t: dict[str, torch.Tensor]) -> None:
        name = next(n for n in t if n.endswith("norm.weight"))
        t[name] = torch.ones(t[name].shape[0] + 1)

    cfg = _config(world, tmp_path, _set_expert("sort", _rewrite_full_expert(world, tmp_path / "wide", widen)))
    _refused(world, capsys, _launch(world, cfg), r"has shape", r"not fine-tuned from this base")


def test_missing_expert_path(world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = _config(world, tmp_path, _set_expert("shift", tmp_path / "nowhere"))
    _refused(world, capsys, _launch(world, cfg), r"nowhere does not exist", r"fix experts\[\]\.path")


def test_nan_expert_is_refused_before_any_trial(
    world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An objective that would return NaN for every mixture: its cause (NaN weights) is caught at load."""

    def poison(t: dict[str, torch.Tensor]) -> None:
        name = next(n for n in t if n.endswith("mlp.down_proj.weight"))
        t[name][0, 0] = float("nan")

    cfg = _config(world, tmp_path, _set_expert("sort", _rewrite_full_expert(world, tmp_path / "nan", poison)))
    _refused(world, capsys, _launch(world, cfg), r"NaN or inf", r"retrain or re-export")


def test_objective_raising_on_bad_data(
    world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = Path(next(iter(world.raw["objective"]["validation"].values())))
    broken = tmp_path / "broken.jsonl"
    broken.write_text(src.read_text().splitlines()[0] + "\n{not json\n")

    def mutate(raw: dict[str, Any]) -> None:
        d = next(iter(raw["objective"]["validation"]))
        raw["objective"]["validation"][d] = str(broken)

    cfg = _config(world, tmp_path, mutate)
    _refused(world, capsys, _launch(world, cfg), r"broken\.jsonl:2", r"not valid JSON", r"fix")


class _Faulty:
    """The real objective, with its value replaced by NaN or its evaluation raising."""

    def __init__(self, inner: Any, mode: str) -> None:
        self.inner, self.mode = inner, mode

    def record(self) -> Any:
        return self.inner.record()

    def evaluate(self, backend: Any) -> Any:
        if self.mode == "raise":
            raise RuntimeError("validation server unreachable")
        res = self.inner.evaluate(backend)
        return type(res)(**{**res.__dict__, "value": math.nan})


@pytest.mark.parametrize(("mode", "message"), [("nan", r"objective returned nan"), ("raise", r"unreachable")])
def test_objective_nan_or_raising_at_trial_time(world: SimpleNamespace, mode: str, message: str) -> None:
    """Trial-time faults: the trials FAIL with the error stored, the run stops with a message after
    max_consecutive_failures, completed trials are untouched and nothing is left RUNNING."""
    from dmo_search.backends.hf import HFBackend
    from dmo_search.objectives import make_objective

    study, cfg = load_study("bad", world.url)
    before = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
    backend = HFBackend(cfg)
    try:
        with pytest.raises(StudyError, match=rf"2 failed trials in a row; last error: .*{message}"):
            run_study(study, cfg, backend, _Faulty(make_objective(cfg.objective), mode), n_trials=5, progress=False)  # type: ignore[arg-type]
    finally:
        backend.close()
    trials = load_study("bad", world.url)[0].trials
    assert {t.number: t.value for t in trials if t.state.name == "COMPLETE"} == before
    new = [t for t in trials if t.number not in before]
    assert [t.state.name for t in new][-2:] == ["FAIL", "FAIL"]
    assert all(re.search(message, t.user_attrs["error"], re.I) for t in new[-2:])
    assert not any(t.state.name == "RUNNING" for t in trials)


@pytest.mark.parametrize(
    ("design", "pattern"),
    [([-0.2, 0.6, 0.6], r"search\.designs\[0\].*>= 0"), ([0.5, 0.5, 0.5], r"search\.designs\[0\].*sum to 1")],
)
def test_design_off_the_simplex(
    world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path, design: list[float], pattern: str
) -> None:
    cfg = _config(world, tmp_path, lambda raw: raw["search"].update(designs=[design]))
    _refused(world, capsys, _launch(world, cfg), pattern)


def test_k_differs_from_the_study(world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def drop(raw: dict[str, Any]) -> None:
        raw["experts"] = raw["experts"][:2]
        d = raw["experts"][-1]["domain"]
        raw["objective"]["validation"] = {d: raw["objective"]["validation"][d]}

    cfg = _config(world, tmp_path, drop)
    for extra in ([], ["--force"]):
        _refused(
            world, capsys, [*_launch(world, cfg), *extra], r"mixes 3 experts but the config has 2", r"--study-name"
        )


@pytest.mark.parametrize(
    "url",
    ["not a url", "nosuchdb://host/x", "postgresql+psycopg://nobody@127.0.0.1:1/x"],
)
def test_bad_storage_url(world: SimpleNamespace, capsys: pytest.CaptureFixture[str], url: str) -> None:
    _refused(world, capsys, ["worker", "bad", "--storage", url], r"cannot open the study DB", r"postgresql\+psycopg://")


def test_study_that_does_not_exist(world: SimpleNamespace, capsys: pytest.CaptureFixture[str]) -> None:
    _refused(world, capsys, ["worker", "nope", "--storage", world.url], r"no study 'nope'", r"studies there: \['bad'\]")
    _refused(
        world, capsys, ["status", "bad", "--storage", f"sqlite:///{world.out}/none.db"], r"no study DB", r"--storage"
    )


def test_full_disk_during_export(world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A real full disk: a 2 MiB tmpfs (the merged toy model needs ~10 MiB)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {res.stderr.strip()}")
    try:
        _refused(
            world,
            capsys,
            ["export", "bad", str(mnt / "out"), "--storage", world.url],
            r"No space left on device",
            r"partial files were removed",
            r"choose an OUT_DIR",
        )
        assert not (mnt / "out").exists()  # no half-written checkpoint left behind
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize(
    ("mutate", "patterns"),
    [
        (lambda r: r["objective"].update(type="exact_matchh"), [r"objective\.type", r"exact_match"]),
        (
            lambda r: r["objective"].update(aggregation={**{d: 1.0 for d in r["objective"]["validation"]}, "nope": 1}),
            [r"unknown \['nope'\]", r"aggregation"],
        ),
        (lambda r: r.update(serach=r["search"]), [r"serach", r"unknown key", r"did you mean 'search'"]),
        (lambda r: r["search"].update(n_trails=3), [r"search\.n_trails", r"did you mean 'n_trials'"]),
    ],
    ids=["unknown-objective-type", "unknown-domain", "misspelt-top-key", "misspelt-nested-key"],
)
def test_unknown_names_and_keys(
    world: SimpleNamespace, capsys: pytest.CaptureFixture[str], tmp_path: Path, mutate: Any, patterns: list[str]
) -> None:
    cfg = _config(world, tmp_path, mutate)
    _refused(world, capsys, _launch(world, cfg), *patterns)


# -- property: whatever a user writes, parsing raises ConfigError or succeeds, never anything else --

_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.floats(-2, 2), max_size=4),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def _mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(raw)
        if not paths:
            break
        *parents, leaf = draw(st.sampled_from(paths))
        node: Any = raw
        for p in parents:
            node = node[p]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[leaf] = draw(_LEAVES)
        elif action == "delete":
            del node[leaf]
        elif isinstance(node, dict):
            node[draw(st.text(min_size=1, max_size=8))] = draw(_LEAVES)
    return raw


_BASE = yaml.safe_load((Path(__file__).parent.parent / "configs" / "toy.yaml").read_text())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated(_BASE))
def test_mutated_configs_raise_only_config_errors(raw: dict[str, Any]) -> None:
    try:
        cfg = parse_config(raw, base_dir=Path("/tmp"))
    except ConfigError as e:
        assert str(e).strip() and "Traceback" not in str(e)
        return
    json.loads(cfg.to_json())  # a config that parses also serialises (it is stored in the study)
    cfg.designs()


def test_load_config_reports_yaml_errors(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("study_name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
