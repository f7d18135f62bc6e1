"""The Helm chart (deploy/helm/routeiq): lint, render, validate, and what the install does.

Every values file (the defaults, values-moat.yaml and those under ci/) must pass
`helm lint --strict`, render, and give objects that the Kubernetes API's own schemas accept
(kubernetes-validate, strict: unknown fields are errors). The assertions below read the
rendered objects the way the cluster would: which pods exist, what they run, what they can
reach, and in which order Helm creates them.

helm comes from ROUTEIQ_HELM (scripts/test.sh installs it); default
~/.cache/routeiq/bin/helm.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "routeiq"
HELM = Path(os.environ.get("ROUTEIQ_HELM") or Path.home() / ".cache/routeiq/bin/helm")
RELEASE = "rq"
NAMESPACE = "routeiq"
PREFIX = f"{RELEASE}-routeiq"

# Every values file the chart ships: None is values.yaml alone.
VALUES_FILES = [None, "values-moat.yaml"] + sorted(
    str(p.relative_to(CHART)) for p in (CHART / "ci").glob("*.yaml")
)
# The chart's kubeVersion floor and the version helm 4 renders for.
KUBERNETES_VERSIONS = ["1.25.0", "1.35.0"]

MOAT_REGISTRY = "registry.internal.example:5000/"
MOAT_CIDRS = {ipaddress.ip_network("10.0.0.0/8")}

PORTS = {"dataplane": 4000, "controlplane": 4100, "admin": 4001}


# --- helm ------------------------------------------------------------------------------


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if not (HELM.is_file() and os.access(HELM, os.X_OK)):
        pytest.fail(
            f"helm not found at {HELM}: set ROUTEIQ_HELM to a helm v4 binary "
            "(scripts/test.sh installs one into ~/.cache/routeiq/bin)",
            pytrace=False,
        )
    done = subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def value_args(values_file: str | None, sets: tuple[str, ...]) -> list[str]:
    args = ["-f", str(CHART / values_file)] if values_file else []
    for s in sets:
        args += ["--set", s]
    return args


@functools.cache
def render(values_file: str | None = None, *sets: str) -> tuple[dict, ...]:
    out = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        *value_args(values_file, sets),
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def render_error(*sets: str) -> str:
    done = helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        *value_args(None, sets),
        check=False,
    )
    assert done.returncode != 0, f"rendering with {sets} should fail"
    return done.stderr


# --- reading rendered objects -----------------------------------------------------------


def of_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind: str, name: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(docs) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return spec["containers"] + spec.get("initContainers", [])


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_refs(docs) -> list[tuple[str, dict]]:
    """(workload name, secretKeyRef) for every env entry read from a Secret."""
    refs = []
    for w in workloads(docs):
        for c in containers(w):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append((w["metadata"]["name"], ref))
    return refs


def hook_weight(doc: dict) -> int | None:
    """The hook weight of a pre-install and pre-upgrade hook, else None."""
    ann = doc["metadata"].get("annotations") or {}
    phases = set((ann.get("helm.sh/hook") or "").split(","))
    if {"pre-install", "pre-upgrade"} <= phases:
        return int(ann.get("helm.sh/hook-weight", "0"))
    return None


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def values_of(values_file: str | None) -> dict:
    return yaml.safe_load((CHART / values_file).read_text()) if values_file else {}


def tls_values(values_file: str | None) -> dict:
    return values_of(values_file).get("tls") or {}


def by_component(docs) -> dict[str, dict]:
    """component -> its Deployment"""
    return {pod_labels(d)["app.kubernetes.io/component"]: d for d in of_kind(docs, "Deployment")}


def file_source(workload: dict, container: dict, path: str) -> tuple[str, str]:
    """(Secret, key) that a file the container reads comes from. The Secret must be mounted
    read-only as a whole volume: a subPath mount never sees a renewed certificate."""
    directory, filename = path.rsplit("/", 1)
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
    assert len(mounts) == 1, f"{path}: {len(mounts)} mounts at {directory}"
    mount = mounts[0]
    assert mount.get("readOnly") is True and "subPath" not in mount, mount
    volumes = [v for v in pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
    assert len(volumes) == 1, f"{path}: volume {mount['name']} is not in the pod spec"
    secret = volumes[0].get("secret")
    assert secret, f"{path}: volume {mount['name']} is not a Secret"
    items = {i["path"]: i["key"] for i in secret.get("items", [])}
    assert not items or filename in items, f"{path}: {filename} is not among {sorted(items)}"
    return secret["secretName"], items.get(filename, filename)


def env_file(workload: dict, name: str) -> tuple[str, str]:
    """(Secret, key) behind the file that env `name` of the workload's container names."""
    (c,) = pod_spec(workload)["containers"]
    return file_source(workload, c, env_of(c)[name]["value"])


# Every variable naming a TLS file or setting, for the "TLS off" checks.
TLS_ENV = {
    "ROUTEIQ_TLS_CERT",
    "ROUTEIQ_TLS_KEY",
    "ROUTEIQ_TLS_CLIENT_CA",
    "ROUTEIQ_CONTROLPLANE_CA",
    "ROUTEIQ_CONTROLPLANE_CERT",
    "ROUTEIQ_CONTROLPLANE_KEY",
    "ROUTEIQ_NATS_TLS_CA",
    "ROUTEIQ_NATS_TLS_CERT",
    "ROUTEIQ_NATS_TLS_KEY",
    "REDIS_TLS_CA",
    "PGSSLROOTCERT",
    "PGSSLMODE",
}


