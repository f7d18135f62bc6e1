"""OpenAPI to MCP: a server with `spec_path` (an OpenAPI 3 file) in front of a plain HTTP
API (tests/e2e/openapi_app.py), reached with the official `mcp` SDK (unmodified) and the
REST face. Each operation is a tool (by `operationId`, else method and path) with its
parameters and JSON body as input; a call is one HTTP request with the server's
credential; a 4xx is a tool error, not a protocol one; the same grants and filters apply;
a spec that cannot be read leaves the server out and the gateway up."""

import json
import sys
from pathlib import Path

import httpx
import pytest

from conftest import Process, free_port
from test_mcp import call, start_gateway, tool_names, run, wait_port

MASTER = "sk-mcp-master"
HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.timeout(120)

SPEC = """
openapi: 3.0.3
info: {title: pets, version: "1"}
paths:
  /pets:
    get:
      operationId: listPets
      summary: List the pets
      parameters:
        - {name: limit, in: query, schema: {type: integer}}
    post:
      operationId: createPet
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Pet"}
  /pets/{id}:
    get:
      operationId: getPet
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
    head:
      operationId: petExists
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
  /whoami:
    get:
      parameters:
        - {name: x-trace, in: header, schema: {type: string}}
  /admin/reset:
    post:
      operationId: resetEverything
components:
  schemas:
    Pet:
      type: object
      required: [name]
      properties: {name: {type: string}}
"""

