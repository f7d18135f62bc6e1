"""Attached mode end to end: control plane + PostgreSQL + nats-server + data planes.

Covers issue 3's tests: keys created and revoked through gRPC reach running data planes
(propagation measured); static stability with the control plane, NATS or PostgreSQL down;
NATS restarts with buffered usage; exact spend across a control-plane crash; a version gap
forcing a full re-fetch; budgets crossed and reset."""

import asyncio
import hashlib
import time

import grpc
import httpx
import openai
import psycopg
import pytest

from stack import DataPlane, accepted, total, wait_until

PRICE_IN, PRICE_OUT = 0.000001, 0.000002


def test_key_created_and_revoked_through_grpc_reaches_every_data_plane(make_stack):
    s = make_stack()
    dps = [s.dataplane("dp-a"), s.dataplane("dp-b")]
    key, resp = s.generate_key(key_alias="e2e", max_budget=10.0)
    assert key.startswith("sk-") and len(key) == 51
    assert resp.info.key_name == "sk-..." + key[-4:]
    created = time.monotonic()
    for dp in dps:
        wait_until(lambda: accepted(dp, key), what="key accepted")
    print(f"key creation reached both data planes in {1000 * (time.monotonic() - created):.1f} ms")

    # The official SDK works with the new key.
    client = openai.OpenAI(base_url=f"{dps[0].url}/v1", api_key=key, max_retries=0)
    out = client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content

    # Revoke (block) and then delete: both are rejected everywhere.
    s.grpc().SetKeyBlocked(s.pb.SetKeyBlockedRequest(ref=s.pb.KeyRef(key=key), blocked=True), timeout=5)
    revoked = time.monotonic()
    for dp in dps:
        wait_until(lambda: dp.chat(key).status_code == 401, what="blocked key rejected")
    print(f"revocation reached both data planes in {1000 * (time.monotonic() - revoked):.1f} ms")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hi"}])

    s.grpc().SetKeyBlocked(s.pb.SetKeyBlockedRequest(ref=s.pb.KeyRef(key=key), blocked=False), timeout=5)
    for dp in dps:
        wait_until(lambda: accepted(dp, key), what="unblocked key accepted")
    s.grpc().DeleteKeys(s.pb.DeleteKeysRequest(refs=[s.pb.KeyRef(key=key)]), timeout=5)
    for dp in dps:
        wait_until(lambda: dp.chat(key).status_code == 401, what="deleted key rejected")
        assert dp.version() == dps[0].version()

    # Every mutation is audited with who did it and the version it produced.
    rows = s.sql("SELECT action, actor, source_ip, snapshot_version FROM audit_log WHERE object_type = 'key' ORDER BY id")
    assert [r[0] for r in rows] == ["key.generate", "key.block", "key.unblock", "key.delete"]
    assert all(r[1] == "e2e-admin" or r[1] == "grpc" for r in rows)
    assert rows[0][2] == "127.0.0.1"
    assert [r[3] for r in rows] == sorted(r[3] for r in rows)
    # Only the hash is stored.
    stored = s.sql("SELECT count(*) FROM virtual_keys")[0][0]
    assert stored == 0
    assert s.sql("SELECT count(*) FROM audit_log WHERE after::text LIKE %s", f"%{key}%")[0][0] == 0


