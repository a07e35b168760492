"""The study config: defaults, path resolution, designs, and errors that name field, value and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dmo_search import simplex
from dmo_search.config import (
    DEFAULT_EXCLUDE_LORA,
    ConfigError,
    apply_overrides,
    load_config,
    parse_config,
)


def _raw(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "study_name": "s",
        "base_model": "base",
        "experts": [
            {"name": "a", "path": "ea", "kind": "lora"},
            {"name": "b", "path": "eb", "kind": "full", "domain": "bee"},
            {"name": "c", "path": "ec", "kind": "lora"},
        ],
        "objective": {"validation": {"a": "va.jsonl", "b": "vb.jsonl"}},
    }
    raw.update(over)
    return raw


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    p = tmp_path / "cfgs" / "x.yaml"
    p.parent.mkdir()
    p.write_text(yaml.safe_dump(_raw()))
    cfg = load_config(p)
    assert cfg.base_model == (tmp_path / "cfgs" / "base").resolve()
    assert cfg.experts[0].path == (tmp_path / "cfgs" / "ea").resolve()
    assert cfg.objective.validation["b"] == (tmp_path / "cfgs" / "vb.jsonl").resolve()
    assert cfg.search.sampler == "gp-simplex"
    assert cfg.backend.name == "hf"
    assert cfg.merge.exclude_lora == list(DEFAULT_EXCLUDE_LORA)
    assert cfg.storage_url().endswith("studies/s/study.db")
    assert cfg.storage_url().startswith("sqlite:////")
    assert cfg.expert_names == ["a", "b", "c"]


def test_a_path_with_a_nul_character_is_a_config_error(tmp_path: Path) -> None:
    """The OS refuses such a path with a bare ValueError (found by test_bad_inputs' mutated configs)."""
    raw = _raw()
    for path in (["base_model"], ["experts", 1, "path"], ["objective", "validation", "b"]):
        bad = yaml.safe_load(yaml.safe_dump(raw))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = "data/\x00x"
        want = r'x\.yaml: invalid study config: the path "data/\\u0000x" contains a NUL'
        with pytest.raises(ConfigError, match=want):
            parse_config(bad, base_dir=tmp_path, source="x.yaml")


def test_unknown_key_names_field_and_fix() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(serach={"n_trials": 3}))
    msg = str(e.value)
    assert "serach" in msg and "unknown key" in msg and "spelling" in msg


def test_nested_unknown_key_and_bad_value() -> None:
    raw = _raw()
    raw["search"] = {"sampler": "tpee", "n_trials": 0}
    raw["objective"]["subsetsize"] = 5
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    msg = str(e.value)
    assert "search.sampler" in msg and '"tpee"' in msg and "gp-simplex" in msg
    assert "search.n_trials" in msg and "0" in msg
    assert "objective.subsetsize" in msg
    assert "3 problem(s)" in msg


def test_missing_and_duplicate_experts() -> None:
    with pytest.raises(ConfigError, match=r"base_model.*required key is missing"):
        parse_config({k: v for k, v in _raw().items() if k != "base_model"})
    raw = _raw()
    raw["experts"][1]["name"] = "a"
    with pytest.raises(ConfigError, match=r"unique.*\['a'\]"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="at least 2 experts"):
        parse_config(_raw(experts=[{"name": "a", "path": "x", "kind": "lora"}]))
    raw = _raw()
    raw["experts"][0]["kind"] = "qlora"
    with pytest.raises(ConfigError, match=r"experts\.0\.kind.*qlora"):
        parse_config(raw)