# --- lint, render, schema ----------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_lint_strict_passes(values_file):
    out = helm("lint", "--strict", str(CHART), *value_args(values_file, ())).stdout
    assert "0 chart(s) failed" in out


def validate_service_monitor(doc: dict) -> None:
    # kubernetes-validate knows only the built-in API; ServiceMonitor is the Prometheus
    # Operator's CRD, so its shape is checked here against what the operator requires.
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert spec["selector"]["matchLabels"], "a ServiceMonitor must select Services"
    assert spec["endpoints"], "a ServiceMonitor needs at least one endpoint"
    for ep in spec["endpoints"]:
        assert set(ep) <= {
            "port",
            "path",
            "scheme",
            "interval",
            "scrapeTimeout",
            "tlsConfig",
        }
        assert isinstance(ep["port"], str) and ep["path"].startswith("/")
        assert ep.get("scheme", "http") in ("http", "https")
        if "tlsConfig" in ep:
            # The operator's SafeTLSConfig: files of Prometheus's pod or Secrets of the
            # ServiceMonitor's namespace.
            tls = ep["tlsConfig"]
            assert ep["scheme"] == "https"
            assert set(tls) <= {
                "ca",
                "cert",
                "keySecret",
                "serverName",
                "insecureSkipVerify",
            }
            (source,) = tls["ca"].items()
            assert source[0] in ("secret", "configMap") and set(source[1]) == {
                "name",
                "key",
            }


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_every_rendered_object_validates_strictly(values_file):
    docs = render(values_file)
    assert docs, "nothing rendered"
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            validate_service_monitor(doc)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise AssertionError(
                    f"{doc['kind']}/{doc['metadata']['name']} ({values_file or 'defaults'}) "
                    f"is invalid for Kubernetes {version} at {path}: {e.message}"
                ) from None


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_names_are_unique_and_services_reach_pods(values_file):
    docs = render(values_file)
    keys = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "two objects share a kind and name"
    pods = [pod_labels(w) for w in workloads(docs)]
    for svc in of_kind(docs, "Service"):
        assert any(selects({"matchLabels": svc["spec"]["selector"]}, labels) for labels in pods), (
            f"Service {svc['metadata']['name']} selects no pod"
        )


# --- topology ----------------------------------------------------------------------------


