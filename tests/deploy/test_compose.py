"""The compose files (deploy/compose, deploy/mlops/compose.yaml) and the Grafana dashboard.

No container engine runs where these tests run, so the files are read the way Docker
Compose would read them: validated against the Compose Specification's JSON schema
(vendored in tests/deploy/schemas, nothing is fetched), `extends` resolved with Compose's
merge rules, variables given their defaults. The assertions then check what each tier
deploys, how its services reach each other, that RouteIQ's services run read-only and
probed, that every file a service mounts exists, and that every metric the dashboard
queries is one the planes export (read from their Rust source).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from promql import dashboard_queries, promql_labels, promql_metrics  # noqa: E402
COMPOSE_DIR = ROOT / "deploy" / "compose"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
COMPOSE_FILES = sorted(COMPOSE_DIR.glob("*.yaml")) + [ROOT / "deploy" / "mlops" / "compose.yaml"]
TIERS = {n: COMPOSE_DIR / f for n, f in {
    1: "tier1-standalone.yaml", 2: "tier2-redis.yaml", 3: "tier3-split.yaml", 4: "tier4-full.yaml",
}.items()}
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "routeiq.json"
DASHBOARDS = sorted(DASHBOARD.parent.glob("*.json"))
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# The port each RouteIQ image serves its health endpoints on (deploy/Dockerfile).
HEALTH_PORTS = {"dataplane": 4000, "controlplane": 4100, "admin": 4001}


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# --- reading compose files as Compose does ----------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: str) -> str:
    """The value with its variables unset: `${X:-d}` gives d, `${X}` gives "", and
    `${X:?message}` (a required variable) gives a marker the assertions can see."""

    def sub(m: re.Match) -> str:
        if m.group(4):
            return ""
        op, arg = m.group(2), m.group(3) or ""
        if op in (":-", "-"):
            return interpolate(arg)
        if op in (":?", "?"):
            return f"<required {m.group(1)}>"
        return ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


@functools.cache
def load(path: Path) -> dict:
    with open(path) as f:
        doc = yaml.safe_load(f)
    assert isinstance(doc, dict), f"{rel(path)} is not a YAML mapping"
    return doc


def env_of(svc: dict) -> dict:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: (interpolate(str(v)) if v is not None else None) for k, v in env.items()}


def normalize_volume(v, base: Path) -> dict:
    """A volume entry in the long syntax, bind sources made absolute from `base`."""
    if isinstance(v, str):
        parts = v.split(":")
        long = {"target": parts[1] if len(parts) > 1 else parts[0]}
        if len(parts) > 1:
            long["source"] = parts[0]
        if len(parts) > 2 and "ro" in parts[2].split(","):
            long["read_only"] = True
        src = long.get("source", "")
        long["type"] = "bind" if src.startswith((".", "/", "~", "$")) else "volume"
        if long["type"] == "bind":
            # The short syntax creates a missing host path (compose-spec).
            long["bind"] = {"create_host_path": True}
        v = long
    v = dict(v)
    if v.get("type") == "bind":
        src = interpolate(str(v["source"]))
        v["source"] = str((base / os.path.expanduser(src)).resolve())
    return v


# Compose's merge rules for `extends` (compose-spec, "Merge and override"): mappings merge
# key by key, these sequences are unions, volumes merge by mount target, and any other
# sequence or scalar of the extending service replaces the base's.
UNION_KEYS = {"ports", "expose", "tmpfs", "cap_add", "cap_drop", "security_opt", "dns",
              "dns_search", "env_file", "extra_hosts", "devices", "configs", "secrets"}
# Keys `extends` does not carry over (dependencies on other services).
NOT_INHERITED = {"depends_on", "links", "volumes_from"}


def merge(base, over, key: str | None = None):
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else v
        return out
    if key == "volumes" and isinstance(base, list) and isinstance(over, list):
        by_target = {v["target"]: v for v in base}
        by_target.update({v["target"]: v for v in over})
        return list(by_target.values())
    if key in UNION_KEYS and isinstance(base, list) and isinstance(over, list):
        return base + [v for v in over if v not in base]
    return over


def resolved_service(path: Path, name: str, seen: tuple = ()) -> dict:
    """Service `name` of the file at `path` with `extends` applied (recursively)."""
    assert (path, name) not in seen, f"extends cycle through {name} in {rel(path)}"
    svc = copy.deepcopy(load(path)["services"][name])
    if isinstance(svc.get("tmpfs"), str):
        svc["tmpfs"] = [svc["tmpfs"]]
    if "environment" in svc:
        svc["environment"] = env_of(svc)
    if "volumes" in svc:
        svc["volumes"] = [normalize_volume(v, path.parent) for v in svc["volumes"]]
    if isinstance(svc.get("build"), dict):
        svc["build"]["context"] = str((path.parent / svc["build"]["context"]).resolve())
    ext = svc.pop("extends", None)
    if ext is None:
        return svc
    if isinstance(ext, str):
        ext = {"service": ext}
    base_path = (path.parent / ext["file"]).resolve() if "file" in ext else path
    assert base_path.is_file(), f"{rel(path)}: {name} extends a missing file {ext['file']}"
    assert ext["service"] in load(base_path)["services"], (
        f"{rel(path)}: {name} extends {ext['service']}, which {rel(base_path)} does not define")
    base = resolved_service(base_path, ext["service"], seen + ((path, name),))
    for k in NOT_INHERITED & set(load(base_path)["services"][ext["service"]]):
        raise AssertionError(f"{rel(base_path)}: {ext['service']} is extended but has {k}, "
                             "which Compose refuses in an extended service")
    return merge(base, svc)


@functools.cache
def services(path: Path) -> dict[str, dict]:
    return {n: resolved_service(path, n) for n in load(path).get("services", {})}


def routeiq_target(svc: dict) -> str | None:
    """The deploy/Dockerfile target a service runs (dataplane, controlplane, admin), if any."""
    b = svc.get("build")
    if isinstance(b, dict) and b.get("dockerfile") == "deploy/Dockerfile":
        return b.get("target")
    image = str(svc.get("image", ""))
    m = re.fullmatch(r"routeiq/(dataplane|controlplane|admin):.*", image)
    return m.group(1) if m else None


def of_kind(path: Path, target: str) -> dict[str, dict]:
    return {n: s for n, s in services(path).items() if routeiq_target(s) == target}


def depends(svc: dict) -> dict[str, str]:
    d = svc.get("depends_on") or {}
    if isinstance(d, list):
        return {n: "service_started" for n in d}
    return {n: (c or {}).get("condition", "service_started") for n, c in d.items()}


def mount(svc: dict, target: str) -> dict | None:
    return next((v for v in svc.get("volumes", []) if v["target"] == target), None)


def host_port(url: str) -> tuple[str, int | None]:
    u = urlparse(url)
    return u.hostname, u.port


def is_job(svc: dict) -> bool:
    """One-shot services (bucket creation, volume ownership, the training pipeline)."""
    return str(svc.get("restart", "no")) == "no" or bool(svc.get("profiles"))


# --- the schema --------------------------------------------------------------------------


@functools.cache
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=rel)
def test_valid_against_compose_spec(path):
    errors = sorted(validator().iter_errors(load(path)), key=lambda e: list(e.absolute_path))
    assert not errors, f"{rel(path)}:\n" + "\n".join(
        f"  {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_rejects_what_compose_rejects():
    """The vendored schema has teeth: a misspelt key, a bad depends_on condition and a
    service without image or build's sibling typo are all refused."""
    doc = copy.deepcopy(load(TIERS[1]))
    assert not list(validator().iter_errors(doc))
    bad = copy.deepcopy(doc)
    bad["services"]["dataplane"]["read_onyl"] = True
    assert list(validator().iter_errors(bad))
    bad = copy.deepcopy(load(TIERS[3]))
    bad["services"]["admin"]["depends_on"]["controlplane"]["condition"] = "service_ready"
    assert list(validator().iter_errors(bad))
    bad = copy.deepcopy(doc)
    bad["include"] = [{"paht": "x.yaml"}]
    assert list(validator().iter_errors(bad))


