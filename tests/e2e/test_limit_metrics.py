"""LiteLLM's rate-limit gauges on a data plane attached to the control plane: a key's and
its team's limits and what they used (`litellm_api_key_rate_limit_*`,
`litellm_team_rate_limit_*`), what is left of the key's limits for the model asked for
(`litellm_remaining_api_key_*_for_model`), and what the provider says is left of its own
(`litellm_remaining_{requests,tokens}_metric`, else the deployment's `rpm` / `tpm` less
this minute's use)."""

import time

import httpx
from stack import STACK_MASTER_KEY, wait_until


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, value = line.rsplit(" ", 1)
            labels = dict(part.split("=", 1) for part in head[len(name) + 1:-1].split('",') if "=" in part)
            out.append(({k: v.strip('"') for k, v in labels.items()}, float(value)))
    return out


def one(text: str, name: str, **labels) -> float:
    found = [v for l, v in samples(text, name) if all(l.get(k) == str(w) for k, w in labels.items())]
    assert len(found) == 1, (name, labels, samples(text, name))
    return found[0]


def test_key_team_and_provider_limits_are_gauges(make_stack, mock_provider):
    base = f"{mock_provider}/v1"
    config = f"""
model_list:
  - model_name: said
    litellm_params: {{model: openai/gpt-4o-mini-limits-said, api_base: "{base}", api_key: sk-k}}
    model_info: {{id: dep-said}}
  - model_name: counted
    litellm_params: {{model: openai/gpt-4o-mini-limits-counted, api_base: "{base}", api_key: sk-k, rpm: 30, tpm: 5000}}
    model_info: {{id: dep-counted}}
general_settings:
  master_key: {STACK_MASTER_KEY}
"""
    httpx.post(f"{mock_provider}/__faults",
               json={"gpt-4o-mini-limits-said": {"ratelimit_remaining": [4321, 98765]}}).raise_for_status()
    try:
        s = make_stack(config=config)
        admin = s.admin()
        admin.ok("POST", "/team/new", json={"team_id": "t-lim", "rpm_limit": 50, "tpm_limit": 100000})
        r = admin.ok("POST", "/key/generate", json={"team_id": "t-lim", "key_alias": "limited",
                                                     "rpm_limit": 20, "tpm_limit": 10000})
        key = r["key"]
        free = admin.ok("POST", "/key/generate", json={"key_alias": "free"})["key"]
        dp = s.dataplane("dp-limits")
        def known(k):
            return httpx.get(f"{dp.url}/v1/models", headers={"Authorization": f"Bearer {k}"},
                             timeout=5).status_code == 200
        wait_until(lambda: known(key) and known(free), what="keys accepted")
        # The counts are per calendar minute: not across the end of one.
        while time.time() % 60 > 50:
            time.sleep(0.5)
        for model in ("said", "said", "counted"):
            r = dp.chat(key, model=model)
            assert r.status_code == 200, r.text
        assert dp.chat(free, model="said").status_code == 200
        headers = r.headers
        text = httpx.get(f"{dp.url}/metrics", timeout=5).text
    finally:
        httpx.post(f"{mock_provider}/__faults", json={}).raise_for_status()

    # The key: 20 requests a minute, the third request just admitted (listing models
    # counts none). What is left matches the response's own headers.
    assert one(text, "litellm_api_key_rate_limit_allowed_metric", api_key_alias="limited",
               rate_limit_type="requests") == 20
    used = one(text, "litellm_api_key_rate_limit_used_metric", api_key_alias="limited", rate_limit_type="requests")
    assert used == 3
    assert one(text, "litellm_api_key_rate_limit_allowed_metric", api_key_alias="limited",
               rate_limit_type="tokens") == 10000
    left = one(text, "litellm_remaining_api_key_requests_for_model", api_key_alias="limited",
               model="counted", model_id="dep-counted")
    assert left == 17 == int(headers["x-ratelimit-remaining-requests"])
    tokens_left = one(text, "litellm_remaining_api_key_tokens_for_model", api_key_alias="limited",
                      model="counted", model_id="dep-counted")
    assert 0 < tokens_left < 10000
    # The team's limits, by the team's id.
    assert one(text, "litellm_team_rate_limit_allowed_metric", team="t-lim", rate_limit_type="requests") == 50
    assert one(text, "litellm_team_rate_limit_used_metric", team="t-lim", rate_limit_type="requests") == 3
    # A key without limits has none of these series.
    for name in ("litellm_api_key_rate_limit_allowed_metric", "litellm_remaining_api_key_requests_for_model"):
        assert all(l.get("api_key_alias") != "free" for l, _ in samples(text, name)), name

    # The provider's own headers, for both keys' series of the deployment that sent them.
    assert one(text, "litellm_remaining_requests_metric", model_id="dep-said", api_key_alias="limited",
               model_group="said", api_provider="openai", litellm_model_name="gpt-4o-mini-limits-said") == 4321
    assert one(text, "litellm_remaining_tokens_metric", model_id="dep-said", api_key_alias="free") == 98765
    # No headers: the deployment's rpm and tpm less what this data plane used this minute.
    assert one(text, "litellm_remaining_requests_metric", model_id="dep-counted") == 29
    counted_tokens = one(text, "litellm_remaining_tokens_metric", model_id="dep-counted")
    assert 0 < counted_tokens < 5000


