"""Enforcement at the edge, end to end: what a virtual key may do is decided by the data
plane from its snapshot (keys, teams, deployments), changed through the admin API."""

import httpx
import pytest

from stack import STACK_MASTER_KEY, wait_until

pytestmark = pytest.mark.timeout(120)


def models_of(dp, key):
    r = httpx.get(f"{dp.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert r.status_code == 200, r.text
    return {m["id"] for m in r.json()["data"]}


def test_model_access_by_key_team_access_group_and_wildcard(make_stack):
    s = make_stack()
    admin = s.admin()
    dp = s.dataplane("dp-a")
    admin.ok("POST", "/model/new", json={
        "model_name": "beta-model", "litellm_params": {"model": "openai/beta", "mock_response": "b"},
        "model_info": {"access_groups": ["beta"]}})
    admin.ok("POST", "/model/new", json={
        "model_name": "openai/gpt-x", "litellm_params": {"model": "openai/gpt-x", "mock_response": "x"}})
    admin.ok("POST", "/team/new", json={"team_id": "t-a", "models": ["priced", "beta"]})
    every = {"priced", "other", "beta-model", "openai/gpt-x"}

    # (key fields, the models it may call)
    cases = [
        ({}, every),
        ({"models": ["priced"]}, {"priced"}),
        ({"models": ["beta"]}, {"beta-model"}),
        ({"models": ["openai/*"]}, {"openai/gpt-x"}),
        ({"models": ["all-proxy-models"]}, every),
        ({"team_id": "t-a"}, {"priced", "beta-model"}),
        ({"team_id": "t-a", "models": ["priced", "other"]}, {"priced"}),
    ]
    keys = []
    for fields, allowed in cases:
        key = admin.ok("POST", "/key/generate", json=fields)["key"]
        wait_until(lambda: dp.chat(key, model=next(iter(allowed))).status_code == 200,
                   what=f"key {fields} accepted")
        for model in sorted(every):
            r = dp.chat(key, model=model)
            if model in allowed:
                assert r.status_code == 200, (fields, model, r.text)
            else:
                assert r.status_code == 403, (fields, model, r.text)
                err = r.json()["error"]
                assert err["type"] == "permission_error" and err["param"] == "model"
                assert f"`{model}`" in err["message"], err
                if fields == {"team_id": "t-a", "models": ["priced", "other"]} and model == "other":
                    assert "team `t-a`" in err["message"], err
        assert models_of(dp, key) == allowed, fields
        keys.append((fields, key))

    # A team's models change: its existing keys follow, through the snapshot deltas.
    team_key = keys[5][1]
    admin.ok("POST", "/team/update", json={"team_id": "t-a", "models": ["other"]})
    wait_until(lambda: dp.chat(team_key, model="other").status_code == 200, what="team change applied")
    assert dp.chat(team_key, model="priced").status_code == 403
    # The master key calls everything.
    assert models_of(dp, STACK_MASTER_KEY) == every