# --- the tiers ---------------------------------------------------------------------------


def example_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "example.yaml").read_text())


def assert_standalone_on_example(name: str, svc: dict):
    env = svc.get("environment", {})
    cfg = env.get("ROUTEIQ_CONFIG")
    assert cfg, f"{name}: no ROUTEIQ_CONFIG"
    m = mount(svc, cfg)
    assert m and m["type"] == "bind" and m.get("read_only"), f"{name}: {cfg} is not a read-only bind mount"
    assert Path(m["source"]) == ROOT / "config" / "example.yaml", f"{name} serves {m['source']}"
    assert "ROUTEIQ_NATS_URL" not in env, f"{name} is standalone but has ROUTEIQ_NATS_URL"


def test_example_config_works_offline():
    """Tiers 1 and 2 serve config/example.yaml without any API key: only the built-in mock."""
    models = [d["litellm_params"]["model"] for d in example_config()["model_list"]]
    assert models and all(m.startswith("mock/") for m in models), models


def test_tier1_is_one_standalone_data_plane():
    svcs = services(TIERS[1])
    assert set(svcs) == {"dataplane"}
    dp = svcs["dataplane"]
    assert routeiq_target(dp) == "dataplane"
    assert_standalone_on_example("dataplane", dp)
    assert "REDIS_URL" not in dp.get("environment", {})
    assert "4000:4000" in [str(p) for p in dp.get("ports", [])]