def test_data_plane_and_control_plane_scale_independently():
    docs = render()
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    assert set(deployments) == {f"{PREFIX}-dataplane", f"{PREFIX}-controlplane", f"{PREFIX}-admin"}
    images = {n: containers(d)[0]["image"] for n, d in deployments.items()}
    assert images[f"{PREFIX}-dataplane"] == "routeiq/dataplane:0.1.0"
    assert images[f"{PREFIX}-controlplane"] == "routeiq/controlplane:0.1.0"
    assert images[f"{PREFIX}-admin"] == "routeiq/admin:0.1.0"

    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    targets = [h["spec"]["scaleTargetRef"] for h in hpas]
    assert sorted(t["name"] for t in targets) == [f"{PREFIX}-controlplane", f"{PREFIX}-dataplane"]
    for hpa in hpas:
        target = hpa["spec"]["scaleTargetRef"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert target["name"] in deployments
        metric = hpa["spec"]["metrics"][0]["resource"]
        assert metric["name"] == "cpu" and metric["target"]["type"] == "Utilization"
        # The HPA owns the replica count: a fixed one would fight it on every upgrade.
        assert "replicas" not in deployments[target["name"]]["spec"]
        # Utilization is measured against requests: without them the HPA cannot act.
        assert containers(deployments[target["name"]])[0]["resources"]["requests"]["cpu"]
    assert "replicas" in deployments[f"{PREFIX}-admin"]["spec"], "admin HPA is off by default"

    with_admin = render(None, "admin.autoscaling.enabled=true")
    assert f"{PREFIX}-admin" in {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(with_admin, "HorizontalPodAutoscaler")
    }


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_every_long_running_workload_has_a_disruption_budget(values_file):
    docs = render(values_file)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    long_running = [w for w in workloads(docs) if w["kind"] != "Job"]
    assert long_running
    for w in long_running:
        covering = [p for p in pdbs if selects(p["spec"]["selector"], pod_labels(w))]
        assert len(covering) == 1, f"{w['kind']}/{w['metadata']['name']}: {len(covering)} PDBs"
        assert covering[0]["apiVersion"] == "policy/v1"


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_probes_hit_the_health_endpoints_on_the_serving_port(values_file):
    docs = render(values_file)
    # The listeners serve HTTPS with tls.enabled; the kubelet must speak it (unverified).
    scheme = "HTTPS" if tls_values(values_file).get("enabled") else "HTTP"
    seen = set()
    for d in of_kind(docs, "Deployment"):
        component = pod_labels(d)["app.kubernetes.io/component"]
        (c,) = pod_spec(d)["containers"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for probe, path in (
            ("startupProbe", "/health/liveliness"),
            ("livenessProbe", "/health/liveliness"),
            ("readinessProbe", "/health/readiness"),
        ):
            if probe not in c:
                assert probe == "startupProbe" and component == "admin", f"{component} {probe}"
                continue
            get = c[probe]["httpGet"]
            assert get["path"] == path, f"{component} {probe}"
            assert ports[get["port"]] == PORTS[component], f"{component} {probe} port"
            assert get.get("scheme", "HTTP") == scheme, f"{component} {probe} scheme"
        seen.add(component)
    assert "dataplane" in seen


def test_component_wiring():
    docs = render()
    dp = named(docs, "Deployment", f"{PREFIX}-dataplane")
    env = env_of(pod_spec(dp)["containers"][0])
    assert env["ROUTEIQ_NATS_URL"]["value"] == f"nats://{PREFIX}-nats:4222"
    assert env["ROUTEIQ_DATAPLANE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["ROUTEIQ_LISTEN"]["value"] == "0.0.0.0:4000"
    assert "ROUTEIQ_CONFIG" not in env, "attached data planes take the snapshot from NATS"

    cp = named(docs, "Deployment", f"{PREFIX}-controlplane")
    env = env_of(pod_spec(cp)["containers"][0])
    assert env["ROUTEIQ_GRPC_LISTEN"]["value"] == "0.0.0.0:50051"
    assert env["ROUTEIQ_HTTP_LISTEN"]["value"] == "0.0.0.0:4100"
    assert env["ROUTEIQ_NATS_URL"]["value"] == f"nats://{PREFIX}-nats:4222"
    for name in ("DATABASE_URL", "ROUTEIQ_SALT_KEY", "ROUTEIQ_GRPC_TOKEN"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == PREFIX

    admin = named(docs, "Deployment", f"{PREFIX}-admin")
    env = env_of(pod_spec(admin)["containers"][0])
    cp_svc = named(docs, "Service", f"{PREFIX}-controlplane")
    grpc_port = next(p["port"] for p in cp_svc["spec"]["ports"] if p["name"] == "grpc")
    assert env["ROUTEIQ_CONTROLPLANE_URL"]["value"] == f"http://{PREFIX}-controlplane:{grpc_port}"
    assert env["ROUTEIQ_ADMIN_LISTEN"]["value"] == "0.0.0.0:4001"
    assert env["ROUTEIQ_GRPC_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "grpc-token"


def test_otlp_endpoint_and_protocol_reach_the_data_plane():
    env = env_of(pod_spec(named(render(), "Deployment", f"{PREFIX}-dataplane"))["containers"][0])
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env and "OTEL_EXPORTER_OTLP_PROTOCOL" not in env
    docs = render(None, "dataplane.otlp.endpoint=http://collector:4318",
                  "dataplane.otlp.protocol=http/protobuf", "dataplane.otlp.port=4318")
    env = env_of(pod_spec(named(docs, "Deployment", f"{PREFIX}-dataplane"))["containers"][0])
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://collector:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"]["value"] == "http/protobuf"
    assert "/dataplane/otlp/protocol" in render_error("dataplane.otlp.protocol=http/json")


# --- the migration Job -------------------------------------------------------------------


@pytest.mark.parametrize("values_file", [None, "values-moat.yaml", "ci/values-external.yaml"])
def test_migration_job_runs_once_before_install_and_upgrade(values_file):
    docs = render(values_file)
    (job,) = of_kind(docs, "Job")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert set(ann["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    (c,) = pod_spec(job)["containers"]
    assert c["args"] == ["--once"]
    assert c["image"].endswith("routeiq/controlplane:0.1.0")
    assert pod_spec(job)["restartPolicy"] == "Never"
    env = env_of(c)
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert env["ROUTEIQ_SALT_KEY"]["valueFrom"]["secretKeyRef"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert env["ROUTEIQ_CONFIG"]["value"] in mounts

    # Everything the Job needs that the chart creates must exist before it: hooks of the
    # same phases with a lower weight. A plain release object is created after pre-install
    # hooks, so the Job would start without it.
    job_weight = hook_weight(job)
    needed = {("Secret", r["name"]) for _, r in secret_refs([job])}
    needed |= {
        ("ConfigMap", v["configMap"]["name"]) for v in pod_spec(job)["volumes"] if "configMap" in v
    }
    needed.add(("ServiceAccount", pod_spec(job)["serviceAccountName"]))
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert any(kind == "ConfigMap" and (kind, name) in rendered for kind, name in needed)
    for key in needed:
        if key in rendered:
            w = hook_weight(rendered[key])
            assert w is not None and w < job_weight, f"{key} is not created before the Job"
    # The release's own Deployments stay ordinary objects, rolled out after the Job.
    for d in of_kind(docs, "Deployment"):
        assert hook_weight(d) is None


def test_migration_job_egress_policy_exists_before_it():
    docs = render()
    (job,) = of_kind(docs, "Job")
    policies = [
        p
        for p in of_kind(docs, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], pod_labels(job))
    ]
    assert len(policies) == 1
    assert hook_weight(policies[0]) < hook_weight(job)
    ports = {p["port"] for rule in policies[0]["spec"]["egress"] for p in rule["ports"]}
    assert ports == {53, 5432}


def test_imported_config_reaches_the_job_and_standalone_data_plane():
    docs = render("values-moat.yaml")
    cm = named(docs, "ConfigMap", f"{PREFIX}-config")
    config = yaml.safe_load(cm["data"]["config.yaml"])
    (model,) = config["model_list"]
    assert model["litellm_params"]["model"].startswith("openai/")
    assert model["litellm_params"]["api_base"] == "http://vllm.internal.example:8000/v1"

    standalone = render("ci/values-standalone.yaml")
    assert not of_kind(standalone, "Job"), "no control plane, nothing to migrate"
    assert not of_kind(standalone, "StatefulSet")
    (dp,) = of_kind(standalone, "Deployment")
    (c,) = pod_spec(dp)["containers"]
    env = env_of(c)
    assert "ROUTEIQ_NATS_URL" not in env
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == env["ROUTEIQ_CONFIG"]["value"])
    volume = next(v for v in pod_spec(dp)["volumes"] if v["name"] == mount["name"])
    cm = named(standalone, "ConfigMap", volume["configMap"]["name"])
    assert hook_weight(cm) is None, "without a Job the config is an ordinary release object"
    models = [
        m["litellm_params"]["model"]
        for m in yaml.safe_load(cm["data"][mount["subPath"]])["model_list"]
    ]
    assert models and all(m.startswith("mock/") for m in models)
    # The Secret the standalone data plane reads has no control-plane keys to require.
    (secret,) = of_kind(standalone, "Secret")
    assert set(secret["data"]) == {"master-key"}


# --- secrets -----------------------------------------------------------------------------


def test_chart_created_secret_holds_every_key_the_pods_require():
    docs = render()
    (secret,) = of_kind(docs, "Secret")
    assert secret["metadata"]["name"] == PREFIX
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {"database-url", "salt-key", "master-key", "grpc-token"} <= set(secret["data"])
    refs = secret_refs(docs)
    assert refs
    for workload, ref in refs:
        assert ref["name"] == PREFIX, workload
        assert ref.get("optional") or ref["key"] in secret["data"], f"{workload} needs {ref['key']}"


@pytest.mark.parametrize("values_file", [None, "values-moat.yaml"], ids=["defaults", "moat"])
def test_existing_secret_replaces_the_chart_secret(values_file):
    docs = render(
        values_file, "secrets.existingSecret=prod-routeiq", "secrets.keys.databaseUrl=PG_URL"
    )
    assert not of_kind(docs, "Secret"), "the chart must not render a Secret next to yours"
    refs = secret_refs(docs)
    assert {r["name"] for _, r in refs} == {"prod-routeiq"}
    db = {w for w, r in refs if r["key"] == "PG_URL"}
    assert db == {f"{PREFIX}-controlplane", f"{PREFIX}-migrate"}
    for w in workloads(docs):
        for v in pod_spec(w).get("volumes", []):
            if "secret" in v and not v["name"].startswith("tls-"):
                assert v["secret"]["secretName"] == "prod-routeiq"


def test_nats_credentials_are_wired_for_each_auth_type():
    token = render(None, "nats.auth.type=token")
    (secret,) = of_kind(token, "Secret")
    assert "nats-token" in secret["data"]
    sts = named(token, "StatefulSet", f"{PREFIX}-nats")
    conf = named(token, "ConfigMap", f"{PREFIX}-nats")["data"]["nats.conf"]
    assert "token: $ROUTEIQ_NATS_TOKEN" in conf
    for w in [
        sts,
        named(token, "Deployment", f"{PREFIX}-dataplane"),
        named(token, "Deployment", f"{PREFIX}-controlplane"),
    ]:
        ref = env_of(pod_spec(w)["containers"][0])["ROUTEIQ_NATS_TOKEN"]["valueFrom"][
            "secretKeyRef"
        ]
        assert (ref["name"], ref["key"]) == (PREFIX, "nats-token")

    creds = render("ci/values-external.yaml")
    dp = named(creds, "Deployment", "gateway-dataplane")
    (c,) = pod_spec(dp)["containers"]
    env = env_of(c)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert env["ROUTEIQ_NATS_CREDS"]["value"].startswith(mounts["nats-creds"] + "/")
    assert env["ROUTEIQ_NATS_TLS_CA"]["value"].startswith(mounts["tls-nats-ca"] + "/")
    assert env["ROUTEIQ_NATS_URL"]["value"] == "tls://nats.messaging.svc.cluster.local:4222"
    creds_volume = next(v for v in pod_spec(dp)["volumes"] if v["name"] == "nats-creds")
    assert creds_volume["secret"]["secretName"] == "gateway-secrets"


# --- moat mode ---------------------------------------------------------------------------


def test_moat_pulls_every_image_from_the_private_registry():
    docs = render("values-moat.yaml")
    images = [c["image"] for w in workloads(docs) for c in containers(w)]
    assert len(images) >= 5
    for image in images:
        assert image.startswith(MOAT_REGISTRY), image
    for w in workloads(docs):
        assert {"name": "registry-internal"} in pod_spec(w)["imagePullSecrets"]


def test_moat_data_plane_egress_reaches_only_local_networks():
    docs = render("values-moat.yaml")
    policy = named(docs, "NetworkPolicy", f"{PREFIX}-dataplane")
    assert "Egress" in policy["spec"]["policyTypes"]
    nats_labels = pod_labels(named(docs, "StatefulSet", f"{PREFIX}-nats"))
    allowed = set()
    for rule in policy["spec"]["egress"]:
        assert rule.get("to"), f"an egress rule without `to` allows every address: {rule}"
        ports = {(p["protocol"], p["port"]) for p in rule["ports"]}
        for peer in rule["to"]:
            if "ipBlock" in peer:
                net = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                assert net.prefixlen > 0, "0.0.0.0/0 in moat mode"
                assert any(net.subnet_of(m) for m in MOAT_CIDRS), net
                target = "local"
            elif "podSelector" in peer and "namespaceSelector" not in peer:
                assert selects(peer["podSelector"], nats_labels), peer
                target = "nats"
            else:
                assert peer == {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                    }
                }
                target = "dns"
            allowed |= {(target, port) for port in ports}
    assert allowed == {
        ("dns", ("UDP", 53)),
        ("dns", ("TCP", 53)),
        ("nats", ("TCP", 4222)),
        ("local", ("TCP", 6379)),  # Redis
        ("local", ("TCP", 443)),
        ("local", ("TCP", 8000)),  # the local model servers
    }


def test_moat_monitoring_and_bundled_nats():
    docs = render("values-moat.yaml")
    monitors = of_kind(docs, "ServiceMonitor")
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    scraped = set()
    for m in monitors:
        assert m["metadata"]["labels"]["release"] == "prometheus"
        (svc,) = [
            s for s in services.values() if selects(m["spec"]["selector"], s["metadata"]["labels"])
        ]
        port_names = {p["name"] for p in svc["spec"]["ports"]}
        assert all(
            ep["port"] in port_names and ep["path"] == "/metrics" for ep in m["spec"]["endpoints"]
        )
        scraped.add(svc["metadata"]["name"])
    assert scraped == {f"{PREFIX}-dataplane", f"{PREFIX}-controlplane"}
    assert not of_kind(render(), "ServiceMonitor"), "ServiceMonitor is off by default"
    assert of_kind(docs, "StatefulSet")


def test_default_provider_egress_is_https_to_public_addresses_only():
    policy = named(render(), "NetworkPolicy", f"{PREFIX}-dataplane")
    blocks = [
        (peer["ipBlock"], [p["port"] for p in rule["ports"]])
        for rule in policy["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    assert blocks == [(blocks[0][0], [443])]
    block = blocks[0][0]
    assert block["cidr"] == "0.0.0.0/0"
    # Cloud metadata and private networks are not "providers".
    assert {"169.254.0.0/16", "10.0.0.0/8"} <= set(block["except"])


# --- network policies -------------------------------------------------------------------


def ingress_ports(policy: dict) -> dict[int, list]:
    """port -> `from` peers ([] = anyone)"""
    return {
        p["port"]: rule.get("from", []) for rule in policy["spec"]["ingress"] for p in rule["ports"]
    }


def test_each_component_gets_its_own_network_policy():
    docs = render()
    policies = of_kind(docs, "NetworkPolicy")
    for w in workloads(docs):
        covering = [p for p in policies if selects(p["spec"]["podSelector"], pod_labels(w))]
        assert len(covering) == 1, w["metadata"]["name"]
        assert set(covering[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}

    labels = {
        c: pod_labels(named(docs, "Deployment", f"{PREFIX}-{c}"))
        for c in ("dataplane", "controlplane", "admin")
    }
    cp = ingress_ports(named(docs, "NetworkPolicy", f"{PREFIX}-controlplane"))
    assert set(cp) == {50051, 4100}
    assert [selects(p["podSelector"], labels["admin"]) for p in cp[50051]] == [True]
    assert cp[4100] == [{"podSelector": {}}], "metrics: any pod of the namespace"

    admin = named(docs, "NetworkPolicy", f"{PREFIX}-admin")
    assert set(ingress_ports(admin)) == {4001}
    egress = {
        (p["port"], str(rule.get("to"))) for rule in admin["spec"]["egress"] for p in rule["ports"]
    }
    assert {port for port, _ in egress} == {53, 50051}
    grpc_rule = next(r for r in admin["spec"]["egress"] if r["ports"][0]["port"] == 50051)
    assert selects(grpc_rule["to"][0]["podSelector"], labels["controlplane"])

    nats = ingress_ports(named(docs, "NetworkPolicy", f"{PREFIX}-nats"))
    assert set(nats) == {4222}
    assert sorted(
        next(c for c, l in labels.items() if selects(p["podSelector"], l)) for p in nats[4222]
    ) == ["controlplane", "dataplane"]

    assert not of_kind(render(None, "networkPolicy.enabled=false"), "NetworkPolicy")


# --- pod security --------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=lambda v: v or "defaults")
def test_every_pod_runs_unprivileged_on_a_read_only_root(values_file):
    docs = render(values_file)
    for w in workloads(docs):
        name = w["metadata"]["name"]
        spec = pod_spec(w)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532, name
        assert pod["fsGroup"] == 65532 and pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for c in containers(w):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}"
            assert sc["runAsNonRoot"] is True, f"{name}/{c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
            assert sc["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
            assert c["resources"]["requests"] and c["resources"]["limits"], f"{name}/{c['name']}"
            # A read-only root needs a writable /tmp.
            tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
            volume = next(v for v in spec["volumes"] if v["name"] == tmp["name"])
            assert "emptyDir" in volume, name
    for sa in of_kind(docs, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False


def test_topology_spread_constraints_select_their_own_component():
    docs = render("ci/values-external.yaml")
    dp = named(docs, "Deployment", "gateway-dataplane")
    (tsc,) = pod_spec(dp)["topologySpreadConstraints"]
    assert tsc["labelSelector"]["matchLabels"] == dp["spec"]["selector"]["matchLabels"]


# --- bundled NATS ------------------------------------------------------------------------


def test_bundled_nats_is_a_jetstream_statefulset_on_a_persistent_volume():
    docs = render()
    sts = named(docs, "StatefulSet", f"{PREFIX}-nats")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    (c,) = pod_spec(sts)["containers"]
    assert c["image"] == "nats:2.10-alpine"
    conf_mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert c["args"] == ["--config", f"{conf_mount['mountPath']}/nats.conf"]
    conf = named(docs, "ConfigMap", f"{PREFIX}-nats")["data"]["nats.conf"]
    assert "jetstream {" in conf
    store = next(line.split(":", 1)[1].strip() for line in conf.splitlines() if "store_dir" in line)
    data_mount = next(m for m in c["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert store.startswith(data_mount["mountPath"] + "/"), "JetStream must write to the PVC"
    assert "listen: 0.0.0.0:4222" in conf
    assert c["livenessProbe"]["httpGet"]["path"].startswith("/healthz")

    headless = named(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    client = named(docs, "Service", f"{PREFIX}-nats")
    assert {p["port"] for p in client["spec"]["ports"]} >= {4222}

    external = render(None, "nats.enabled=false", "nats.url=nats://nats.infra:4222")
    assert not of_kind(external, "StatefulSet")
    dp = named(external, "Deployment", f"{PREFIX}-dataplane")
    assert (
        env_of(pod_spec(dp)["containers"][0])["ROUTEIQ_NATS_URL"]["value"]
        == "nats://nats.infra:4222"
    )


# --- TLS and mutual TLS --------------------------------------------------------------------

# Values files with tls.enabled: moat (mutual TLS, NATS client certificates, Redis and
# PostgreSQL CAs) and ci/values-tls.yaml (TLS only, another fullname).
TLS_FILES = ["values-moat.yaml", "ci/values-tls.yaml"]
SERVICES = {"dataplane", "controlplane", "admin"}


def test_tls_values_files_are_linted_rendered_and_validated():
    # The parametrized lint/render/validate tests above run over VALUES_FILES.
    assert set(TLS_FILES) <= set(VALUES_FILES)
    for f in TLS_FILES:
        assert tls_values(f)["enabled"] is True, f
    assert tls_values("values-moat.yaml")["mtls"] is True
    assert not tls_values("ci/values-tls.yaml").get("mtls")


@pytest.mark.parametrize("values_file", TLS_FILES)
def test_tls_every_listener_serves_the_certificate_of_its_secret(values_file):
    tls = tls_values(values_file)
    docs = render(values_file)
    deployments = by_component(docs)
    assert set(deployments) == SERVICES
    for component, d in deployments.items():
        secret = tls[component]["existingSecret"]
        assert secret
        assert env_file(d, "ROUTEIQ_TLS_CERT") == (secret, "tls.crt"), component
        assert env_file(d, "ROUTEIQ_TLS_KEY") == (secret, "tls.key"), component
        (c,) = pod_spec(d)["containers"]
        probes = [c[p] for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in c]
        assert len(probes) >= 2 and all(p["httpGet"]["scheme"] == "HTTPS" for p in probes)
        # Clients without certificates (the kubelet's probes) must still reach the data
        # plane, the admin API and the control plane's health port.
        if component != "controlplane":
            assert "ROUTEIQ_TLS_CLIENT_CA" not in env_of(c), component
    # kubernetes.io/h2c announces cleartext HTTP/2: wrong once gRPC is TLS.
    cp_svc = named(docs, "Service", deployments["controlplane"]["metadata"]["name"])
    assert [p.get("appProtocol") for p in cp_svc["spec"]["ports"]] == [None, None]


@pytest.mark.parametrize("values_file", TLS_FILES)
def test_tls_admin_api_reaches_the_control_plane_over_https(values_file):
    tls = tls_values(values_file)
    docs = render(values_file)
    deployments = by_component(docs)
    admin = deployments["admin"]
    cp_name = deployments["controlplane"]["metadata"]["name"]
    cp_svc = named(docs, "Service", cp_name)
    grpc_port = next(p["port"] for p in cp_svc["spec"]["ports"] if p["name"] == "grpc")
    env = env_of(pod_spec(admin)["containers"][0])
    # The host is what the control plane's certificate is checked against.
    assert env["ROUTEIQ_CONTROLPLANE_URL"]["value"] == f"https://{cp_name}:{grpc_port}"
    assert env_file(admin, "ROUTEIQ_CONTROLPLANE_CA") == (tls["caSecret"], "ca.crt")


def test_tls_client_certificates_only_with_mtls():
    tls = tls_values("values-moat.yaml")
    on = by_component(render("values-moat.yaml"))
    assert env_file(on["controlplane"], "ROUTEIQ_TLS_CLIENT_CA") == (tls["caSecret"], "ca.crt")
    client = tls["adminClient"]["existingSecret"]
    assert env_file(on["admin"], "ROUTEIQ_CONTROLPLANE_CERT") == (client, "tls.crt")
    assert env_file(on["admin"], "ROUTEIQ_CONTROLPLANE_KEY") == (client, "tls.key")

    for off in (
        by_component(render("values-moat.yaml", "tls.mtls=false")),
        by_component(render("ci/values-tls.yaml")),
    ):
        cp_env = env_of(pod_spec(off["controlplane"])["containers"][0])
        admin_env = env_of(pod_spec(off["admin"])["containers"][0])
        assert "ROUTEIQ_TLS_CERT" in cp_env and "ROUTEIQ_CONTROLPLANE_CA" in admin_env
        assert "ROUTEIQ_TLS_CLIENT_CA" not in cp_env
        assert not {"ROUTEIQ_CONTROLPLANE_CERT", "ROUTEIQ_CONTROLPLANE_KEY"} & set(admin_env)
        secrets = {
            v["secret"]["secretName"] for v in pod_spec(off["admin"])["volumes"] if "secret" in v
        }
        assert client not in secrets, "the client certificate is mounted without mtls"


def nats_tls_block(conf: str) -> dict[str, str]:
    blocks = re.findall(r"^\s*tls \{\n(.*?)^\s*\}", conf, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, conf
    pairs = (line.split(":", 1) for line in blocks[0].splitlines())
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.parametrize("values_file", TLS_FILES)
def test_tls_nats_clients_and_bundled_server(values_file):
    tls = tls_values(values_file)["nats"]
    assert tls["enabled"] is True
    docs = render(values_file)
    deployments = by_component(docs)
    for component in ("dataplane", "controlplane"):
        d = deployments[component]
        env = env_of(pod_spec(d)["containers"][0])
        assert env["ROUTEIQ_NATS_URL"]["value"].startswith("nats://")
        assert env_file(d, "ROUTEIQ_NATS_TLS_CA") == (tls["caSecret"], "ca.crt"), component
        if tls.get("clientSecret"):
            assert env_file(d, "ROUTEIQ_NATS_TLS_CERT") == (tls["clientSecret"], "tls.crt")
            assert env_file(d, "ROUTEIQ_NATS_TLS_KEY") == (tls["clientSecret"], "tls.key")
        else:
            assert not {"ROUTEIQ_NATS_TLS_CERT", "ROUTEIQ_NATS_TLS_KEY"} & set(env), component
    admin_env = env_of(pod_spec(deployments["admin"])["containers"][0])
    assert not [n for n in admin_env if n.startswith("ROUTEIQ_NATS")], "the admin API has no NATS"

    (sts,) = of_kind(docs, "StatefulSet")
    (c,) = pod_spec(sts)["containers"]
    conf = named(docs, "ConfigMap", sts["metadata"]["name"])["data"]["nats.conf"]
    block = nats_tls_block(conf)
    server = tls["server"]["existingSecret"]
    assert file_source(sts, c, block["cert_file"]) == (server, "tls.crt")
    assert file_source(sts, c, block["key_file"]) == (server, "tls.key")
    assert file_source(sts, c, block["ca_file"]) == (tls["caSecret"], "ca.crt")
    assert block["verify"] == ("true" if tls["server"].get("verify") else "false")
    # The monitoring port the probes use stays plain HTTP.
    assert "http: 0.0.0.0:8222" in conf and "https:" not in conf
    assert c["readinessProbe"]["httpGet"].get("scheme", "HTTP") == "HTTP"
    # Turning TLS on or off rolls the server (its config is read at start).
    plain = render(values_file, "tls.nats.enabled=false")
    (plain_sts,) = of_kind(plain, "StatefulSet")
    checksum = "checksum/config"
    assert (
        sts["spec"]["template"]["metadata"]["annotations"][checksum]
        != plain_sts["spec"]["template"]["metadata"]["annotations"][checksum]
    )
    assert "tls {" not in named(plain, "ConfigMap", sts["metadata"]["name"])["data"]["nats.conf"]


def test_tls_redis_and_postgres_cas():
    tls = tls_values("values-moat.yaml")
    docs = render("values-moat.yaml")
    deployments = by_component(docs)
    redis_ca = tls["redis"]["caSecret"]
    assert env_file(deployments["dataplane"], "REDIS_TLS_CA") == (redis_ca, "ca.crt")
    (job,) = of_kind(docs, "Job")
    for w in (deployments["controlplane"], job):
        env = env_of(pod_spec(w)["containers"][0])
        # The path README.md and values.yaml give for sslrootcert= in DATABASE_URL.
        assert env["PGSSLROOTCERT"]["value"] == "/etc/routeiq/tls/postgres-ca/ca.crt"
        assert env_file(w, "PGSSLROOTCERT") == (tls["postgres"]["caSecret"], "ca.crt")
        assert env["PGSSLMODE"]["value"] == "verify-full"
    for w in (deployments["dataplane"], deployments["admin"]):
        assert "PGSSLROOTCERT" not in env_of(pod_spec(w)["containers"][0])

    # Each works on its own, without tls.enabled; the Redis CA only with Redis.
    pg = render(None, "tls.postgres.caSecret=pg-ca")
    (job,) = of_kind(pg, "Job")
    assert env_file(job, "PGSSLROOTCERT") == ("pg-ca", "ca.crt")
    assert env_file(by_component(pg)["controlplane"], "PGSSLROOTCERT") == ("pg-ca", "ca.crt")
    no_redis = by_component(render(None, "tls.redis.caSecret=redis-ca"))["dataplane"]
    assert "REDIS_TLS_CA" not in env_of(pod_spec(no_redis)["containers"][0])


@pytest.mark.parametrize("values_file", TLS_FILES)
def test_tls_prometheus_scrapes_over_verified_https(values_file):
    tls = tls_values(values_file)
    docs = render(values_file)
    monitors = of_kind(docs, "ServiceMonitor")
    assert len(monitors) == 2
    for m in monitors:
        (svc,) = [
            s
            for s in of_kind(docs, "Service")
            if selects(m["spec"]["selector"], s["metadata"]["labels"])
        ]
        (ep,) = m["spec"]["endpoints"]
        assert ep["scheme"] == "https"
        assert ep["tlsConfig"]["ca"] == {"secret": {"name": tls["caSecret"], "key": "ca.crt"}}
        assert ep["tlsConfig"]["serverName"] == svc["metadata"]["name"]
        assert "insecureSkipVerify" not in ep["tlsConfig"]

    plain = of_kind(render(None, "serviceMonitor.enabled=true"), "ServiceMonitor")
    assert plain and all(
        ep["scheme"] == "http" and "tlsConfig" not in ep
        for m in plain
        for ep in m["spec"]["endpoints"]
    )


@pytest.mark.parametrize(
    "values_file, sets",
    [
        (None, ()),
        ("ci/values-standalone.yaml", ()),
        # Every switch off: the Secrets named in the values are not used.
        (
            "values-moat.yaml",
            (
                "tls.enabled=false",
                "tls.mtls=false",
                "tls.nats.enabled=false",
                "tls.redis.caSecret=",
                "tls.postgres.caSecret=",
            ),
        ),
    ],
    ids=["defaults", "standalone", "moat-tls-off"],
)
def test_without_tls_nothing_of_it_is_rendered(values_file, sets):
    docs = render(values_file, *sets)
    assert workloads(docs)
    for w in workloads(docs):
        for c in containers(w):
            name = f"{w['metadata']['name']}/{c['name']}"
            assert not TLS_ENV & set(env_of(c)), name
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in c:
                    assert c[probe]["httpGet"].get("scheme", "HTTP") == "HTTP", name
            assert not [m for m in c.get("volumeMounts", []) if "tls" in m["mountPath"]], name
        assert not [v for v in pod_spec(w)["volumes"] if v["name"].startswith("tls-")]
    deployments = by_component(docs)
    if "admin" in deployments:
        env = env_of(pod_spec(deployments["admin"])["containers"][0])
        assert env["ROUTEIQ_CONTROLPLANE_URL"]["value"].startswith("http://")
    for m in of_kind(docs, "ServiceMonitor"):
        assert [ep["scheme"] for ep in m["spec"]["endpoints"]] == ["http"]
    for cm in of_kind(docs, "ConfigMap"):
        assert "tls {" not in cm["data"].get("nats.conf", "")


# --- values that cannot work are refused ---------------------------------------------------


# A listener certificate for each component.
TLS_SECRETS = (
    "tls.enabled=true",
    "tls.dataplane.existingSecret=dp",
    "tls.controlplane.existingSecret=cp",
    "tls.admin.existingSecret=a",
)


@pytest.mark.parametrize(
    "sets, message",
    [
        (("controlplane.enabled=false",), "admin.enabled needs controlplane.enabled"),
        (("nats.enabled=false",), "nats.url is required"),
        (("nats.auth.type=creds",), "bundled server takes token or userPassword"),
        (("dataplane.mode=standalone", "config=null"), "give one"),
        (("dataplane.mode=sidecar",), "/dataplane/mode"),
        (("redis.enabled=true",), "secrets.redisUrl is required"),
        (("dataplane.egress.allowedCIDRs[0]=internet",), "allowedCIDRs"),
        (("tls.enabled=true",), "tls.enabled needs tls.dataplane.existingSecret"),
        (
            (
                "tls.enabled=true",
                "tls.dataplane.existingSecret=dp",
                "tls.admin.existingSecret=a",
            ),
            "tls.enabled needs tls.controlplane.existingSecret",
        ),
        ((*TLS_SECRETS,), "tls.enabled with admin.enabled needs tls.caSecret"),
        (
            (*TLS_SECRETS, "admin.enabled=false", "serviceMonitor.enabled=true"),
            "tls.enabled with serviceMonitor.enabled needs tls.caSecret",
        ),
        (("tls.mtls=true",), "tls.mtls needs tls.enabled"),
        ((*TLS_SECRETS, "tls.caSecret=ca", "tls.mtls=true"), "tls.mtls needs tls.adminClient"),
        ((*TLS_SECRETS, "admin.enabled=false", "tls.mtls=true"), "tls.mtls needs tls.caSecret"),
        (("tls.nats.enabled=true", "tls.nats.caSecret=ca"), "tls.nats.server.existingSecret"),
        (("tls.nats.enabled=true", "tls.nats.server.existingSecret=n"), "tls.nats.caSecret"),
        (
            (
                "tls.nats.enabled=true",
                "tls.nats.caSecret=ca",
                "tls.nats.server.existingSecret=n",
                "tls.nats.server.verify=true",
            ),
            "set tls.nats.clientSecret",
        ),
        (
            ("nats.enabled=false", "nats.url=tls://n:4222", "tls.nats.enabled=true"),
            "tls.nats.enabled needs tls.nats.caSecret",
        ),
        (("nats.tls.caSecret=nats-ca",), "moved to tls.nats"),
        (("tls.postgres.sslMode=always",), "/tls/postgres/sslMode"),
    ],
)
def test_values_that_cannot_work_are_refused(sets, message):
    assert message in render_error(*sets)
