"""An air-gapped site, run by test_airgap.py inside a network namespace that has only
loopback (`unshare -n`): what an operator does with the bundle on a host with no network.

    airgap_site.py BUNDLE.tar.gz WORKDIR MOCK_PROVIDER_BINARY

Unpacks and installs the bundle into a fresh prefix, starts PostgreSQL (the host's
packages), then the bundled NATS and the three services exactly as their installed systemd
units say (ExecStart with its EnvironmentFile), each under `strace` so that every network
call they make is recorded. Generates a key through the admin API, gets a chat completion
through the data plane from the on-prem mock, and prints a JSON report on stdout.
"""

import json
import os
import shlex
import signal
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[2]
MOCK_PORT = 8000  # the on-prem model server the installed env file points at
PG_PORT = 5432
STARTED = time.monotonic()


def log(msg):
    print(f"[site {time.monotonic() - STARTED:6.1f}s] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def unit(prefix: Path, name: str) -> tuple[list[str], dict]:
    """The command and environment the installed systemd unit `name` runs."""
    text = (prefix / "lib" / "systemd" / "system" / f"{name}.service").read_text()
    env = {"PATH": "/usr/bin:/bin"}
    command = None
    for line in text.splitlines():
        if line.startswith("EnvironmentFile="):
            for entry in Path(line.split("=", 1)[1]).read_text().splitlines():
                entry = entry.strip()
                if entry and not entry.startswith("#"):
                    k, v = entry.split("=", 1)
                    env[k] = v
        elif line.startswith("ExecStart="):
            command = shlex.split(line.split("=", 1)[1])
    assert command, f"{name}: no ExecStart"
    return command, env


def wait(url: str, proc: subprocess.Popen, what: str, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what}: {url} not ready in {timeout}s")


def stop(p: subprocess.Popen):
    """SIGTERM to the process group `p` leads (strace and the service it traces), then
    SIGKILL to whatever is left of it after 15 s."""
    def alive() -> bool:
        p.poll()  # reaps p, which would otherwise stay in the group as a zombie
        try:
            os.killpg(p.pid, 0)
            return True
        except ProcessLookupError:
            return False

    if not alive():
        return
    os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while alive():
        if time.monotonic() > deadline:
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    p.wait()


def main():
    bundle, work, mock_bin = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    sh(["ip", "link", "set", "lo", "up"])
    # The namespace reaches nothing but itself.
    probe = subprocess.run(
        [sys.executable, "-c", "import socket; socket.create_connection(('1.1.1.1', 443), timeout=2)"],
        capture_output=True,
    )
    assert probe.returncode != 0, "the test namespace has a network"

    log("unpack and install")
    with tarfile.open(bundle) as t:
        t.extractall(work / "unpacked", filter="tar")
    (unpacked,) = (work / "unpacked").iterdir()
    prefix, etc, state = work / "opt", work / "etc", work / "state"
    sh([str(unpacked / "install.sh"), "--prefix", str(prefix), "--etc", str(etc), "--state", str(state)],
       stdout=sys.stderr)

    log("PostgreSQL")
    # Outside the test's private temporary directory: the postgres user must reach it.
    pg = Path(tempfile.mkdtemp(prefix="routeiq-airgap-pg-"))
    pg.chmod(0o755)
    sh(["bash", "-c", f". {ROOT}/scripts/lib.sh; start_postgres {pg} {PG_PORT}"], stdout=sys.stderr)
    processes = []
    try:
        sh(["psql", "-q", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres",
            "-c", "CREATE USER routeiq", "-c", "CREATE DATABASE routeiq OWNER routeiq"])
        mock = subprocess.Popen([mock_bin, "--listen", f"127.0.0.1:{MOCK_PORT}"],
                                stdout=open(work / "mock.log", "wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        processes.append(mock)
        traces = work / "traces"
        traces.mkdir()

        def start(name, ready):
            command, env = unit(prefix, name)
            # A session of its own: stopping signals strace and the service together
            # (strace alone would detach and leave the service running).
            p = subprocess.Popen(
                ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg",
                 "-o", str(traces / f"{name}.trace"), *command],
                env=env, stdout=open(work / f"{name}.log", "wb"), stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes.append(p)
            wait(ready, p, name)
            return env

        log("services from their systemd units")
        start("routeiq-nats", "http://127.0.0.1:8222/healthz")
        log("control plane")
        cp_env = start("routeiq-controlplane", "http://127.0.0.1:4100/health/readiness")
        log("data plane")
        start("routeiq-dataplane", "http://127.0.0.1:4000/health/readiness")
        log("admin API")
        start("routeiq-admin", "http://127.0.0.1:4001/health/readiness")

        log("a key and a chat completion")
        master = cp_env["ROUTEIQ_MASTER_KEY"]
        r = httpx.post("http://127.0.0.1:4001/key/generate", headers={"Authorization": f"Bearer {master}"},
                       json={"models": ["local-llm"], "max_budget": 5}, timeout=10)
        assert r.status_code == 200, r.text
        key = r.json()["key"]
        log("key generated")

        client = OpenAI(base_url="http://127.0.0.1:4000/v1", api_key=key, max_retries=0)
        deadline = time.monotonic() + 15
        while True:  # the new key reaches the data plane through NATS
            try:
                reply = client.chat.completions.create(
                    model="local-llm", messages=[{"role": "user", "content": "hello from the moat"}])
                break
            except Exception as e:  # noqa: BLE001 - retried until the snapshot lands
                if time.monotonic() > deadline:
                    raise
                log(f"waiting for the key: {e}")
                time.sleep(0.2)
        log("answered")
        report = {
            "content": reply.choices[0].message.content,
            "model": reply.model,
            "usage": reply.usage.total_tokens,
            "installed": sorted(p.name for p in (prefix / "bin").iterdir()),
        }
    finally:
        log("stopping")
        for p in reversed(processes):
            stop(p)
        sh(["bash", "-c", f". {ROOT}/scripts/lib.sh; stop_postgres {pg}"])
        shutil.rmtree(pg, ignore_errors=True)
    report["traces"] = {p.stem: p.read_text() for p in traces.iterdir()}
    print(json.dumps(report))


if __name__ == "__main__":
    os.umask(0o022)
    main()