def test_tier2_adds_redis_shared_by_two_data_planes():
    svcs = services(TIERS[2])
    dps = of_kind(TIERS[2], "dataplane")
    assert len(dps) >= 2, "tier 2 runs two data planes"
    assert set(svcs) == set(dps) | {"redis"}
    assert svcs["redis"]["image"].startswith("redis:")
    ids, ports = set(), []
    for name, dp in dps.items():
        env = dp["environment"]
        assert host_port(env.get("REDIS_URL", "")) == ("redis", 6379), f"{name}: REDIS_URL={env.get('REDIS_URL')}"
        assert depends(dp).get("redis") == "service_healthy", name
        assert_standalone_on_example(name, dp)
        ids.add(env.get("ROUTEIQ_DATAPLANE_ID"))
        ports += [str(p).rsplit(":", 1)[0] for p in dp.get("ports", [])]
    assert None not in ids and len(ids) == len(dps), f"data plane ids must differ: {ids}"
    assert len(ports) == len(set(ports)), f"host ports collide: {ports}"


def controlplane_grpc_port() -> int:
    """The control plane image's gRPC port (its ENV ROUTEIQ_GRPC_LISTEN in deploy/Dockerfile)."""
    m = re.search(r"ROUTEIQ_GRPC_LISTEN=0\.0\.0\.0:(\d+)", DOCKERFILE.read_text())
    assert m, "deploy/Dockerfile does not make the control plane's gRPC listen on 0.0.0.0"
    return int(m.group(1))


