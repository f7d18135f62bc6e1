"""The attached stack for end-to-end tests: a real PostgreSQL database (on the server
`scripts/test.sh` starts), a real nats-server with JetStream, the control plane and data
planes as processes, and a gRPC client generated from `proto/` at test time."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from conftest import BIN_DIR, ROOT, Process, free_port, wait_http

STACK_MASTER_KEY = "sk-stack-master"
SALT_KEY = "e2e-salt-key"

# Prices make spend non-zero: 1 µ$ per prompt token, 2 µ$ per completion token.
STACK_CONFIG = f"""
model_list:
  - model_name: priced
    litellm_params:
      model: mock/priced
    model_info:
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
  - model_name: other
    litellm_params:
      model: mock/other
general_settings:
  master_key: {STACK_MASTER_KEY}
  user_header_name: X-OpenWebUI-User-Email
"""


def grpc_modules(out: Path):
    """Generates the Python gRPC stubs for proto/routeiq/v1 into `out` and imports them."""
    from grpc_tools import protoc
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    proto_dir = ROOT / "proto" / "proto"
    files = [str(p.relative_to(proto_dir)) for p in (proto_dir / "routeiq" / "v1").glob("*.proto")]
    rc = protoc.main(
        ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    )
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    import types

    from routeiq.v1 import controlplane_pb2, controlplane_pb2_grpc, snapshot_pb2  # noqa: E402

    # One namespace for the messages of both files (Deployment lives in snapshot.proto).
    messages = types.SimpleNamespace(**{**vars(snapshot_pb2), **vars(controlplane_pb2)})
    return messages, controlplane_pb2_grpc


def fresh_database(admin: str | None = None) -> str:
    """A new database on the server of `admin` (an admin URL), by default the one
    `scripts/test.sh` starts."""
    admin = admin or os.environ.get("ROUTEIQ_TEST_DATABASE_URL")
    if not admin:
        raise RuntimeError("ROUTEIQ_TEST_DATABASE_URL is not set: run the tests through scripts/test.sh")
    name = f"e2e_{os.urandom(6).hex()}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + "/" + name


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    """The samples of `name` in a Prometheus text exposition, with their labels."""
    out = []
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if m and m.group(1) == name:
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.append((labels, float(m.group(3))))
    return out


def total(text: str, name: str, **labels) -> float:
    return sum(v for l, v in samples(text, name) if all(l.get(k) == v2 for k, v2 in labels.items()))

def pg_bin() -> Path:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not bins:
        raise RuntimeError("no PostgreSQL server installed under /usr/lib/postgresql")
    return bins[-1]


def as_postgres(args: list[str]) -> None:
    """Runs `args` as the postgres user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        args = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(f"'{a}'" for a in args)]
    r = subprocess.run(args, check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{args}: {r.stdout}{r.stderr}")


class Postgres:
    """A PostgreSQL cluster of a test's own on 127.0.0.1, to stop, crash and start again on
    the same port and data. Its folder is outside pytest's private temporary directories:
    the postgres user must reach it. Subclasses add to its configuration (`configure`)."""

    def __init__(self):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="routeiq-pg-"))
        self.dir.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.initialised = False
        self.running = False

    def configure(self) -> None:
        """Called once after initdb, before the first start."""

    def start(self) -> None:
        if not self.initialised:
            as_postgres([str(pg_bin() / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"])
            with open(self.data / "postgresql.conf", "a") as f:
                f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                        f"unix_socket_directories = '{self.dir}'\nfsync = off\n")
            self.configure()
            self.initialised = True
        as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start"])
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every session and shuts down cleanly; `immediate` quits at
        once, as a crash would, leaving recovery to the next start."""
        if self.running:
            as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
            self.running = False

    def url(self, db: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def pids(self) -> list[int]:
        """The server's processes: the postmaster and its children (its sessions)."""
        main = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(main)], capture_output=True, text=True).stdout.split()
        return [main, *map(int, children)]

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP (a hung server: connections open, nothing answers) or SIGCONT. The
        postmaster is stopped first, so that no session starts while its children are
        listed."""
        main, *children = self.pids()
        if frozen:
            os.kill(main, signal.SIGSTOP)
            children = self.pids()[1:]
        for pid in [*children, main] if frozen else [main, *children]:
            try:
                os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)
            except ProcessLookupError:
                pass

    def log(self) -> str:
        try:
            return (self.dir / "log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stops the server whatever state a failed test left it in (frozen included), then
        removes its files."""
        if self.running:
            try:
                self.freeze(False)
            except (OSError, ValueError, IndexError):
                pass
            for mode in ("fast", "immediate"):
                try:
                    self.stop(mode)
                    break
                except RuntimeError as e:
                    print(f"pg_ctl stop -m {mode}: {e}", file=sys.stderr)
            else:
                try:
                    os.kill(self.pids()[0], signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass
        shutil.rmtree(self.dir, ignore_errors=True)


class Nats:
    """nats-server with JetStream, file storage in `dir`; restartable on the same port."""

    def __init__(self, dir: Path):
        self.dir = dir
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process = None
        self.starts = 0

    def start(self):
        self.starts += 1
        exe = Path(sys.executable).parent / "nats-server"
        self.process = Process(
            [str(exe), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.dir / "store")],
            self.dir / f"nats-{self.starts}.log",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if "Server is ready" in self.process.output():
                return
            time.sleep(0.05)
        raise TimeoutError("nats-server did not start")

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None

    def kill(self):
        """SIGKILL: its storage keeps what it had flushed."""
        if self.process:
            self.process.kill()
            self.process = None


class ControlPlane:
    def __init__(self, dir: Path, database_url: str, nats_url: str, config: Path, extra=(),
                 name: str = "controlplane"):
        self.dir = dir
        self.name = name
        self.database_url = database_url
        self.nats_url = nats_url
        self.config = config
        self.extra = list(extra)
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.process = None
        self.starts = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self):
        self.starts += 1
        args = [
            str(BIN_DIR / "routeiq-controlplane"),
            "--database-url", self.database_url,
            "--nats", self.nats_url,
            "--config", str(self.config),
            "--grpc-listen", self.grpc_target,
            "--http-listen", f"127.0.0.1:{self.http_port}",
            *self.extra,
        ]
        env = dict(os.environ, ROUTEIQ_SALT_KEY=SALT_KEY, ROUTEIQ_LOG="info")
        self.process = Process(args, self.dir / f"{self.name}-{self.starts}.log", env=env)
        wait_http(f"{self.http}/health/liveliness", self.process.proc)

    def kill(self):
        """SIGKILL: no chance to finish anything."""
        if self.process:
            self.process.kill()
            self.process = None

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None