CONFIG = """
model_list:
  - model_name: m
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
mcp_servers:
  pets:
    url: http://127.0.0.1:{port}/api
    spec_path: {spec}
    auth_type: bearer_token
    auth_value: pets-token
    disallowed_tools: [resetEverything]
  broken:
    url: http://127.0.0.1:{port}/api
    spec_path: {missing}
general_settings:
  master_key: {master}
  allowed_egress: ["127.0.0.1/32"]
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("mcp-openapi")
    port = free_port()
    app = Process([sys.executable, str(HERE / "openapi_app.py"), str(port)], d / "app.log")
    gw = None
    try:
        wait_port(port, app.proc)
        spec = d / "pets.yaml"
        spec.write_text(SPEC)
        config = CONFIG.format(port=port, spec=spec, missing=d / "missing.yaml", master=MASTER)
        url, gw = start_gateway(d, config, "dp")
        yield type("Env", (), {"url": url, "gw": gw, "app_port": port})
    finally:
        if gw:
            gw.stop()
        app.stop()


def rest_call(env, name: str, arguments: dict) -> httpx.Response:
    return httpx.post(f"{env.url}/mcp-rest/tools/call", headers={"Authorization": f"Bearer {MASTER}"},
                      json={"name": name, "arguments": arguments})


def test_operations_are_listed_as_tools(env):
    _, names = run(tool_names(f"{env.url}/mcp/pets"))
    assert names == ["createPet", "getPet", "get_whoami", "listPets", "petExists"]
    _, names = run(tool_names(f"{env.url}/mcp"))
    assert names == ["pets-createPet", "pets-getPet", "pets-get_whoami", "pets-listPets", "pets-petExists"]
    r = httpx.get(f"{env.url}/mcp-rest/tools/list", headers={"Authorization": f"Bearer {MASTER}"})
    tools = {t["name"]: t for t in r.json()["tools"]}
    assert tools["pets-listPets"]["description"] == "List the pets"
    assert tools["pets-getPet"]["inputSchema"]["required"] == ["id"]
    assert tools["pets-createPet"]["inputSchema"]["properties"]["body"]["properties"]["name"] == {"type": "string"}


def test_calls_are_http_requests_to_the_api(env):
    error, text = run(call(f"{env.url}/mcp/pets", "listPets", {"limit": 2}))
    assert not error and json.loads(text) == [{"id": 1, "name": "Rex"}, {"id": 2, "name": "Tom"}]
    error, text = run(call(f"{env.url}/mcp", "pets-getPet", {"id": 3}))
    assert not error and json.loads(text) == {"id": 3, "name": "Kit"}
    error, text = run(call(f"{env.url}/mcp/pets", "createPet", {"body": {"name": "Bo"}}))
    assert not error and json.loads(text) == {"id": 4, "name": "Bo"}
    # The server's credential, and a header parameter.
    error, text = run(call(f"{env.url}/mcp/pets", "get_whoami", {"x-trace": "t-1"}))
    assert json.loads(text) == {"authorization": "Bearer pets-token", "x-trace": "t-1"}


def test_a_head_operation_answers_without_a_body(env):
    # The answer's content-length is that of the body a GET would send; none follows, and
    # the next call (on the same server) is not disturbed.
    for _ in range(3):
        error, text = run(call(f"{env.url}/mcp/pets", "petExists", {"id": 1}))
        assert not error and text == "", text
        error, text = run(call(f"{env.url}/mcp/pets", "getPet", {"id": 2}))
        assert not error and json.loads(text) == {"id": 2, "name": "Tom"}
    error, text = run(call(f"{env.url}/mcp/pets", "petExists", {"id": 99}))
    assert error and text.startswith("HTTP 404"), text


def test_an_api_error_is_a_tool_error(env):
    error, text = run(call(f"{env.url}/mcp/pets", "getPet", {"id": 99}))
    assert error and text.startswith("HTTP 404") and "no such pet" in text
    r = rest_call(env, "pets-createPet", {"body": {"nome": "typo"}})
    assert r.status_code == 200 and r.json()["isError"] is True and "HTTP 400" in r.json()["content"][0]["text"]


def test_a_missing_path_parameter_and_a_hidden_operation_are_refused(env):
    r = rest_call(env, "pets-getPet", {})
    assert r.status_code == 400 and "`id` is required" in r.json()["error"]["message"]
    r = rest_call(env, "pets-resetEverything", {})
    assert r.status_code == 400 and "Unknown tool" in r.json()["error"]["message"]


def test_an_unreadable_spec_leaves_its_server_out(env):
    r = httpx.get(f"{env.url}/v1/mcp/server/health", headers={"Authorization": f"Bearer {MASTER}"})
    servers = {s["server_name"]: s for s in r.json()}
    assert "broken" not in servers and servers["pets"]["status"] == "healthy"
    assert "spec_path" in env.gw.output() and "missing.yaml" in env.gw.output()
    # Named, it is said to be left out, without the file's path.
    r = httpx.get(f"{env.url}/mcp-rest/tools/list?server_name=broken", headers={"Authorization": f"Bearer {MASTER}"})
    message = r.json()["error"]["message"]
    assert r.status_code == 404 and "not served by this data plane" in message and "missing.yaml" not in message


def test_an_openapi_server_added_through_the_admin_api_reaches_an_attached_data_plane(env, tmp_path):
    from stack import STACK_CONFIG, STACK_MASTER_KEY, Stack, wait_until

    port = env.app_port
    spec = tmp_path / "pets.yaml"
    spec.write_text(SPEC)
    s = Stack(tmp_path, start=False)
    try:
        (tmp_path / "config.yaml").write_text(STACK_CONFIG + '  allowed_egress: ["127.0.0.1/32"]\n')
        s.cp.start()
        dp = s.dataplane("dp-openapi")
        admin = s.admin()
        r = admin.call("POST", "/v1/mcp/server", json={
            "server_name": "pets", "url": f"http://127.0.0.1:{port}/api", "spec_path": str(spec),
            "auth_type": "bearer_token", "credentials": {"auth_value": "pets-token"}})
        assert r.status_code == 201 and r.json()["spec_path"] == str(spec), r.text
        # An OpenAPI server is called over HTTP: another transport is refused.
        r = admin.call("POST", "/v1/mcp/server", json={
            "server_name": "pets2", "url": f"http://127.0.0.1:{port}/api", "spec_path": str(spec),
            "transport": "sse"})
        assert r.status_code in (400, 422) and "spec_path" in r.text, r.text
        # A change that is sound alone but not with the stored server conflicts with it.
        r = admin.call("POST", "/v1/mcp/server", json={
            "server_name": "local", "transport": "stdio", "command": "true"})
        assert r.status_code == 201, r.text
        r = admin.call("PUT", "/v1/mcp/server", json={"server_id": "local", "spec_path": str(spec)})
        assert r.status_code == 409 and "spec_path" in r.json()["error"]["message"], r.text
        r = admin.call("PUT", "/v1/mcp/server", json={"server_id": "local", "transport": "grpc"})
        assert r.status_code in (400, 422), r.text
        wait_until(lambda: "pets-getPet" in run(tool_names_as(f"{dp.url}/mcp", STACK_MASTER_KEY)),
                   timeout=15, interval=0.2, what="the OpenAPI server on the data plane")
        r = httpx.post(f"{dp.url}/mcp-rest/tools/call", headers={"Authorization": f"Bearer {STACK_MASTER_KEY}"},
                       json={"name": "pets-get_whoami", "arguments": {}}, timeout=30)
        assert json.loads(r.json()["content"][0]["text"])["authorization"] == "Bearer pets-token"
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.close()


async def tool_names_as(url: str, key: str) -> list[str]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as c:
        return [t.name for t in (await c.list_tools()).tools]
