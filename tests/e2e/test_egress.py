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
