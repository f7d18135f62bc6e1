"""Skills (`/v1/skills`, Anthropic's Skills API) on the full stack: PostgreSQL, nats-server,
the control plane with its bundles in a real S3-compatible server (s3s-fs), the admin API,
attached data planes, and the mock provider speaking Anthropic's Skills and Messages APIs.
Driven with the official `anthropic` SDK, unmodified: skills created, listed, read,
versioned, downloaded and deleted; each version copied to every Anthropic deployment under
that deployment's key; a Messages request that loads a registry skill reaching the serving
deployment's copy with the betas it needs (the request span naming the skill); refusals; a
control-plane restart that copies nothing twice; and the registry without an object
store."""

import io
import os
import time
import zipfile

import anthropic
import httpx
import openai
import pytest

from conftest import S3Server, free_port
from otlp import OtlpReceiver
from stack import STACK_CONFIG, STACK_MASTER_KEY, Stack, wait_until

pytestmark = pytest.mark.timeout(240)

BETAS = ["code-execution-2025-08-25", "skills-2025-10-02"]
CODE_TOOL = {"type": "code_execution_20250825", "name": "code_execution"}


def manifest(name: str = "report-writer", description: str = "Writes reports.") -> bytes:
    return f"---\nname: {name}\ndescription: {description}\n---\n\n# Reports\n".encode()


def config(mock: str) -> str:
    """The stack's config with two Anthropic deployments (two keys) and an OpenAI one."""
    models = f"""  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {mock}
      api_key: sk-ant-team-a
  - model_name: claude-b
    litellm_params:
      model: anthropic/claude-haiku-4-5
      api_base: {mock}
      api_key: sk-ant-team-b
  - model_name: gpt
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {mock}/v1
      api_key: sk-openai
"""
    return STACK_CONFIG.replace("general_settings:", models + "general_settings:", 1)


@pytest.fixture(scope="module")
def env(tmp_path_factory, mock_provider):
    d = tmp_path_factory.mktemp("skills")
    s3 = S3Server(d, buckets=("skills",))
    s = None
    saved = dict(os.environ)
    try:
        os.environ.update(s3.env)
        s = Stack(d, start=False, cp_args=["--skill-store", "s3://skills/gw",
                                           "--skill-sync-interval", "1"])
        (d / "config.yaml").write_text(config(mock_provider))
        s.cp.start()
        dp = s.dataplane("dp-skills")
        admin = s.admin()
        yield type("Env", (), {"stack": s, "dp": dp, "admin": admin, "s3": s3,
                               "mock": mock_provider, "dir": d})
    except BaseException:
        if s:
            print(s.logs())
        raise
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if s:
            s.close()
        s3.__exit__()


def admin_client(env) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=env.admin.url, api_key=STACK_MASTER_KEY, max_retries=0)


def gateway(dp) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=dp.url, api_key=STACK_MASTER_KEY, max_retries=0)


def mock_skills(env) -> dict:
    return httpx.get(f"{env.mock}/__skills").json()


def last_request(env) -> dict:
    return httpx.get(f"{env.mock}/__last_request").json()


def copies(env, skill_id: str) -> list:
    return env.admin.ok("GET", f"/v1/skills/{skill_id}")["copies"]


def deployment_ids(env) -> dict:
    rows = env.stack.sql("SELECT model_name, model_id FROM model_deployments")
    return dict(rows)


def load(dp, model: str, skill: dict, **kw):
    return gateway(dp).beta.messages.create(
        model=model, max_tokens=32, betas=BETAS, tools=[CODE_TOOL],
        messages=[{"role": "user", "content": "write the weekly report"}],
        container={"skills": [skill]}, **kw)


