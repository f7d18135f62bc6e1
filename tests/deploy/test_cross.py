"""The arm64 binaries, cross-compiled here the way deploy/Dockerfile's build stage does it
(deploy/cross-build.sh: Debian's cross toolchain, the target's Rust standard library, no
emulation while building), then run under qemu-user with the target's C library:

- each is an ARM aarch64 ELF executable;
- each service answers `--version`;
- the arm64 data plane serves config/example.yaml and answers a chat completion and the
  arm64 `routeiq-healthcheck` probe.

ROUTEIQ_CROSS_DIR names the build's output directory (scripts/test.sh sets it after the
build); without it the tests are skipped, saying why.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CROSS_DIR = os.environ.get("ROUTEIQ_CROSS_DIR")
SYSROOT = "/usr/aarch64-linux-gnu"
SERVICES = ("routeiq-dataplane", "routeiq-controlplane", "routeiq-admin")

pytestmark = pytest.mark.skipif(
    not CROSS_DIR,
    reason="ROUTEIQ_CROSS_DIR is not set: deploy/cross-build.sh arm64 did not run (scripts/test.sh runs it)",
)


def binary(name: str) -> Path:
    path = Path(CROSS_DIR or "") / name
    assert path.is_file(), f"{path} was not built"
    return path


def qemu(name: str, *args: str) -> list[str]:
    return ["qemu-aarch64", "-L", SYSROOT, str(binary(name)), *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", [*SERVICES, "routeiq-healthcheck"])
def test_binaries_are_aarch64_executables(name):
    header = binary(name).read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2, "a 64-bit ELF file"
    assert int.from_bytes(header[18:20], "little") == 183, "e_machine EM_AARCH64"


@pytest.mark.parametrize("name", SERVICES)
def test_services_answer_version_under_qemu(name):
    r = subprocess.run(qemu(name, "--version"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{name} "), r.stdout


def test_arm64_data_plane_serves_a_chat_completion(tmp_path):
    config = ROOT / "config" / "example.yaml"
    master = yaml.safe_load(config.read_text())["general_settings"]["master_key"]
    port = free_port()
    log = tmp_path / "dataplane.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(qemu("routeiq-dataplane", "--config", str(config), "--listen", f"127.0.0.1:{port}"),
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # emulated start-up is slow
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.5)
        r = httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {master}"},
                       json={"model": "claude-sonnet", "messages": [{"role": "user", "content": "hi from arm64"}]},
                       timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "Hello from the RouteIQ mock Claude."
        probe = subprocess.run(qemu("routeiq-healthcheck", f"{url}/health/liveliness"),
                               capture_output=True, text=True, timeout=120)
        assert probe.returncode == 0, probe.stdout + probe.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