class Redis:
    """A throwaway redis-server (Debian package), no persistence."""

    def __init__(self, dir: Path):
        self.dir = dir / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process = None
        self.starts = 0

    def start(self):
        import shutil

        self.starts += 1
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = Process(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            self.dir.parent / f"redis-{self.starts}.log",
        )
        wait_until(lambda: self.ping(), timeout=10, what="redis up")

    def ping(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None


class DataPlane:
    def __init__(self, dir: Path, nats_url: str, name: str, extra=(), threads: int = 1):
        self.dir = dir
        self.nats_url = nats_url
        self.name = name
        self.extra = list(extra)
        self.threads = threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self, wait=True):
        args = [
            str(BIN_DIR / "routeiq-dataplane"),
            "--nats", self.nats_url,
            "--listen", f"127.0.0.1:{self.port}",
            "--threads", str(self.threads),
            "--dataplane-id", self.name,
            *self.extra,
        ]
        env = dict(os.environ, ROUTEIQ_LOG="info,routeiq_dataplane=debug")
        self.process = Process(args, self.dir / f"{self.name}.log", env=env)
        if wait:
            wait_http(f"{self.url}/health/liveliness", self.process.proc)

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None

    def version(self) -> int:
        return httpx.get(f"{self.url}/health/readiness", timeout=2).json()["snapshot_version"]

    def metric(self, name: str) -> float:
        for line in httpx.get(f"{self.url}/metrics", timeout=2).text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def chat(self, key: str, model: str = "priced", content: str = "hello there") -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": content}]},
            timeout=5,
        )