def test_designs_resolve() -> None:
    cfg = parse_config(
        _raw(search={"designs": ["centre", "vertices", [0.5, 0.5, 0.0], {"c": 1.0}, "paper", "dirichlet:3:1"]})
    )
    d = cfg.designs()
    # centre + 3 vertices + [0.5,0.5,0] + (c vertex is a duplicate) + 21 paper points + 3 draws
    assert len(d) == 1 + 3 + 1 + 21 + 3
    assert all(abs(sum(w) - 1) < 1e-12 and min(w) >= 0 for w in d)
    with pytest.raises(ConfigError, match=r"search.designs\[0\].*sum to 1"):
        parse_config(_raw(search={"designs": [[0.5, 0.6, 0.1]]}))
    with pytest.raises(ConfigError, match=r"search.designs\[0\].*unknown experts \['z'\]"):
        parse_config(_raw(search={"designs": [{"z": 1.0}]}))
    with pytest.raises(ConfigError, match="unknown design 'spiral'"):
        parse_config(_raw(search={"designs": ["spiral"]}))
    with pytest.raises(ConfigError, match="expected 3 weights"):
        parse_config(_raw(search={"designs": [[0.5, 0.5]]}))
    loo = parse_config(_raw(search={"designs": ["centre", "leave-one-out"]})).designs()
    assert loo == [[1 / 3] * 3, [0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]
    with pytest.raises(ConfigError, match="'leave-one-out'"):  # the error lists every name
        parse_config(_raw(search={"designs": ["leave-one-in"]}))


@pytest.mark.parametrize("name", sorted(simplex.NAMED_DESIGNS))
def test_every_named_design_resolves_and_is_listed(name: str) -> None:
    # One table names the designs: the config resolves each name to the table's mixtures, and the
    # unknown-design error lists it.
    assert parse_config(_raw(search={"designs": [name]})).designs() == simplex.NAMED_DESIGNS[name](3)
    with pytest.raises(ConfigError, match=repr(name)):
        parse_config(_raw(search={"designs": [name + "s"]}))


def test_aggregation_weights_must_cover_domains() -> None:
    raw = _raw()
    raw["objective"]["aggregation"] = {"a": 1.0}
    with pytest.raises(ConfigError, match=r"missing \['b'\]"):
        parse_config(raw)
    raw["objective"]["aggregation"] = {"a": 1.0, "b": 3.0}
    assert parse_config(raw).objective.aggregation == {"a": 1.0, "b": 3.0}


def test_overrides() -> None:
    cfg = parse_config(_raw())
    c2 = apply_overrides(cfg, n_trials=7, seed=3, study_name="t", storage="sqlite:///x.db", sampler="tpe")
    assert (c2.search.n_trials, c2.search.seed, c2.study_name, c2.storage_url(), c2.search.sampler) == (
        7,
        3,
        "t",
        "sqlite:///x.db",
        "tpe",
    )
    assert cfg.search.n_trials == 20  # frozen original untouched
    with pytest.raises(ConfigError, match=r"search\.n_trials"):
        apply_overrides(cfg, n_trials=-1)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("study_name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(lst)


def test_committed_toy_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[1] / "configs" / "toy.yaml")
    assert cfg.n_domains >= 3
    assert {e.kind for e in cfg.experts} == {"lora", "full"}


def _constrained(**constraints: Any) -> dict[str, Any]:
    return _raw(search={"sampler": "gp-simplex", "constraints": constraints})


def test_constraints_parse_into_bounds_caps_and_groups() -> None:
    cfg = parse_config(
        _constrained(
            min_weight={"a": 0.1},
            max_weight={"b": 0.6},
            data_caps={"domain_sizes": {"c": 500}, "sft_samples": 2000, "max_epochs": 2},
            groups=[{"domains": ["a", "b"], "max": 0.8}],
        )
    )
    c = cfg.constraints()
    assert c is not None and c.names == ("a", "b", "c")
    assert c.lower == (0.1, 0.0, 0.0) and c.upper == pytest.approx((1.0, 0.6, 0.5))
    assert c.describe() == "0.1 <= w[a] <= 1; 0 <= w[b] <= 0.6; 0 <= w[c] <= 0.5; 0 <= w[a] + w[b] <= 0.8"
    assert parse_config(_raw()).constraints() is None


def test_data_caps_count_the_promotion_data_and_are_stored_explicitly(tmp_path: Path) -> None:
    for name, n in (("a", 30), ("b", 50), ("c", 400)):
        (tmp_path / f"{name}.jsonl").write_text('{"prompt": "p", "answers": ["x"]}\n' * n + "\n")
    raw = _constrained(data_caps={"max_epochs": 2})
    raw["promotion"] = {"train_data": {n: f"{n}.jsonl" for n in "abc"}, "n_examples": 200}
    cfg = parse_config(raw, base_dir=tmp_path)
    caps = cfg.search.constraints.data_caps  # type: ignore[union-attr]
    assert caps.domain_sizes == {"a": 30, "b": 50, "c": 400} and caps.sft_samples == 200
    assert cfg.constraints().upper == pytest.approx((0.3, 0.5, 1.0))  # type: ignore[union-attr]
    assert '"domain_sizes":{"a":30,"b":50,"c":400}' in cfg.to_json()  # re-validation does not re-read files


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (_constrained(min_weight={"a": 0.6, "b": 0.6}), "the minimum weights sum to 0.6 (a) + 0.6 (b) = 1.2 > 1"),
        (_constrained(max_weight={"zz": 0.5}), "unknown domains ['zz']"),
        (
            _constrained(data_caps={"domain_sizes": {"a": 10, "b": 10, "c": 10}, "sft_samples": 1000}),
            "1 epochs x 10 examples / 1000 SFT samples = 0.01",
        ),
        (_constrained(data_caps={"domain_sizes": {"a": 10}}), "needs sft_samples"),
        (_raw(search={"sampler": "tpe", "constraints": {"max_weight": {"a": 0.5}}}), "cannot respect"),
        (
            _raw(search={"designs": [[0.8, 0.1, 0.1]], "constraints": {"max_weight": {"a": 0.5}}}),
            "search.designs[0] violates the study's constraints: w[a] = 0.8 > max 0.5",
        ),
    ],
)
def test_bad_constraints_are_refused_with_the_reason(raw: dict[str, Any], shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert shown in str(info.value)


def test_named_designs_drop_infeasible_mixtures_and_centre_moves_inside() -> None:
    cfg = parse_config(_raw(search={"designs": ["centre", "paper"], "constraints": {"max_weight": {"a": 0.2}}}))
    designs = cfg.designs()
    c = cfg.constraints()
    assert c is not None and all(c.contains(w) for w in designs)
    assert designs[0] == pytest.approx([0.2, 0.4, 0.4])
    assert 1 < len(designs) < 22
