"""Files and batches with the official openai SDK: a JSONL uploaded through the gateway
(streamed to the deployment of the model group it names), a batch created from it, polled,
and its results fetched; ids that name their deployment, so later calls reach it."""

import base64
import json
import time

import httpx
import openai
import pytest

from test_routing import MASTER_KEY, gateway, mock  # noqa: F401  (the module's fixtures)

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def config(mock) -> dict:
    return {
        "model_list": [
            {"model_name": "gpt",
             "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": f"{mock.url}/v1",
                                "api_key": "sk-up", "input_cost_per_token": 1e-6,
                                "output_cost_per_token": 2e-6},
             "model_info": {"id": "gpt-4o-mini"}},
            {"model_name": "azure-gpt",
             "litellm_params": {"model": "azure/my-gpt", "api_base": mock.url,
                                "api_key": "az-key", "api_version": "2024-10-21"},
             "model_info": {"id": "my-gpt"}},
            {"model_name": "claude",
             "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_base": mock.url,
                                "api_key": "k"},
             "model_info": {"id": "claude-sonnet-4-5"}},
        ],
    }


def jsonl(n: int, model: str = "gpt-4o-mini") -> bytes:
    return "\n".join(json.dumps({
        "custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]},
    }) for i in range(n)).encode() + b"\n"


def last(mock) -> dict:
    return httpx.get(f"{mock.url}/__last_request").json()


def client(g) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("group,upstream,prefix", [
    ("gpt", "gpt-4o-mini", "POST /v1/files"),
    ("azure-gpt", "my-gpt", "POST /openai/files?api-version=2024-10-21"),
])
def test_upload_batch_poll_and_results(mock, gateway, group, upstream, prefix):
    g = gateway(config(mock))
    c = client(g)
    data = jsonl(3, upstream)
    f = c.files.create(file=("batch.jsonl", data), purpose="batch",
                       extra_body={"target_model_names": group})
    assert f.id.startswith("file-") and f.bytes == len(data) and f.purpose == "batch"
    sent = last(mock)
    assert sent["path"] == prefix, sent["path"]
    # The model group is the gateway's: not sent on.
    assert "target_model_names" not in sent["body"] and sent["body"]["file_bytes"] == len(data)
    assert c.files.retrieve(f.id).id == f.id
    assert c.files.content(f.id).content == data

    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                         completion_window="24h", metadata={"job": "nightly"})
    assert b.id.startswith("batch_") and b.input_file_id == f.id
    assert last(mock)["body"]["input_file_id"].startswith("file-mock-")
    for _ in range(20):
        raw = c.batches.with_raw_response.retrieve(b.id)
        b = raw.parse()
        if b.status == "completed":
            break
        time.sleep(0.1)
    assert b.status == "completed" and b.request_counts.completed == 3
    # The read that sees it complete charges its cost, at batch prices (half the token
    # prices): 3 answers of 3 prompt and 5 completion tokens. Later reads charge nothing.
    if group == "gpt":
        assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(
            9 * 0.5e-6 + 15 * 1e-6)
    again = c.batches.with_raw_response.retrieve(b.id)
    assert "x-litellm-response-cost" not in again.headers
    lines = [json.loads(x) for x in c.files.content(b.output_file_id).text.splitlines()]
    assert [x["custom_id"] for x in lines] == ["req-0", "req-1", "req-2"]
    assert lines[1]["response"]["body"]["choices"][0]["message"]["content"] == \
        "mock reply to: question 1"

    assert c.batches.cancel(b.id).status == "cancelled"
    assert c.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)