class AdminApi:
    """The admin API (`routeiq-admin`) in front of a control plane."""

    def __init__(self, dir: Path, grpc_target: str, extra=(), timeout_ms: int = 2000):
        self.dir = dir
        self.grpc_target = grpc_target
        self.extra = list(extra)
        self.timeout_ms = timeout_ms
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        args = [
            str(BIN_DIR / "routeiq-admin"),
            "--listen", f"127.0.0.1:{self.port}",
            "--controlplane", f"http://{self.grpc_target}",
            "--timeout-ms", str(self.timeout_ms),
            *self.extra,
        ]
        env = dict(os.environ, ROUTEIQ_LOG="info,routeiq_admin=debug")
        self.process = Process(args, self.dir / "admin.log", env=env)
        wait_http(f"{self.url}/health/liveliness", self.process.proc)

    def stop(self):
        if self.process:
            self.process.stop()
            self.process = None

    def call(self, method: str, path: str, key: str | None = STACK_MASTER_KEY, **kw) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kw)

    def ok(self, method: str, path: str, key: str | None = STACK_MASTER_KEY, **kw):
        """The JSON of a call that must succeed."""
        r = self.call(method, path, key, **kw)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.01, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


class Stack:
    """A fresh database (or the database `db`), a nats-server and a control plane (started unless `start` is
    false), plus the data planes added with `dataplane()`. `pb` is what `grpc_modules`
    returns, for `grpc()` and `generate_key()`."""

    def __init__(self, tmp: Path, pb=None, cp_args=(), start=True, config: str = STACK_CONFIG,
                 db: str | None = None):
        self.tmp = tmp
        self.pb, self.pb_grpc = pb if pb else (None, None)
        self.db = db or fresh_database()
        self.nats = Nats(tmp)
        self.nats.start()
        cfg = tmp / "config.yaml"
        cfg.write_text(config)
        self.cp = ControlPlane(tmp, self.db, self.nats.url, cfg, cp_args)
        if start:
            self.cp.start()
        self.dps = []
        self._admin = None
        self._channel = None

    def dataplane(self, name: str, wait=True, redis: "Redis | None" = None) -> DataPlane:
        extra = ["--redis-url", redis.url] if redis else []
        dp = DataPlane(self.tmp, self.nats.url, name, extra)
        dp.start(wait=wait)
        self.dps.append(dp)
        return dp

    def admin(self, timeout_ms: int = 2000) -> AdminApi:
        """The admin API, started on first use, with a deadline of `timeout_ms` on each
        control-plane call (shorter than its default, 5 s, so that tests with the control
        plane away are quick)."""
        if self._admin is not None:
            assert self._admin.timeout_ms == timeout_ms, "the admin API was started with another deadline"
        else:
            self._admin = AdminApi(self.tmp, self.cp.grpc_target, timeout_ms=timeout_ms)
            self._admin.start()
        return self._admin

    def grpc(self):
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.cp.grpc_target)
        return self.pb_grpc.ControlPlaneStub(self._channel)

    def generate_key(self, **fields) -> tuple[str, object]:
        r = self.grpc().GenerateKey(
            self.pb.GenerateKeyRequest(
                actor=self.pb.Actor(id="e2e-admin", source_ip="127.0.0.1"),
                fields=self.pb.KeyFields(**fields),
            ),
            timeout=5,
        )
        return r.key, r

    def sql(self, query: str, *args):
        with psycopg.connect(self.db) as c:
            return c.execute(query, args).fetchall()

    def close(self):
        if self._channel:
            self._channel.close()
        for dp in self.dps:
            dp.stop()
        if self._admin:
            self._admin.stop()
        self.cp.stop()
        self.nats.stop()

    def logs_full(self) -> str:
        """Every log of the stack, whole."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    def logs(self) -> str:
        out = []
        for p in sorted(self.tmp.glob("*.log")):
            out.append(f"--- {p.name} ---\n{p.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)




def accepted(dp: DataPlane, key: str) -> bool:
    """Whether a chat request with `key` succeeds on `dp`."""
    return dp.chat(key).status_code == 200
