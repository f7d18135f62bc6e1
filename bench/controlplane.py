"""Control-plane benchmarks; run through bench/controlplane.sh (which starts PostgreSQL)."""

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

import grpc  # noqa: E402
import httpx  # noqa: E402
import psycopg  # noqa: E402

from stack import Stack, grpc_modules, wait_until  # noqa: E402


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def stack() -> Stack:
    """PostgreSQL database, nats-server, and a control plane not started yet."""
    return Stack(Path(tempfile.mkdtemp(prefix="riq-bench-")), start=False)


def rss_mb(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def propagation(n=100):
    pb, pb_grpc = grpc_modules(Path(tempfile.mkdtemp()))
    env = stack()
    try:
        env.cp.start()
        dps = [env.dataplane("dp-1"), env.dataplane("dp-2")]
        stub = pb_grpc.ControlPlaneStub(grpc.insecure_channel(env.cp.grpc_target))
        keys = [stub.GenerateKey(pb.GenerateKeyRequest(fields=pb.KeyFields())).key for _ in range(n)]
        clients = [httpx.Client(base_url=dp.url) for dp in dps]

        def status(c, key):
            return c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code

        for key in keys:
            for c in clients:
                wait_until(lambda: status(c, key) == 200, what="key accepted")
        times = []
        for key in keys:
            t0 = time.perf_counter()
            stub.SetKeyBlocked(pb.SetKeyBlockedRequest(ref=pb.KeyRef(key=key), blocked=True))
            pending = set(range(len(clients)))
            while pending:
                for i in list(pending):
                    if status(clients[i], key) == 401:
                        pending.discard(i)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"revocation reaching both of 2 data planes, {n} revocations (gRPC call included):")
        print(f"  p50 {pct(times, 50):.2f} ms  p90 {pct(times, 90):.2f} ms  p99 {pct(times, 99):.2f} ms  max {max(times):.2f} ms  mean {statistics.mean(times):.2f} ms")
    finally:
        env.close()


def log_field(text, marker, field):
    for line in text.splitlines():
        if marker in line and f"{field}=" in line:
            return int(line.split(f"{field}=")[1].split()[0])
    raise ValueError(f"{field} not found after {marker}")


def snapshot(n=1_000_000):
    env = stack()
    try:
        # Keys straight into PostgreSQL (a million gRPC calls would measure something else).
        t = time.perf_counter()
        cp = env.cp
        import subprocess

        subprocess.run(
            [str(Path(os.environ["ROUTEIQ_BIN_DIR"]) / "routeiq-controlplane"), "--database-url", env.db,
             "--config", str(cp.config), "--once"],
            env=dict(os.environ, ROUTEIQ_SALT_KEY="bench"), check=True, capture_output=True,
        )
        with psycopg.connect(env.db) as c:
            c.execute(
                """INSERT INTO virtual_keys (key_hash, key_name, models, max_budget, rpm_limit)
                   SELECT sha256(('sk-bench-' || i)::bytea), 'sk-...' || i, '{priced}', 100, 1000
                     FROM generate_series(1, %s) AS i""",
                (n,),
            )
        with psycopg.connect(env.db, autocommit=True) as c:
            # A table in service has its hint bits set and statistics; a fresh bulk load
            # has neither, and the first full read would pay for writing them.
            c.execute("VACUUM ANALYZE virtual_keys")
        print(f"{n} keys inserted (and vacuumed) in {time.perf_counter() - t:.1f} s")
        t0 = time.perf_counter()
        env.cp.start()
        wait_until(lambda: "full snapshot stored" in env.cp.process.output(), timeout=120, what="snapshot stored")
        stored_at = time.perf_counter()
        out = env.cp.process.output()
        build = log_field(out, "full snapshot stored", "build_ms")
        total = log_field(out, "full snapshot stored", "total_ms")
        size = log_field(out, "full snapshot stored", "bytes")
        t1 = time.perf_counter()
        dp = env.dataplane("dp-1")
        wait_until(lambda: httpx.get(f"{dp.url}/health/readiness").status_code == 200, timeout=120, what="dp ready")
        ready = time.perf_counter()
        dout = dp.process.output()
        fetch = log_field(dout, "full snapshot loaded", "fetch_ms")
        load = log_field(dout, "full snapshot loaded", "total_ms")
        assert dp.chat("sk-bench-777").status_code == 200
        pid = dp.process.proc.pid
        print(f"snapshot of {n} keys: {size / 1e6:.1f} MB encoded")
        print(f"  control plane: build {build} ms, store in NATS {total - build} ms (control plane start to stored: {1000 * (stored_at - t0):.0f} ms)")
        print(f"  data plane:    fetch {fetch} ms, decode+apply {load - fetch} ms; process start to serving {1000 * (ready - t1):.0f} ms")
        print(f"  end to end (build + store + fetch + apply): {(total + load) / 1000:.2f} s")
        print(f"  data plane RSS right after loading {rss_mb(pid):.0f} MB, peak {rss_mb(pid, 'VmHWM'):.0f} MB")
        with httpx.Client(base_url=dp.url) as c:
            for i in range(300):
                assert c.get("/v1/models", headers={"Authorization": f"Bearer sk-bench-{i + 1}"}).status_code == 200
                time.sleep(0.005)
        print(f"  data plane RSS after serving 300 requests {rss_mb(pid):.0f} MB")
    finally:
        env.close()


