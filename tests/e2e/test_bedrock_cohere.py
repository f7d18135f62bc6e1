"""Bedrock (Converse, InvokeModel, SigV4, STS) and Cohere v2 deployments, reached with the
official `openai`, `anthropic` and `boto3` clients. The mock provider verifies every SigV4
signature it receives against the credentials the test registers (or that its STS issued),
answers ConverseStream in AWS's binary event-stream framing, and speaks Cohere's v2 API."""

import json
import os

import anthropic
import boto3
import httpx
import openai
import pytest

from conftest import BIN_DIR, MASTER_KEY, Process, free_port, wait_http
from test_google import service_account

ACCESS_KEY = "AKIAE2EBEDROCKTEST01"
SECRET_KEY = "e2e/bedrock/secret/key/for/sigv4/tests/000"
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


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    d = tmp_path_factory.mktemp("cloud")
    mock_port = free_port()
    mock = f"http://127.0.0.1:{mock_port}"
    mp = Process([str(BIN_DIR / "routeiq-mock-provider"), "--listen", f"127.0.0.1:{mock_port}"], d / "mock.log")
    wait_http(f"{mock}/health", mp.proc)
    httpx.post(f"{mock}/__aws_credentials", json=[
        {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "session_token": None},
    ]).raise_for_status()
    sa = d / "sa.json"
    sa.write_text(service_account(mock, "fallback@sa-project.iam.gserviceaccount.com"))
    keys = f"""
      aws_bedrock_runtime_endpoint: {mock}
      aws_access_key_id: os.environ/E2E_AWS_KEY
      aws_secret_access_key: os.environ/E2E_AWS_SECRET"""
    cfg = d / "config.yaml"
    cfg.write_text(
        f"""
model_list:
  - model_name: bedrock-claude
    litellm_params:
      model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0
      aws_region_name: us-east-1{keys}
  - model_name: bedrock-invoke
    litellm_params:
      model: bedrock/invoke/us.anthropic.claude-sonnet-4-5-20250929-v1:0
      aws_region_name: us-west-2{keys}
  - model_name: bedrock-role
    litellm_params:
      model: bedrock/amazon.nova-pro-v1:0
      aws_region_name: eu-west-1
      aws_role_name: arn:aws:iam::123456789012:role/routeiq-e2e
      aws_session_name: e2e
      aws_sts_endpoint: {mock}{keys}
  - model_name: bedrock-web-identity
    litellm_params:
      model: bedrock/meta.llama3-70b-instruct-v1:0
      aws_bedrock_runtime_endpoint: {mock}
      aws_role_name: arn:aws:iam::123456789012:role/routeiq-irsa
      aws_web_identity_token: header.eyJzdWIiOiJlMmUifQ.signature
      aws_sts_endpoint: {mock}
  - model_name: bedrock-bad-keys
    litellm_params:
      model: bedrock/anthropic.claude-3-haiku-20240307-v1:0
      aws_bedrock_runtime_endpoint: {mock}
      aws_access_key_id: {ACCESS_KEY}
      aws_secret_access_key: not-the-secret
  - model_name: bedrock-throttled
    litellm_params:
      model: bedrock/anthropic.claude-throttled-v1:0{keys}
  - model_name: vertex-fallback
    litellm_params:
      model: vertex_ai/gemini-2.5-flash
      api_base: {mock}
      vertex_credentials: {sa}
  - model_name: titan-embed
    litellm_params:
      model: bedrock/amazon.titan-embed-text-v2:0{keys}
  - model_name: bedrock-cohere-embed
    litellm_params:
      model: bedrock/cohere.embed-english-v3{keys}
  - model_name: bedrock-rerank
    litellm_params:
      model: bedrock/amazon.rerank-v1:0
      aws_region_name: us-west-2{keys}
    model_info:
      mode: rerank
  - model_name: cohere-chat
    litellm_params:
      model: cohere/command-r-plus
      api_base: {mock}
  - model_name: cohere-embed
    litellm_params:
      model: cohere/embed-v4.0
      api_base: {mock}
general_settings:
  master_key: {MASTER_KEY}
router_settings:
  num_retries: 0
  fallbacks: [{{"bedrock-throttled": ["vertex-fallback"]}}]
"""
    )
    port = free_port()
    env = dict(os.environ, E2E_AWS_KEY=ACCESS_KEY, E2E_AWS_SECRET=SECRET_KEY,
               COHERE_API_KEY="cohere-secret", ROUTEIQ_LOG="info")
    # The default chain must not find the developer's own AWS credentials.
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"]:
        env.pop(var, None)
    gw = Process(
        [str(BIN_DIR / "routeiq-dataplane"), "--config", str(cfg), "--listen", f"127.0.0.1:{port}"],
        d / "gateway.log",
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/liveliness", gw.proc)
        yield {"url": url, "mock": mock}
    finally:
        gw.stop()
        mp.stop()
        log = gw.output()
        for secret in [SECRET_KEY, "cohere-secret", "not-the-secret"]:
            assert secret not in log, "a secret reached the log"


@pytest.fixture
def oa(cloud):
    return openai.OpenAI(base_url=f"{cloud['url']}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def an(cloud):
    return anthropic.Anthropic(base_url=cloud["url"], api_key=MASTER_KEY, max_retries=0)


def last(cloud) -> dict:
    return httpx.get(f"{cloud['mock']}/__last_request").json()


def aws(cloud) -> dict:
    return httpx.get(f"{cloud['mock']}/__aws").json()


CHAT_MODELS = ["bedrock-claude", "bedrock-invoke", "bedrock-role", "bedrock-web-identity", "cohere-chat"]


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_openai_sdk_chat(oa, model):
    r = oa.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello cloud"}],
        max_tokens=100,
    )
    assert r.choices[0].message.content == "mock reply to: hello cloud"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens == len(r.choices[0].message.content.split())


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_openai_sdk_streaming_with_usage(oa, model):
    chunks = list(oa.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "stream from the cloud"}],
        stream=True,
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock reply to: stream from the cloud"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == len(text.split())