def test_listing_and_bad_requests(mock, gateway):
    g = gateway(config(mock))
    c = client(g)
    f = c.files.create(file=("a.jsonl", jsonl(1)), purpose="batch",
                       extra_body={"target_model_names": "gpt"})
    listed = c.files.list(extra_query={"target_model_names": "gpt"})
    assert f.id in [x.id for x in listed.data]
    r = httpx.get(f"{g.url}/v1/files", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["param"] == "target_model_names"

    r = httpx.post(f"{g.url}/v1/files", headers=AUTH, files={"file": ("a.jsonl", b"{}\n")},
                   data={"purpose": "batch"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "target_model_names", r.text
    r = httpx.post(f"{g.url}/v1/files", headers=AUTH, files={"file": ("a.jsonl", b"{}\n")},
                   data={"target_model_names": "gpt"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose", r.text
    r = httpx.post(f"{g.url}/v1/files", headers=AUTH, files={"file": ("a.jsonl", b"{}\n")},
                   data={"target_model_names": "claude", "purpose": "batch"})
    assert r.status_code == 400 and "files" in r.json()["error"]["message"], r.text

    with pytest.raises(openai.BadRequestError) as e:
        c.batches.create(input_file_id="file-not-ours", endpoint="/v1/chat/completions",
                         completion_window="24h")
    assert e.value.body["param"] == "input_file_id"
    # A line for another model than the file's deployment runs: refused, naming the line.
    other = c.files.create(file=("b.jsonl", jsonl(1) + jsonl(1, "o1-pro")), purpose="batch",
                           extra_body={"target_model_names": "gpt"})
    with pytest.raises(openai.BadRequestError) as e:
        c.batches.create(input_file_id=other.id, endpoint="/v1/chat/completions",
                         completion_window="24h")
    assert "line 2" in e.value.body["message"] and "o1-pro" in e.value.body["message"]
    # An id altered to name another owner: not found.
    raw = base64.urlsafe_b64decode(f.id[5:] + "=" * (-len(f.id[5:]) % 4))
    forged = "file-" + base64.urlsafe_b64encode(raw[:32] + raw[32:].replace(b'""', b'"team:x"', 1)).decode().rstrip("=")
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(forged)
    with pytest.raises(openai.NotFoundError):
        c.batches.retrieve("batch_unknown")
    with pytest.raises(openai.NotFoundError):
        c.files.content("file-unknown")
    assert httpx.get(f"{g.url}/v1/files/{f.id}").status_code == 401


def test_a_batch_is_charged_once_across_data_planes(make_stack, mock):
    """Attached: a key's batch, read finished on two data planes (and twice on one), is
    charged once, to that key, in PostgreSQL."""
    from stack import wait_until

    s = make_stack()
    admin = s.admin()
    a, b = s.dataplane("dp-a"), s.dataplane("dp-b")
    admin.ok("POST", "/model/new", json={
        "model_name": "batchy",
        "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": f"{mock.url}/v1",
                           "api_key": "sk-up", "input_cost_per_token": 1e-6,
                           "output_cost_per_token": 2e-6},
        "model_info": {"id": "batchy-1"}})
    key = admin.ok("POST", "/key/generate", json={})["key"]

    def ready(dp):
        r = httpx.get(f"{dp.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
        return r.status_code == 200 and "batchy" in {m["id"] for m in r.json()["data"]}

    for dp in (a, b):
        wait_until(lambda: ready(dp), what=f"{dp.name} knows the key and the model")
    ca = openai.OpenAI(base_url=f"{a.url}/v1", api_key=key, max_retries=0)
    cb = openai.OpenAI(base_url=f"{b.url}/v1", api_key=key, max_retries=0)
    f = ca.files.create(file=("b.jsonl", jsonl(3)), purpose="batch",
                        extra_body={"target_model_names": "batchy"})
    batch = ca.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
    costs = []
    for client in (ca, cb, ca, cb):
        raw = client.batches.with_raw_response.retrieve(batch.id)
        assert raw.parse().status == "completed"
        costs.append(raw.headers.get("x-litellm-response-cost"))
    expected = 9 * 0.5e-6 + 15 * 1e-6
    # Each data plane charges on its first read: the same event, counted once.
    assert [c is not None for c in costs] == [True, True, False, False], costs
    assert float(costs[0]) == pytest.approx(expected)

    def logged():
        return s.sql("SELECT count(*), COALESCE(sum(cost), 0) FROM spend_logs "
                     "WHERE request_id LIKE 'batch-%%'")[0]

    wait_until(lambda: logged()[0] >= 1, timeout=20, what="the batch's usage ingested")
    time.sleep(1)  # a second event would be ingested by now
    count, cost = logged()
    assert count == 1 and cost == pytest.approx(expected)
    spend = admin.ok("GET", "/key/info", params={"key": key})["info"]["spend"]
    assert spend == pytest.approx(expected)