@pytest.mark.parametrize("tier", [3, 4])
def test_split_planes(tier):
    path = TIERS[tier]
    svcs = services(path)
    for name in ("postgres", "nats", "redis", "controlplane", "admin"):
        assert name in svcs, f"tier {tier} has no {name}"
    assert re.fullmatch(r"postgres:15[.\-].*|postgres:15", svcs["postgres"]["image"])
    nats = svcs["nats"]
    assert nats["image"].startswith("nats:2.10")
    cmd = nats.get("command")
    cmd = cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd or []]
    assert "-js" in cmd and "-sd" in cmd, f"NATS without JetStream file storage: {cmd}"
    store = cmd[cmd.index("-sd") + 1]
    assert (m := mount(nats, store)) and m["type"] == "volume", "JetStream storage is not on a volume"

    (cp_name, cp), = of_kind(path, "controlplane").items()
    env = cp["environment"]
    assert host_port(env["DATABASE_URL"]) == ("postgres", 5432)
    assert urlparse(env["DATABASE_URL"]).path == "/" + svcs["postgres"]["environment"]["POSTGRES_DB"]
    assert env["ROUTEIQ_SALT_KEY"] == "<required ROUTEIQ_SALT_KEY>", (
        "ROUTEIQ_SALT_KEY must be required (${ROUTEIQ_SALT_KEY:?...}), never defaulted")
    assert host_port(env["ROUTEIQ_NATS_URL"]) == ("nats", 4222)
    assert_config_import = mount(cp, env.get("ROUTEIQ_CONFIG", ""))
    assert assert_config_import and Path(assert_config_import["source"]) == ROOT / "config" / "example.yaml"
    want = {"postgres": "service_healthy", "nats": "service_healthy"}
    if tier == 4:
        # Skill bundles: the store's buckets exist before the control plane starts.
        want["s3-init"] = "service_completed_successfully"
        assert env["ROUTEIQ_SKILL_STORE"] == "s3://skills"
        assert host_port(env["AWS_ENDPOINT_URL"]) == ("s3", 9000)
    assert depends(cp) == want

    dps = of_kind(path, "dataplane")
    assert len(dps) >= 2
    for name, dp in dps.items():
        env = dp["environment"]
        assert host_port(env.get("ROUTEIQ_NATS_URL", "")) == ("nats", 4222), name
        assert host_port(env.get("REDIS_URL", "")) == ("redis", 6379), name
        # Attached: the snapshot comes from the control plane, never from a file.
        assert "ROUTEIQ_CONFIG" not in env, f"{name} is attached but has a config"
        assert "--config" not in [str(c) for c in dp.get("command") or []], name
        assert not [v for v in dp.get("volumes", []) if v["type"] == "bind"], f"{name} mounts files"
        assert depends(dp).get(cp_name) == "service_healthy", name
        assert depends(dp).get("nats") == "service_healthy", name

    (_, admin), = of_kind(path, "admin").items()
    assert admin["environment"]["ROUTEIQ_CONTROLPLANE_URL"] == f"http://{cp_name}:{controlplane_grpc_port()}"
    assert depends(admin).get(cp_name) == "service_healthy"