async def preload(url, n):
    import nats
    import routeiq_pb

    nc = await nats.connect(url)
    js = nc.jetstream()
    day_ms = int(time.time() * 1000)
    key = bytes.fromhex("ab" * 32)
    batch = 2000
    for start in range(0, n, batch):
        futs = []
        for i in range(start, min(n, start + batch)):
            ev = routeiq_pb.UsageEvent(
                request_id=f"bench-{i}", key_hash=key, model_group="priced", deployment_id="d",
                provider="mock", prompt_tokens=10, completion_tokens=20, cost=0.00005,
                latency_ms=3, status=200, started_at_ms=day_ms + i, dataplane_id="bench",
            )
            futs.append(js.publish("routeiq.usage.bench", ev.SerializeToString(), headers={"Nats-Msg-Id": ev.request_id}))
        await asyncio.gather(*futs)
    await nc.close()


def ingest(n=200_000):
    out = Path(tempfile.mkdtemp())
    grpc_modules(out)
    from routeiq.v1 import snapshot_pb2

    sys.modules["routeiq_pb"] = snapshot_pb2
    env = stack()
    try:
        env.cp.start()  # creates the streams and the consumer
        env.cp.stop()
        t = time.perf_counter()
        asyncio.run(preload(env.nats.url, n))
        print(f"{n} usage events queued in JetStream in {time.perf_counter() - t:.1f} s (control plane down)")
        t0 = time.perf_counter()
        env.cp.start()
        count = lambda: env.sql("SELECT count(*) FROM spend_logs")[0][0]
        wait_until(lambda: count() >= n, timeout=600, interval=0.05, what="all ingested")
        dt = time.perf_counter() - t0
        time.sleep(1)
        rows, total_requests = env.sql("SELECT (SELECT count(*) FROM spend_logs), (SELECT sum(requests) FROM daily_spend)")[0]
        assert rows == n and total_requests == n, (rows, total_requests)
        print(f"ingested {n} events in {dt:.2f} s from control-plane start: {n / dt:,.0f} events/s; rows {rows}, daily requests {total_requests} (none lost or doubled)")
    finally:
        env.close()


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    size = [int(sys.argv[2])] if len(sys.argv) > 2 else []
    if what in ("propagation", "all"):
        propagation(*size)
    if what in ("snapshot", "all"):
        snapshot(*size)
    if what in ("ingest", "all"):
        ingest(*size)
