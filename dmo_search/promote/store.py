"""The ``dmo_promotions`` table: promoted runs, stored in the study DB next to Optuna's tables.

SQLAlchemy Core on the study's own URL (SQLite or PostgreSQL). Optuna ignores tables it does not
own, so ``optuna.load_study`` and optuna-dashboard read the DB as before. The schema is versioned in
``dmo_schema_version`` (one row per component); a DB written by a newer schema is refused with a
message naming both versions, an older one is upgraded in place when a store opens it (version 2 added
the full-validation columns) and read as it is by :func:`load_promotions`.

:func:`load_promotions` is the read API (the dashboard uses it); :class:`PromotionStore` writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = [
    "SCHEMA_VERSION",
    "PromotionRecord",
    "PromotionStore",
    "SchemaVersionError",
    "load_promotions",
    "schema_version",
]

SCHEMA_VERSION = 2
"""Version of the ``dmo_promotions`` schema this code writes (2: full-validation scores)."""
_COMPONENT = "promotions"

Role = Literal["top", "calibration", "ingested"]
Status = Literal["planned", "trained", "done", "failed"]

_meta = sa.MetaData()
_version_table = sa.Table(
    "dmo_schema_version",
    _meta,
    sa.Column("component", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)
_table = sa.Table(
    "dmo_promotions",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(512), nullable=False, index=True),
    sa.Column("run_key", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("weights", sa.Text, nullable=False),  # JSON {expert: weight}, in expert order
    sa.Column("trial_number", sa.Integer),
    sa.Column("rank_score", sa.Float),
    sa.Column("ranked_by", sa.String(32)),
    sa.Column("proxy_value", sa.Float),
    sa.Column("proxy_value_se", sa.Float),
    sa.Column("proxy_scores", sa.Text),  # JSON {domain: score}
    sa.Column("proxy_source", sa.String(64)),
    sa.Column("sft_value", sa.Float),
    sa.Column("sft_value_se", sa.Float),
    sa.Column("sft_scores", sa.Text),
    # version 2: scores on every validation example (`promote --full-validation`)
    sa.Column("proxy_full_value", sa.Float),
    sa.Column("proxy_full_value_se", sa.Float),
    sa.Column("proxy_full_scores", sa.Text),
    sa.Column("sft_full_value", sa.Float),
    sa.Column("sft_full_value_se", sa.Float),
    sa.Column("sft_full_scores", sa.Text),
    sa.Column("data_mode", sa.String(16)),
    sa.Column("data_counts", sa.Text),  # JSON {domain: n}
    sa.Column("train_spec", sa.Text),  # JSON of what defines the training run
    sa.Column("final_loss", sa.Float),
    sa.Column("train_seconds", sa.Float),
    sa.Column("eval_seconds", sa.Float),
    sa.Column("model_dir", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("study_name", "run_key", name="uq_dmo_promotions_run"),
)
_JSON_FIELDS = (
    "weights",
    "proxy_scores",
    "sft_scores",
    "proxy_full_scores",
    "sft_full_scores",
    "data_counts",
    "train_spec",
)
# Columns each schema version added, for the in-place upgrade of an older table.
_ADDED_IN = {
    2: (
        "proxy_full_value",
        "proxy_full_value_se",
        "proxy_full_scores",
        "sft_full_value",
        "sft_full_value_se",
        "sft_full_scores",
    )
}


class SchemaVersionError(RuntimeError):
    """The DB's promotion schema was written by a newer dmo-search."""


