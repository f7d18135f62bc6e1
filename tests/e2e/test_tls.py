"""Every connection of the attached stack encrypted, end to end: PostgreSQL that accepts only
TLS (verify-full from the control plane), nats-server requiring client certificates from
the test CA (the control plane's and the data plane's), the control plane's gRPC with mTLS
(the admin API presents a client certificate) and its health listener over HTTPS, the data
plane and the admin API over HTTPS. Certificates come from a throwaway CA (tlsutil.py); a
second, rogue CA proves foreign certificates are refused. The data plane's certificate is
renewed on disk while it runs and served to new connections without a restart."""

import asyncio
import os
import re
import ssl
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import httpx
import openai
import psycopg
import pytest
from conftest import BIN_DIR, Process, free_port
from stack import SALT_KEY, STACK_CONFIG, STACK_MASTER_KEY, wait_until
from tlsutil import (
    CA,
    TlsNats,
    TlsPostgres,
    TlsRedis,
    client_context,
    common_name,
    peer_certificate,
    replace_file,
)

pytestmark = pytest.mark.timeout(180)

DP_ID = "dp-tls"


# ---- fixtures ----


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The test CA and every certificate of the stack, plus a rogue CA's client cert."""
    d = tmp_path_factory.mktemp("pki")
    ca = CA(d, "test")
    rogue = CA(d / "rogue", "rogue")
    dp_dir = d / "dataplane"  # the data plane's files, renewed in place by the reload test
    dp_dir.mkdir()
    return SimpleNamespace(
        dir=d,
        ca=ca.cert,
        issuer=ca,
        postgres=ca.issue("postgres", server=True),
        nats=ca.issue("nats", server=True),
        redis=ca.issue("redis", server=True),
        controlplane=ca.issue("controlplane", server=True),
        dataplane=ca.issue("dataplane", server=True, cn="dataplane-v1", out=dp_dir),
        # PKCS#1 (`RSA PRIVATE KEY`): the other key format the listeners take.
        admin=ca.issue("admin", server=True, key_kind="rsa-pkcs1"),
        admin_cp_client=ca.issue("admin-cp-client", client=True),
        cp_nats_client=ca.issue("controlplane-nats-client", client=True),
        dp_nats_client=ca.issue("dataplane-nats-client", client=True),
        rogue_ca=rogue.cert,
        rogue_client=rogue.issue("rogue-client", client=True),
    )


@pytest.fixture(scope="module")
def services(pki, tmp_path_factory, request):
    """PostgreSQL (TLS only) with the `routeiq` database, and nats-server (TLS, client
    certificates required). They need nothing from the Rust side."""
    d = tmp_path_factory.mktemp("services")
    failed_before = request.session.testsfailed
    pg = TlsPostgres(pki.postgres, pki.ca)
    nats = TlsNats(d, pki.nats, pki.ca)
    redis = TlsRedis(d, pki.redis, pki.ca)
    try:
        pg.start()
        with psycopg.connect(pg.url(), autocommit=True) as c:
            c.execute("CREATE DATABASE routeiq")
        nats.start()
        redis.start()
        yield SimpleNamespace(pg=pg, nats=nats, redis=redis, dir=d)
    finally:
        redis.stop()
        nats.stop()
        if request.session.testsfailed > failed_before:
            print(f"\n--- postgres log ---\n{pg.log()[-3000:]}")
            log = d / "nats.log"
            if log.exists():
                print(f"--- nats.log ---\n{log.read_text(errors='replace')[-3000:]}")
        pg.close()


class Stack(SimpleNamespace):
    def ctx(self, cert=None) -> ssl.SSLContext:
        return client_context(self.pki.ca, cert)

    def sql(self, query: str, *args):
        with psycopg.connect(self.services.pg.url("routeiq")) as c:
            return c.execute(query, args).fetchall()

    def admin_call(self, method: str, path: str, port: int | None = None, **kw) -> httpx.Response:
        return httpx.request(
            method, f"https://127.0.0.1:{port or self.admin_port}{path}",
            headers={"Authorization": f"Bearer {STACK_MASTER_KEY}"}, verify=self.ctx(), timeout=10, **kw,
        )

    def new_key(self) -> str:
        r = self.admin_call("POST", "/key/generate", json={"models": ["priced"]})
        assert r.status_code == 200, r.text
        return r.json()["key"]

    def chat(self, key: str, port: int | None = None) -> httpx.Response:
        return httpx.post(
            f"https://127.0.0.1:{port or self.dp_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "priced", "messages": [{"role": "user", "content": "hello over TLS"}]},
            verify=self.ctx(), timeout=5,
        )

    def accepted_key(self) -> str:
        """A new key, once the data plane accepts it."""
        key = self.new_key()
        wait_until(lambda: self.chat(key).status_code == 200, timeout=15, interval=0.05, what="key propagated")
        return key