def test_tier4_is_tier3_plus_observability_and_mlops():
    t3, t4 = services(TIERS[3]), services(TIERS[4])
    assert set(t3) <= set(t4), f"tier 4 lacks {set(t3) - set(t4)}"
    for name in set(t3):
        assert routeiq_target(t3[name]) == routeiq_target(t4[name])
    by_image = {n: str(s.get("image", "")) for n, s in t4.items()}

    collector = [n for n, i in by_image.items() if i.startswith("otel/opentelemetry-collector")]
    assert len(collector) == 1, by_image
    otel = t4[collector[0]]
    cfg_mount = next(v for v in otel["volumes"] if v["type"] == "bind")
    otel_cfg = yaml.safe_load(Path(cfg_mount["source"]).read_text())
    grpc = otel_cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc.endswith(":4317")
    assert "otlp" in otel_cfg["service"]["pipelines"]["traces"]["receivers"]
    for name, dp in of_kind(TIERS[4], "dataplane").items():
        assert dp["environment"].get("OTEL_EXPORTER_OTLP_ENDPOINT") == f"http://{collector[0]}:4317", name

    s3 = [n for n, i in by_image.items() if re.match(r"(minio/minio|.*s3.*):", i) and not is_job(t4[n])]
    assert len(s3) == 1, by_image
    for name, dp in of_kind(TIERS[4], "dataplane").items():
        assert host_port(dp["environment"].get("AWS_ENDPOINT_URL", "")) == (s3[0], 9000), name

    prom = [n for n, i in by_image.items() if i.startswith("prom/prometheus:")]
    assert len(prom) == 1
    prom_cfg = yaml.safe_load(Path(mount(t4[prom[0]], "/etc/prometheus/prometheus.yml")["source"]).read_text())
    scraped = {t: job.get("metrics_path", "/metrics") for job in prom_cfg["scrape_configs"]
               for sc in job.get("static_configs", []) for t in sc["targets"]}
    for name in of_kind(TIERS[4], "dataplane"):
        assert scraped.get(f"{name}:4000") == "/metrics", f"Prometheus does not scrape {name}"
    for name in of_kind(TIERS[4], "controlplane"):
        assert scraped.get(f"{name}:4100") == "/metrics", f"Prometheus does not scrape {name}"

    graf = [n for n, i in by_image.items() if i.startswith("grafana/grafana:")]
    assert len(graf) == 1
    g = t4[graf[0]]
    prov = Path(mount(g, "/etc/grafana/provisioning")["source"])
    (ds,) = yaml.safe_load((prov / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == f"http://{prom[0]}:9090"
    (provider,) = yaml.safe_load((prov / "dashboards" / "routeiq.yaml").read_text())["providers"]
    dash_mount = mount(g, provider["options"]["path"])
    assert dash_mount, "the dashboard provider's path is not mounted"
    assert (Path(dash_mount["source"]) / DASHBOARD.name).resolve() == DASHBOARD

    mlops = {n: s for n, s in t4.items() if "mlops" in (s.get("profiles") or [])}
    assert mlops, "no MLOps job in the mlops profile"
    for name, s in mlops.items():
        assert s["build"]["dockerfile"] == "deploy/mlops/Dockerfile" and Path(s["build"]["context"]) == ROOT, name
        assert host_port(s["environment"]["AWS_ENDPOINT_URL"]) == (s3[0], 9000), name


# --- every service -----------------------------------------------------------------------


def all_services():
    return [(p, n) for p in COMPOSE_FILES for n in load(p).get("services", {})]


@pytest.mark.parametrize("path,name", all_services(), ids=lambda v: rel(v) if isinstance(v, Path) else v)
def test_service_hardened_and_probed(path, name):
    svc = services(path)[name]
    target = routeiq_target(svc)
    if path.parent == COMPOSE_DIR:
        # Whether a service is a one-shot job is said, not implied by a missing policy.
        assert "restart" in svc or svc.get("profiles"), (
            f"{name}: give a restart policy (`\"no\"` for a one-shot job)")
    if target:
        assert svc.get("read_only") is True, f"{name}: read_only"
        assert "/tmp" in svc.get("tmpfs", []), f"{name}: no tmpfs on /tmp"
        assert "ALL" in svc.get("cap_drop", []), f"{name}: capabilities not dropped"
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: restart"
        test = svc.get("healthcheck", {}).get("test", [])
        assert test[:2] == ["CMD", "/usr/local/bin/routeiq-healthcheck"], f"{name}: {test}"
        assert host_port(test[2]) == ("127.0.0.1", HEALTH_PORTS[target]), f"{name}: probes {test[2]}"
        build = svc["build"]
        assert Path(build["context"]) == ROOT and (ROOT / build["dockerfile"]).is_file()
        stages = re.findall(r"(?im)^FROM\s+.*\s+AS\s+(\S+)\s*$", DOCKERFILE.read_text())
        assert build["target"] in stages, f"{name}: no stage {build['target']} in deploy/Dockerfile"
        assert svc["image"] == f"routeiq/{target}:0.1.0", svc["image"]
    elif not is_job(svc):
        assert svc.get("healthcheck") or svc.get("x-no-healthcheck"), (
            f"{name}: a long-running service needs a healthcheck, or x-no-healthcheck with the reason")
        assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), f"{name}: restart"
    for dep, cond in depends(svc).items():
        assert dep in load(path)["services"], f"{name} depends on unknown {dep}"
        other = services(path)[dep]
        if cond == "service_healthy":
            assert other.get("healthcheck"), f"{name} waits for {dep} to be healthy; it has no healthcheck"
        if cond == "service_completed_successfully":
            assert is_job(other), f"{name} waits for {dep} to complete; it is long-running"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=rel)
