"""`general_settings.allowed_egress`: a data plane reaches only the hosts and networks it
lists; anything else is refused before a connection is made, with a clear error, and
counted."""

import socket
import threading

import httpx
import pytest

from conftest import BIN_DIR, Process, free_port, wait_http

MASTER = "sk-egress-master"


class CountingListener:
    """A TCP listener on `host` that only counts the connections made to it."""

    def __init__(self, host: str):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


def start(tmp_path, config: str):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config)
    port = free_port()
    p = Process([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
                tmp_path / "dp.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health/liveliness", p.proc)
    return url, p


def chat(url: str, model: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=20)


def refused_count(url: str, host: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=2).text.splitlines():
        if line.startswith(f'routeiq_egress_refused_total{{host="{host}"}}'):
            return float(line.split()[1])
    return 0.0


def test_only_listed_networks_are_reached(mock_provider, tmp_path):
    # 127.0.0.2 is loopback too, but not on the list.
    outside = CountingListener("127.0.0.2")
    mock_port = mock_provider.rsplit(":", 1)[1]
    url, p = start(tmp_path, f"""
model_list:
  - model_name: on-prem
    litellm_params:
      model: openai/on-prem
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: none
  - model_name: outside
    litellm_params:
      model: openai/outside
      api_base: http://127.0.0.2:{outside.port}/v1
      api_key: none
general_settings:
  master_key: {MASTER}
  allowed_egress: ["127.0.0.1/32", "*.internal.example"]
router_settings:
  num_retries: 2
""")
    try:
        assert chat(url, "on-prem").status_code == 200
        r = chat(url, "outside")
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["type"] == "permission_error"
        assert "allowed_egress" in err["message"] and "no connection was made" in err["message"]
        assert "127.0.0.2" not in err["message"], "addresses stay in the logs"
        assert outside.accepted == 0, "a refused destination saw a connection"
        assert refused_count(url, "127.0.0.2") >= 1
        assert "egress refused" in p.output()
        # The allowed one still works afterwards.
        assert chat(url, "on-prem").status_code == 200
    finally:
        p.stop()
        outside.close()


def test_a_name_outside_the_list_is_refused_without_a_lookup(mock_provider, tmp_path):
    # Names only: a provider's public host is refused on its name (no DNS answer is needed,
    # none is asked for), and so is an address, which no name rule can admit.
    mock_port = mock_provider.rsplit(":", 1)[1]
    url, p = start(tmp_path, f"""
model_list:
  - model_name: public
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-not-used
  - model_name: by-address
    litellm_params:
      model: openai/on-prem
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: none
general_settings:
  master_key: {MASTER}
  allowed_egress: ["*.internal.example"]
""")
    try:
        for model, host in [("public", "api.openai.com"), ("by-address", "127.0.0.1")]:
            r = chat(url, model)
            assert r.status_code == 403, r.text
            assert "allowed_egress" in r.json()["error"]["message"]
            assert refused_count(url, host) >= 1
        assert "cannot resolve" not in p.output()
    finally:
        p.stop()


WEB_IDENTITY = """
  - model_name: bedrock
    litellm_params:
      model: bedrock/meta.llama3-70b-instruct-v1:0
      aws_bedrock_runtime_endpoint: {runtime}
      aws_role_name: arn:aws:iam::123456789012:role/routeiq-egress
      aws_web_identity_token: header.eyJzdWIiOiJlZ3Jlc3MifQ.signature
      aws_sts_endpoint: {sts}
"""


def test_the_aws_sdk_clients_are_held_to_the_list(mock_provider, tmp_path):
    # STS is reached by the AWS SDK's own HTTP client, not the pooled upstream client: the
    # list holds it too. Its endpoint here is an unlisted address, so the credentials
    # cannot be fetched and nothing connects to it.
    sts = CountingListener("127.0.0.2")
    mock_port = mock_provider.rsplit(":", 1)[1]
    deployment = WEB_IDENTITY.format(runtime=f"http://localhost:{mock_port}", sts=f"http://127.0.0.2:{sts.port}")
    url, p = start(tmp_path, f"""
model_list:{deployment}
general_settings:
  master_key: {MASTER}
  allowed_egress: ["localhost"]
""")
    try:
        r = chat(url, "bedrock")
        assert r.status_code == 502, r.text
        message = r.json()["error"]["message"]
        assert "cannot get credentials" in message and "allowed_egress" in message, message
        assert sts.accepted == 0, "STS was connected to"
        assert refused_count(url, "127.0.0.2") >= 1
    finally:
        p.stop()
        sts.close()


def test_an_aws_endpoint_name_is_admitted_by_its_listed_address(mock_provider, tmp_path):
    # `localhost` is not listed by name; it resolves to 127.0.0.1 (listed) and ::1 (not):
    # the SDK's client connects to the listed address and STS answers.
    mock_port = mock_provider.rsplit(":", 1)[1]
    deployment = WEB_IDENTITY.format(runtime=f"http://127.0.0.1:{mock_port}", sts=f"http://localhost:{mock_port}")
    url, p = start(tmp_path, f"""
model_list:{deployment}
general_settings:
  master_key: {MASTER}
  allowed_egress: ["127.0.0.1/32"]
""")
    try:
        r = chat(url, "bedrock")
        assert r.status_code == 200, r.text
        assert refused_count(url, "localhost") == 0
    finally:
        p.stop()


def test_unreachable_deployments_are_named_at_load(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("""
model_list:
  - model_name: public
    litellm_params: {model: openai/gpt-4o-mini, api_key: k}
    model_info: {id: public-1}
  - model_name: local
    litellm_params: {model: openai/llama, api_base: "http://vllm.internal.example:8000/v1", api_key: k}
general_settings:
  master_key: sk-x
  allowed_egress: ["*.internal.example"]
""")
    import subprocess

    r = subprocess.run([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--check"],
                       capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    warned = [line for line in out.splitlines() if "allowed_egress refuses" in line]
    assert len(warned) == 1 and "public-1" in warned[0] and "api.openai.com" in warned[0], out


def test_a_bad_entry_is_a_config_error(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("""
model_list:
  - model_name: m
    litellm_params: {model: mock/m}
general_settings:
  allowed_egress: ["10.0.0.0/33"]
""")
    import subprocess

    r = subprocess.run([str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "general_settings.allowed_egress" in r.stderr and "10.0.0.0/33" in r.stderr