@pytest.mark.parametrize("model", ["bedrock-claude", "bedrock-invoke", "cohere-chat"])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_sdk_tool_calls_round_trip(oa, model, stream):
    messages = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        chunks = list(oa.chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert calls[0].function.name == "get_weather" and calls[0].id
        args = "".join(tc.function.arguments or "" for tc in calls)
        assert json.loads(args) == {"location": "Paris"}
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
        return
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
    assert "tool result received" in r.choices[0].message.content and "sunny" in r.choices[0].message.content


def test_converse_request_is_signed_and_shaped(oa, cloud):
    oa.chat.completions.create(
        model="bedrock-claude",
        messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "wire"}],
        temperature=0.4,
        max_tokens=30,
        stop=["END"],
    )
    sent = last(cloud)
    assert sent["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert sent["headers"]["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/us-east-1/bedrock/aws4_request" in sent["headers"]["authorization"]
    body = sent["body"]
    assert body["system"] == [{"text": "sys"}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "wire"}]}]
    assert body["inferenceConfig"] == {"maxTokens": 30, "temperature": 0.4, "stopSequences": ["END"]}


def test_invoke_sends_anthropics_body(oa, cloud):
    oa.chat.completions.create(model="bedrock-invoke", messages=[{"role": "user", "content": "invoke"}])
    sent = last(cloud)
    assert sent["path"] == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    assert sent["body"]["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in sent["body"] and "stream" not in sent["body"]
    assert "/us-west-2/bedrock/" in sent["headers"]["authorization"]


def test_assumed_and_web_identity_credentials_are_cached(oa, cloud):
    for model in ["bedrock-role", "bedrock-web-identity"]:
        oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "warm"}])
    before = aws(cloud)
    for _ in range(4):
        oa.chat.completions.create(model="bedrock-role", messages=[{"role": "user", "content": "again"}])
    after = aws(cloud)
    assert after["last_access_key_id"].startswith("ASIA"), "signed with the assumed role's keys"
    assert after["last_region"] == "eu-west-1"
    assert after["assumed_roles"] == before["assumed_roles"] >= 1, "AssumeRole once, not per request"
    assert after["web_identity"] >= 1
    oa.chat.completions.create(model="bedrock-web-identity", messages=[{"role": "user", "content": "x"}])
    assert aws(cloud)["last_access_key_id"].startswith("ASIA")


