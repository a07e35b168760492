"""Open a study DB for reading while workers write to it.

SQLite: the file must exist; it is switched to WAL journaling if it is not already (in WAL a reader
never blocks a writer, which is what broke studies watched by optuna-dashboard on a rollback journal,
optuna/optuna-dashboard#545), every connection waits up to 60 s for a lock, and is ``query_only``.
PostgreSQL: every transaction is ``READ ONLY``. Either way a write through this storage fails in the
database itself, whatever code path attempts it.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from optuna.storages import RDBStorage

__all__ = ["DashboardStorageError", "open_read_storage"]

BUSY_TIMEOUT_S = 60


class DashboardStorageError(ValueError):
    """The storage URL cannot be opened for the dashboard; the message says what to do."""


def _sqlite_file(url: str) -> Path | None:
    if not url.startswith("sqlite:"):
        return None
    path = url.removeprefix("sqlite:///")
    if path in ("", ":memory:") or path == url:
        raise DashboardStorageError(f"{url!r} is not a SQLite file URL; write sqlite:///path/to/study.db")
    return Path(path)


def _ensure_wal(db: Path) -> None:
    with sqlite3.connect(db, timeout=BUSY_TIMEOUT_S) as con:
        mode = con.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            con.execute("PRAGMA journal_mode=WAL")
            print(f"[dmo-search] switched {db} to WAL journaling (readers no longer block writers)", file=sys.stderr)


def open_read_storage(url: str, *, read_only: bool = True) -> RDBStorage:
    """An Optuna RDB storage for watching studies: WAL + busy timeout on SQLite, read-only by default.

    Args:
        url: SQLAlchemy URL of the study DB (``sqlite:///...`` or ``postgresql+psycopg://...``).
        read_only: refuse writes at the database level (SQLite ``query_only``, PostgreSQL
            ``default_transaction_read_only``). Default True.

    Raises:
        DashboardStorageError: the SQLite file does not exist, or the URL is not a supported one.
    """
    engine_kwargs: dict[str, Any] = {}
    db = _sqlite_file(url)
    if db is not None:
        if not db.is_file():
            raise DashboardStorageError(
                f"no study DB at {db}; pass the URL of an existing DB, e.g. sqlite:///studies/toy/study.db"
            )
        _ensure_wal(db)
        engine_kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
    elif url.startswith("postgresql"):
        if read_only:
            engine_kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
    elif "://" not in url:
        raise DashboardStorageError(f"{url!r} is not a SQLAlchemy URL; write e.g. sqlite:///studies/toy/study.db")
    try:
        storage = RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=True)
    except Exception as e:
        from sqlalchemy.engine import make_url

        shown = make_url(url).render_as_string(hide_password=True)
        root: BaseException = e
        while root.__cause__ is not None:  # optuna wraps the driver's error in a generic one
            root = root.__cause__
        why = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        raise DashboardStorageError(f"cannot open {shown}: {why}; check the URL and that the DB server is up") from e
    if db is not None and read_only:
        from sqlalchemy import event

        @event.listens_for(storage.engine, "connect")
        def _query_only(dbapi_con: Any, _record: Any) -> None:
            dbapi_con.execute("PRAGMA query_only=ON")

        storage.engine.dispose()  # connections made before the listener existed are dropped
    return storage