def log_excerpt(text: str, limit: int = 4000) -> str:
    """The end of a log, Rust backtrace frames left out (the panic message stays)."""
    frame = re.compile(r"^\s+(\d+: |at /)")
    return "\n".join(line for line in text.splitlines() if not frame.match(line))[-limit:]


def wait_https(url: str, proc: Process, ctx: ssl.SSLContext, ok_only: bool = False, timeout: float = 30.0):
    """Waits for `url` to answer over HTTPS (with 200 if `ok_only`)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.proc.args[0]} exited with {proc.proc.returncode}:\n{log_excerpt(proc.output())}")
        try:
            r = httpx.get(url, verify=ctx, timeout=2)
            if not ok_only or r.status_code == 200:
                return r
            last = f"{r.status_code} {r.text}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not up in {timeout}s: {last}")


def start_admin(s, name: str, client_cert_args: list[str]) -> tuple[Process, int]:
    port = free_port()
    p = Process(
        [
            str(BIN_DIR / "routeiq-admin"),
            "--listen", f"127.0.0.1:{port}",
            "--controlplane", f"https://127.0.0.1:{s.grpc_port}",
            "--controlplane-ca", str(s.pki.ca),
            *client_cert_args,
            "--tls-cert", str(s.pki.admin.cert), "--tls-key", str(s.pki.admin.key),
            "--timeout-ms", "2000",
        ],
        s.dir / f"{name}.log",
        env=dict(os.environ, ROUTEIQ_LOG="info,routeiq_admin=debug"),
    )
    s.processes.append(p)
    wait_https(f"https://127.0.0.1:{port}/health/liveliness", p, s.ctx())
    return p, port


def start_dataplane(s, name: str, cert, extra=()) -> tuple[Process, int]:
    port = free_port()
    p = Process(
        [
            str(BIN_DIR / "routeiq-dataplane"),
            "--nats", s.services.nats.url,
            "--nats-tls-ca", str(s.pki.ca),
            "--nats-tls-cert", str(s.pki.dp_nats_client.cert),
            "--nats-tls-key", str(s.pki.dp_nats_client.key),
            "--tls-cert", str(cert.cert), "--tls-key", str(cert.key),
            "--redis-url", s.services.redis.url, "--redis-tls-ca", str(s.pki.ca),
            "--listen", f"127.0.0.1:{port}",
            "--threads", "1",
            "--dataplane-id", name,
            *extra,
        ],
        s.dir / f"{name}.log",
        env=dict(os.environ, ROUTEIQ_LOG="info,routeiq_dataplane=debug"),
    )
    s.processes.append(p)
    return p, port


@pytest.fixture(scope="module")
def tls_stack(pki, services, pb, tmp_path_factory, request):
    """The control plane, a data plane and the admin API, every listener and client on TLS."""
    d = tmp_path_factory.mktemp("tls-stack")
    s = Stack(pki=pki, services=services, dir=d, processes=[], pb=pb[0], pb_grpc=pb[1])
    failed_before = request.session.testsfailed
    try:
        cfg = d / "config.yaml"
        cfg.write_text(STACK_CONFIG)
        s.grpc_port, s.cp_http_port = free_port(), free_port()
        cp = Process(
            [
                str(BIN_DIR / "routeiq-controlplane"),
                "--database-url", services.pg.url("routeiq"),
                "--nats", services.nats.url,
                "--nats-tls-ca", str(pki.ca),
                "--nats-tls-cert", str(pki.cp_nats_client.cert),
                "--nats-tls-key", str(pki.cp_nats_client.key),
                "--config", str(cfg),
                "--grpc-listen", f"127.0.0.1:{s.grpc_port}",
                "--http-listen", f"127.0.0.1:{s.cp_http_port}",
                "--tls-cert", str(pki.controlplane.cert),
                "--tls-key", str(pki.controlplane.key),
                "--tls-client-ca", str(pki.ca),
            ],
            d / "controlplane.log",
            env=dict(os.environ, ROUTEIQ_SALT_KEY=SALT_KEY, ROUTEIQ_LOG="info"),
        )
        s.processes.append(cp)
        s.cp = cp
        # Ready: PostgreSQL (verify-full) and NATS (mTLS) both connected.
        wait_https(f"https://127.0.0.1:{s.cp_http_port}/health/readiness", cp, s.ctx(), ok_only=True)

        s.dp, s.dp_port = start_dataplane(s, DP_ID, pki.dataplane)
        wait_https(f"https://127.0.0.1:{s.dp_port}/health/liveliness", s.dp, s.ctx())

        s.admin, s.admin_port = start_admin(
            s, "admin",
            ["--controlplane-cert", str(pki.admin_cp_client.cert),
             "--controlplane-key", str(pki.admin_cp_client.key)],
        )
        # Ready: the admin API reached the control plane's gRPC with its client certificate.
        wait_https(f"https://127.0.0.1:{s.admin_port}/health/readiness", s.admin, s.ctx(), ok_only=True)
        yield s
    finally:
        for p in reversed(s.processes):
            p.stop()
        if request.session.testsfailed > failed_before:
            for p in s.processes:
                print(f"\n--- {p.log.name} ---\n{log_excerpt(p.output())}")


# ---- the services on their own ----


def test_postgres_accepts_only_verified_tls(pki, services):
    pg = services.pg
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(pg.url(sslmode="disable"), connect_timeout=5).close()
    assert "pg_hba.conf" in str(e.value) or "no encryption" in str(e.value), e.value
    # The server's certificate is checked: a root that did not sign it is refused.
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(f"postgres://postgres@127.0.0.1:{pg.port}/postgres?sslmode=verify-full"
                        f"&sslrootcert={pki.rogue_ca}", connect_timeout=5).close()
    assert "certificate verify failed" in str(e.value), e.value
    with psycopg.connect(pg.url("routeiq"), connect_timeout=5) as c:
        assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)


def test_control_plane_takes_postgres_tls_from_pgsslmode_and_pgsslrootcert(pki, services, tmp_path):
    """The Helm chart's way: a database URL without `sslmode`, and `PGSSLMODE=verify-full`
    with `PGSSLROOTCERT` naming the CA in the environment. The control plane migrates over
    verified TLS; with a root that did not sign the server's certificate it refuses to."""
    pg = services.pg
    with psycopg.connect(pg.url(), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS routeiq_env")
        c.execute("CREATE DATABASE routeiq_env")
    bare_url = f"postgres://postgres@127.0.0.1:{pg.port}/routeiq_env"

    def migrate(root: Path, name: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(ROUTEIQ_SALT_KEY=SALT_KEY, PGSSLMODE="verify-full", PGSSLROOTCERT=str(root))
        p = Process([str(BIN_DIR / "routeiq-controlplane"), "--once", "--database-url", bare_url],
                    tmp_path / f"{name}.log", env=env)
        try:
            code = p.proc.wait(timeout=60)
        finally:
            p.stop()
        return code, p.output()

    code, out = migrate(pki.rogue_ca, "rogue")
    assert code != 0, out
    assert "certificate" in out.lower(), out
    with psycopg.connect(pg.url("routeiq_env")) as c:
        assert c.execute("SELECT to_regclass('_sqlx_migrations')").fetchone() == (None,)

    code, out = migrate(pki.ca, "trusted")
    assert code == 0, out
    with psycopg.connect(pg.url("routeiq_env")) as c:
        applied = c.execute("SELECT count(*) FROM _sqlx_migrations WHERE success").fetchone()[0]
    assert applied > 0


async def nats_roundtrip(url: str, ctx: ssl.SSLContext) -> None:
    import nats

    async def quiet(_e):
        pass

    nc = await nats.connect(url, tls=ctx, allow_reconnect=False, max_reconnect_attempts=0,
                            connect_timeout=3, error_cb=quiet)
    try:
        await nc.flush(timeout=3)
    finally:
        await nc.close()


def test_nats_requires_a_client_certificate_from_the_ca(pki, services):
    url = services.nats.url
    asyncio.run(nats_roundtrip(url, client_context(pki.ca, pki.cp_nats_client)))  # the control
    # Refused in the handshake (the client sees the server's alert or the connection
    # dropped); the server says why.
    for refused in (client_context(pki.ca), client_context(pki.ca, pki.rogue_client)):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            asyncio.run(asyncio.wait_for(nats_roundtrip(url, refused), 10))
    log = services.nats.process.output()
    assert "client didn't provide a certificate" in log
    assert "certificate signed by unknown authority (CN=rogue-client" in log


# ---- the stack ----


def test_key_from_the_admin_api_works_through_the_data_plane_over_https(tls_stack):
    s = tls_stack
    key = s.new_key()
    assert key.startswith("sk-")
    http = httpx.Client(verify=s.ctx())
    client = openai.OpenAI(base_url=f"https://127.0.0.1:{s.dp_port}/v1", api_key=key, max_retries=0,
                           http_client=http)

    def answer():
        try:
            return client.chat.completions.create(model="priced", messages=[{"role": "user", "content": "hi"}])
        except openai.AuthenticationError:  # the key has not reached the data plane yet
            return None

    out = wait_until(answer, timeout=15, interval=0.05, what="key accepted over HTTPS")
    assert out.choices[0].message.content
    assert out.usage.total_tokens > 0
    http.close()


def test_data_plane_refuses_plain_http_and_untrusted_clients(tls_stack):
    s = tls_stack
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{s.dp_port}/health/liveliness", timeout=3)
    with pytest.raises(httpx.ConnectError) as e:
        httpx.get(f"https://127.0.0.1:{s.dp_port}/health/liveliness", timeout=3)  # system roots only
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value)
    # The same holds for the admin API; both answer when the test CA is trusted.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{s.admin_port}/health/liveliness", timeout=3)
    for port in (s.dp_port, s.admin_port):
        assert httpx.get(f"https://127.0.0.1:{port}/health/liveliness", verify=s.ctx(), timeout=3).status_code == 200
        assert common_name(peer_certificate(port, s.pki.ca, server_name="localhost"))  # DNS SAN too


def test_control_plane_grpc_requires_a_client_certificate(tls_stack):
    s = tls_stack
    target = f"127.0.0.1:{s.grpc_port}"
    ca = s.pki.ca.read_bytes()

    def version(creds):
        ch = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
        try:
            return s.pb_grpc.ControlPlaneStub(ch).GetSnapshotVersion(s.pb.GetSnapshotRequest(), timeout=5)
        finally:
            ch.close()

    good = s.pki.admin_cp_client
    assert version(grpc.ssl_channel_credentials(ca, good.key.read_bytes(), good.cert.read_bytes())).version >= 0
    rogue = s.pki.rogue_client
    for creds in (
        None,  # plaintext
        grpc.ssl_channel_credentials(root_certificates=ca),  # no client certificate
        grpc.ssl_channel_credentials(ca, rogue.key.read_bytes(), rogue.cert.read_bytes()),
    ):
        with pytest.raises(grpc.RpcError) as e:
            version(creds)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value

    # An admin API that trusts the control plane but has no client certificate gets no
    # answer from it: an OpenAI-shaped 5xx, while the one with a certificate works.
    _, port = start_admin(s, "admin-no-client-cert", [])
    r = s.admin_call("POST", "/key/generate", port=port, json={})
    assert 500 <= r.status_code < 600, r.text
    err = r.json()["error"]
    assert err["type"] in ("service_unavailable", "api_error") and err["message"], err
    assert err["code"] == str(r.status_code)
    assert s.admin_call("GET", "/health/readiness", port=port).status_code >= 500
    assert s.admin_call("POST", "/key/generate", json={}).status_code == 200

    # The health listener is HTTPS too, and needs no client certificate (probes have none).
    health = f"127.0.0.1:{s.cp_http_port}/health/readiness"
    r = httpx.get(f"https://{health}", verify=s.ctx(), timeout=5)
    assert r.status_code == 200 and r.json()["db"] == "connected" and r.json()["nats"] == "connected", r.text
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{health}", timeout=3)


def test_spend_flows_over_tls_nats_into_tls_postgres(tls_stack):
    s = tls_stack
    key = s.accepted_key()
    logged = lambda: s.sql("SELECT count(*) FROM spend_logs WHERE dataplane_id = %s", DP_ID)[0][0]
    before = logged()
    for _ in range(5):
        assert s.chat(key).status_code == 200
    wait_until(lambda: logged() >= before + 5, timeout=20, interval=0.1, what="spend ingested")
    # The control plane's own connections are encrypted (pg_hba allows nothing else).
    encrypted = s.sql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
        "WHERE datname = 'routeiq' AND ssl AND pid <> pg_backend_pid()"
    )[0][0]
    assert encrypted >= 1


