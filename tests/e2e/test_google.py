"""Gemini (API key) and Vertex AI (service account) deployments, reached with the official
`openai` and `anthropic` SDKs. The mock provider speaks Google's `generateContent` wire
format (SSE streams included), Anthropic-on-Vertex `rawPredict`, and a service-account
token endpoint that verifies the gateway's signed JWT assertion."""

import json
import os
import time

import anthropic
import httpx
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import BIN_DIR, MASTER_KEY, Process, free_port, wait_http
from stack import STACK_MASTER_KEY, wait_until

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
        },
    }
]


def service_account(mock: str, email: str, lifetime: int | None = None) -> str:
    """A fresh RSA service account key file's JSON, its public key registered at the mock."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    account = {"client_email": email, "public_key_pem": public}
    if lifetime is not None:
        account["token_lifetime_secs"] = lifetime
    httpx.post(f"{mock}/__service_accounts", json=account).raise_for_status()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "sa-project",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": email,
            "token_uri": f"{mock}/token",
        }
    )


@pytest.fixture(scope="module")
def google(tmp_path_factory):
    d = tmp_path_factory.mktemp("google")
    mock_port = free_port()
    mock = f"http://127.0.0.1:{mock_port}"
    mp = Process([str(BIN_DIR / "routeiq-mock-provider"), "--listen", f"127.0.0.1:{mock_port}"], d / "mock.log")
    wait_http(f"{mock}/health", mp.proc)
    sa_file = d / "sa.json"
    sa_file.write_text(service_account(mock, "gateway@sa-project.iam.gserviceaccount.com"))
    short_lived = service_account(mock, "short@sa-project.iam.gserviceaccount.com", lifetime=12)
    cfg = d / "config.yaml"
    cfg.write_text(
        f"""
model_list:
  - model_name: gemini-flash
    litellm_params:
      model: gemini/gemini-2.0-flash
      api_base: {mock}/v1beta
      api_key: os.environ/GEMINI_KEY
  - model_name: gemini-embed
    litellm_params:
      model: gemini/text-embedding-004
      api_base: {mock}/v1beta
  - model_name: gemini-flaky
    litellm_params:
      model: gemini/gemini-flaky
      api_base: {mock}/v1beta
  - model_name: vertex-gemini
    litellm_params:
      model: vertex_ai/gemini-2.5-flash
      api_base: {mock}
      vertex_project: my-project
      vertex_location: europe-west4
      vertex_credentials: {sa_file}
  - model_name: vertex-claude
    litellm_params:
      model: vertex_ai/claude-sonnet-4-5@20250929
      api_base: {mock}
      vertex_credentials: os.environ/SHORT_LIVED_SA
      vertex_location: us-east5
  - model_name: vertex-unusable
    litellm_params:
      model: vertex_ai/gemini-2.5-flash
      api_base: {mock}
      vertex_project: p
      vertex_credentials: /nonexistent/sa.json
general_settings:
  master_key: {MASTER_KEY}
router_settings:
  num_retries: 0
  fallbacks: [{{"gemini-flaky": ["vertex-gemini"]}}]
