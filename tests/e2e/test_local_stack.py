"""deploy/local/up.sh, driven as the README tells users to: start, a service killed with
`kill -9`, start again (issue 15.4)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import BIN_DIR, ROOT, free_port
from stack import wait_until

pytestmark = pytest.mark.timeout(300)

EXAMPLE_KEY = "sk-routeiq-example"

# Starts a command, then sleeps without ever reaping: as a child subreaper it inherits the
# services up.sh leaves running, and a service killed later stays a zombie, as it does under
# an init that is slow to reap (or none, in a container).
NON_REAPING_PARENT = """
import ctypes, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
code = subprocess.run(sys.argv[1:]).returncode
print(f"up.sh exited {code}", flush=True)
time.sleep(3600)
"""


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_up_restarts_a_service_killed_with_sigkill():
    import shutil
    import tempfile

    # Not under pytest's tmp_path (mode 700): PostgreSQL runs as its own user there.
    state = Path(tempfile.mkdtemp(prefix="routeiq-up-"))
    state.chmod(0o755)
    ports = {name: free_port() for name in ("pg", "nats", "grpc", "cp", "dp", "admin")}
    env = dict(
        os.environ,
        ROUTEIQ_LOCAL=str(state),
        ROUTEIQ_LOCAL_BIN_DIR=str(BIN_DIR),
        ROUTEIQ_LOCAL_PG_PORT=str(ports["pg"]),
        ROUTEIQ_LOCAL_NATS_PORT=str(ports["nats"]),
        ROUTEIQ_LOCAL_GRPC_PORT=str(ports["grpc"]),
        ROUTEIQ_LOCAL_CP_HTTP_PORT=str(ports["cp"]),
        ROUTEIQ_LOCAL_LISTEN=f"127.0.0.1:{ports['dp']}",
        ROUTEIQ_LOCAL_ADMIN_LISTEN=f"127.0.0.1:{ports['admin']}",
    )
    up = str(ROOT / "deploy" / "local" / "up.sh")
    gateway = f"http://127.0.0.1:{ports['dp']}"
    admin = f"http://127.0.0.1:{ports['admin']}"
    auth = {"Authorization": f"Bearer {EXAMPLE_KEY}"}
    parent = subprocess.Popen([sys.executable, "-c", NON_REAPING_PARENT, up], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = parent.stdout.readline()
        while first and not first.startswith("up.sh exited"):
            first = parent.stdout.readline()
        assert first.strip() == "up.sh exited 0", first

        def chat_ok():
            r = httpx.post(f"{gateway}/v1/chat/completions", headers=auth, timeout=5,
                           json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
            return r.status_code == 200

        assert chat_ok()
        cp_pid = int((state / "controlplane.pid").read_text())
        os.kill(cp_pid, signal.SIGKILL)
        wait_until(lambda: proc_state(cp_pid) == "Z", timeout=5, what="control plane a zombie")
        status = subprocess.run([up, "status"], env=env, capture_output=True, text=True, timeout=30)
        assert "controlplane: stopped" in status.stdout, status.stdout

        again = subprocess.run([up], env=env, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
        new_pid = int((state / "controlplane.pid").read_text())
        assert new_pid != cp_pid and proc_state(new_pid) != "Z"
        r = httpx.get(f"http://127.0.0.1:{ports['cp']}/health/readiness", timeout=5)
        assert r.status_code == 200, r.text
        # The restarted control plane serves the admin API, and its key reaches the gateway.
        key = httpx.post(f"{admin}/key/generate", headers=auth, json={}, timeout=10).json()["key"]
        wait_until(lambda: httpx.get(f"{gateway}/v1/models", headers={"Authorization": f"Bearer {key}"},
                                     timeout=5).status_code == 200, what="new key served")
        assert chat_ok()
    finally:
        subprocess.run([up, "down"], env=env, capture_output=True, timeout=60)
        parent.kill()
        parent.wait()
        shutil.rmtree(state, ignore_errors=True)
