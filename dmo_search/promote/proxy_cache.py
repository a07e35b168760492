"""The ``dmo_method_proxies`` table: proxy values of promoted mixtures under each merge method.

``dmo-search report --compare-methods`` scores each promoted mixture with several merge methods; a
score costs a merge and an evaluation, so it is kept here, in the study DB next to ``dmo_promotions``,
and a second report reads it instead of scoring again. A row is keyed by the study, the mixture and a
fingerprint of everything that defines the score (base, experts, objective, backend and the merge
method with its resolved parameters and seed; see :func:`score_key`). The schema is versioned in
``dmo_schema_version`` (component ``method_proxies``); a newer one is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from dmo_search.promote.store import _engine, _now, ensure_version

__all__ = ["SCHEMA_VERSION", "ProxyCache", "score_key"]

SCHEMA_VERSION = 1
"""Version of the ``dmo_method_proxies`` schema this code writes."""
_COMPONENT = "method_proxies"

_meta = sa.MetaData()
_table = sa.Table(
    "dmo_method_proxies",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(512), nullable=False, index=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("score_key", sa.String(64), nullable=False),  # sha256 of the scoring setup (see score_key)
    sa.Column("mixture_key", sa.String(64), nullable=False),  # sha256 of the weights
    sa.Column("weights", sa.Text, nullable=False),  # JSON list, in expert order
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("setup", sa.Text, nullable=False),  # JSON of what score_key hashes, for the reader
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("study_name", "score_key", "mixture_key", name="uq_dmo_method_proxies"),
)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _mixture_key(weights: Sequence[float]) -> str:
    return _sha([round(float(w), 12) for w in weights])


def score_key(setup: Mapping[str, Any]) -> str:
    """The fingerprint of a scoring setup (a JSON-ready mapping; key order does not matter)."""
    return _sha(dict(setup))


class ProxyCache:
    """Reads and writes cached method proxies of one study (creates the table on first use).

    Args:
        storage_url: the study DB's SQLAlchemy URL.
        study_name: the study.

    Raises:
        SchemaVersionError: the table was written by a newer schema.
    """

    def __init__(self, storage_url: str, study_name: str) -> None:
        self.url = storage_url
        self.study_name = study_name
        self.engine = _engine(storage_url)
        with self.engine.begin() as conn:
            ensure_version(conn, storage_url, component=_COMPONENT, version=SCHEMA_VERSION, what="method proxies")
            _meta.create_all(conn, checkfirst=True)

    def get(self, setup: Mapping[str, Any], mixtures: Sequence[Sequence[float]]) -> list[float | None]:
        """The cached value of each mixture under ``setup`` (None where not cached)."""
        key = score_key(setup)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(_table.c.mixture_key, _table.c.value).where(
                    _table.c.study_name == self.study_name, _table.c.score_key == key
                )
            ).all()
        found = {str(k): float(v) for k, v in rows}
        return [found.get(_mixture_key(w)) for w in mixtures]

    def put(
        self, method: str, setup: Mapping[str, Any], mixtures: Sequence[Sequence[float]], values: Sequence[float]
    ) -> None:
        """Store ``values`` (one per mixture) under ``setup``; a cached mixture keeps its value, NaN is not stored."""
        key = score_key(setup)
        have = self.get(setup, mixtures)
        now = _now()
        rows: dict[str, dict[str, Any]] = {
            _mixture_key(w): {
                "study_name": self.study_name,
                "method": method,
                "score_key": key,
                "mixture_key": _mixture_key(w),
                "weights": json.dumps([float(x) for x in w]),
                "value": float(v),
                "setup": json.dumps(dict(setup), sort_keys=True, default=str),
                "created_at": now,
            }
            for w, v, h in zip(mixtures, values, have, strict=True)
            if h is None and math.isfinite(v)
        }
        if rows:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(_table), list(rows.values()))

    def close(self) -> None:
        """Release the DB connections."""
        self.engine.dispose()