def test_referenced_files_exist(path):
    """Every bind-mounted file or folder, build context and Dockerfile is in the repository;
    only a writable folder Compose creates (`bind.create_host_path`, implied by the short
    syntax) may be missing, never a read-only input. Every named volume is declared in the
    file that uses it."""
    declared = set(load(path).get("volumes") or {})
    for name, svc in services(path).items():
        for v in svc.get("volumes", []):
            if v["type"] == "bind":
                src = Path(v["source"])
                if v.get("read_only") or not (v.get("bind") or {}).get("create_host_path"):
                    assert src.exists(), f"{rel(path)}: {name} mounts missing {src}"
                assert ROOT in src.parents, f"{name} mounts {src}, outside the repository"
            elif v["type"] == "volume":
                assert v.get("source") in declared, f"{rel(path)}: {name} uses undeclared volume {v.get('source')}"
        b = svc.get("build")
        if isinstance(b, dict):
            assert Path(b["context"]).is_dir(), f"{name}: build context {b['context']}"
            assert (Path(b["context"]) / b.get("dockerfile", "Dockerfile")).is_file(), name


# --- the dashboard -----------------------------------------------------------------------


@functools.cache
def exported_metrics() -> dict[str, str]:
    """Metric name -> type, read from the planes' Rust source: the data plane registers
    each with a (name, help) pair (`counter(&r, "name", "help", ...)`, `IntGauge::new(...)`,
    `Opts::new(...)`, `HistogramOpts::new(...)`); the control plane writes `# TYPE` lines."""
    found: dict[str, str] = {}
    call = re.compile(r'\b((?:\w+::)*\w+)\(\s*(?:&?\w+\s*,\s*)?"([a-zA-Z_:][a-zA-Z0-9_:]*)"\s*,\s*"')
    # `gauge_pair("remaining", "max", ...)`: two gauges.
    pair = re.compile(r'\bgauge_pair\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"\s*,\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"')
    for src in ("dataplane/src", "controlplane/src"):
        for f in (ROOT / src).rglob("*.rs"):
            text = f.read_text()
            for fn, name in call.findall(text):
                last = fn.split("::")[-2 if fn.endswith("::new") else -1]
                if not re.search(r"(?i)counter|gauge|histogram|^opts$", last):
                    continue  # not a metric constructor
                histogram = "histogram" in last.lower()
                if histogram or name not in found:
                    found[name] = "histogram" if histogram else "other"
            for names in pair.findall(text):
                for name in names:
                    found.setdefault(name, "other")
            for name, kind in re.findall(r"# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)", text):
                found[name] = kind
    return found


@functools.cache
def rust_string_literals() -> frozenset[str]:
    words = set()
    for src in ("dataplane/src", "controlplane/src"):
        for f in (ROOT / src).rglob("*.rs"):
            words |= set(re.findall(r'"([a-z_][a-z0-9_]*)"', f.read_text()))
    return frozenset(words)


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_queries_only_exported_metrics(dashboard):
    exported = exported_metrics()
    assert len(exported) >= 10, f"metric registrations not found in the source: {exported}"
    queries = dashboard_queries(dashboard)
    used = set()
    for title, expr, legend in queries:
        names = promql_metrics(expr)
        assert names, f"{title}: no metric in {expr!r}"
        for n in names:
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            ok = n in exported or (n != base and exported.get(base) == "histogram")
            assert ok, f"{title}: {n} is not exported by the data plane or the control plane"
            if n.endswith("_bucket"):
                assert "histogram_quantile" in expr and re.search(r"by \([^)]*\ble\b", expr), (
                    f"{title}: buckets of {base} must keep `le` for histogram_quantile")
            used.add(base)
        for label in promql_labels(expr, legend):
            assert label in rust_string_literals() | {"instance", "job", "le"}, (
                f"{title}: label {label} is not one the planes export")
    assert len(used) >= 15, f"the dashboard covers few metrics: {sorted(used)}"
    assert used & {m for m, k in exported.items() if k == "histogram"}, "no latency histogram"


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_provisionable(dashboard):
    dash = json.loads(dashboard.read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        uid = p["datasource"]["uid"]
        var = re.fullmatch(r"\$\{(\w+)\}", uid)
        assert var and variables[var.group(1)]["type"] == "datasource", p["title"]
        assert variables[var.group(1)]["query"] == "prometheus"
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{p['title']} overflows the grid"
