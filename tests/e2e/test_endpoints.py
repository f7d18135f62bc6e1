"""Rerank (Cohere's shape, to Cohere and to an OpenAI-compatible rerank server) and
moderations (the official openai SDK), through the same keys, routing, fallbacks, usage and
cost as chat; `model_info.mode` decides which endpoints a model group serves."""

import httpx
import openai
import pytest

from test_routing import AUTH, MASTER_KEY, gateway, mock  # noqa: F401  (the module's fixtures)

DOCS = ["Paris is the capital of France", "Berlin is in Germany", "The capital of Italy is Rome"]


def config(mock) -> dict:
    return {
        "model_list": [
            {"model_name": "cohere-rerank",
             "litellm_params": {"model": "cohere/rerank-v3.5", "api_base": mock.url,
                                "api_key": "co-key"},
             "model_info": {"id": "rerank-v3.5", "mode": "rerank"}},
            {"model_name": "vllm-rerank",
             "litellm_params": {"model": "hosted_vllm/bge-reranker-v2-m3",
                                "api_base": f"{mock.url}/v1", "api_key": "k",
                                "input_cost_per_token": 1e-6},
             "model_info": {"id": "bge-reranker-v2-m3", "mode": "rerank"}},
            {"model_name": "flaky-rerank",
             "litellm_params": {"model": "cohere/rerank-flaky", "api_base": mock.url,
                                "api_key": "co-key"},
             "model_info": {"id": "rerank-flaky", "mode": "rerank"}},
            {"model_name": "mod",
             "litellm_params": {"model": "openai/omni-moderation-latest",
                                "api_base": f"{mock.url}/v1", "api_key": "k"},
             "model_info": {"id": "omni-moderation-latest", "mode": "moderation"}},
            {"model_name": "claude",
             "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_base": mock.url,
                                "api_key": "k"},
             "model_info": {"id": "claude-sonnet-4-5"}},
            {"model_name": "embedder",
             "litellm_params": {"model": "openai/text-embedding-3-small",
                                "api_base": f"{mock.url}/v1", "api_key": "k"},
             "model_info": {"id": "text-embedding-3-small", "mode": "embedding"}},
        ],
        "router_settings": {"num_retries": 0, "fallbacks": [{"flaky-rerank": ["vllm-rerank"]}]},
    }


def last(mock) -> dict:
    return httpx.get(f"{mock.url}/__last_request").json()


def rerank(g, path="/v1/rerank", **body):
    return httpx.post(f"{g.url}{path}", headers=AUTH, timeout=10, json=body)


def test_rerank_to_cohere_and_to_an_openai_compatible_server(mock, gateway):
    g = gateway(config(mock))
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        r = rerank(g, path, model="cohere-rerank", query="capital of France", documents=DOCS,
                   top_n=2)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [x["index"] for x in results] == [0, 2]
        assert results[0]["relevance_score"] > results[1]["relevance_score"]
        # Cohere bills searches: 1 search of rerank-v3.5 at the built-in $0.002.
        assert float(r.headers["x-litellm-response-cost"]) == pytest.approx(0.002)
        assert r.headers["x-litellm-model-id"] == "rerank-v3.5"
        sent = last(mock)
        assert sent["path"] == "/v2/rerank" and sent["body"]["model"] == "rerank-v3.5"
        assert sent["headers"]["authorization"] == "Bearer co-key"

    r = rerank(g, model="vllm-rerank", query="capital of France",
               documents=[{"text": d} for d in DOCS])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["results"][0]["document"]["text"] == DOCS[0]
    assert float(r.headers["x-litellm-response-cost"]) == pytest.approx(
        out["usage"]["prompt_tokens"] * 1e-6)
    assert last(mock)["path"] == "/v1/rerank"


def test_rerank_falls_back_and_bad_input_is_a_clear_400(mock, gateway):
    g = gateway(config(mock))
    mock.faults(**{"rerank-flaky": {"status": 503}})
    try:
        r = rerank(g, model="flaky-rerank", query="capital of France", documents=DOCS)
        assert r.status_code == 200, r.text
        assert r.headers["x-litellm-model-id"] == "bge-reranker-v2-m3"
    finally:
        mock.faults()
    for body, param in [
        ({"model": "cohere-rerank", "documents": DOCS}, "query"),
        ({"model": "cohere-rerank", "query": "q", "documents": []}, "documents"),
        ({"model": "cohere-rerank", "query": "q", "documents": DOCS, "top_n": 0}, "top_n"),
    ]:
        r = rerank(g, **body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    assert httpx.get(f"{g.url}/v1/rerank", headers=AUTH).status_code == 405
    assert rerank(g, model="cohere-rerank", query="q", documents=DOCS).status_code == 200
    assert httpx.post(f"{g.url}/v1/rerank", json={"model": "cohere-rerank", "query": "q",
                                                  "documents": DOCS}).status_code == 401


def test_moderations_with_the_openai_sdk(mock, gateway):
    g = gateway(config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    r = c.moderations.create(model="mod", input=["hello there", "mock-flag this"])
    assert [x.flagged for x in r.results] == [False, True]
    assert r.results[1].categories.violence is True
    sent = last(mock)
    assert sent["path"] == "/v1/moderations" and sent["body"]["model"] == "omni-moderation-latest"

    with pytest.raises(openai.BadRequestError) as e:
        c.moderations.create(model="claude", input="hello")
    assert e.value.body["code"] == "unsupported", e.value.body
    assert "moderations" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.moderations.create(model="mod", input=[])
    assert e.value.body["param"] == "input"


def test_model_info_mode_decides_the_endpoints(mock, gateway):
    g = gateway(config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="embedder", messages=[{"role": "user", "content": "hi"}])
    err = e.value.body
    assert err["code"] == "wrong_endpoint" and err["param"] == "model", err
    assert "`embedding`" in err["message"] and "chat completions" in err["message"]
    r = rerank(g, model="mod", query="q", documents=DOCS)
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_endpoint", r.text
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="cohere-rerank", input="hi")
    # A group without a mode serves any endpoint it can: embeddings still work.
    assert c.embeddings.create(model="embedder", input="hi").data[0].embedding


def images_config(mock) -> dict:
    return {
        "model_list": [
            {"model_name": "dalle",
             "litellm_params": {"model": "openai/dall-e-3", "api_base": f"{mock.url}/v1", "api_key": "k"},
             "model_info": {"id": "dall-e-3", "mode": "image_generation"}},
            {"model_name": "gpt-image",
             "litellm_params": {"model": "openai/gpt-image-1", "api_base": f"{mock.url}/v1", "api_key": "k",
                                "input_cost_per_token": 5e-6, "output_cost_per_token": 4e-5},
             "model_info": {"id": "gpt-image-1", "mode": "image_generation"}},
            {"model_name": "azure-dalle",
             "litellm_params": {"model": "azure/my-dalle", "api_base": mock.url, "api_key": "az",
                                "api_version": "2024-10-21"},
             "model_info": {"id": "my-dalle", "output_cost_per_image": 0.08}},
            {"model_name": "claude",
             "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_base": mock.url,
                                "api_key": "k"},
             "model_info": {"id": "claude-sonnet-4-5"}},
        ],
    }


