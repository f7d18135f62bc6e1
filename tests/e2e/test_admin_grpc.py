"""The control plane's management RPCs (what the admin API builds on), against a real
PostgreSQL and nats-server, with a data plane attached where the change reaches it."""

import grpc
import pytest

from stack import STACK_MASTER_KEY, accepted, wait_until


def actor(s):
    return s.pb.Actor(id="admin@example.com", source_ip="10.1.2.3")


def test_teams_users_organizations_and_budgets(make_stack):
    s = make_stack()
    dp = s.dataplane("dp-a")
    stub, p = s.grpc(), s.pb

    budget = stub.CreateBudget(p.UpsertBudgetRequest(actor=actor(s), budget_id="gold", limits=p.Limits(max_budget=100, budget_duration="30d")))
    assert budget.limits.max_budget == 100 and budget.limits.budget_reset_at > 0
    budget = stub.UpdateBudget(p.UpsertBudgetRequest(actor=actor(s), budget_id="gold", limits=p.Limits(rpm_limit=60)))
    assert (budget.limits.max_budget, budget.limits.rpm_limit) == (100, 60)

    org = stub.CreateOrganization(p.CreateOrganizationRequest(actor=actor(s), organization_id="acme", fields=p.OrganizationFields(organization_alias="Acme", budget_id="gold")))
    assert org.budget_id == "gold"
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateOrganization(p.CreateOrganizationRequest(organization_id="x", fields=p.OrganizationFields(budget_id="nope")))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    team = stub.CreateTeam(p.CreateTeamRequest(
        actor=actor(s), team_id="search", fields=p.TeamFields(team_alias="Search", organization_id="acme", models=["priced"], set_models=True, limits=p.Limits(max_budget=5, tpm_limit=1000)),
        members=[p.TeamMember(user_id="ana", role="admin")],
    ))
    assert team.models == ["priced"] and team.limits.tpm_limit == 1000
    assert [(m.user_id, m.role) for m in team.members] == [("ana", "admin")]
    team = stub.AddTeamMembers(p.TeamMembersRequest(actor=actor(s), team_id="search", members=[p.TeamMember(user_id="bo")]))
    assert [m.user_id for m in team.members] == ["ana", "bo"]
    team = stub.RemoveTeamMembers(p.TeamMembersRequest(actor=actor(s), team_id="search", members=[p.TeamMember(user_id="ana")]))
    assert [m.user_id for m in team.members] == ["bo"]
    with pytest.raises(grpc.RpcError) as e:
        stub.AddTeamMembers(p.TeamMembersRequest(team_id="search", members=[p.TeamMember(user_id="cy", role="owner")]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.ListTeams(p.ListRequest(organization_id="acme")).total == 1

    user = stub.CreateUser(p.CreateUserRequest(actor=actor(s), user_id="dee", fields=p.UserFields(user_email="dee@example.com", user_role="internal_user", limits=p.Limits(max_budget=3))))
    assert user.user_role == "internal_user"
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateUser(p.CreateUserRequest(user_id="eve", fields=p.UserFields(user_email="DEE@example.com")))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as e:
        stub.UpdateUser(p.UpdateUserRequest(user_id="dee", fields=p.UserFields(user_role="root")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stub.GetUser(p.IdRef(id="bo")).teams == ["search"]

    # Keys of a team and of a user go away with them, and data planes stop accepting them.
    team_key, _ = s.generate_key(team_id="search")
    user_key, _ = s.generate_key(user_id="dee")
    for k in (team_key, user_key):
        wait_until(lambda: accepted(dp, k), what="key accepted")
    # Blocking the team blocks its keys at the data plane; unblocking restores them.
    blocked = stub.UpdateTeam(p.UpdateTeamRequest(actor=actor(s), team_id="search", fields=p.TeamFields(blocked=True)))
    assert blocked.blocked
    wait_until(lambda: dp.chat(team_key).status_code == 401, what="team key blocked")
    assert accepted(dp, user_key)
    stub.UpdateTeam(p.UpdateTeamRequest(actor=actor(s), team_id="search", fields=p.TeamFields(blocked=False)))
    wait_until(lambda: accepted(dp, team_key), what="team key unblocked")
    r = stub.DeleteTeams(p.DeleteRequest(actor=actor(s), ids=["search"]))
    assert r.snapshot_version > 0
    r = stub.DeleteUsers(p.DeleteRequest(actor=actor(s), ids=["dee"]))
    assert r.snapshot_version > 0
    for k in (team_key, user_key):
        wait_until(lambda: dp.chat(k).status_code == 401, what="key gone with its owner")
    with pytest.raises(grpc.RpcError) as e:
        stub.GetTeam(p.IdRef(id="search"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    stub.DeleteOrganizations(p.DeleteRequest(actor=actor(s), ids=["acme"]))
    stub.DeleteBudgets(p.DeleteRequest(actor=actor(s), ids=["gold"]))
    assert stub.ListOrganizations(p.ListRequest()).total == 0

    audit = stub.ListAuditLog(p.AuditQuery(actor="admin@example.com", page_size=100)).entries
    actions = {a.action for a in audit}
    assert {"budget.create", "budget.update", "organization.create", "team.create", "team.member_add",
            "team.member_delete", "user.create", "team.delete", "user.delete", "organization.delete",
            "budget.delete"} <= actions
    assert all(a.source_ip == "10.1.2.3" for a in audit)


def test_models_and_credentials(make_stack):
    s = make_stack()
    dp = s.dataplane("dp-a")
    stub, p = s.grpc(), s.pb

    added = stub.AddModel(p.UpsertModelRequest(actor=actor(s), deployment=p.Deployment(
        model_name="brand-new", provider="mock", upstream_model="brand-new", mock_response="hello from the API")))
    assert added.deployment.id and added.source == "api" and added.snapshot_version > 0
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(dp.chat(STACK_MASTER_KEY, model="brand-new")), what="new model served")
    assert r.json()["choices"][0]["message"]["content"] == "hello from the API"

    secret = stub.AddModel(p.UpsertModelRequest(deployment=p.Deployment(
        model_name="up", provider="openai", upstream_model="gpt-4o", api_base="https://api.openai.com/v1", api_key="sk-provider-secret")))
    listed = stub.ListModels(p.ListRequest()).models
    assert {m.deployment.model_name for m in listed} >= {"priced", "other", "brand-new", "up"}
    assert all(not m.deployment.HasField("api_key") for m in listed)
    # Updating without an api_key keeps the stored one (encrypted, never returned).
    stub.UpdateModel(p.UpsertModelRequest(deployment=p.Deployment(
        id=secret.deployment.id, model_name="up", provider="openai", upstream_model="gpt-4o-mini", api_base="https://api.openai.com/v1")))
    stored = s.sql("SELECT api_key IS NOT NULL, upstream_model FROM model_deployments WHERE model_id = %s", secret.deployment.id)[0]
    assert stored == (True, "gpt-4o-mini")
    assert s.sql("SELECT count(*) FROM model_deployments WHERE position('sk-provider-secret' in encode(api_key, 'escape')) > 0")[0][0] == 0
    # Stored encrypted, and not in the change log either (the publisher adds it when sending).
    assert s.sql("SELECT count(*) FROM snapshot_deltas WHERE position('sk-provider-secret' in encode(ops, 'escape')) > 0")[0][0] == 0
    # GetSnapshot never returns provider keys.
    snap = stub.GetSnapshot(p.GetSnapshotRequest())
    assert all(not d.HasField("api_key") for d in snap.deployments)
    # A URL the data planes would refuse is refused here, so it never reaches them.
    for bad in ["ftp://nope", "https://exa mple.com", "https://api.example.com:abc", ""]:
        with pytest.raises(grpc.RpcError) as e:
            stub.AddModel(p.UpsertModelRequest(deployment=p.Deployment(model_name="bad", provider="openai", upstream_model="x", api_base=bad)))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "api_base" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.AddModel(p.UpsertModelRequest(deployment=p.Deployment(id=secret.deployment.id, model_name="up", provider="openai", upstream_model="x", api_base="https://a")))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS

    stub.DeleteModel(p.DeleteRequest(ids=[added.deployment.id]))
    wait_until(lambda: dp.chat(STACK_MASTER_KEY, model="brand-new").status_code == 404, what="model removed")

    cred = stub.CreateCredential(p.UpsertCredentialRequest(actor=actor(s), credential_name="azure-east", values={"api_key": "az-secret", "api_base": "https://east"}, info_json='{"team": "infra"}'))
    assert list(cred.value_names) == ["api_base", "api_key"]
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateCredential(p.UpsertCredentialRequest(credential_name="azure-east", values={"api_key": "x"}))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    cred = stub.UpdateCredential(p.UpsertCredentialRequest(credential_name="azure-east", info_json='{"team": "platform"}'))
    assert '"platform"' in cred.info_json and list(cred.value_names) == ["api_base", "api_key"]
    assert stub.ListCredentials(p.ListRequest()).total == 1
    stub.DeleteCredential(p.DeleteRequest(ids=["azure-east"]))
    assert stub.ListCredentials(p.ListRequest()).total == 0


def test_spend_logs_and_reports(make_stack):
    s = make_stack()
    dp = s.dataplane("dp-a")
    stub, p = s.grpc(), s.pb
    stub.CreateTeam(p.CreateTeamRequest(team_id="t1"))
    key, resp = s.generate_key(team_id="t1", user_id="u1")
    wait_until(lambda: accepted(dp, key), what="key accepted")
    for _ in range(4):
        assert dp.chat(key).status_code == 200
    assert dp.chat(key, model="other").status_code == 200
    kh = resp.info.key_hash
    wait_until(lambda: len(stub.ListSpendLogs(p.SpendQuery(filter=p.SpendFilter(key_hash=kh))).logs) == 6, what="logs ingested")
    logs = stub.ListSpendLogs(p.SpendQuery(filter=p.SpendFilter(key_hash=kh, model_group="other"))).logs
    assert len(logs) == 1 and logs[0].team_id == "t1" and logs[0].user_id == "u1" and logs[0].status == 200
    by_model = stub.SpendReport(p.SpendReportRequest(filter=p.SpendFilter(team_id="t1"), group_by=p.SPEND_GROUP_MODEL))
    rows = {r.group: r for r in by_model.rows}
    assert rows["priced"].requests == 5 and rows["other"].requests == 1
    assert rows["other"].spend == 0 and rows["priced"].spend > 0
    assert by_model.total_spend == pytest.approx(rows["priced"].spend)
    team = stub.GetTeam(p.IdRef(id="t1"))
    assert team.spend == pytest.approx(by_model.total_spend)
    by_day = stub.SpendReport(p.SpendReportRequest(group_by=p.SPEND_GROUP_DAY))
    assert len(by_day.rows) == 1 and by_day.rows[0].requests == 6
    with pytest.raises(grpc.RpcError) as e:
        stub.ListSpendLogs(p.SpendQuery(filter=p.SpendFilter(key_hash="xyz")))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