def test_team_and_organization_aliases_label_the_series_and_follow_a_rename(make_stack, mock_provider):
    """A key's team and organization aliases fill LiteLLM's `team_alias` and `org_alias`
    labels; renaming the team or the organization re-sends its keys, and the next
    request's series carry the new names."""
    config = f"""
model_list:
  - model_name: aliased
    litellm_params: {{model: openai/gpt-4o-mini-aliased, api_base: "{mock_provider}/v1", api_key: sk-k}}
general_settings:
  master_key: {STACK_MASTER_KEY}
"""
    s = make_stack(config=config)
    admin = s.admin()
    admin.ok("POST", "/organization/new", json={"organization_id": "o-al", "organization_alias": "Acme"})
    admin.ok("POST", "/team/new", json={"team_id": "t-al", "team_alias": "Search", "organization_id": "o-al",
                                        "rpm_limit": 100})
    key = admin.ok("POST", "/key/generate", json={"team_id": "t-al", "key_alias": "aliased-key"})["key"]
    dp = s.dataplane("dp-aliases")

    def labelled(team_alias: str, org_alias: str) -> bool:
        r = dp.chat(key, model="aliased")
        if r.status_code != 200:
            return False
        text = httpx.get(f"{dp.url}/metrics", timeout=5).text
        return any(l.get("team_alias") == team_alias and l.get("org_alias") == org_alias
                   and l.get("team") == "t-al" and l.get("org_id") == "o-al"
                   for l, _ in samples(text, "litellm_proxy_total_requests_metric_total"))

    wait_until(lambda: labelled("Search", "Acme"), interval=0.2, what="series labelled with both aliases")
    text = httpx.get(f"{dp.url}/metrics", timeout=5).text
    assert one(text, "litellm_team_rate_limit_allowed_metric", team="t-al", team_alias="Search",
               rate_limit_type="requests") == 100
    spend = samples(text, "litellm_spend_metric_total")
    assert any(l.get("team_alias") == "Search" and l.get("org_alias") == "Acme" for l, _ in spend), spend

    admin.ok("POST", "/team/update", json={"team_id": "t-al", "team_alias": "Search v2"})
    wait_until(lambda: labelled("Search v2", "Acme"), interval=0.2, what="the team's new alias")
    admin.ok("PATCH", "/organization/update", json={"organization_id": "o-al", "organization_alias": "Acme Corp"})
    wait_until(lambda: labelled("Search v2", "Acme Corp"), interval=0.2, what="the organization's new alias")
    # The organization deleted: its team and key lose it, and the series name none.
    admin.ok("DELETE", "/organization/delete", json={"organization_ids": ["o-al"]})

    def without_organization() -> bool:
        assert dp.chat(key, model="aliased").status_code == 200
        text = httpx.get(f"{dp.url}/metrics", timeout=5).text
        return any(l.get("team_alias") == "Search v2" and l.get("org_id") == "None" and l.get("org_alias") == "None"
                   for l, _ in samples(text, "litellm_proxy_total_requests_metric_total"))
    wait_until(without_organization, interval=0.2, what="the key without its deleted organization")