def test_image_generations_with_the_openai_sdk(mock, gateway):
    g = gateway(images_config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = c.images.with_raw_response.generate(model="dalle", prompt="a lighthouse at dusk", n=2)
    r = raw.parse()
    assert len(r.data) == 2 and r.data[0].url.endswith(".png")
    # dall-e-3 is priced per image: 2 x $0.04.
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(0.08)
    sent = last(mock)
    assert sent["path"] == "/v1/images/generations" and sent["body"]["model"] == "dall-e-3"

    # gpt-image-1 reports tokens: priced per token.
    raw = c.images.with_raw_response.generate(model="gpt-image", prompt="a lighthouse")
    r = raw.parse()
    assert r.data[0].b64_json
    cost = r.usage.input_tokens * 5e-6 + r.usage.output_tokens * 4e-5
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(cost, rel=1e-9)

    raw = c.images.with_raw_response.generate(model="azure-dalle", prompt="a lighthouse")
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(0.08)
    assert last(mock)["path"] == "/openai/deployments/my-dalle/images/generations?api-version=2024-10-21"

    with pytest.raises(openai.BadRequestError) as e:
        c.images.generate(model="claude", prompt="a lighthouse")
    assert e.value.body["code"] == "unsupported"
    for body, param in [({"model": "dalle", "prompt": " "}, "prompt"),
                        ({"model": "dalle", "prompt": "x", "n": 11}, "n")]:
        r = httpx.post(f"{g.url}/v1/images/generations", headers=AUTH, json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="dalle", messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["code"] == "wrong_endpoint"


# A 1x1 PNG, uploaded for editing.
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
       b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00"
       b"\x00\x00\x00IEND\xaeB`\x82")


def test_image_edits_stream_the_upload(mock, gateway):
    g = gateway(images_config(mock))
    c = openai.OpenAI(base_url=f"{g.url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = c.images.with_raw_response.edit(model="dalle", image=("a.png", PNG, "image/png"),
                                          prompt="add a moon", n=2)
    assert len(raw.parse().data) == 2
    assert float(raw.headers["x-litellm-response-cost"]) == pytest.approx(2 * 0.04)
    sent = last(mock)
    assert sent["path"] == "/v1/images/edits"
    assert sent["body"]["model"] == "dall-e-3" and sent["body"]["prompt"] == "add a moon"
    assert sent["body"]["image_bytes"] == len(PNG)
    # gpt-image-1 takes several images (`image[]`) and reports tokens.
    raw = c.images.with_raw_response.edit(model="gpt-image", prompt="merge",
                                          image=[("a.png", PNG), ("b.png", PNG)])
    assert raw.parse().usage.output_tokens == 272
    r = c.images.edit(model="azure-dalle", image=("a.png", PNG), prompt="add a moon")
    assert r.data[0].url
    assert last(mock)["headers"]["api-key"]
    # Bad uploads: a 4xx with an OpenAI-shaped error.
    with pytest.raises(openai.BadRequestError) as e:
        c.images.edit(model="dalle", image=("a.png", PNG), prompt="")
    assert e.value.body["param"] == "prompt"
    r = httpx.post(f"{g.url}/v1/images/edits", headers=AUTH, data={"model": "dalle", "prompt": "x"},
                   files={"mask": ("m.png", PNG)})
    assert r.status_code == 400 and r.json()["error"]["param"] == "image", r.text
    with pytest.raises(openai.BadRequestError):
        c.images.edit(model="dalle", image=("a.png", b"not a png"), prompt="x")
    # curl's order: the image first, then the prompt and the model.
    boundary = "rq-edit"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + PNG + (
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nadd a moon"
        f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ndalle"
        f"\r\n--{boundary}--\r\n").encode()
    r = httpx.post(f"{g.url}/v1/images/edits", content=body, timeout=10,
                   headers={**AUTH, "content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert last(mock)["body"]["model"] == "dall-e-3"
    r = httpx.post(f"{g.url}/v1/images/edits", headers=AUTH, files={"image": ("a.png", PNG)},
                   data={"model": ["dalle", "gpt-image"], "prompt": "x"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text