def test_skill_lifecycle_through_the_anthropic_sdk(env):
    client = admin_client(env)
    before = set(mock_skills(env))
    skill = client.beta.skills.create(
        display_name="Weekly reports",
        files=[("report-writer/SKILL.md", manifest(), "text/markdown"),
               ("report-writer/scripts/render.py", b"print('report')", "text/x-python")])
    assert skill.id.startswith("skill_") and skill.type == "skill"
    assert skill.display_name == "Weekly reports"
    v1 = skill.latest_version_id
    assert v1

    # The bundle is a zip in the object store; the download is the same archive.
    objs = list((env.s3.data / "skills" / "gw" / "skills" / skill.id).glob(f"{v1}-*.zip"))
    assert len(objs) == 1, list((env.s3.data / "skills").rglob("*"))
    obj = objs[0]
    stored = zipfile.ZipFile(io.BytesIO(obj.read_bytes()))
    assert stored.namelist() == ["report-writer/SKILL.md", "report-writer/scripts/render.py"]
    downloaded = client.beta.skills.versions.download(v1, skill_id=skill.id).read()
    assert downloaded == obj.read_bytes()

    # A second version, as a zip archive; SKILL.md must keep the skill's name.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("report-writer/SKILL.md", manifest(description="Writes reports, v2."))
    v2 = client.beta.skills.versions.create(
        skill.id, files=[("bundle.zip", buf.getvalue(), "application/zip")]).id
    assert v2 != v1
    got = client.beta.skills.retrieve(skill.id)
    assert got.latest_version_id == v2 and got.description == "Writes reports, v2."
    listed = [s.id for s in client.beta.skills.list()]
    assert skill.id in listed
    versions = list(client.beta.skills.versions.list(skill.id))
    assert [v.id for v in versions] == [v2, v1], "newest first"
    assert versions[1].model_extra["directory"] == "report-writer"
    assert client.beta.skills.versions.retrieve("latest", skill_id=skill.id).id == v2
    wrong = httpx.post(f"{env.admin.url}/v1/skills/{skill.id}/versions",
                       headers={"x-api-key": STACK_MASTER_KEY},
                       files=[("files[]", ("other-name/SKILL.md", manifest("other-name")))])
    assert wrong.status_code == 400 and "keeps its name" in wrong.text

    # Both versions reach both Anthropic deployments, each under its own key.
    ids = deployment_ids(env)
    want = {(v, ids[m]) for v in (v1, v2) for m in ("claude", "claude-b")}
    wait_until(lambda: {(c["version"], c["deployment_id"]) for c in copies(env, skill.id)} == want,
               timeout=30, interval=0.2, what="copies on both deployments")
    made = {k: v for k, v in mock_skills(env).items() if k not in before}
    assert sorted(v["api_key"] for v in made.values()) == ["sk-ant-team-a", "sk-ant-team-b"]
    for upstream in made.values():
        assert upstream["display_title"] == "Weekly reports"
        files = sorted(map(tuple, upstream["versions"].values()))
        assert files == [("report-writer/SKILL.md",),
                         ("report-writer/SKILL.md", "report-writer/scripts/render.py")]
    by = {(c["version"], c["deployment_id"]): c for c in copies(env, skill.id)}

    # A request that loads the skill reaches the serving deployment's copy, with the betas.
    for model in ("claude", "claude-b"):
        r = load(env.dp, model, {"type": "custom", "skill_id": skill.id, "version": "latest"})
        assert r.content, r
        sent = last_request(env)
        c = by[(v2, ids[model])]
        assert sent["body"]["container"]["skills"] == [
            {"type": "custom", "skill_id": c["upstream_skill_id"],
             "version": c["upstream_version"]}]
        assert set(BETAS) <= set(sent["headers"]["anthropic-beta"].split(","))
        assert sent["headers"]["x-api-key"] in ("sk-ant-team-a", "sk-ant-team-b")
    pinned = load(env.dp, "claude", {"type": "custom", "skill_id": skill.id, "version": v1})
    assert pinned.content
    assert last_request(env)["body"]["container"]["skills"][0]["version"] == \
        by[(v1, ids["claude"])]["upstream_version"]
    # A data plane started now gets the skills in its first snapshot; its request span names
    # the registry skills loaded.
    receiver = OtlpReceiver()
    try:
        os.environ.update(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
                          OTEL_BSP_SCHEDULE_DELAY="100")
        late = env.stack.dataplane("dp-skills-late")
        for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_BSP_SCHEDULE_DELAY"):
            del os.environ[k]
        assert load(late, "claude", {"type": "custom", "skill_id": skill.id}).content
        assert last_request(env)["body"]["container"]["skills"][0]["skill_id"] == \
            by[(v2, ids["claude"])]["upstream_skill_id"]
        spans = wait_until(receiver.spans, what="the request span")
        attrs = {a.key: a.value.string_value for a in spans[0].attributes}
        assert attrs["routeiq.skills"] == skill.id
    finally:
        receiver.stop()

    # Refusals, OpenAI-shaped, naming the cause.
    with pytest.raises(anthropic.NotFoundError, match="has no version"):
        load(env.dp, "claude", {"type": "custom", "skill_id": skill.id, "version": "123"})
    with pytest.raises(anthropic.BadRequestError, match="Anthropic deployments"):
        load(env.dp, "gpt", {"type": "custom", "skill_id": skill.id})
    oai = openai.OpenAI(base_url=f"{env.dp.url}/v1", api_key=STACK_MASTER_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError, match="/v1/messages"):
        oai.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}],
                                    extra_body={"container": {"skills": [{"skill_id": skill.id}]}})

    # The audit log records each change, without the files' contents.
    audit = env.admin.call("GET", "/audit", params={"object_type": "skill"}).text
    assert "skill.create" in audit and "skill.version.create" in audit
    assert "print('report')" not in audit

    # A control-plane restart copies nothing twice, and requests keep their copies.
    count = len(mock_skills(env))
    env.stack.cp.stop()
    env.stack.cp.start()
    wait_until(lambda: httpx.get(f"{env.stack.cp.http}/health/readiness").status_code == 200,
               timeout=20, what="the control plane")
    r = env.admin.call("GET", f"/v1/skills/{skill.id}")
    assert r.status_code == 200 and len(r.json()["copies"]) == 4
    time.sleep(2.5)  # more than two copying rounds
    assert len(mock_skills(env)) == count
    assert sum(len(v["versions"]) for v in mock_skills(env).values()) >= 4

    # Deleting a version removes its copies; deleting the skill removes everything.
    deleted = client.beta.skills.versions.delete(v1, skill_id=skill.id)
    assert deleted.id == v1 and deleted.type == "skill_version_deleted"
    # `latest` names the newest version; the answer names the version deleted.
    v3 = client.beta.skills.versions.create(
        skill.id, files=[("report-writer/SKILL.md", manifest(), "text/markdown")]).id
    assert client.beta.skills.versions.delete("latest", skill_id=skill.id).id == v3
    wait_until(lambda: all(list(mock_skills(env).get(u, {}).get("versions", {})) ==
                           [by[(v2, ids[m])]["upstream_version"]]
                           for m, u in ((m, by[(v2, ids[m])]["upstream_skill_id"])
                                        for m in ("claude", "claude-b"))),
               timeout=20, interval=0.2, what="v1 copies removed")
    last = httpx.delete(f"{env.admin.url}/v1/skills/{skill.id}/versions/{v2}",
                        headers={"x-api-key": STACK_MASTER_KEY})
    assert last.status_code == 409 and "only version" in last.text
    gone = client.beta.skills.delete(skill.id)
    assert gone.id == skill.id and gone.type == "skill_deleted"
    wait_until(lambda: not (set(mock_skills(env)) & set(made)), timeout=20, interval=0.2,
               what="the upstream copies deleted")
    wait_until(lambda: not obj.exists() and not any((env.s3.data / "skills").rglob("*.zip")),
               timeout=20, what="the bundles deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.beta.skills.retrieve(skill.id)
    # Its id is no longer the registry's: it passes through, and the provider knows it not
    # (a provider's 404 is the deployment's failure: 502 after the retries).
    wait_until(lambda: env.dp.version() >= env.stack.sql(
        "SELECT max(version) FROM snapshot_deltas")[0][0], what="the delete delta")
    with pytest.raises(anthropic.APIStatusError, match="not found"):
        load(env.dp, "claude", {"type": "custom", "skill_id": skill.id})
    assert last_request(env)["body"]["container"]["skills"][0]["skill_id"] == skill.id


def upload(env, files, key=STACK_MASTER_KEY, **data) -> httpx.Response:
    return httpx.post(f"{env.admin.url}/v1/skills", headers={"Authorization": f"Bearer {key}"},
                      files=files, data=data, timeout=10)


def test_uploads_are_checked_and_roles_enforced(env):
    cases = [
        ([("files[]", ("SKILL.md", manifest()))], "not in a directory"),
        ([("files[]", ("a/SKILL.md", manifest())), ("files[]", ("b/x.py", b""))],
         "same top-level directory"),
        ([("files[]", ("a/README.md", b"x"))], "no `a/SKILL.md`"),
        ([("files[]", ("a/SKILL.md", b"# no front matter"))], "front matter"),
        ([("files[]", ("a/SKILL.md", manifest("Bad Name")))], "lowercase letters"),
        ([("files[]", ("x.zip", b"PK\x03\x04 broken"))], "not a readable zip"),
        ([("files[]", ("a/../SKILL.md", manifest()))], "`..` segment"),
    ]
    for files, want in cases:
        r = upload(env, files)
        assert r.status_code == 400 and want in r.json()["error"]["message"], (want, r.text)
    r = httpx.post(f"{env.admin.url}/v1/skills", json={"files": []},
                   headers={"Authorization": f"Bearer {STACK_MASTER_KEY}"})
    assert r.status_code == 400 and "multipart/form-data" in r.text
    r = upload(env, [("files[]", ("a/SKILL.md", manifest()))], display_name="x" * 256)
    assert r.status_code == 400 and "255" in r.text
    big = upload(env, [("files[]", ("a/SKILL.md", manifest())),
                       ("files[]", ("a/blob.bin", b"\0" * (8 * 1024 * 1024)))])
    assert big.status_code in (400, 413), big.text

    ok = upload(env, [("files[]", ("dup-name/SKILL.md", manifest("dup-name")))])
    assert ok.status_code == 200, ok.text
    dup = upload(env, [("files[]", ("dup-name/SKILL.md", manifest("dup-name")))])
    assert dup.status_code == 409 and "already exists" in dup.text

    # A user without the admin role reads skills but does not make them.
    user = env.admin.ok("POST", "/user/new", json={"user_role": "internal_user"})
    key = env.admin.ok("POST", "/key/generate", json={"user_id": user["user_id"]})["key"]
    assert upload(env, [("files[]", ("x/SKILL.md", manifest("x")))], key=key).status_code == 403
    listed = httpx.get(f"{env.admin.url}/v1/skills", headers={"x-api-key": key}).json()
    assert ok.json()["id"] in [s["id"] for s in listed["data"]]
    assert env.admin.call("DELETE", f"/v1/skills/{ok.json()['id']}", key=key).status_code == 403
    assert env.admin.call("DELETE", f"/v1/skills/{ok.json()['id']}").status_code == 200

    # Paging: a cursor per page, to the end.
    made = [upload(env, [("files[]", (f"page-{i}/SKILL.md", manifest(f"page-{i}")))]).json()["id"]
            for i in range(3)]
    seen, page = [], None
    while True:
        params = {"limit": 2} | ({"page": page} if page else {})
        p = env.admin.ok("GET", "/v1/skills", params=params)
        seen += [s["id"] for s in p["data"]]
        if not p["has_more"]:
            assert p["next_page"] is None
            break
        page = p["next_page"]
    assert set(made) <= set(seen) and len(seen) == len(set(seen))
    for i in made:
        env.admin.ok("DELETE", f"/v1/skills/{i}")


def test_copies_follow_deployments_and_failed_uploads_are_retried(env):
    """A deployment added later gets the skill; one whose key changes gets a new copy under
    the new key; a removed one's copies are forgotten. A deployment the control plane cannot
    reach has no copy, and a request routed there is a 503 to retry, until it can."""
    client = admin_client(env)
    skill = client.beta.skills.create(files=[("later/SKILL.md", manifest("later"), "text/markdown")])
    dead = free_port()
    env.admin.ok("POST", "/model/new", json={
        "model_name": "claude-late",
        "litellm_params": {"model": "anthropic/claude-opus-4-1", "api_base": env.mock,
                           "api_key": "sk-ant-late-1"},
        "model_info": {"id": "claude-late-1"}})
    env.admin.ok("POST", "/model/new", json={
        "model_name": "claude-down",
        "litellm_params": {"model": "anthropic/claude-opus-4-1",
                           "api_base": f"http://127.0.0.1:{dead}", "api_key": "sk-ant-down"},
        "model_info": {"id": "claude-down-1"}})

    def copy_on(deployment):
        return next((c for c in copies(env, skill.id) if c["deployment_id"] == deployment), None)

    first = wait_until(lambda: copy_on("claude-late-1"), timeout=20, interval=0.2,
                       what="a copy on the added deployment")
    assert mock_skills(env)[first["upstream_skill_id"]]["api_key"] == "sk-ant-late-1"
    wait_until(lambda: httpx.get(f"{env.dp.url}/v1/models", headers={
        "Authorization": f"Bearer {STACK_MASTER_KEY}"}).text.count("claude-down") == 1,
        what="the deployments on the data plane")
    assert load(env.dp, "claude-late", {"type": "custom", "skill_id": skill.id}).content
    # The unreachable deployment: no copy, a 503 with retry-after, other copies unharmed.
    time.sleep(2.5)
    assert copy_on("claude-down-1") is None
    down = httpx.post(f"{env.dp.url}/v1/messages", headers={
        "x-api-key": STACK_MASTER_KEY, "anthropic-version": "2023-06-01"}, json={
        "model": "claude-down", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
        "container": {"skills": [{"type": "custom", "skill_id": skill.id}]}})
    assert down.status_code == 503 and down.headers["retry-after"] == "5", down.text
    assert "has not reached deployment `claude-down-1`" in down.text
    # With a deployment in the group that has the copy, every request reaches that one.
    env.admin.ok("POST", "/model/new", json={
        "model_name": "claude-down",
        "litellm_params": {"model": "anthropic/claude-opus-4-1", "api_base": env.mock,
                           "api_key": "sk-ant-late-1"},
        "model_info": {"id": "claude-down-2"}})
    wait_until(lambda: copy_on("claude-down-2"), timeout=20, interval=0.2,
               what="a copy on the group's reachable deployment")
    wait_until(lambda: env.dp.version() >= env.stack.sql(
        "SELECT max(version) FROM snapshot_deltas")[0][0], what="the copy on the data plane")
    for _ in range(8):
        assert load(env.dp, "claude-down", {"type": "custom", "skill_id": skill.id}).content
        assert last_request(env)["headers"]["x-api-key"] == "sk-ant-late-1"
    env.admin.ok("POST", "/model/delete", json={"id": "claude-down-2"})

    # The deployment comes up (a server at its address): the next rounds copy the skill.
    server = MockAt(dead, env.dir)
    try:
        wait_until(lambda: copy_on("claude-down-1"), timeout=20, interval=0.2,
                   what="the copy once the deployment is reachable")
    finally:
        server.stop()

    # A new key: a new copy, made with it; the old one is forgotten.
    env.admin.ok("POST", "/model/update", json={
        "model_name": "claude-late",
        "litellm_params": {"model": "anthropic/claude-opus-4-1", "api_base": env.mock,
                           "api_key": "sk-ant-late-2"},
        "model_info": {"id": "claude-late-1"}})
    second = wait_until(lambda: (c := copy_on("claude-late-1")) and
                        c["upstream_skill_id"] != first["upstream_skill_id"] and c,
                        timeout=20, interval=0.2, what="a copy under the new key")
    assert mock_skills(env)[second["upstream_skill_id"]]["api_key"] == "sk-ant-late-2"
    # Removed deployments' copies are forgotten.
    for d in ("claude-late-1", "claude-down-1"):
        env.admin.ok("POST", "/model/delete", json={"id": d})
    wait_until(lambda: copy_on("claude-late-1") is None and copy_on("claude-down-1") is None,
               timeout=20, interval=0.2, what="copies of removed deployments forgotten")
    ids = deployment_ids(env)
    assert {c["deployment_id"] for c in copies(env, skill.id)} == {ids["claude"], ids["claude-b"]}
    client.beta.skills.delete(skill.id)


class MockAt:
    """A second mock provider, on a given port."""

    def __init__(self, port: int, dir):
        from conftest import BIN_DIR, Process, wait_http
        self.p = Process([str(BIN_DIR / "routeiq-mock-provider"), "--listen",
                          f"127.0.0.1:{port}"], dir / f"mock-{port}.log")
        wait_http(f"http://127.0.0.1:{port}/health", self.p.proc)

    def stop(self):
        self.p.stop()


def test_without_an_object_store_the_registry_says_so(tmp_path):
    s = Stack(tmp_path)
    try:
        admin = s.admin()
        r = admin.call("POST", "/v1/skills",
                       files=[("files[]", ("a/SKILL.md", manifest("a")))])
        assert r.status_code == 409 and "--skill-store" in r.text, r.text
        assert admin.ok("GET", "/v1/skills")["data"] == []
    finally:
        s.close()