@dataclass(frozen=True)
class PromotionRecord:
    """One promoted mixture and its SFT run.

    Attributes:
        id: row id.
        study_name: the study it belongs to.
        run_key: identifies the run (mixture + training spec, or the ingested model).
        role: ``'top'``, ``'calibration'`` or ``'ingested'``.
        status: ``'planned'``, ``'trained'`` (model saved, not scored), ``'done'`` or ``'failed'``.
        weights: ``{expert: weight}`` in the study's expert order.
        trial_number: the study trial at these weights, if any.
        rank_score, ranked_by: what a top pick was ranked by (posterior mean or observed value).
        proxy_value, proxy_value_se, proxy_scores: the merged-expert proxy's aggregate, its bootstrap SE
            and per-domain scores; ``proxy_source`` says where they come from (``trial N`` or ``evaluated``).
        sft_value, sft_value_se, sft_scores: the same for the trained SFT model.
        proxy_full_*, sft_full_*: the same on every validation example (``promote --full-validation``).
        data_mode, data_counts: how the mixture data was built, and examples per domain.
        train_spec: the training recipe and data settings of the run.
        final_loss: the last training loss (local runs).
        train_seconds, eval_seconds: wall times of training and of scoring the SFT model.
        model_dir: the trained checkpoint.
        error: why the run failed.
    """

    id: int
    study_name: str
    run_key: str
    role: Role
    status: Status
    weights: dict[str, float]
    trial_number: int | None = None
    rank_score: float | None = None
    ranked_by: str | None = None
    proxy_value: float | None = None
    proxy_value_se: float | None = None
    proxy_scores: dict[str, float] | None = None
    proxy_source: str | None = None
    sft_value: float | None = None
    sft_value_se: float | None = None
    sft_scores: dict[str, float] | None = None
    proxy_full_value: float | None = None
    proxy_full_value_se: float | None = None
    proxy_full_scores: dict[str, float] | None = None
    sft_full_value: float | None = None
    sft_full_value_se: float | None = None
    sft_full_scores: dict[str, float] | None = None
    data_mode: str | None = None
    data_counts: dict[str, int] | None = None
    train_spec: dict[str, Any] | None = None
    final_loss: float | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    model_dir: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (datetimes as ISO strings)."""
        d = asdict(self)
        for k in ("created_at", "updated_at"):
            if d[k] is not None:
                d[k] = d[k].isoformat()
        return d


def _engine(url: str) -> Engine:
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    return sa.create_engine(url, **kwargs)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _to_row(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (json.dumps(v) if k in _JSON_FIELDS and v is not None else _clean(v)) for k, v in fields.items()}


def _from_row(row: Any) -> PromotionRecord:
    data = {str(k): (json.loads(v) if k in _JSON_FIELDS and v is not None else v) for k, v in dict(row).items()}
    return PromotionRecord(**data)


def read_version(conn: Connection, component: str = _COMPONENT) -> int | None:
    """The schema version ``component`` recorded in ``dmo_schema_version`` (None when not recorded)."""
    if not sa.inspect(conn).has_table("dmo_schema_version"):
        return None
    v = conn.execute(
        sa.select(_version_table.c.version).where(_version_table.c.component == component)
    ).scalar_one_or_none()
    return None if v is None else int(v)


def check_version(found: int | None, url: str, *, supported: int = SCHEMA_VERSION, what: str = "promotions") -> None:
    """Refuse a table written by a newer schema than ``supported``."""
    if found is not None and found > supported:
        raise SchemaVersionError(
            f"the {what} in {url} use schema version {found}, this dmo-search reads up to {supported}; "
            "upgrade dmo-search (pip install -U dmo-search)"
        )


def ensure_version(conn: Connection, url: str, *, component: str, version: int, what: str) -> None:
    """Check ``component``'s recorded schema version (refusing a newer one) and record ``version`` if none is."""
    found = read_version(conn, component)
    check_version(found, url, supported=version, what=what)
    _version_table.create(conn, checkfirst=True)
    if found is None:
        conn.execute(sa.insert(_version_table).values(component=component, version=version))


def _upgrade(conn: Connection, found: int | None) -> None:
    """Add the columns later versions added to an existing ``dmo_promotions`` and record the version."""
    if found is None or found >= SCHEMA_VERSION:
        return
    have = {c["name"] for c in sa.inspect(conn).get_columns("dmo_promotions")}
    for version in range(found + 1, SCHEMA_VERSION + 1):
        for name in _ADDED_IN.get(version, ()):
            if name not in have:
                col_type = _table.c[name].type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f"ALTER TABLE dmo_promotions ADD COLUMN {name} {col_type}"))
    conn.execute(
        sa.update(_version_table).where(_version_table.c.component == _COMPONENT).values(version=SCHEMA_VERSION)
    )


