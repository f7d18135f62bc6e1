"""Backup and restore, as docs/operations.md tells an operator to do it: pg_dump, drop the
database, pg_restore, restart the control plane. The dump is taken before later changes
(a key created, more spend), so the restored database is behind what the data planes
hold: the control plane must bring them back to the restored state, and changes made
after the restore must reach them."""

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from stack import accepted, wait_until


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    bins = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    assert bins, f"{name} not found"
    return str(bins[-1])


def logged_requests(s, key_hash: str) -> int:
    return s.sql("SELECT count(*) FROM spend_logs WHERE key_hash = decode(%s, 'hex')", key_hash)[0][0]


def key_spend(s, key_hash: str) -> float:
    return s.sql("SELECT spend FROM virtual_keys WHERE key_hash = decode(%s, 'hex')", key_hash)[0][0]


def test_restore_an_older_dump_and_restart_the_control_plane(make_stack, tmp_path):
    s = make_stack()
    dp = s.dataplane("dp-a")
    admin = s.admin()
    team = admin.ok("POST", "/team/new", json={"team_alias": "restored", "max_budget": 50})
    kept, resp = s.generate_key(team_id=team["team_id"], max_budget=10.0, key_alias="kept")
    kept_hash = resp.info.key_hash
    wait_until(lambda: accepted(dp, kept), what="key accepted")
    for _ in range(4):
        assert dp.chat(kept).status_code == 200
    wait_until(lambda: logged_requests(s, kept_hash) == 5, timeout=30, what="usage ingested")
    spend_at_dump = key_spend(s, kept_hash)
    assert spend_at_dump > 0

    dump = tmp_path / "routeiq.dump"
    subprocess.run([pg_tool("pg_dump"), "--format=custom", f"--file={dump}", s.db], check=True)

    # After the dump: a new key and more spend, which the restore will take back.
    later, later_resp = s.generate_key(key_alias="after-dump")
    wait_until(lambda: accepted(dp, later), what="later key accepted")
    for _ in range(3):
        assert dp.chat(kept).status_code == 200
    wait_until(lambda: logged_requests(s, kept_hash) == 8, timeout=30, what="later usage ingested")
    assert key_spend(s, kept_hash) > spend_at_dump

    # The runbook: stop the control plane, drop, restore, start it with the same salt key.
    s.cp.stop()
    name = s.db.rsplit("/", 1)[1]
    admin_url = os.environ["ROUTEIQ_TEST_DATABASE_URL"]
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(f"DROP DATABASE {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    subprocess.run([pg_tool("pg_restore"), "--no-owner", f"--dbname={s.db}", str(dump)], check=True)
    assert key_spend(s, kept_hash) == pytest.approx(spend_at_dump, rel=1e-12)
    assert s.sql("SELECT count(*) FROM virtual_keys WHERE key_alias = 'after-dump'")[0][0] == 0
    s.cp.start()

    # The running data plane drops what the restore took back, keeps the old key...
    wait_until(lambda: dp.chat(later).status_code == 401, timeout=20, what="the later key gone from the data plane")
    info = admin.ok("GET", "/key/info", params={"key": kept})["info"]
    assert info["spend"] == pytest.approx(spend_at_dump, rel=1e-9)
    assert info["team_id"] == team["team_id"]
    assert accepted(dp, kept)
    # ...and takes changes made after the restore (their versions are new to it).
    fresh, _ = s.generate_key(key_alias="after-restore")
    wait_until(lambda: accepted(dp, fresh), what="a key made after the restore")
    assert "database was restored" in dp.process.output()

    # A data plane restarted now, and a new one, agree with it.
    dp.stop()
    dp.start()
    other = s.dataplane("dp-b")
    for plane in (dp, other):
        assert plane.chat(later).status_code == 401
        assert accepted(plane, kept) and accepted(plane, fresh)
    # (Spend from those requests moves the version on: both catch up with the database.)
    latest = lambda: s.sql("SELECT max(version) FROM snapshot_deltas")[0][0]
    for plane in (dp, other):
        wait_until(lambda: plane.version() == latest(), what="the data plane at the database's version")

    # Spend after the restore counts from the restored figure.
    wait_until(lambda: key_spend(s, kept_hash) > spend_at_dump, timeout=30, what="spend after the restore")
    assert logged_requests(s, kept_hash) >= 6