def test_refused_signature_is_an_auth_error(oa):
    with pytest.raises(openai.APIStatusError) as e:
        oa.chat.completions.create(model="bedrock-bad-keys", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502
    assert e.value.code == "upstream_auth_error"


def test_errors_keep_their_class(oa, cloud):
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(model="bedrock-claude", messages=[{"role": "user", "content": "mock-status-429"}])
    httpx.post(f"{cloud['mock']}/__faults", json={"anthropic.claude-3-5-sonnet-20240620-v1:0": {"max_prompt_tokens": 1}}).raise_for_status()
    try:
        with pytest.raises(openai.BadRequestError) as e:
            oa.chat.completions.create(model="bedrock-claude", messages=[{"role": "user", "content": "a long prompt"}])
        assert e.value.code == "context_length_exceeded"
    finally:
        httpx.post(f"{cloud['mock']}/__faults", json={}).raise_for_status()
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(model="cohere-chat", messages=[{"role": "user", "content": "mock-status-429"}])


def test_mid_stream_exception_reaches_the_client(oa):
    stream = oa.chat.completions.create(
        model="bedrock-claude", messages=[{"role": "user", "content": "mock-stream-error-429 go"}], stream=True
    )
    with pytest.raises(openai.APIError) as e:
        list(stream)
    assert "throttlingException" in str(e.value)


def test_bedrock_throttle_falls_back_to_vertex(oa, cloud):
    httpx.post(f"{cloud['mock']}/__faults", json={"anthropic.claude-throttled-v1:0": {"status": 429}}).raise_for_status()
    try:
        r = oa.chat.completions.with_raw_response.create(
            model="bedrock-throttled", messages=[{"role": "user", "content": "fall back"}]
        )
        assert r.parse().choices[0].message.content == "mock reply to: fall back"
        assert r.headers["x-litellm-model-group"] == "vertex-fallback"
        assert r.headers["x-litellm-attempted-fallbacks"] == "1"
        stats = httpx.get(f"{cloud['mock']}/__stats").json()
        assert stats["anthropic.claude-throttled-v1:0"] == {"requests": 1, "failures": 1}
    finally:
        httpx.post(f"{cloud['mock']}/__faults", json={}).raise_for_status()


@pytest.mark.parametrize("model", ["bedrock-claude", "bedrock-invoke", "cohere-chat"])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_sdk_messages(an, model, stream):
    if stream:
        with an.messages.stream(
            model=model, max_tokens=100, messages=[{"role": "user", "content": "anthropic client"}]
        ) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
    else:
        final = an.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": "anthropic client"}])
        text = final.content[0].text
    assert text == "mock reply to: anthropic client"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(text.split())


def test_embeddings(oa, cloud):
    r = oa.embeddings.create(model="titan-embed", input="hello titan")
    assert len(r.data) == 1 and len(r.data[0].embedding) == 8
    assert r.usage.prompt_tokens > 0
    assert last(cloud)["body"] == {"inputText": "hello titan"}
    with pytest.raises(openai.BadRequestError) as e:
        oa.embeddings.create(model="titan-embed", input=["a", "b"])
    assert "one input per request" in e.value.message
    r = oa.embeddings.create(model="bedrock-cohere-embed", input=["a", "b"])
    assert [d.index for d in r.data] == [0, 1]
    r = oa.embeddings.create(model="cohere-embed", input=["hello", "cohere"])
    assert [d.index for d in r.data] == [0, 1] and r.usage.prompt_tokens > 0
    sent = last(cloud)
    assert sent["path"] == "/v2/embed" and sent["headers"]["authorization"] == "Bearer cohere-secret"


def test_bedrock_rerank(cloud):
    docs = ["Paris is the capital of France", "Berlin is in Germany",
            {"text": "The capital of Italy is Rome"}]
    r = httpx.post(f"{cloud['url']}/v1/rerank", timeout=10,
                   headers={"Authorization": f"Bearer {MASTER_KEY}"},
                   json={"model": "bedrock-rerank", "query": "capital of France",
                         "documents": docs, "top_n": 2, "return_documents": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [0, 2]
    assert results[0]["document"]["text"] == docs[0]
    assert results[0]["relevance_score"] > results[1]["relevance_score"]
    # Amazon Rerank's built-in price: $1.00 per 1,000 queries.
    assert float(r.headers["x-litellm-response-cost"]) == pytest.approx(0.001)
    sent = last(cloud)
    assert sent["path"] == "/rerank"
    config = sent["body"]["rerankingConfiguration"]["bedrockRerankingConfiguration"]
    assert config["modelConfiguration"]["modelArn"] == \
        "arn:aws:bedrock:us-west-2::foundation-model/amazon.rerank-v1:0"
    assert config["numberOfResults"] == 2
    assert sent["body"]["sources"][2]["inlineDocumentSource"]["textDocument"]["text"] == \
        "The capital of Italy is Rome"
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256")


def bedrock_client(cloud, key=MASTER_KEY):
    """boto3's bedrock-runtime, unmodified, pointed at the gateway's `/bedrock` route with
    throwaway AWS keys; the RouteIQ key goes in LiteLLM's `x-litellm-api-key` header."""
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=f"{cloud['url']}/bedrock",
        region_name="us-east-1",
        aws_access_key_id="AKIACLIENTSOWNKEY000",
        aws_secret_access_key="client-own-secret",
    )

    def add_key(request, **_):
        request.headers["x-litellm-api-key"] = key

    client.meta.events.register("before-send.bedrock-runtime.*", add_key)
    return client


def test_boto3_through_the_bedrock_pass_through(cloud):
    client = bedrock_client(cloud)
    model = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    r = client.converse(
        modelId=model,
        messages=[{"role": "user", "content": [{"text": "native converse"}]}],
        inferenceConfig={"maxTokens": 50},
    )
    assert r["output"]["message"]["content"][0]["text"] == "mock reply to: native converse"
    assert r["usage"]["outputTokens"] == len("mock reply to: native converse".split())
    assert aws(cloud)["last_access_key_id"] == ACCESS_KEY, "re-signed with the deployment's keys"
    stream = client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": "native stream"}]}])
    text = ""
    stop = None
    for event in stream["stream"]:
        if "contentBlockDelta" in event:
            text += event["contentBlockDelta"]["delta"].get("text", "")
        if "messageStop" in event:
            stop = event["messageStop"]["stopReason"]
    assert text == "mock reply to: native stream" and stop == "end_turn"
    # Without a RouteIQ key the gateway refuses before anything goes upstream.
    with pytest.raises(Exception) as e:
        bedrock_client(cloud, key="sk-wrong").converse(
            modelId=model, messages=[{"role": "user", "content": [{"text": "x"}]}]
        )
    assert "401" in str(e.value) or "invalid API key" in str(e.value)


def test_cohere_pass_through(cloud):
    r = httpx.post(
        f"{cloud['url']}/cohere/v2/chat",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        json={"model": "command-r-plus", "messages": [{"role": "user", "content": "native cohere"}]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"][0]["text"] == "mock reply to: native cohere"
    assert last(cloud)["headers"]["authorization"] == "Bearer cohere-secret"
