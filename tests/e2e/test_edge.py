"""An edge site: its data plane connects to a local NATS leaf node (JetStream domain
`edge1`) that dials out to the hub's NATS (JetStream domain `hub`), where the control
plane's streams live; the data plane reaches them with `--nats-js-domain hub`. The link
between the leaf and the hub runs through a TCP relay the test can cut: while it is down
the edge keeps serving, and when it returns the edge catches up (keys made meanwhile,
usage made meanwhile)."""

import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import Process, free_port
from stack import STACK_CONFIG, ControlPlane, DataPlane, accepted, fresh_database, wait_until


class Relay:
    """Forwards 127.0.0.1:port to `target`; `cut()` closes every relayed connection and
    refuses new ones until `restore()`."""

    def __init__(self, target: int):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.up = True
        self.open = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                if not self.up:  # cut while this one was being connected
                    client.close()
                    server.close()
                    continue
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        # shutdown first: a plain close does not end a connection another thread is
        # still blocked reading, so the far end would not see it go.
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self):
        with self.lock:
            self.up = False
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.open = []

    def restore(self):
        self.up = True

    def close(self):
        self.cut()
        self.sock.close()


def nats_server(dir: Path, name: str, conf: str) -> Process:
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / f"{name}.conf"
    path.write_text(conf)
    exe = Path(sys.executable).parent / "nats-server"
    p = Process([str(exe), "-c", str(path)], dir / f"{name}.log")
    wait_until(lambda: "Server is ready" in p.output(), timeout=10, what=f"{name} ready")
    return p


def leafs(monitor: int) -> int:
    return httpx.get(f"http://127.0.0.1:{monitor}/leafz", timeout=2).json().get("leafnodes", 0)


@pytest.fixture
def edge(tmp_path, pb):
    hub_port, hub_leaf_port, leaf_port = free_port(), free_port(), free_port()
    hub_mon, leaf_mon = free_port(), free_port()
    procs = []
    relay = Relay(hub_leaf_port)
    # The hub tells its leaf nodes the addresses to reconnect to: the relay's only, or a
    # reconnect could go around it.
    hub = nats_server(tmp_path / "hub", "hub", f"""
listen: 127.0.0.1:{hub_port}
server_name: hub
http: 127.0.0.1:{hub_mon}
jetstream {{ store_dir: "{tmp_path / 'hub' / 'js'}", domain: hub }}
leafnodes {{ listen: 127.0.0.1:{hub_leaf_port}, advertise: "127.0.0.1:{relay.port}" }}
""")
    procs.append(hub)
    leaf = nats_server(tmp_path / "edge", "edge1", f"""
listen: 127.0.0.1:{leaf_port}
server_name: edge1
http: 127.0.0.1:{leaf_mon}
jetstream {{ store_dir: "{tmp_path / 'edge' / 'js'}", domain: edge1 }}
leafnodes {{
  reconnect: "1s"
  remotes: [ {{ url: "nats-leaf://127.0.0.1:{relay.port}" }} ]
}}
""")
    procs.append(leaf)
    wait_until(lambda: leafs(hub_mon) == 1, timeout=15, what="the leaf node linked to the hub")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(STACK_CONFIG)
    cp = ControlPlane(tmp_path, fresh_database(), f"nats://127.0.0.1:{hub_port}", cfg)
    cp.start()
    dp = DataPlane(tmp_path, f"nats://127.0.0.1:{leaf_port}", "edge-dp", ["--nats-js-domain", "hub"])
    dp.start()
    try:
        yield cp, dp, relay, hub_mon
    finally:
        dp.stop()
        cp.stop()
        relay.close()
        for p in reversed(procs):
            p.stop()


def generate_key(pb, cp) -> tuple[str, str]:
    import grpc

    messages, stubs = pb
    with grpc.insecure_channel(cp.grpc_target) as ch:
        r = stubs.ControlPlaneStub(ch).GenerateKey(
            messages.GenerateKeyRequest(actor=messages.Actor(id="edge-test"),
                                        fields=messages.KeyFields(max_budget=100.0)),
            timeout=5,
        )
    return r.key, r.info.key_hash


def logged(cp, key_hash: str) -> int:
    import psycopg

    with psycopg.connect(cp.database_url) as c:
        return c.execute("SELECT count(*) FROM spend_logs WHERE key_hash = decode(%s, 'hex')",
                         (key_hash,)).fetchone()[0]


def test_the_edge_serves_through_a_link_drop_and_catches_up(edge, pb):
    cp, dp, relay, hub_mon = edge
    key, key_hash = generate_key(pb, cp)
    wait_until(lambda: accepted(dp, key), what="a hub key at the edge")
    for _ in range(4):
        assert dp.chat(key).status_code == 200
    wait_until(lambda: logged(cp, key_hash) == 5, timeout=20, what="edge usage at the hub")

    relay.cut()
    wait_until(lambda: leafs(hub_mon) == 0, timeout=15, what="the link down")
    # The edge keeps serving its keys; its usage waits at the edge.
    for _ in range(6):
        assert dp.chat(key).status_code == 200
    later, _ = generate_key(pb, cp)
    time.sleep(1.0)
    assert dp.chat(later).status_code == 401, "a key made while the link was down cannot be at the edge yet"
    assert logged(cp, key_hash) == 5
    assert httpx.get(f"{dp.url}/health/readiness", timeout=2).status_code == 200

    relay.restore()
    wait_until(lambda: leafs(hub_mon) == 1, timeout=15, what="the link back")
    wait_until(lambda: accepted(dp, later), timeout=30, what="the edge caught up with the hub's keys")
    # 5 before, 6 during the outage (a 401 is not usage), and the probe of `later` is not
    # this key's: every one of this key's requests is at the hub, once.
    wait_until(lambda: logged(cp, key_hash) == 11, timeout=30, what="usage made during the outage")
    time.sleep(1.0)
    assert logged(cp, key_hash) == 11