def schema_version(storage_url: str) -> int | None:
    """The promotion schema version stored in the DB (None when no promotion table was created)."""
    engine = _engine(storage_url)
    try:
        with engine.connect() as conn:
            return read_version(conn)
    finally:
        engine.dispose()


def load_promotions(storage_url: str, study_name: str) -> list[PromotionRecord]:
    """Every promotion of ``study_name`` in the study DB at ``storage_url``, oldest first.

    Read-only: a DB without the promotion table gives ``[]``.

    Raises:
        SchemaVersionError: the table was written by a newer schema.
    """
    engine = _engine(storage_url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("dmo_promotions"):
                return []
            check_version(read_version(conn), storage_url)
            have = {c["name"] for c in sa.inspect(conn).get_columns("dmo_promotions")}  # an older schema: fewer
            cols = [c for c in _table.c if c.name in have]
            rows = conn.execute(
                sa.select(*cols).where(_table.c.study_name == study_name).order_by(_table.c.id)
            ).mappings()
            return [_from_row(r) for r in rows]
    finally:
        engine.dispose()


class PromotionStore:
    """Writes promotions of one study to its DB (creates the tables on first use).

    Args:
        storage_url: the study DB's SQLAlchemy URL.
        study_name: the study.
    """

    def __init__(self, storage_url: str, study_name: str) -> None:
        self.url = storage_url
        self.study_name = study_name
        self.engine = _engine(storage_url)
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        with self.engine.begin() as conn:
            found = read_version(conn) if sa.inspect(conn).has_table("dmo_promotions") else None
            ensure_version(conn, self.url, component=_COMPONENT, version=SCHEMA_VERSION, what="promotions")
            _meta.create_all(conn, checkfirst=True)
            _upgrade(conn, found)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def get(self, run_key: str) -> PromotionRecord | None:
        """The run with ``run_key`` (None when absent)."""
        with self._tx() as conn:
            row = (
                conn.execute(
                    sa.select(_table).where(_table.c.study_name == self.study_name, _table.c.run_key == run_key)
                )
                .mappings()
                .one_or_none()
            )
        return None if row is None else _from_row(row)

    def add(self, run_key: str, role: Role, weights: Mapping[str, float], **fields: Any) -> PromotionRecord:
        """Insert a run in state ``planned`` (or return the stored one with that key unchanged)."""
        existing = self.get(run_key)
        if existing is not None:
            return existing
        now = _now()
        values = _to_row(
            {
                "study_name": self.study_name,
                "run_key": run_key,
                "role": role,
                "status": "planned",
                "weights": dict(weights),
                "created_at": now,
                "updated_at": now,
                **fields,
            }
        )
        with self._tx() as conn:
            conn.execute(sa.insert(_table).values(**values))
        rec = self.get(run_key)
        assert rec is not None
        return rec

    def update(self, run_key: str, **fields: Any) -> PromotionRecord:
        """Set ``fields`` on the run with ``run_key``; returns the updated record.

        Raises:
            KeyError: no such run.
        """
        unknown = sorted(set(fields) - set(_table.c.keys()))
        if unknown:
            raise ValueError(f"unknown promotion fields {unknown}")
        with self._tx() as conn:
            res = conn.execute(
                sa.update(_table)
                .where(_table.c.study_name == self.study_name, _table.c.run_key == run_key)
                .values(**_to_row({**fields, "updated_at": _now()}))
            )
            if res.rowcount == 0:
                raise KeyError(f"no promotion {run_key!r} in study {self.study_name!r}")
        rec = self.get(run_key)
        assert rec is not None
        return rec

    def records(self) -> list[PromotionRecord]:
        """Every promotion of the study, oldest first."""
        return load_promotions(self.url, self.study_name)

    def close(self) -> None:
        """Release the DB connections."""
        self.engine.dispose()
