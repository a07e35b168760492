"""The dashboard's WSGI dispatcher in-process: host policy, read-only by default, ``allow_writes``."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from dmo_search.dashboard.server import check_host, make_dashboard_server


def _put_note(base: str, study_id: int) -> int:
    req = urllib.request.Request(
        f"{base}/api/studies/{study_id}/note",
        data=json.dumps({"version": 1, "body": "looks good"}).encode(),
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_host_policy() -> None:
    assert check_host("127.0.0.1", allow_public=False)
    assert check_host("localhost", allow_public=False) and check_host("::1", allow_public=False)
    for host in ("0.0.0.0", "192.168.1.5", "example.org"):
        with pytest.raises(ValueError, match="--allow-public"):
            check_host(host, allow_public=False)
        assert check_host(host, allow_public=True) is False


@pytest.mark.parametrize("allow_writes", [False, True])
def test_optuna_dashboard_writes_only_with_allow_writes(tmp_path: Path, allow_writes: bool) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    srv = make_dashboard_server(url, port=0, allow_writes=allow_writes)
    threading.Thread(target=srv.serve, daemon=True).start()
    try:
        status = _put_note(srv.url, study._study_id)
    finally:
        srv.shutdown()
    attrs = optuna.storages.RDBStorage(url).get_study_system_attrs(study._study_id)
    saved = any("note" in k for k in attrs)
    assert (status, saved) == ((204, True) if allow_writes else (405, False))