def test_rate_limits_are_shared_through_redis_over_tls(tls_stack):
    s = tls_stack
    s.accepted_key()
    metrics = httpx.get(f"https://127.0.0.1:{s.dp_port}/metrics", verify=s.ctx(), timeout=5).text
    assert "routeiq_redis_up 1" in metrics.splitlines()
    # Redis really holds the data plane's state, over TLS (its port speaks nothing else).
    import socket

    def dbsize(wrap) -> bytes:
        with socket.create_connection(("127.0.0.1", s.services.redis.port), timeout=3) as raw:
            conn = wrap(raw)
            conn.sendall(b"*1\r\n$6\r\nDBSIZE\r\n")
            return conn.recv(64)

    answer = dbsize(lambda raw: s.ctx().wrap_socket(raw, server_hostname="127.0.0.1"))
    assert answer.startswith(b":") and int(answer[1:].strip()) > 0, answer
    try:
        plain = dbsize(lambda raw: raw)
    except OSError:
        plain = b""
    assert not plain.startswith(b":"), "plain TCP must get no Redis answer"


def served(port: int, ca: Path) -> str:
    """The CN a new TLS connection to `port` is served, or the error."""
    try:
        return common_name(peer_certificate(port, ca))
    except (OSError, ssl.SSLError) as e:
        return f"error: {e!r}"


