"""TLS helpers for the end-to-end tests: a throwaway certificate authority and certificates
made with the `openssl` command line, a PostgreSQL cluster that only accepts TLS, and a
nats-server that requires client certificates."""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from conftest import Process, free_port
from stack import Postgres

# Server certificates are checked against the URL's host: 127.0.0.1 or localhost.
LOCAL_SAN = "IP:127.0.0.1,DNS:localhost"


def openssl(*args: str) -> None:
    r = subprocess.run(["openssl", *args], check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}")


@dataclass
class Pair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def new_key(path: Path, kind: str = "ec") -> Path:
    """A private key: `ec` (P-256, PKCS#8 PEM), `ec-sec1` (P-256, `EC PRIVATE KEY`),
    `rsa` (2048, PKCS#8) or `rsa-pkcs1` (2048, `RSA PRIVATE KEY`)."""
    if kind.startswith("ec"):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))
    else:
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(path))
    if kind in ("ec-sec1", "rsa-pkcs1"):
        pkcs8 = path.with_name(path.name + ".pkcs8")
        path.rename(pkcs8)
        openssl("pkey", "-in", str(pkcs8), "-out", str(path), "-traditional")
        pkcs8.unlink()
    path.chmod(0o600)
    return path


class CA:
    """A certificate authority in `dir`, named `name`, issuing server and client
    certificates valid for two days."""

    def __init__(self, dir: Path, name: str):
        self.dir = dir
        self.name = name
        dir.mkdir(parents=True, exist_ok=True)
        self.key = new_key(dir / f"{name}-ca.key")
        self.cert = dir / f"{name}-ca.pem"
        openssl(
            "req", "-x509", "-new", "-key", str(self.key), "-out", str(self.cert), "-days", "2",
            "-subj", f"/CN=RouteIQ test CA {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
        )

    def issue(self, name: str, *, server: bool = False, client: bool = False, key: Path | None = None,
              key_kind: str = "ec", cn: str | None = None, out: Path | None = None) -> Pair:
        """A certificate for `name` (files `name.pem` and `name.key` in the CA's folder, or
        in `out`) with a random serial: for a server (SAN 127.0.0.1 and localhost,
        serverAuth) and/or a client (clientAuth). `key` reuses an existing key."""
        out = out or self.dir
        if key is None:
            key = new_key(out / f"{name}.key", key_kind)
        cert, csr, ext = out / f"{name}.pem", out / f"{name}.csr", out / f"{name}.ext"
        usages = (["serverAuth"] if server else []) + (["clientAuth"] if client else [])
        assert usages, "a certificate for nothing"
        rsa = "RSA" in key.read_text().split("\n", 1)[0] or key_kind.startswith("rsa")
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature" + (",keyEncipherment" if rsa else ""),
            f"extendedKeyUsage={','.join(usages)}",
            "subjectKeyIdentifier=hash",
            "authorityKeyIdentifier=keyid",
        ]
        if server:
            lines.append(f"subjectAltName={LOCAL_SAN}")
        ext.write_text("\n".join(lines) + "\n")
        openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn or name}")
        openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-set_serial", str(int.from_bytes(os.urandom(15), "big")), "-days", "2",
            "-extfile", str(ext), "-out", str(cert),
        )
        csr.unlink()
        ext.unlink()
        return Pair(cert, key)


def replace_file(path: Path, data: bytes) -> None:
    """Writes `data` to a temporary file next to `path`, then renames it over `path` (what
    a certificate renewal does: readers see the old or the new file, never half of one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o600)
    os.replace(tmp, path)


def client_context(ca: Path, cert: Pair | None = None) -> ssl.SSLContext:
    """A TLS client context trusting `ca`, presenting `cert` if given."""
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def peer_certificate(port: int, ca: Path, server_name: str = "127.0.0.1", cert: Pair | None = None) -> dict:
    """The certificate a fresh TLS connection to 127.0.0.1:`port` is served, verified
    against `ca` for `server_name`, as `SSLSocket.getpeercert()` gives it."""
    ctx = client_context(ca, cert)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as s,
    ):
        return s.getpeercert()


def common_name(peer: dict) -> str:
    for rdn in peer["subject"]:
        for k, v in rdn:
            if k == "commonName":
                return v
    return ""


# ---- PostgreSQL with TLS only ----


class TlsPostgres(Postgres):
    """A throwaway PostgreSQL cluster that accepts only TLS connections (hostssl, trust)
    from 127.0.0.1, serving `server` (whose key it gets a copy of, owned by postgres with
    mode 0600 as PostgreSQL requires)."""

    def __init__(self, server: Pair, ca: Path):
        super().__init__()
        self.ca = ca
        self.cert = self.dir / "server.pem"
        self.key = self.dir / "server.key"
        shutil.copyfile(server.cert, self.cert)
        shutil.copyfile(server.key, self.key)
        self.key.chmod(0o600)
        if os.geteuid() == 0:
            for p in (self.cert, self.key):
                shutil.chown(p, "postgres", "postgres")

    def configure(self) -> None:
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"ssl = on\nssl_cert_file = '{self.cert}'\nssl_key_file = '{self.key}'\n")
        # TLS or nothing over TCP; the Unix socket stays for pg_ctl.
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
            "host all all 0.0.0.0/0 reject\n"
            "host all all ::/0 reject\n"
        )

    def url(self, db: str = "postgres", sslmode: str = "verify-full") -> str:
        url = f"{super().url(db)}?sslmode={sslmode}"
        if sslmode.startswith("verify"):
            url += f"&sslrootcert={self.ca}"
        return url


# ---- nats-server with TLS and client certificates ----


class Server:
    """A server process started by `start()`, ready once its log prints `ready`."""

    ready = ""
    name = ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = Process(self.command(), self.dir / f"{self.name}.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.ready in self.process.output():
                return
            if self.process.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.process.output()}")

    def stop(self) -> None:
        if getattr(self, "process", None):
            self.process.stop()
            self.process = None


class TlsNats(Server):
    """nats-server (the venv's, 2.15.1) with JetStream, TLS with `server`'s certificate and
    `verify: true`: clients must present a certificate signed by `ca`."""

    def __init__(self, dir: Path, server: Pair, ca: Path):
        self.dir = dir
        self.port = free_port()
        self.url = f"tls://127.0.0.1:{self.port}"
        self.conf = dir / "nats.conf"
        self.conf.write_text(
            f"""
listen: 127.0.0.1:{self.port}
jetstream {{
  store_dir: "{dir / 'nats-store'}"
}}
tls {{
  cert_file: "{server.cert}"
  key_file: "{server.key}"
  ca_file: "{ca}"
  verify: true
  timeout: 2
}}
"""
        )
        self.process = None

    name, ready = "nats", "Server is ready"

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "nats-server"), "-c", str(self.conf)]


class TlsRedis(Server):
    """redis-server (Debian's, built with TLS) listening on TLS only, with `server`'s
    certificate; clients need no certificate of their own."""

    def __init__(self, dir: Path, server: Pair, ca: Path):
        self.dir = dir
        self.port = free_port()
        self.url = f"rediss://127.0.0.1:{self.port}"
        self.args = [
            "redis-server", "--port", "0", "--bind", "127.0.0.1",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(server.cert), "--tls-key-file", str(server.key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(dir),
        ]
        self.process = None

    name, ready = "redis", "Ready to accept connections"

    def command(self) -> list[str]:
        return self.args