def test_grpc_errors_are_typed(make_stack, pb):
    s = make_stack()
    with pytest.raises(grpc.RpcError) as e:
        s.grpc().GetKey(s.pb.KeyRef(key="sk-does-not-exist"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        s.generate_key(budget_duration="30 parsecs")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "budget_duration" in e.value.details()
    # Values PostgreSQL refuses are the caller's fault, not an outage.
    with pytest.raises(grpc.RpcError) as e:
        s.generate_key(budget_duration="200000000d")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        s.generate_key(team_id="no-such-team")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    s.generate_key(key_alias="dup")
    with pytest.raises(grpc.RpcError) as e:
        s.generate_key(key_alias="dup")
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    listed = s.grpc().ListKeys(s.pb.ListKeysRequest(), timeout=5)
    assert listed.total == 1 and listed.keys[0].key_alias == "dup"


def test_static_stability_control_plane_nats_and_postgres_down(make_stack):
    s = make_stack()
    dp = s.dataplane("dp-a")
    key, _ = s.generate_key()
    wait_until(lambda: accepted(dp, key), what="key accepted")

    # PostgreSQL unreachable: the control plane is not ready and refuses mutations with
    # UNAVAILABLE; data planes are unaffected.
    name = s.db.rsplit("/", 1)[1]
    admin = s.db.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    try:
        wait_until(
            lambda: httpx.get(f"{s.cp.http}/health/readiness", timeout=5).status_code == 503,
            what="control plane not ready without PostgreSQL",
        )
        assert httpx.get(f"{s.cp.http}/health/readiness", timeout=5).json()["db"] == "unreachable"
        with pytest.raises(grpc.RpcError) as e:
            s.generate_key()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        for _ in range(20):
            assert dp.chat(key).status_code == 200
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")

    # The control plane killed: keys keep working, and a new data plane started meanwhile
    # bootstraps from the snapshot stored in NATS.
    s.cp.kill()
    for _ in range(20):
        assert dp.chat(key).status_code == 200
    late = s.dataplane("dp-late")
    assert accepted(late, key)
    assert late.chat("sk-not-a-key").status_code == 401

    # NATS down as well: both keep serving from their last snapshot, and say so.
    s.nats.stop()
    for d in (dp, late):
        assert d.chat(key).status_code == 200
        assert httpx.get(f"{d.url}/health/readiness", timeout=2).status_code == 200
        wait_until(
            lambda: httpx.get(f"{d.url}/health/readiness", timeout=2).json()["nats"] == "disconnected",
            what="nats disconnected",
        )
        assert d.chat(key).status_code == 200


def test_nats_restart_data_planes_catch_up_and_buffered_usage_arrives(make_stack):
    s = make_stack()
    dps = [s.dataplane("dp-a"), s.dataplane("dp-b")]
    key, _ = s.generate_key()
    for dp in dps:
        wait_until(lambda: accepted(dp, key), what="key accepted")

    s.nats.stop()
    sent = 0
    for dp in dps:
        for _ in range(25):
            assert dp.chat(key).status_code == 200
            sent += 1
    # A change made while NATS is down waits in the outbox.
    second, _ = s.generate_key()
    assert all(dp.chat(second).status_code == 401 for dp in dps)

    s.nats.start()
    for dp in dps:
        wait_until(lambda: accepted(dp, second), timeout=30, what="catch-up after NATS restart")
    sent += 2  # the two accepted() calls that succeeded above
    total = lambda: s.sql("SELECT count(*) FROM spend_logs WHERE key_hash IS NOT NULL")[0][0]
    # Every request made with a key (including the accepted() probes) reaches PostgreSQL.
    made = sum(int(dp.metric("routeiq_usage_events_published_total")) for dp in dps)
    wait_until(lambda: total() >= sent, timeout=30, what="buffered usage ingested")
    assert sum(dp.metric("routeiq_usage_events_dropped_total") for dp in dps) == 0
    wait_until(
        lambda: total() == sum(int(dp.metric("routeiq_usage_events_published_total")) for dp in dps)
        and made <= total(),
        timeout=30,
        what="published == ingested",
    )


def seconds_until(predicate, limit: float, what: str) -> float:
    """How long `predicate` took to hold, polled every 10 ms; fails past `limit` seconds."""
    started = time.monotonic()
    wait_until(predicate, timeout=limit, interval=0.01, what=what)
    return time.monotonic() - started


@pytest.mark.timeout(180)
def test_after_a_nats_restart_changes_and_usage_flow_within_a_second(make_stack):
    """Issue 15.2: NATS restarts with its storage (about 1 s down). A key created and a key
    blocked 1 s after NATS is back are honoured by every data plane within 1 s, and a
    request's usage reaches PostgreSQL within 1 s: the followers react to the reconnect,
    not to missed heartbeats. Three restarts in a row: stopped (SIGTERM), killed (SIGKILL),
    stopped."""
    s = make_stack()
    admin = s.admin()
    dps = [s.dataplane("dp-a"), s.dataplane("dp-b")]
    logged = lambda call: s.sql("SELECT count(*) FROM spend_logs WHERE request_id = %s", call)[0][0]
    for restart, how in enumerate(["stop", "kill", "stop"]):
        doomed = admin.ok("POST", "/key/generate", json={})["key"]
        for dp in dps:
            wait_until(lambda: accepted(dp, doomed), what="key accepted")
        getattr(s.nats, how)()
        time.sleep(1)
        s.nats.start()
        time.sleep(1)
        fresh = admin.ok("POST", "/key/generate", json={})["key"]
        took = seconds_until(lambda: all(accepted(dp, fresh) for dp in dps), 1.0, "new key everywhere")
        admin.ok("POST", "/key/block", json={"key": doomed})
        blocked = seconds_until(lambda: all(dp.chat(doomed).status_code == 401 for dp in dps), 1.0,
                                "blocked key refused everywhere")
        r = dps[0].chat(fresh)
        assert r.status_code == 200
        call = r.headers["x-litellm-call-id"]
        ingested = seconds_until(lambda: logged(call) == 1, 1.0, "the request's usage ingested")
        print(f"restart {restart} ({how}): new key {took:.3f} s, block {blocked:.3f} s, usage {ingested:.3f} s")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hang", [3, 12])
def test_a_hung_nats_costs_requests_nothing_and_changes_flow_when_it_resumes(make_stack, hang):
    """nats-server hangs (SIGSTOP: connections open, nothing answers) for `hang` seconds (3,
    and 12: longer than a JetStream call waits for its answer). Requests are answered as fast as before
    (usage waits in the data plane's buffer), and a key created meanwhile is honoured, and
    the hang's usage is in PostgreSQL, within 2 s of NATS resuming."""
    s = make_stack()
    dp = s.dataplane("dp-a")
    key, _ = s.generate_key()
    wait_until(lambda: accepted(dp, key), what="key accepted")

    def slowest(n):
        worst = 0.0
        for _ in range(n):
            started = time.monotonic()
            assert dp.chat(key).status_code == 200
            worst = max(worst, time.monotonic() - started)
        return worst

    before = slowest(20)
    s.nats.process.freeze(True)
    try:
        frozen_at = time.monotonic()
        during = slowest(20)
        created, _ = s.generate_key()
        time.sleep(max(0.0, hang - (time.monotonic() - frozen_at)))
        during = max(during, slowest(5))
    finally:
        s.nats.process.freeze(False)
    resumed = time.monotonic()
    honoured = seconds_until(lambda: accepted(dp, created), 2.0, "a key made during the hang")
    logged = lambda: s.sql("SELECT count(*) FROM spend_logs")[0][0]
    sent = 1 + 20 + 20 + 5 + 1  # accepted() probes that succeeded, and the timed requests
    wait_until(lambda: logged() >= sent, timeout=max(0.1, 2.0 - (time.monotonic() - resumed)),
               what="the hang's usage within 2 s")
    ingested = time.monotonic() - resumed
    print(f"hang {hang} s: slowest request {before * 1000:.1f} ms before, {during * 1000:.1f} ms during; "
          f"key {honoured:.3f} s, usage {ingested:.3f} s after it resumed; "
          f"re-fetches {dp.metric('routeiq_snapshot_refetches_total'):.0f}")
    assert during < before + 0.1
    assert dp.metric("routeiq_usage_events_dropped_total") == 0
    # A publish whose acknowledgement the hang lost is the control plane's own delta when
    # it looks at the stream again: published again (deduplicated), no resync.
    assert dp.metric("routeiq_snapshot_refetches_total") == 0


@pytest.mark.timeout(180)
def test_nats_losing_its_storage_is_recovered(make_stack):
    """NATS comes back empty (no streams, no stored snapshot), three times in a row. Each
    time the control plane recreates the streams and a positioned full snapshot (whether its
    tick or the reconnect sees the loss first), the data plane notices the new stream and
    takes it, and a key created after NATS is back is honoured within 2 s of NATS coming
    back; later keys reach it as deltas on the new stream within 1 s, and a request's usage
    reaches PostgreSQL within 1 s (the usage stream and its consumer recreated)."""
    import shutil

    s = make_stack()
    dp = s.dataplane("dp-a")
    first, _ = s.generate_key()
    wait_until(lambda: accepted(dp, first), what="key accepted")
    keys = [first]
    for loss in range(3):
        s.nats.stop()
        shutil.rmtree(s.nats.dir / "store")
        s.nats.start()
        back = time.monotonic()
        assert all(accepted(dp, k) for k in keys)
        second, _ = s.generate_key()
        wait_until(lambda: accepted(dp, second), timeout=2.0, what="change after the reset")
        recovered = time.monotonic() - back
        third, _ = s.generate_key()
        delta = seconds_until(lambda: accepted(dp, third), 1.0, "deltas on the new stream")
        print(f"loss {loss}: recovered {recovered:.3f} s after NATS came back empty, next key {delta:.3f} s")
        assert recovered <= 2.0
        keys += [second, third]
        assert all(accepted(dp, k) for k in keys)
        # Usage flows into the recreated stream and its recreated consumer.
        r = dp.chat(third)
        assert r.status_code == 200
        call = r.headers["x-litellm-call-id"]
        ingested = seconds_until(lambda: s.sql("SELECT count(*) FROM spend_logs WHERE request_id = %s", call)[0][0] == 1,
                                 1.0, "usage after the loss")
        print(f"loss {loss}: a request's usage ingested in {ingested:.3f} s")
    late = s.dataplane("dp-late")
    assert all(accepted(late, k) for k in keys)


@pytest.mark.timeout(180)
def test_a_standby_control_plane_takes_over_publishing_at_once(make_stack):
    """Two control planes on one database and NATS: one leads the publisher, the other
    waits for its lock in PostgreSQL. The leader is killed (SIGKILL) or stopped (SIGTERM),
    three times, the two taking turns: a key created on the survivor right after reaches
    the data plane within 0.5 s (the lock passes as the leader's session ends; then the
    takeover's full snapshot and the delta), and the old leader comes back as the
    standby."""
    from stack import ControlPlane

    s = make_stack()
    standby = ControlPlane(s.tmp, s.db, s.nats.url, s.cp.config, name="controlplane-b")
    standby.start()
    channels = []
    try:
        dp = s.dataplane("dp-a")
        leads = lambda cp: httpx.get(f"{cp.http}/health/readiness", timeout=5).json()["publisher_leader"]
        wait_until(lambda: leads(s.cp), what="the first control plane leads")
        assert not leads(standby)

        def generate_key(cp):
            channel = grpc.insecure_channel(cp.grpc_target)
            channels.append(channel)
            r = s.pb_grpc.ControlPlaneStub(channel).GenerateKey(
                s.pb.GenerateKeyRequest(
                    actor=s.pb.Actor(id="e2e-admin", source_ip="127.0.0.1"),
                    fields=s.pb.KeyFields(),
                ),
                timeout=5,
            )
            return r.key

        leader, waiting = s.cp, standby
        for turn, how in enumerate(["kill", "stop", "kill"]):
            getattr(leader, how)()
            gone = time.monotonic()
            key = generate_key(waiting)
            took = seconds_until(lambda: accepted(dp, key), 0.5, f"key after the leader's {how}")
            print(f"turn {turn} ({how}): key honoured {took:.3f} s after, "
                  f"{time.monotonic() - gone:.3f} s after the leader went")
            assert leads(waiting)
            leader.start()
            assert not leads(leader)
            leader, waiting = waiting, leader
        # A key created on the standby is published by the leader.
        key = generate_key(waiting)
        seconds_until(lambda: accepted(dp, key), 1.0, "key created on the standby")
    finally:
        for c in channels:
            c.close()
        standby.stop()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own, to stop and crash under a stack."""
    from stack import Postgres

    pg = Postgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.close()


def stack_on(pg, make_stack):
    """A stack on `pg`, its admin API (at its default deadline, 5 s: past the control
    plane's 2 s wait for a connection), a data plane, and a key it honours."""
    from stack import fresh_database

    s = make_stack(db=fresh_database(pg.url()))
    admin = s.admin(timeout_ms=5000)
    dp = s.dataplane("dp-a")
    key, _ = s.generate_key()
    wait_until(lambda: accepted(dp, key), what="key accepted")
    return s, admin, dp, key


@pytest.mark.timeout(240)
def test_the_control_plane_recovers_from_postgres_restarts(own_postgres, make_stack):
    """PostgreSQL restarts under the control plane, three times: stopped cleanly (`fast`:
    every session is disconnected) or crashed (`immediate`: recovery at the next start).
    While it is down the control plane reports not ready and refuses changes with
    UNAVAILABLE within 2 s (its pool's wait for a connection; the admin API's 503 names the
    database), the data plane serves, and its usage waits in NATS. Once PostgreSQL is
    back the control plane is ready again within 2 s, every request made during the outage
    is in spend_logs once within 3 s, and a key created then reaches the data plane within
    2 s (the publisher took its lock again)."""
    pg = own_postgres
    s, admin, dp, key = stack_on(pg, make_stack)
    readiness = lambda: httpx.get(f"{s.cp.http}/health/readiness", timeout=5)
    logged = lambda: s.sql("SELECT count(*), count(DISTINCT request_id) FROM spend_logs")[0]
    published = lambda: int(dp.metric("routeiq_usage_events_published_total"))
    wait_until(lambda: logged()[0] == published(), what="usage ingested before the outage")
    keys = [key]
    for turn, mode in enumerate(["fast", "immediate", "fast"]):
        pg.stop(mode)
        wait_until(lambda: readiness().status_code == 503, what="control plane not ready")
        assert readiness().json()["db"] == "unreachable"
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            s.generate_key()
        refused = time.monotonic() - started
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert refused <= 2.5
        r = admin.call("POST", "/key/generate", json={})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["message"] == "the control plane's database is unavailable; retry later"
        for _ in range(10):
            assert dp.chat(key).status_code == 200
        made = published()  # the outage's requests among them
        pg.start()
        back = time.monotonic()
        ready = seconds_until(lambda: readiness().status_code == 200, 2.0, "control plane ready again")
        assert readiness().json()["db"] == "connected"
        wait_until(lambda: logged()[0] >= made, timeout=max(0.1, 3.0 - (time.monotonic() - back)),
                   what="the outage's usage within 3 s")
        ingested = time.monotonic() - back
        fresh, _ = s.generate_key()
        made_at = time.monotonic()
        honoured = seconds_until(lambda: accepted(dp, fresh), 2.0, "a key made after the restart")
        since = made_at + honoured - back
        print(f"restart {turn} ({mode}): refused in {refused:.3f} s; after PostgreSQL was back: ready "
              f"{ready:.3f} s, the outage's usage in {ingested:.3f} s, a new key honoured {honoured:.3f} s "
              f"after it was made ({since:.3f} s)")
        keys.append(fresh)
        assert all(accepted(dp, k) for k in keys)
    wait_until(lambda: logged()[0] == published(), what="every event ingested")
    rows, distinct = logged()
    assert rows == distinct == published()
    assert dp.metric("routeiq_usage_events_dropped_total") == 0


@pytest.mark.timeout(120)
def test_a_hung_postgres_costs_the_data_plane_nothing(own_postgres, make_stack):
    """PostgreSQL hangs (every server process stopped: connections stay open, nothing
    answers). The data plane serves; the control plane reports not ready within its
    readiness probe's 2 s; a change is refused with 503 after the pool's 2 s wait for a
    connection (sqlx checks an idle one before handing it out). Once PostgreSQL runs again, a
    new key is honoured within a second and the hang's usage is in spend_logs, once, within
    3 s (batches that failed are redelivered a second later, on the same consumer)."""
    pg = own_postgres
    s, admin, dp, key = stack_on(pg, make_stack)
    readiness = lambda: httpx.get(f"{s.cp.http}/health/readiness", timeout=10)
    pg.freeze(True)
    try:
        started = time.monotonic()
        r = readiness()
        probe = time.monotonic() - started
        assert r.status_code == 503 and r.json()["db"] == "unreachable", r.text
        assert probe <= 2.5, probe
        for _ in range(20):
            assert dp.chat(key).status_code == 200
        started = time.monotonic()
        r = admin.call("POST", "/key/generate", json={})
        refused = time.monotonic() - started
        print(f"hung: readiness {probe:.3f} s, change refused {refused:.3f} s")
        assert r.status_code == 503 and refused <= 2.5, (refused, r.text)
        assert r.json()["error"]["message"] == "the control plane's database is unavailable; retry later"
    finally:
        pg.freeze(False)
    back = time.monotonic()
    logged = lambda: s.sql("SELECT count(*), count(DISTINCT request_id) FROM spend_logs")[0]
    published = lambda: int(dp.metric("routeiq_usage_events_published_total"))
    made = published()  # the hang's requests among them: publishing needs no PostgreSQL
    ingested = seconds_until(lambda: logged()[0] >= made, 3.0, "the hang's usage ingested")
    fresh = admin.ok("POST", "/key/generate", json={})["key"]
    honoured = seconds_until(lambda: accepted(dp, fresh), 1.0, "a key after the hang")
    assert readiness().status_code == 200
    print(f"after: usage {ingested:.3f} s after the hang, a new key honoured {honoured:.3f} s after it was made")
    wait_until(lambda: logged()[0] == published(), what="every event ingested")
    assert logged() == (published(), published())


def test_usage_with_text_postgresql_cannot_store_as_sent_is_ingested_and_charged(make_stack):
    """A client's `user` reaches PostgreSQL as the event's end user, and the model group as
    the client named it. A NUL character (which a `text` value cannot hold) and a 5,000-byte
    value (an index row must fit a page) would make PostgreSQL refuse the whole batch at
    every redelivery: usage and spend would stop. The control plane stores them cleaned (no
    NUL, at most 1,024 bytes), so every request is charged, the next ones too."""
    import os as _os

    s = make_stack()
    dp = s.dataplane("dp-a")
    key, _ = s.generate_key(max_budget=100.0)
    wait_until(lambda: accepted(dp, key), what="key accepted")
    long_user = _os.urandom(2500).hex()  # 5,000 characters that do not compress

    def chat(user):
        r = httpx.post(f"{dp.url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "priced", "user": user, "messages": [{"role": "user", "content": "hi"}]},
                       timeout=5)
        assert r.status_code == 200, r.text
        return r.headers["x-litellm-call-id"]

    calls = {chat("a\u0000b"): "ab", chat(long_user): long_user[:1024], chat("plain"): "plain"}
    rows = lambda: dict(s.sql("SELECT request_id, end_user FROM spend_logs WHERE request_id = ANY(%s)", list(calls)))
    wait_until(lambda: len(rows()) == 3, timeout=5, what="the three requests' usage")
    assert rows() == calls
    wait_until(lambda: s.sql("SELECT count(*) FROM spend_logs")[0][0] == dp.metric("routeiq_usage_events_published_total"),
               what="every event ingested")
    (spend, logged), = s.sql("SELECT k.spend, (SELECT sum(cost) FROM spend_logs l WHERE l.key_hash = k.key_hash) "
                            "FROM virtual_keys k WHERE k.max_budget = 100")
    assert spend == pytest.approx(logged) and spend > 0
    assert int(httpx.get(f"{s.cp.http}/metrics", timeout=5).text.count("routeiq_usage_events_rejected_total 0")) == 1


def test_a_control_plane_started_before_postgres_waits_for_it(own_postgres, make_stack):
    """The control plane starts while its PostgreSQL is down and comes up 3 s later (as in
    a compose file or a pod starting side by side): it waits, retrying every second, and
    is ready and publishing within about a second of PostgreSQL accepting connections."""
    import threading

    from stack import fresh_database

    pg = own_postgres
    s = make_stack(db=fresh_database(pg.url()), start=False)
    pg.stop()
    later = threading.Timer(3.0, pg.start)
    later.start()
    try:
        started = time.monotonic()
        s.cp.start()
        wait_until(lambda: httpx.get(f"{s.cp.http}/health/readiness", timeout=5).status_code == 200,
                   timeout=10, what="ready")
        took = time.monotonic() - started
    finally:
        later.join()
    print(f"ready {took:.3f} s after starting, PostgreSQL up after 3 s")
    assert 3.0 <= took <= 5.0
    dp = s.dataplane("dp-a")
    key, _ = s.generate_key()
    wait_until(lambda: accepted(dp, key), what="key accepted")
    assert "does not let the control plane in yet" in s.logs_full()


def test_spend_is_exact_across_a_control_plane_crash(make_stack):
    s = make_stack()
    dp = s.dataplane("dp-a")
    key, resp = s.generate_key(max_budget=1000.0)
    wait_until(lambda: accepted(dp, key), what="key accepted")
    key_hash = resp.info.key_hash
    expected = 0.0
    requests = 0

    def send(n):
        nonlocal expected, requests
        for i in range(n):
            r = dp.chat(key, content="word " * (i % 7 + 1))
            assert r.status_code == 200
            u = r.json()["usage"]
            expected += u["prompt_tokens"] * PRICE_IN + u["completion_tokens"] * PRICE_OUT
            requests += 1

    # The probe in accepted() spent too: account for it from the spend log below.
    send(150)
    s.cp.kill()
    send(100)
    s.cp.start()
    send(150)

    logged = lambda: s.sql("SELECT count(*), COALESCE(sum(cost), 0) FROM spend_logs WHERE key_hash = decode(%s, 'hex')", key_hash)[0]
    wait_until(lambda: logged()[0] >= requests + 1, timeout=30, what="all usage ingested")
    time.sleep(1)  # anything double-counted would show up now
    count, logged_cost = logged()
    assert count == requests + 1
    probe = s.sql(
        "SELECT cost FROM spend_logs WHERE key_hash = decode(%s, 'hex') ORDER BY started_at LIMIT 1", key_hash
    )[0][0]
    assert logged_cost == pytest.approx(expected + probe, rel=1e-9)
    key_spend = s.sql("SELECT spend FROM virtual_keys WHERE key_hash = decode(%s, 'hex')", key_hash)[0][0]
    assert key_spend == pytest.approx(logged_cost, rel=1e-9)
    daily = s.sql("SELECT sum(requests), sum(spend) FROM daily_spend WHERE key_hash = decode(%s, 'hex')", key_hash)[0]
    assert daily[0] == count and daily[1] == pytest.approx(logged_cost, rel=1e-9)


def test_version_gap_triggers_a_full_refetch(make_stack):
    # Full snapshots only when a publisher takes over, so the stored one stays old.
    s = make_stack(cp_args=["--snapshot-interval", "3600", "--snapshot-every", "1000000"])
    # The leader's full snapshot is written when it takes over, which may come after the
    # control plane answers: the keys must come after it, or it holds them and there is
    # no gap to see.
    stored = lambda: httpx.get(f"{s.cp.http}/health/readiness", timeout=5).json()
    wait_until(lambda: stored()["publisher_leader"] and stored()["snapshot_version"] > 0,
               what="the leader's full snapshot")
    first, _ = s.generate_key()
    second, _ = s.generate_key()
    wait_until(
        lambda: s.sql("SELECT count(*) FROM snapshot_deltas WHERE published_at IS NULL")[0][0] == 0,
        what="deltas published",
    )
    seq = s.sql("SELECT stream_seq FROM snapshot_deltas ORDER BY version DESC OFFSET 1 LIMIT 1")[0][0]

    async def delete(seq):
        import nats

        nc = await nats.connect(s.nats.url)
        js = nc.jetstream()
        await js.delete_msg("ROUTEIQ_DELTAS", seq)
        await nc.close()

    # The first key's delta disappears from the stream: a data plane starting from the
    # stored (older) snapshot sees version V+2 after V.
    asyncio.run(delete(seq))
    dp = s.dataplane("dp-gap")
    wait_until(lambda: dp.metric("routeiq_snapshot_refetches_total") >= 1, what="re-fetch after the gap")
    assert dp.chat(first).status_code == 401  # still on the old state, serving
    # A new leader writes a fresh full snapshot; the waiting data plane takes it.
    s.cp.stop()
    s.cp.start()
    wait_until(lambda: accepted(dp, first) and accepted(dp, second), what="state from the new snapshot")
    assert "snapshot version gap" in dp.process.output()


@pytest.mark.timeout(120)
def test_messages_on_the_delta_stream_that_are_not_deltas_are_refused_and_counted(make_stack):
    """Bytes that are not a `SnapshotDelta` land on the delta stream. Without a delta's
    message id they are not the publisher's: the data plane refuses and counts them
    (`routeiq_snapshot_updates_rejected_total`), keeps serving, and the next change
    reaches it, even after the control plane restarted with that message last on the
    stream (it is no delta the database lacks); so is one whose id names a later version.
    With an id naming the next version, that change cannot be read: it keeps serving its
    last good state and takes the next full snapshot (the control plane writes one every
    second here, once it is behind)."""
    import nats

    s = make_stack(cp_args=["--snapshot-interval", "1"])
    dp = s.dataplane("dp-a")
    key, _ = s.generate_key()
    wait_until(lambda: accepted(dp, key), what="key accepted")

    async def publish(headers):
        nc = await nats.connect(s.nats.url)
        await nc.jetstream().publish("routeiq.snapshot.delta", b"\xff\xffnot a delta", headers=headers)
        await nc.close()

    rejected = lambda: dp.metric("routeiq_snapshot_updates_rejected_total")
    refetches = lambda: dp.metric("routeiq_snapshot_refetches_total")
    assert rejected() == 0
    before = refetches()
    asyncio.run(publish(None))
    wait_until(lambda: rejected() == 1, what="the foreign message refused")
    # The control plane restarts with the foreign message last on the stream: it is not a
    # delta the database lacks (no resync), and publishing goes on.
    s.cp.stop()
    s.cp.start()
    second, _ = s.generate_key()
    took = seconds_until(lambda: accepted(dp, second), 2.0, "the next change")
    assert refetches() == before
    assert accepted(dp, key)

    # A stray id naming a later version is skipped too (the next readable delta would show
    # a gap); one naming the next version is that change, unreadable: re-fetch.
    asyncio.run(publish({"Nats-Msg-Id": f"delta-{dp.version() + 1000}"}))
    wait_until(lambda: rejected() == 2, what="the stray id refused")
    assert refetches() == before
    published = lambda: httpx.get(f"{s.cp.http}/health/readiness", timeout=5).json()["published_version"]
    wait_until(lambda: dp.version() == published(), what="the data plane at the published version")
    asyncio.run(publish({"Nats-Msg-Id": f"delta-{dp.version() + 1}"}))
    wait_until(lambda: rejected() == 3, what="the unreadable delta refused")
    wait_until(lambda: refetches() > before, what="a re-fetch")
    assert accepted(dp, key) and accepted(dp, second)
    third, _ = s.generate_key()
    # JetStream drops the real delta of that version as a duplicate of the unreadable one's
    # id: the change arrives in the next full snapshot, written once the control plane is
    # behind and a second passed since the last one, read by a data plane polling at most a
    # second apart.
    recovered = seconds_until(lambda: accepted(dp, third), 3.5, "the next full snapshot")
    print(f"next change after a foreign message {took:.3f} s; after an unreadable delta {recovered:.3f} s")
    fourth, _ = s.generate_key()
    seconds_until(lambda: accepted(dp, fourth), 1.0, "deltas again")
    assert rejected() == 3


def test_budget_crossed_then_reset(make_stack):
    s = make_stack(cp_args=["--reset-interval", "1"])
    dp = s.dataplane("dp-a")
    # Each request costs ~25 µ$ (mock usage); the budget is gone after the first one.
    key, _ = s.generate_key(max_budget=0.000001, budget_duration="3s")
    wait_until(lambda: accepted(dp, key), what="key accepted")
    r = wait_until(lambda: (lambda r: r if r.status_code == 429 else None)(dp.chat(key)), what="budget enforced")
    assert r.json()["error"]["type"] == "budget_exceeded"
    # The window passes, the reset goes out as a delta, and the key works again.
    wait_until(lambda: accepted(dp, key), timeout=15, what="budget reset")
    assert s.sql("SELECT count(*) FROM audit_log WHERE action = 'budget.reset'")[0][0] >= 1


def test_control_plane_readiness_tracks_postgres_and_nats(make_stack):
    s = make_stack()
    nats_up = lambda: total(httpx.get(f"{s.cp.http}/metrics", timeout=5).text, "routeiq_controlplane_nats_connected")
    r = httpx.get(f"{s.cp.http}/health/readiness", timeout=5)
    assert r.status_code == 200 and r.json()["db"] == "connected" and r.json()["nats"] == "connected"
    assert nats_up() == 1
    assert httpx.get(f"{s.cp.http}/health/liveliness", timeout=5).status_code == 200
    s.nats.stop()
    wait_until(lambda: httpx.get(f"{s.cp.http}/health/readiness", timeout=5).status_code == 503, what="not ready")
    assert httpx.get(f"{s.cp.http}/health/readiness", timeout=5).json()["nats"] == "disconnected"
    assert nats_up() == 0
    s.nats.start()
    wait_until(lambda: httpx.get(f"{s.cp.http}/health/readiness", timeout=5).status_code == 200, what="ready again")
    assert nats_up() == 1


def test_control_plane_metrics_follow_publishing_ingestion_the_pool_and_resets(make_stack):
    s = make_stack(cp_args=["--reset-interval", "1"])
    dp = s.dataplane("dp-a")
    scrape = lambda: httpx.get(f"{s.cp.http}/metrics", timeout=5).text
    key, _ = s.generate_key(max_budget=10.0, budget_duration="2s")
    wait_until(lambda: accepted(dp, key), what="key accepted")
    for _ in range(3):
        assert dp.chat(key).status_code == 200

    # Publishing: the version the data plane serves (once it caught up with the spend deltas
    # that ingestion keeps adding), its stream position, one lag per delta.
    wait_until(lambda: total(scrape(), "routeiq_controlplane_published_version") == dp.version() >= 1,
               what="data plane at the published version")
    text = scrape()
    assert total(text, "routeiq_controlplane_publisher_leader") == 1
    assert total(text, "routeiq_controlplane_delta_sequence") >= 1
    lags = total(text, "routeiq_controlplane_publish_lag_seconds_count")
    assert lags >= 1
    assert 0 < total(text, "routeiq_controlplane_publish_lag_seconds_sum") / lags < 5

    # Ingestion: every event the data plane published (it publishes off the request path)
    # is written once, with its lag.
    wait_until(lambda: dp.metric("routeiq_usage_events_published_total") >= 4, what="events published")
    wait_until(lambda: total(scrape(), "routeiq_usage_events_ingested_total")
               == dp.metric("routeiq_usage_events_published_total"), what="events ingested")
    made = int(dp.metric("routeiq_usage_events_published_total"))
    text = scrape()
    assert total(text, "routeiq_usage_events_ingested_total") == made
    assert total(text, "routeiq_usage_ingest_lag_seconds_count") == made
    assert total(text, "routeiq_usage_ingest_lag_seconds_sum") / made < 5
    assert total(text, "routeiq_usage_ingest_pending") == 0
    assert total(text, "routeiq_usage_events_duplicate_total") == 0
    assert total(text, "routeiq_usage_events_rejected_total") == 0

    # The data plane's remaining budget of a key without resets: its max_budget minus every
    # request's cost (LiteLLM's gauge), as PostgreSQL has it once everything is ingested.
    steady, _ = s.generate_key(max_budget=10.0)
    wait_until(lambda: accepted(dp, steady), what="second key accepted")
    for _ in range(2):
        assert dp.chat(steady).status_code == 200
    hashed = hashlib.sha256(steady.encode()).hexdigest()
    wait_until(lambda: dp.metric("routeiq_usage_events_published_total") >= made + 3, what="events published")
    wait_until(lambda: total(scrape(), "routeiq_usage_events_ingested_total")
               == dp.metric("routeiq_usage_events_published_total"), what="every event ingested")
    spent = s.sql("SELECT sum(cost) FROM spend_logs WHERE key_hash = decode(%s, 'hex')", hashed)[0][0]
    assert spent > 0
    dp_text = httpx.get(f"{dp.url}/metrics", timeout=5).text
    assert abs(total(dp_text, "litellm_remaining_api_key_budget_metric", hashed_api_key=hashed) - (10.0 - spent)) < 1e-9
    assert total(dp_text, "litellm_api_key_max_budget_metric", hashed_api_key=hashed) == 10.0

    # The pool as it is at the scrape.
    assert total(text, "routeiq_controlplane_db_pool_max_connections") == 16
    open_ = total(text, "routeiq_controlplane_db_pool_connections")
    assert 1 <= open_ <= 16
    # The publisher's NOTIFY listener holds one.
    assert total(text, "routeiq_controlplane_db_pool_connections", state="in_use") >= 1

    # The key's 2 s budget window ends: one reset, by scope.
    wait_until(lambda: total(scrape(), "routeiq_controlplane_budget_resets_total", scope="key") >= 1,
               what="budget reset counted")
    text = scrape()
    assert total(text, "routeiq_controlplane_budget_resets_total", scope="team") == 0
    assert total(text, "routeiq_controlplane_budget_reset_failures_total") == 0


def test_control_plane_import_refuses_an_unknown_provider_prefix(make_stack, tmp_path):
    """The control plane's config import compiles models as the data plane does: an
    unknown prefix fails the import, naming the entry and the prefix."""
    import os
    import subprocess

    from stack import BIN_DIR, SALT_KEY

    s = make_stack(start=False)
    cfg = tmp_path / "unknown.yaml"
    cfg.write_text("model_list:\n  - model_name: g\n    litellm_params:\n"
                   "      model: sagemaker/my-endpoint\n      api_key: sk-gemini-key\n")
    r = subprocess.run(
        [str(BIN_DIR / "routeiq-controlplane"), "--database-url", s.db, "--nats", s.nats.url,
         "--config", str(cfg), "--once"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, ROUTEIQ_SALT_KEY=SALT_KEY))
    assert r.returncode != 0, r.stderr
    assert "model_list[0].litellm_params.model" in r.stderr and "unknown provider `sagemaker`" in r.stderr, r.stderr
    assert "sk-gemini-key" not in r.stderr
    assert s.sql("SELECT count(*) FROM model_deployments")[0][0] == 0


def test_a_usage_stream_larger_than_the_nats_store_is_refused_naming_the_flag(make_stack, tmp_path):
    """JetStream refuses a stream reservation past its file store: the control plane says
    which flag makes the usage stream fit, and starts with it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from conftest import Process, free_port, wait_http
    from stack import BIN_DIR, SALT_KEY

    s = make_stack(start=False)
    port = free_port()
    conf = tmp_path / "small.conf"
    conf.write_text(f'port: {port}\nhost: 127.0.0.1\njetstream {{ store_dir: "{tmp_path / "js"}", max_file_store: 64MB }}\n')
    nats = Process([str(Path(sys.executable).parent / "nats-server"), "-c", str(conf)], tmp_path / "small-nats.log")
    try:
        wait_until(lambda: "Server is ready" in nats.output(), what="nats-server ready")
        args = [str(BIN_DIR / "routeiq-controlplane"), "--database-url", s.db, "--nats", f"nats://127.0.0.1:{port}",
                "--grpc-listen", f"127.0.0.1:{free_port()}", "--http-listen", f"127.0.0.1:{free_port()}"]
        env = dict(os.environ, ROUTEIQ_SALT_KEY=SALT_KEY, ROUTEIQ_USAGE_STREAM_BYTES=str(1024 ** 3))
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env)
        assert r.returncode != 0
        assert "--usage-stream-bytes" in r.stderr and "insufficient storage" in r.stderr, r.stderr
        http = args[-1]
        cp = Process(args, tmp_path / "cp-small.log", env=dict(env, ROUTEIQ_USAGE_STREAM_BYTES=str(16 * 1024 ** 2)))
        try:
            wait_http(f"http://{http}/health/readiness", cp.proc)
        finally:
            cp.stop()
    finally:
        nats.stop()


def test_a_stopping_data_plane_waits_for_its_usage_to_be_acknowledged(make_stack):
    """NATS is down while a data plane answers three requests, so their usage events wait
    in its buffer. The data plane is told to stop (SIGTERM) and NATS comes back a second
    later: before it exits, the data plane publishes them, and their spend reaches
    PostgreSQL."""
    import threading

    s = make_stack()
    dp = s.dataplane("dp-stopping")
    key, _ = s.generate_key()
    wait_until(lambda: accepted(dp, key), what="key accepted")
    s.nats.stop()
    ids = []
    for _ in range(3):
        r = dp.chat(key)
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-litellm-call-id"])
    stopping = threading.Thread(target=dp.stop)
    stopping.start()
    time.sleep(1)
    s.nats.start()
    stopping.join(timeout=15)
    assert not stopping.is_alive()
    logged = lambda: s.sql("SELECT count(*) FROM spend_logs WHERE request_id = ANY(%s)", ids)[0][0]
    wait_until(lambda: logged() == 3, timeout=15, what="the three requests' spend")
    log = (dp.dir / "dp-stopping.log").read_text()
    assert "before exit" not in log, log


@pytest.mark.timeout(120)
def test_usage_past_the_buffer_is_counted_and_a_stop_with_nats_gone_names_what_is_lost(make_stack):
    """A data plane with room for two queued usage events (`--usage-buffer 2`) answers six
    requests while NATS is down: every request succeeds, the events past the buffer and
    the batch its publisher holds are dropped and counted, and when NATS returns every
    event not counted as dropped reaches PostgreSQL once. Then NATS goes away for good and
    the data plane is stopped: it exits within its grace period (1 s) plus the usage wait
    (5 s), with status 0, logging how many events were lost."""
    s = make_stack()
    dp = DataPlane(s.tmp, s.nats.url, "dp-small", ["--usage-buffer", "2"])
    dp.start()
    s.dps.append(dp)
    key, _ = s.generate_key()
    wait_until(lambda: accepted(dp, key), what="key accepted")
    logged = lambda: s.sql("SELECT count(*), count(DISTINCT request_id) FROM spend_logs")[0]
    published = lambda: int(dp.metric("routeiq_usage_events_published_total"))
    wait_until(lambda: published() >= 1 and logged()[0] == published(), what="the first event ingested")
    before = published()

    s.nats.stop()
    sent = 6
    for _ in range(sent):
        assert dp.chat(key).status_code == 200
    dropped = int(dp.metric("routeiq_usage_events_dropped_total"))
    # Two wait in the buffer and the publisher holds at least one: at most three dropped.
    assert 1 <= dropped <= sent - 3, dropped
    s.nats.start()
    wait_until(lambda: published() == before + sent - dropped, what="the kept events published")
    wait_until(lambda: logged()[0] == published(), what="the kept events ingested")
    assert logged() == (published(), published())
    assert int(dp.metric("routeiq_usage_events_dropped_total")) == dropped

    s.nats.stop()
    for _ in range(2):
        assert dp.chat(key).status_code == 200
    proc = dp.process.proc
    started = time.monotonic()
    proc.terminate()
    code = proc.wait(timeout=15)
    took = time.monotonic() - started
    dp.process.handle.close()
    dp.process = None
    print(f"stopped with NATS gone in {took:.3f} s")
    assert code == 0
    assert 5.0 <= took <= 7.0, took
    log = (s.tmp / "dp-small.log").read_text(errors="replace")
    lost = [line for line in log.splitlines() if "usage events not acknowledged by JetStream before exit" in line]
    assert len(lost) == 1 and "left=2" in lost[0], lost

