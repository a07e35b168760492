"""Read a study's trials straight from its DB with SQLAlchemy (no optuna), for before/after checks."""

from __future__ import annotations

import json

import sqlalchemy as sa

__all__ = ["trial_rows", "trial_workers"]


def _query(url: str, sql: str, study: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    try:
        with engine.connect() as con:
            try:
                return [tuple(r) for r in con.execute(sa.text(sql), {"s": study})]
            except sa.exc.OperationalError:
                if url.startswith("sqlite"):
                    return []  # optuna has not created its tables yet
                raise
            except sa.exc.ProgrammingError:
                return []  # PostgreSQL: no tables yet
    finally:
        engine.dispose()


def trial_rows(url: str, study: str) -> list[tuple[int, str, float | None]]:
    """(number, state, value) of every trial of ``study``, in number order."""
    rows = _query(
        url,
        "SELECT t.number, t.state, v.value FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "LEFT JOIN trial_values v ON v.trial_id = t.trial_id WHERE s.study_name = :s ORDER BY t.number",
        study,
    )
    return [(int(n), str(st).split(".")[-1], None if v is None else float(v)) for n, st, v in rows]  # type: ignore[call-overload,arg-type]


def trial_workers(url: str, study: str) -> dict[int, tuple[str, str]]:
    """{number: (state, worker "host:pid")} of the trials that recorded their worker."""
    rows = _query(
        url,
        "SELECT t.number, t.state, a.value_json FROM trials t JOIN studies s ON s.study_id = t.study_id "
        "JOIN trial_user_attributes a ON a.trial_id = t.trial_id WHERE s.study_name = :s AND a.key = 'worker'",
        study,
    )
    return {int(n): (str(st).split(".")[-1], json.loads(str(w))) for n, st, w in rows}  # type: ignore[call-overload]
