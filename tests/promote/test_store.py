"""The dmo_promotions table: round trip, schema version, Optuna still reads the DB."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa

from dmo_search.promote.store import (
    SCHEMA_VERSION,
    PromotionStore,
    SchemaVersionError,
    load_promotions,
    schema_version,
)


def test_round_trip_and_optuna_still_loads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.enqueue_trial({"x": 0.5})
    assert load_promotions(url, "s") == []  # no table yet: nothing, and nothing created
    assert schema_version(url) is None

    store = PromotionStore(url, "s")
    rec = store.add("k1", "top", {"a": 0.7, "b": 0.3}, trial_number=4, train_spec={"mode": "exact"})
    assert rec.status == "planned" and rec.weights == {"a": 0.7, "b": 0.3} and rec.trial_number == 4
    assert store.add("k1", "calibration", {"a": 0.0, "b": 1.0}).role == "top"  # existing key kept as is
    store.update("k1", proxy_value=0.5, proxy_scores={"a": 0.4, "b": 0.6}, data_counts={"a": 7, "b": 3})
    store.update("k1", status="done", sft_value=0.55, sft_scores={"a": 0.5, "b": 0.6}, train_seconds=1.5)
    store.add("k2", "calibration", {"a": 0.0, "b": 1.0})
    other = PromotionStore(url, "other")
    other.add("k1", "ingested", {"a": 1.0, "b": 0.0})
    with pytest.raises(KeyError):
        store.update("nope", status="done")
    with pytest.raises(ValueError, match="unknown promotion fields"):
        store.update("k1", colour="red")
    store.close()
    other.close()

    recs = load_promotions(url, "s")
    assert [r.run_key for r in recs] == ["k1", "k2"]
    r = recs[0]
    assert (r.role, r.status, r.proxy_value, r.sft_value, r.train_seconds) == ("top", "done", 0.5, 0.55, 1.5)
    assert r.sft_scores == {"a": 0.5, "b": 0.6} and r.data_counts == {"a": 7, "b": 3}
    assert r.train_spec == {"mode": "exact"} and r.eval_seconds is None
    assert r.to_dict()["created_at"] is not None
    assert [x.role for x in load_promotions(url, "other")] == ["ingested"]
    assert schema_version(url) == SCHEMA_VERSION

    loaded = optuna.load_study(study_name="s", storage=url)
    assert len(loaded.trials) == 1
    assert optuna.study.get_all_study_names(url) == ["s"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    PromotionStore(url, "s").close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE dmo_schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
    engine.dispose()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade dmo-search"):
        load_promotions(url, "s")
    with pytest.raises(SchemaVersionError):
        PromotionStore(url, "s")


def test_a_version_1_table_is_read_as_is_and_upgraded_when_a_store_opens_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    engine = sa.create_engine(url)
    v1 = (
        "CREATE TABLE dmo_promotions (id INTEGER PRIMARY KEY, study_name VARCHAR(512) NOT NULL, "
        "run_key VARCHAR(64) NOT NULL, role VARCHAR(16) NOT NULL, status VARCHAR(16) NOT NULL, weights TEXT NOT NULL, "
        "trial_number INTEGER, rank_score FLOAT, ranked_by VARCHAR(32), proxy_value FLOAT, proxy_value_se FLOAT, "
        "proxy_scores TEXT, proxy_source VARCHAR(64), sft_value FLOAT, sft_value_se FLOAT, sft_scores TEXT, "
        "data_mode VARCHAR(16), data_counts TEXT, train_spec TEXT, final_loss FLOAT, train_seconds FLOAT, "
        "eval_seconds FLOAT, model_dir TEXT, error TEXT, created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, "
        "CONSTRAINT uq_dmo_promotions_run UNIQUE (study_name, run_key))"
    )
    with engine.begin() as conn:  # the schema version 1 wrote, with one finished run
        conn.execute(sa.text(v1))
        conn.execute(sa.text("CREATE TABLE dmo_schema_version (component VARCHAR(64) PRIMARY KEY, version INTEGER)"))
        conn.execute(sa.text("INSERT INTO dmo_schema_version VALUES ('promotions', 1)"))
        conn.execute(
            sa.text(
                "INSERT INTO dmo_promotions (study_name, run_key, role, status, weights, proxy_value, sft_value, "
                "created_at, updated_at) VALUES ('s', 'k', 'top', 'done', '{\"a\": 1.0}', 0.4, 0.5, "
                "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    (old,) = load_promotions(url, "s")  # read-only: no upgrade, the new fields are None
    assert old.sft_value == 0.5 and old.sft_full_value is None and schema_version(url) == 1
    store = PromotionStore(url, "s")
    try:
        assert schema_version(url) == SCHEMA_VERSION == 2
        rec = store.update("k", sft_full_value=0.6, sft_full_scores={"a": 0.6})
        assert rec.sft_value == 0.5 and rec.sft_full_value == 0.6 and rec.sft_full_scores == {"a": 0.6}
    finally:
        store.close()
    PromotionStore(url, "s").close()  # opening an upgraded table again changes nothing
    assert load_promotions(url, "s")[0].sft_full_value == 0.6
