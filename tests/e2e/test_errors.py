"""Bad input and upstream failures: OpenAI-shaped errors with the right status, and a
gateway that keeps serving everyone else."""

import concurrent.futures

import httpx
import pytest
from conftest import MASTER_KEY

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


def post(gateway, path, **kw):
    headers = {**AUTH, **kw.pop("headers", {})}
    return httpx.post(f"{gateway.url}{path}", headers=headers, timeout=10, **kw)


def assert_openai_error(r, status, etype=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert {"message", "type", "param", "code"} <= set(err)
    if etype:
        assert err["type"] == etype
    return err


def test_malformed_json_is_400(gateway):
    err = assert_openai_error(post(gateway, "/v1/chat/completions", content=b"{not json"), 400, "invalid_request_error")
    assert "JSON" in err["message"]


def test_non_object_and_empty_bodies_are_400(gateway):
    assert_openai_error(post(gateway, "/v1/chat/completions", content=b"[1,2]"), 400)
    assert_openai_error(post(gateway, "/v1/chat/completions", content=b""), 400)


def test_missing_model_is_400_naming_the_field(gateway):
    err = assert_openai_error(post(gateway, "/v1/chat/completions", json={"messages": []}), 400)
    assert err["param"] == "model"


def test_bad_stream_flag_is_400(gateway):
    r = post(gateway, "/v1/chat/completions", json={"model": "builtin-mock", "messages": [], "stream": "yes"})
    assert assert_openai_error(r, 400)["param"] == "stream"


def test_no_key_is_401(gateway):
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "builtin-mock", "messages": []})
    assert_openai_error(r, 401, "authentication_error")
    r = httpx.get(f"{gateway.url}/v1/models")
    assert_openai_error(r, 401)


def test_unknown_route_and_method(gateway):
    assert_openai_error(httpx.get(f"{gateway.url}/v1/nope"), 404)
    assert_openai_error(httpx.get(f"{gateway.url}/v1/chat/completions"), 405)


def test_oversized_body_is_413_and_others_are_unaffected(gateway):
    big = b'{"model":"builtin-mock","messages":[{"role":"user","content":"' + b"x" * (2 * 1024 * 1024) + b'"}]}'

    def small(i):
        r = post(gateway, "/v1/chat/completions", json={"model": "builtin-mock", "messages": [{"role": "user", "content": f"n{i}"}]})
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        smalls = [pool.submit(small, i) for i in range(40)]
        bigs = [pool.submit(post, gateway, "/v1/chat/completions", content=big) for _ in range(4)]
        assert all(f.result() == 200 for f in smalls)
        for f in bigs:
            assert_openai_error(f.result(), 413, "request_too_large")


def test_chunked_oversized_body_is_413(gateway):
    def gen():
        yield b'{"model":"builtin-mock","messages":[{"role":"user","content":"'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    assert_openai_error(post(gateway, "/v1/chat/completions", content=gen()), 413)


def test_upstream_unreachable_is_502(gateway):
    r = post(gateway, "/v1/chat/completions", json={"model": "dead-upstream", "messages": [{"role": "user", "content": "x"}]})
    err = assert_openai_error(r, 502)
    assert "connect" in err["message"]
    # The deployment is named; its address stays in the logs.
    assert "of model group `dead-upstream`" in err["message"] and "127.0.0.1" not in err["message"], err


def test_upstream_timeout_is_504(gateway):
    r = post(gateway, "/v1/chat/completions", json={"model": "slow-upstream", "messages": [{"role": "user", "content": "x"}]})
    err = assert_openai_error(r, 504, "timeout_error")
    assert "of model group `slow-upstream` did not answer within 0.5s" in err["message"], err
    assert "127.0.0.1" not in err["message"], err


@pytest.mark.parametrize("status,expected", [(500, 502), (503, 503), (429, 429), (400, 400), (401, 502)])
def test_upstream_errors_carry_the_provider_message(gateway, status, expected):
    r = post(
        gateway,
        "/v1/chat/completions",
        json={"model": "gpt-upstream", "messages": [{"role": "user", "content": f"mock-status-{status}"}]},
    )
    err = assert_openai_error(r, expected)
    assert f"mock failure {status}" in err["message"]
    if status == 429:
        assert r.headers["retry-after"] == "1"


def test_anthropic_upstream_error_on_messages_route(gateway):
    r = post(
        gateway,
        "/v1/messages",
        json={"model": "claude-upstream", "max_tokens": 5, "messages": [{"role": "user", "content": "mock-status-529"}]},
    )
    assert r.status_code == 503
    body = r.json()
    assert body["type"] == "error"
    assert "mock failure 529" in body["error"]["message"]


def test_secrets_never_reach_the_log(gateway, openai_client):
    openai_client.chat.completions.create(model="gpt-upstream", messages=[{"role": "user", "content": "x"}])
    log = gateway.process.output()
    for secret in ["sk-upstream-secret", "sk-ant-upstream", "azure-secret-key", MASTER_KEY]:
        assert secret not in log
    assert "an_unknown_setting" in log  # the warning about the unknown key was logged
