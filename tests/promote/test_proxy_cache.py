"""The ``dmo_method_proxies`` cache table: keyed lookups, first value kept, versioned schema."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import sqlalchemy as sa

from dmo_search.promote.proxy_cache import SCHEMA_VERSION, ProxyCache, score_key
from dmo_search.promote.store import PromotionStore, SchemaVersionError, load_promotions


def test_get_put_keyed_by_setup_and_mixture(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    setup = {"method": "ties", "params": {"mask_rate": 0.8}}
    mixes = [[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]]
    cache = ProxyCache(url, "s")
    try:
        assert cache.get(setup, mixes) == [None, None, None]
        cache.put("ties", setup, mixes, [0.1, math.nan, 0.1])  # a repeated mixture is stored once; NaN not at all
        assert cache.get(setup, mixes) == [0.1, None, 0.1]
        cache.put("ties", setup, mixes[:1], [0.9])  # a cached mixture keeps its first value
        assert cache.get(setup, [[0.5, 0.5]]) == [0.1]
        assert cache.get({**setup, "params": {"mask_rate": 0.5}}, mixes) == [None, None, None]
        assert ProxyCache(url, "other").get(setup, mixes) == [None, None, None]
    finally:
        cache.close()
    assert score_key({"a": 1, "b": 2}) == score_key({"b": 2, "a": 1})
    PromotionStore(url, "s").close()  # the promotions' table joins the same DB and version table
    assert load_promotions(url, "s") == []


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    ProxyCache(url, "s").close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE dmo_schema_version SET version = :v WHERE component = 'method_proxies'"),
            {"v": SCHEMA_VERSION + 1},
        )
    engine.dispose()
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        ProxyCache(url, "s")
