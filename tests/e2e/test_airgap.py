"""The air-gapped bundle, end to end: built by deploy/airgap/build.sh from binaries that
deploy/airgap/offline-build.sh compiled from vendored crates with the network off, then
installed and run by airgap_site.py in a network namespace with loopback only."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import BIN_DIR, ROOT

CACHE = Path(os.environ.get("ROUTEIQ_CACHE", Path.home() / ".cache" / "routeiq"))
OFFLINE_BIN_DIR = Path(os.environ.get("ROUTEIQ_AIRGAP_BIN_DIR", CACHE / "target-offline" / "debug"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unshare -n needs root")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    assert (OFFLINE_BIN_DIR / "routeiq-dataplane").exists(), (
        f"no offline-built binaries in {OFFLINE_BIN_DIR}: run deploy/airgap/offline-build.sh"
    )
    out = tmp_path_factory.mktemp("airgap")
    r = subprocess.run(
        [str(ROOT / "deploy" / "airgap" / "build.sh"), "--out", str(out), "--bin-dir", str(OFFLINE_BIN_DIR)],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr
    return Path(r.stdout.strip().splitlines()[-1])


def test_the_bundle_holds_everything_and_checks_its_sums(bundle, tmp_path):
    with tarfile.open(bundle) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
        t.extractall(tmp_path, filter="tar")
    for needed in [
        "bin/routeiq-dataplane", "bin/routeiq-controlplane", "bin/routeiq-admin",
        "bin/routeiq-healthcheck", "bin/nats-server", "install.sh", "SHA256SUMS",
        "share/routeiq/config/airgap.yaml", "share/routeiq/systemd/routeiq-dataplane.service",
        "share/routeiq/systemd/routeiq-nats.service", "share/routeiq/etc/nats.conf",
    ]:
        assert needed in names, needed
    assert any(n.startswith("lib/libonnxruntime.so.") for n in names)
    migrations = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert migrations and all(f"share/routeiq/migrations/{m}" in names for m in migrations)
    assert any(n.startswith("share/routeiq/grafana/") and n.endswith(".json") for n in names)
    (root,) = tmp_path.iterdir()
    listed = {line.split("  ", 1)[1] for line in (root / "SHA256SUMS").read_text().splitlines()}
    assert listed == {n for n in names if not n.endswith("/") and (root / n).is_file()} - {"SHA256SUMS"}

    # A tampered file is refused before anything is installed.
    (root / "bin" / "routeiq-admin").write_bytes(b"not the admin API")
    r = subprocess.run([str(root / "install.sh"), "--prefix", str(tmp_path / "p"), "--etc",
                        str(tmp_path / "e"), "--state", str(tmp_path / "s")], capture_output=True, text=True)
    assert r.returncode != 0 and "SHA256SUMS" in r.stderr
    assert not (tmp_path / "p").exists()


def loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def test_installs_and_serves_with_no_network(bundle, tmp_path):
    r = subprocess.run(
        ["unshare", "-n", sys.executable, str(Path(__file__).with_name("airgap_site.py")),
         str(bundle), str(tmp_path), str(BIN_DIR / "routeiq-mock-provider")],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-6000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["content"], report
    assert report["usage"] > 0
    assert {"nats-server", "routeiq-dataplane", "routeiq-controlplane", "routeiq-admin"} <= set(report["installed"])

    # Every address any service or the bundled NATS tried to reach was on this host.
    traces = report["traces"]
    assert set(traces) == {"routeiq-nats", "routeiq-controlplane", "routeiq-dataplane", "routeiq-admin"}
    reached = {}
    for name, trace in traces.items():
        v4 = re.findall(r'sin_addr=inet_addr\("([^"]+)"\)', trace)
        v6 = re.findall(r'inet_pton\(AF_INET6, "([^"]+)"', trace)
        reached[name] = set(v4 + v6)
        outside = {a for a in reached[name] if not loopback(a)}
        assert not outside, f"{name} tried to reach {outside}"
    # The traces saw the connections that were made (so an empty set above means something).
    assert "127.0.0.1" in reached["routeiq-dataplane"] and "127.0.0.1" in reached["routeiq-controlplane"]
    assert re.search(r"htons\(4222\)", traces["routeiq-dataplane"]), "the data plane's NATS connection"
    assert re.search(r"htons\(8000\)", traces["routeiq-dataplane"]), "the on-prem model server"
    assert re.search(r"htons\(5432\)", traces["routeiq-controlplane"]), "PostgreSQL"
