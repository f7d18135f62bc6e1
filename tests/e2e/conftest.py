"""End-to-end fixtures: the real `routeiq-dataplane` binary in front of the real
`routeiq-mock-provider` (which speaks the OpenAI, Azure and Anthropic wire protocols)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("ROUTEIQ_BIN_DIR", ROOT / "target" / "debug"))
# The tests' control planes reserve a usage stream of 256 MiB in their NATS servers' file
# stores, not the default 8 GiB: JetStream refuses a reservation past 75 % of the free disk.
os.environ.setdefault("ROUTEIQ_USAGE_STREAM_BYTES", str(256 * 1024 * 1024))
MASTER_KEY = "sk-e2e-master"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up in {timeout}s")


class Process:
    def __init__(self, args, log: Path, env=None):
        self.log = log
        self.handle = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self.handle, stderr=subprocess.STDOUT, env=env)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.handle.close()

    def kill(self):
        """SIGKILL: no chance to finish anything."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.handle.close()

    def freeze(self, frozen: bool) -> None:
        """SIGSTOP (a hung server: connections open, nothing answers) or SIGCONT."""
        self.proc.send_signal(signal.SIGSTOP if frozen else signal.SIGCONT)

    def output(self) -> str:
        if not self.handle.closed:
            self.handle.flush()
        return self.log.read_text(errors="replace")


S3S_FS = Path(os.environ.get("ROUTEIQ_S3S_FS", Path.home() / ".cache/routeiq/bin/s3s-fs"))


class S3Server:
    """A real S3-compatible server (s3s-fs) over `dir/s3`, each bucket a directory; `env`
    holds the AWS variables that reach it."""

    def __init__(self, dir: Path, buckets=()):
        assert S3S_FS.exists(), f"{S3S_FS} missing: scripts/test.sh installs s3s-fs"
        self.data = dir / "s3"
        for b in buckets:
            (self.data / b).mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.process = Process([str(S3S_FS), "--host", "127.0.0.1", "--port", str(port),
                                "--access-key", "routeiq", "--secret-key", "routeiq-secret",
                                str(self.data)], dir / "s3s.log")
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 10
        while True:
            try:
                httpx.get(self.url)
                break
            except httpx.TransportError:
                assert time.time() < deadline and self.process.proc.poll() is None, \
                    "s3s-fs did not start"
                time.sleep(0.05)
        self.env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "routeiq",
                    "AWS_SECRET_ACCESS_KEY": "routeiq-secret", "AWS_REGION": "us-east-1"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.stop()


@pytest.fixture(scope="session")
def mock_provider(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("mock") / "mock.log"
    p = Process([str(BIN_DIR / "routeiq-mock-provider"), "--listen", f"127.0.0.1:{port}"], log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", p.proc)
        yield url
    finally:
        p.stop()


def gateway_config(upstream: str, dead_port: int) -> str:
    return f"""
model_list:
  - model_name: gpt-upstream
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {upstream}/v1
      api_key: os.environ/E2E_UPSTREAM_KEY
  - model_name: claude-upstream
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {upstream}
      litellm_credential_name: anthropic-cred
  - model_name: azure-gpt
    litellm_params:
      model: azure/my-gpt-deployment
      api_base: {upstream}
      api_key: azure-secret-key
      api_version: "2024-10-21"
  - model_name: vllm-model
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
      api_base: {upstream}/v1
      api_key: vllm-token
  - model_name: embed-upstream
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {upstream}/v1
      api_key: sk-upstream
  - model_name: builtin-mock
    litellm_params:
      model: mock/builtin
  - model_name: fixed-mock
    litellm_params:
      model: mock/fixed
      mock_response: "fixed answer"
  - model_name: slow-upstream
    litellm_params:
      model: openai/slow
      api_base: {upstream}/v1
      api_key: sk-upstream
      timeout: 0.5
  - model_name: dead-upstream
    litellm_params:
      model: openai/dead
      api_base: http://127.0.0.1:{dead_port}/v1
      api_key: sk-upstream
credential_list:
  - credential_name: anthropic-cred
    credential_values:
      api_key: sk-ant-upstream
general_settings:
  master_key: {MASTER_KEY}
  max_request_size_mb: 1
  an_unknown_setting: 1
router_settings:
  routing_strategy: simple-shuffle
"""


@pytest.fixture(scope="session")
def gateway(mock_provider, tmp_path_factory):
    d = tmp_path_factory.mktemp("gw")
    cfg = d / "config.yaml"
    cfg.write_text(gateway_config(mock_provider, free_port()))
    port = free_port()
    env = dict(os.environ, E2E_UPSTREAM_KEY="sk-upstream-secret", ROUTEIQ_LOG="info")
    p = Process(
        [str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
        d / "gateway.log",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/liveliness", p.proc)
        yield Gateway(url, p)
    finally:
        p.stop()
        sys.stdout.write(f"\n--- gateway log ---\n{p.output()[-4000:]}\n")


class Gateway:
    def __init__(self, url: str, process: Process):
        self.url = url
        self.process = process

    def last_upstream_request(self, mock_url: str) -> dict:
        return httpx.get(f"{mock_url}/__last_request").json()


@pytest.fixture
def openai_client(gateway):
    import openai

    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def anthropic_client(gateway):
    import anthropic

    return anthropic.Anthropic(base_url=gateway.url, api_key=MASTER_KEY, max_retries=0)


# ---- the attached stack (tests/e2e/stack.py) ----


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """The gRPC messages and stubs, generated from proto/ once per run."""
    from stack import grpc_modules

    return grpc_modules(tmp_path_factory.mktemp("grpc"))


@pytest.fixture
def make_stack(tmp_path, pb, request):
    """Builds stacks for a test; stops them after it, printing their logs if it failed."""
    from stack import Stack

    stacks = []

    def make(cp_args=(), start=True, **kw):
        s = Stack(tmp_path, pb, cp_args, start=start, **kw)
        stacks.append(s)
        return s

    yield make
    failed = getattr(request.node, "rep_call", None)
    for s in stacks:
        s.close()
        if failed is not None and failed.failed:
            print(s.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item (for make_stack's log dump)."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
