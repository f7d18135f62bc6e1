"""The bundle's systemd units, rendered as deploy/airgap/install.sh renders them, pass
`systemd-analyze verify` (unknown or misspelt directives, missing executables, bad
values) and carry the hardening docs/operations.md promises."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
CACHE = Path(os.environ.get("ROUTEIQ_CACHE", Path.home() / ".cache" / "routeiq"))
BIN_DIR = Path(os.environ.get("ROUTEIQ_BIN_DIR") or CACHE / "target" / "debug")
NATS = CACHE / "venv" / "bin" / "nats-server"


def render(tmp: Path) -> list[Path]:
    prefix, etc, state = tmp / "opt", tmp / "etc", tmp / "state"
    (prefix / "bin").mkdir(parents=True)
    etc.mkdir()
    (state / "nats").mkdir(parents=True)
    for b in ("routeiq-dataplane", "routeiq-controlplane", "routeiq-admin"):
        (prefix / "bin" / b).symlink_to(BIN_DIR / b)
    (prefix / "bin" / "nats-server").symlink_to(NATS)
    for f in ("dataplane.env", "controlplane.env", "admin.env", "nats.conf"):
        (etc / f).write_text("")
    out = []
    for unit in UNITS:
        text = (unit.read_text().replace("@PREFIX@", str(prefix)).replace("@ETC@", str(etc))
                .replace("@STATE@", str(state)))
        assert not re.search(r"@[A-Z_]+@", text), f"{unit.name}: a placeholder install.sh does not fill"
        path = tmp / unit.name
        path.write_text(text)
        out.append(path)
    return out


def test_units_pass_systemd_analyze_verify(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    assert [u.name for u in UNITS] == [
        "routeiq-admin.service", "routeiq-controlplane.service", "routeiq-dataplane.service",
        "routeiq-nats.service",
    ]
    rendered = render(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", *map(str, rendered)], capture_output=True, text=True)
    # verify prints problems (unknown keys are only warnings, but they are still problems).
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stdout + r.stderr


def test_units_are_hardened():
    for unit in UNITS:
        text = unit.read_text()
        for line in ("User=routeiq", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                     "PrivateTmp=yes", "CapabilityBoundingSet=", "SystemCallFilter=@system-service",
                     "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"):
            assert re.search(rf"^{re.escape(line)}$", text, re.M), f"{unit.name}: no {line}"
        # The data plane loads ONNX Runtime; the others forbid writable executable memory.
        mdwe = re.search(r"^MemoryDenyWriteExecute=yes$", text, re.M)
        assert bool(mdwe) == (unit.name != "routeiq-dataplane.service"), unit.name