"""
    )
    port = free_port()
    env = dict(os.environ, GEMINI_KEY="gemini-secret", GOOGLE_API_KEY="fallback-key",
               SHORT_LIVED_SA=short_lived, ROUTEIQ_LOG="info")
    gw = Process(
        [str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
        d / "gateway.log",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/liveliness", gw.proc)
        yield {"url": url, "mock": mock, "gateway": gw}
    finally:
        gw.stop()
        mp.stop()
        log = gw.output()
        assert "gemini-secret" not in log and "PRIVATE KEY" not in log, "a secret reached the log"


@pytest.fixture
def oa(google):
    return openai.OpenAI(base_url=f"{google['url']}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def an(google):
    return anthropic.Anthropic(base_url=google["url"], api_key=MASTER_KEY, max_retries=0)


def last(google) -> dict:
    return httpx.get(f"{google['mock']}/__last_request").json()


def tokens_issued(google) -> int:
    return httpx.get(f"{google['mock']}/__oauth").json()["tokens_issued"]


@pytest.mark.parametrize("model", ["gemini-flash", "vertex-gemini", "vertex-claude"])
def test_openai_sdk_chat(oa, model):
    r = oa.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello google"}],
        max_tokens=100,
    )
    assert r.model  # the group name, or the upstream model for translated Anthropic replies
    assert r.choices[0].message.content == "mock reply to: hello google"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + 5


def test_gemini_request_on_the_wire(oa, google):
    oa.chat.completions.create(
        model="gemini-flash",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "wire"}],
        temperature=0.3,
        max_tokens=40,
        stop=["END"],
    )
    sent = last(google)
    assert sent["path"].endswith("/models/gemini-2.0-flash:generateContent"), sent["path"]
    assert sent["headers"]["x-goog-api-key"] == "gemini-secret"
    body = sent["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "wire"}]}]
    assert body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 40, "stopSequences": ["END"]}


def test_vertex_request_on_the_wire_uses_a_cached_service_account_token(oa, google):
    oa.chat.completions.create(model="vertex-gemini", messages=[{"role": "user", "content": "a"}])
    before = tokens_issued(google)
    for _ in range(5):
        oa.chat.completions.create(model="vertex-gemini", messages=[{"role": "user", "content": "b"}])
    sent = last(google)
    assert sent["path"].endswith(
        "/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent"
    )
    assert sent["headers"]["authorization"].startswith("Bearer ya29.")
    assert tokens_issued(google) == before, "a valid token is reused, not fetched per request"


@pytest.mark.parametrize("model", ["gemini-flash", "vertex-gemini", "vertex-claude"])
def test_openai_sdk_streaming_with_usage(oa, model):
    stream = oa.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream from google"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock reply to: stream from google"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    usage = chunks[-1].usage
    assert usage.completion_tokens == len(text.split()) and usage.prompt_tokens > 0


@pytest.mark.parametrize("model", ["gemini-flash", "vertex-gemini", "vertex-claude"])
def test_openai_sdk_tool_calls_round_trip(oa, model):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    r = oa.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    r = oa.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    assert "tool result received" in r.choices[0].message.content
    assert "sunny" in r.choices[0].message.content


def test_gemini_tool_result_is_a_function_response(oa, google):
    oa.chat.completions.create(
        model="gemini-flash",
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
        ],
        tools=TOOLS,
        tool_choice="required",
    )
    body = last(google)["body"]
    assert body["contents"][1]["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"location": "Paris"}}
    assert body["contents"][2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"content": "sunny"}}
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_openai_sdk_streaming_tool_call(oa):
    stream = oa.chat.completions.create(
        model="gemini-flash", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True
    )
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"location": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_json_mode(oa, google):
    r = oa.chat.completions.create(
        model="gemini-flash",
        messages=[{"role": "user", "content": "give json"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(r.choices[0].message.content) == {"reply": "mock reply to: give json"}
    assert last(google)["body"]["generationConfig"]["responseMimeType"] == "application/json"


def test_safety_blocks(oa):
    r = oa.chat.completions.create(model="gemini-flash", messages=[{"role": "user", "content": "mock-safety-block"}])
    assert r.choices[0].finish_reason == "content_filter"
    with pytest.raises(openai.BadRequestError) as e:
        oa.chat.completions.create(model="gemini-flash", messages=[{"role": "user", "content": "mock-blocked-prompt"}])
    assert e.value.status_code == 400
    assert e.value.code == "content_policy_violation"


def test_upstream_errors_keep_their_class(oa):
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(model="gemini-flash", messages=[{"role": "user", "content": "mock-status-429"}])
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="vertex-gemini", messages=[{"role": "user", "content": "mock-status-400"}])


def test_gemini_throttle_falls_back_to_vertex(oa, google):
    httpx.post(f"{google['mock']}/__faults", json={"gemini-flaky": {"status": 429}}).raise_for_status()
    try:
        r = oa.chat.completions.with_raw_response.create(
            model="gemini-flaky", messages=[{"role": "user", "content": "fall back"}]
        )
        assert r.parse().choices[0].message.content == "mock reply to: fall back"
        assert r.headers["x-litellm-model-group"] == "vertex-gemini"
        stats = httpx.get(f"{google['mock']}/__stats").json()
        assert stats["gemini-flaky"] == {"requests": 1, "failures": 1}
        assert stats["gemini-2.5-flash"]["requests"] == 1
    finally:
        httpx.post(f"{google['mock']}/__faults", json={}).raise_for_status()


def test_embeddings(oa, google):
    r = oa.embeddings.create(model="gemini-embed", input=["hello", "world"])
    assert [d.index for d in r.data] == [0, 1]
    assert len(r.data[0].embedding) == 8 and r.data[0].embedding != r.data[1].embedding
    assert r.usage.prompt_tokens > 0
    sent = last(google)
    assert sent["path"].endswith("/models/text-embedding-004:batchEmbedContents")
    assert sent["headers"]["x-goog-api-key"] == "fallback-key"  # GOOGLE_API_KEY


def test_anthropic_sdk_on_vertex_claude(an, google):
    m = an.messages.create(
        model="vertex-claude", max_tokens=100, system="sys", messages=[{"role": "user", "content": "hi vertex claude"}]
    )
    assert m.content[0].text == "mock reply to: hi vertex claude"
    assert m.stop_reason == "end_turn"
    sent = last(google)
    assert sent["path"].endswith(
        "/v1/projects/sa-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict"
    )
    assert "model" not in sent["body"] and sent["body"]["anthropic_version"] == "vertex-2023-10-16"
    with an.messages.stream(
        model="vertex-claude", max_tokens=100, messages=[{"role": "user", "content": "stream claude"}]
    ) as s:
        text = "".join(s.text_stream)
    assert text == "mock reply to: stream claude"
    assert last(google)["path"].endswith(":streamRawPredict")


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_on_gemini(an, stream):
    if stream:
        with an.messages.stream(
            model="gemini-flash", max_tokens=100, messages=[{"role": "user", "content": "anthropic to gemini"}]
        ) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
    else:
        final = an.messages.create(
            model="gemini-flash", max_tokens=100, messages=[{"role": "user", "content": "anthropic to gemini"}]
        )
        text = final.content[0].text
    assert text == "mock reply to: anthropic to gemini"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(text.split())


def test_short_lived_token_is_refreshed(oa, google):
    """The `vertex-claude` account's tokens live 12 s; the gateway refreshes them ahead of
    expiry and never sends an expired one."""
    oa.chat.completions.create(model="vertex-claude", messages=[{"role": "user", "content": "one"}])
    before = tokens_issued(google)
    time.sleep(3)
    for _ in range(3):
        r = oa.chat.completions.create(model="vertex-claude", messages=[{"role": "user", "content": "two"}])
        assert r.choices[0].message.content == "mock reply to: two"
    assert tokens_issued(google) > before


def test_unusable_vertex_deployment_says_why(oa):
    with pytest.raises(openai.APIStatusError) as e:
        oa.chat.completions.create(model="vertex-unusable", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    assert "cannot read the service account file" in e.value.message


def test_vertex_deployment_added_through_the_admin_api(make_stack, mock_provider):
    """Attached mode: the control plane stores the service account sealed, and the data
    plane gets it over NATS and serves the deployment with it."""
    s = make_stack()
    admin = s.admin()
    dp = s.dataplane("dp-google")
    sa = service_account(mock_provider, "admin-added@sa-project.iam.gserviceaccount.com")
    private = json.loads(sa)["private_key"].splitlines()[1]
    admin.ok("POST", "/model/new", json={
        "model_name": "vertex-added",
        "litellm_params": {"model": "vertex_ai/gemini-2.5-pro", "api_base": mock_provider,
                           "vertex_project": "added-project", "vertex_credentials": sa},
        "model_info": {"id": "vertex-added-1"},
    })
    wait_until(lambda: dp.chat(STACK_MASTER_KEY, model="vertex-added").status_code == 200, what="vertex model served")
    r = dp.chat(STACK_MASTER_KEY, model="vertex-added", content="through the stack")
    assert r.json()["choices"][0]["message"]["content"] == "mock reply to: through the stack"
    sent = httpx.get(f"{mock_provider}/__last_request").json()
    assert "/projects/added-project/locations/us-central1/publishers/google/models/gemini-2.5-pro:" in sent["path"]
    stored = s.sql("SELECT secret_params, litellm_params::text FROM model_deployments WHERE model_id = %s",
                   "vertex-added-1")[0]
    assert stored[0] is not None and private.encode() not in bytes(stored[0])
    # Nor in the outbox of snapshot deltas: the publisher fills secrets in as it sends.
    for (ops,) in s.sql("SELECT ops FROM snapshot_deltas"):
        assert private.encode() not in bytes(ops)
    assert "added-project" in stored[1] and private not in stored[1]
    assert private not in admin.call("GET", "/model/info").text
    assert private not in s.logs_full()


def output_tokens(google, group: str) -> float:
    text = httpx.get(f"{google['url']}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("litellm_output_tokens_metric_total{") and f'requested_model="{group}"' in line
    )


def test_google_genai_sdk_through_the_gemini_pass_through(google):
    """The official google-genai SDK, pointed at `/gemini`, with a RouteIQ key: the native
    request reaches the deployment with the deployment's own key, the reply comes back
    unchanged, and its usage is counted."""
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key=MASTER_KEY, http_options=types.HttpOptions(base_url=f"{google['url']}/gemini")
    )
    before = output_tokens(google, "gemini-flash")
    r = client.models.generate_content(
        model="gemini-2.0-flash",
        contents="hello native",
        config=types.GenerateContentConfig(system_instruction="be brief", max_output_tokens=50),
    )
    assert r.text == "mock reply to: hello native"
    assert r.usage_metadata.candidates_token_count == 5
    sent = last(google)
    assert sent["path"].endswith("/models/gemini-2.0-flash:generateContent"), sent["path"]
    assert sent["headers"]["x-goog-api-key"] == "gemini-secret", "the deployment's key, not the client's"
    assert sent["body"]["systemInstruction"]["parts"][0]["text"] == "be brief"
    chunks = list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="stream native"))
    assert "".join(c.text or "" for c in chunks) == "mock reply to: stream native"
    wait_until(lambda: output_tokens(google, "gemini-flash") == before + 5 + 5, what="pass-through usage counted")

    # A model no deployment serves, and a missing key: clear errors.
    with pytest.raises(Exception) as e:
        client.models.generate_content(model="gemini-9-ultra", contents="x")
    assert "404" in str(e.value) and "no gemini deployment serves model `gemini-9-ultra`" in str(e.value)
    anonymous = httpx.post(
        f"{google['url']}/gemini/v1beta/models/gemini-2.0-flash:generateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
    )
    assert anonymous.status_code == 401


def test_vertex_pass_through_uses_the_service_account(google):
    r = httpx.post(
        f"{google['url']}/vertex_ai/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        json={"contents": [{"role": "user", "parts": [{"text": "native vertex"}]}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == "mock reply to: native vertex"
    assert last(google)["headers"]["authorization"].startswith("Bearer ya29.")
    # The provider's own errors come back as they are.
    r = httpx.post(
        f"{google['url']}/vertex_ai/v1/projects/my-project/locations/europe-west4/publishers/google/models/gemini-2.5-flash:generateContent",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        json={"contents": []},
    )
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