def wait_served(port: int, ca: Path, cn: str, what: str) -> float:
    """Waits until new connections to `port` are served `cn`; the seconds it took. The files
    are checked every 2 s (`routeiq_service::tls`), and a check that met a half-renewed pair
    (a new key, the old certificate) keeps the last good one and loads the pair at the next
    check: at most 2 s after the last file changed, plus the reload, a handshake and this
    poll's 0.2 s (3 s here)."""
    started, seen = time.monotonic(), []

    def check():
        seen.append(served(port, ca))
        return seen[-1] == cn

    try:
        wait_until(check, timeout=3.0, interval=0.2, what=what)
    except TimeoutError as e:
        raise AssertionError(f"{what}: still served {seen[-1]!r}") from e
    return time.monotonic() - started


def test_data_plane_certificate_is_reloaded_without_a_restart(tls_stack):
    s = tls_stack
    files = s.pki.dataplane  # the files the data plane was started with
    first = peer_certificate(s.dp_port, s.pki.ca)
    assert common_name(first) == "dataplane-v1"
    key = s.accepted_key()
    keep = httpx.Client(verify=s.ctx(), timeout=5)  # a connection open across the renewal
    assert keep.get(f"https://127.0.0.1:{s.dp_port}/health/liveliness").status_code == 200

    # Renewed: a new key (SEC1 `EC PRIVATE KEY`) and certificate, renamed over the old files.
    renew = s.pki.dir / "renewed"
    renew.mkdir()
    v2 = s.pki.issuer.issue("dataplane-v2", server=True, key_kind="ec-sec1", out=renew)
    replace_file(files.key, v2.key.read_bytes())
    replace_file(files.cert, v2.cert.read_bytes())
    took = wait_served(s.dp_port, s.pki.ca, "dataplane-v2", "renewed certificate served")
    print(f"renewed certificate served after {took:.1f} s")
    second = peer_certificate(s.dp_port, s.pki.ca)
    assert second["serialNumber"] != first["serialNumber"]
    assert keep.get(f"https://127.0.0.1:{s.dp_port}/health/liveliness").status_code == 200
    assert s.chat(key).status_code == 200

    # A broken renewal: the last good certificate stays in service.
    replace_file(files.cert, b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    until = time.monotonic() + 5  # more than two checks of the files
    while time.monotonic() < until:
        assert served(s.dp_port, s.pki.ca) == "dataplane-v2"
        time.sleep(0.5)
    assert s.chat(key).status_code == 200
    assert s.dp.proc.poll() is None

    # Fixed: a certificate for the same key, only the certificate file replaced.
    v3 = s.pki.issuer.issue("dataplane-v3", server=True, key=v2.key, out=renew)
    replace_file(files.cert, v3.cert.read_bytes())
    wait_served(s.dp_port, s.pki.ca, "dataplane-v3", "certificate served after the broken one was fixed")
    assert s.chat(key).status_code == 200
    keep.close()


def test_data_plane_with_a_client_ca_requires_client_certificates(tls_stack):
    s = tls_stack
    cert = s.pki.issuer.issue("dataplane-mtls", server=True, out=s.dir)
    p, port = start_dataplane(s, "dp-mtls", cert, ["--tls-client-ca", str(s.pki.ca)])
    url = f"https://127.0.0.1:{port}/health/liveliness"
    wait_https(url, p, s.ctx(s.pki.admin_cp_client))
    assert httpx.get(url, verify=s.ctx(s.pki.admin_cp_client), timeout=3).status_code == 200
    for refused in (s.ctx(), s.ctx(s.pki.rogue_client)):
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=refused, timeout=3)
    p.stop()
