//! Message ⇄ store-type conversions for the gRPC service.

use routeiq_proto::wire::pb;
use routeiq_proto::KeyHash;
use serde_json::Value;
use tonic::Status;

use crate::audit::{self, Actor};
use crate::budget::{BudgetRecord, Limits, LimitsRecord};
use crate::deployments::CredentialRecord;
use crate::keys::{KeyFields, KeyRecord};
use crate::orgs::{OrgFields, OrgRecord};
use crate::teams::{Member, TeamFields, TeamRecord};
use crate::users::{UserFields, UserRecord};
use crate::{principal, routing_models, spend};

pub fn actor(a: Option<pb::Actor>) -> Actor {
    a.map(|a| Actor {
        id: a.id,
        source_ip: a.source_ip,
    })
    .unwrap_or_else(|| Actor::system("grpc"))
}

pub fn key_ref(r: Option<pb::KeyRef>) -> Result<KeyHash, Status> {
    match r.and_then(|r| r.r#ref) {
        Some(pb::key_ref::Ref::Key(k)) => Ok(KeyHash::of(&k)),
        Some(pb::key_ref::Ref::KeyHash(h)) => hash(&h),
        None => Err(Status::invalid_argument("a key or key_hash is required")),
    }
}

pub fn hash(h: &str) -> Result<KeyHash, Status> {
    KeyHash::from_hex(h).ok_or_else(|| Status::invalid_argument("key_hash must be 64 hex digits"))
}

pub fn metadata(m: Option<String>, field: &str) -> Result<Option<Value>, Status> {
    m.map(|m| {
        serde_json::from_str(&m)
            .map_err(|e| Status::invalid_argument(format!("{field} is not JSON: {e}")))
    })
    .transpose()
}

fn models(set: bool, models: Vec<String>) -> Option<Vec<String>> {
    set.then_some(models)
}

fn unsigned(v: Option<i64>) -> Option<u64> {
    v.and_then(|n| u64::try_from(n).ok())
}

pub fn key_fields(f: Option<pb::KeyFields>) -> Result<KeyFields, Status> {
    let f = f.unwrap_or_default();
    Ok(KeyFields {
        alias: f.key_alias,
        models: models(f.set_models, f.models),
        limits: Limits {
            max_budget: f.max_budget,
            soft_budget: f.soft_budget,
            budget_duration: f.budget_duration,
            rpm_limit: f.rpm_limit,
            tpm_limit: f.tpm_limit,
            max_parallel_requests: f.max_parallel_requests,
        },
        expires_at: f.expires_at,
        duration: f.duration,
        team_id: f.team_id,
        user_id: f.user_id,
        metadata: metadata(f.metadata_json, "metadata")?,
        tags: (!f.tags.is_empty()).then_some(f.tags),
        model_max_budget: metadata(f.model_max_budget_json, "model_max_budget")?,
        object_permission: metadata(f.object_permission_json, "object_permission")?,
    })
}

pub fn key_info(r: KeyRecord, snapshot_version: u64) -> pb::KeyInfo {
    pb::KeyInfo {
        key_hash: r.hash,
        key_name: r.key_name,
        key_alias: r.alias.unwrap_or_default(),
        models: r.models,
        max_budget: r.max_budget,
        soft_budget: r.soft_budget,
        spend: r.spend,
        budget_duration: r.budget_duration,
        budget_reset_at: r.budget_reset_at,
        rpm_limit: unsigned(r.rpm_limit),
        tpm_limit: unsigned(r.tpm_limit),
        max_parallel_requests: unsigned(r.max_parallel_requests),
        expires_at: r.expires_at,
        blocked: r.blocked,
        team_id: r.team_id.unwrap_or_default(),
        user_id: r.user_id.unwrap_or_default(),
        metadata_json: r.metadata.to_string(),
        tags: r.tags,
        created_at: r.created_at,
        updated_at: r.updated_at,
        snapshot_version,
        model_max_budget_json: r.model_max_budget.to_string(),
        object_permission_json: r.object_permission.to_string(),
    }
}

pub fn limits(l: Option<pb::Limits>) -> Limits {
    let l = l.unwrap_or_default();
    Limits {
        max_budget: l.max_budget,
        soft_budget: l.soft_budget,
        budget_duration: l.budget_duration,
        rpm_limit: l.rpm_limit,
        tpm_limit: l.tpm_limit,
        max_parallel_requests: l.max_parallel_requests,
    }
}

fn limits_info(l: LimitsRecord) -> pb::LimitsInfo {
    pb::LimitsInfo {
        max_budget: l.max_budget,
        soft_budget: l.soft_budget,
        budget_duration: l.budget_duration,
        budget_reset_at: l.budget_reset_at,
        rpm_limit: unsigned(l.rpm_limit),
        tpm_limit: unsigned(l.tpm_limit),
        max_parallel_requests: unsigned(l.max_parallel_requests),
    }
}

pub fn team_fields(f: Option<pb::TeamFields>) -> Result<TeamFields, Status> {
    let f = f.unwrap_or_default();
    Ok(TeamFields {
        alias: f.team_alias,
        organization_id: f.organization_id,
        models: models(f.set_models, f.models),
        limits: limits(f.limits),
        metadata: metadata(f.metadata_json, "metadata")?,
        blocked: f.blocked,
        object_permission: metadata(f.object_permission_json, "object_permission")?,
    })
}

pub fn members(m: Vec<pb::TeamMember>) -> Vec<Member> {
    m.into_iter()
        .map(|m| Member {
            user_id: m.user_id,
            role: m.role,
        })
        .collect()
}

pub fn team_info(r: TeamRecord) -> pb::TeamInfo {
    pb::TeamInfo {
        team_id: r.team_id,
        team_alias: r.alias,
        organization_id: r.organization_id.unwrap_or_default(),
        models: r.models,
        limits: Some(limits_info(r.limits)),
        spend: r.spend,
        blocked: r.blocked,
        metadata_json: r.metadata.to_string(),
        members: r
            .members
            .into_iter()
            .map(|m| pb::TeamMember {
                user_id: m.user_id,
                role: m.role,
            })
            .collect(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        object_permission_json: r.object_permission.to_string(),
    }
}

pub fn user_fields(f: Option<pb::UserFields>) -> Result<UserFields, Status> {
    let f = f.unwrap_or_default();
    Ok(UserFields {
        email: f.user_email,
        role: f.user_role,
        organization_id: f.organization_id,
        models: models(f.set_models, f.models),
        limits: limits(f.limits),
        metadata: metadata(f.metadata_json, "metadata")?,
    })
}

pub fn user_info(r: UserRecord) -> pb::UserInfo {
    pb::UserInfo {
        user_id: r.user_id,
        user_email: r.email.unwrap_or_default(),
        user_role: r.role,
        organization_id: r.organization_id.unwrap_or_default(),
        models: r.models,
        limits: Some(limits_info(r.limits)),
        spend: r.spend,
        metadata_json: r.metadata.to_string(),
        teams: r.teams,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

pub fn org_fields(f: Option<pb::OrganizationFields>) -> Result<OrgFields, Status> {
    let f = f.unwrap_or_default();
    Ok(OrgFields {
        alias: f.organization_alias,
        budget_id: f.budget_id,
        models: models(f.set_models, f.models),
        metadata: metadata(f.metadata_json, "metadata")?,
        object_permission: metadata(f.object_permission_json, "object_permission")?,
    })
}

pub fn org_info(r: OrgRecord) -> pb::OrganizationInfo {
    pb::OrganizationInfo {
        organization_id: r.organization_id,
        organization_alias: r.alias,
        budget_id: r.budget_id.unwrap_or_default(),
        models: r.models,
        spend: r.spend,
        metadata_json: r.metadata.to_string(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        object_permission_json: r.object_permission.to_string(),
    }
}

/// A server for the API: its credentials and static header values left out.
pub fn mcp_server_info(
    m: &routeiq_proto::McpServer,
    source: &str,
    version: u64,
    warnings: Vec<String>,
) -> pb::McpServerInfo {
    let mut wire = pb::McpServer::from(m);
    wire.auth_value.clear();
    wire.static_headers.values_mut().for_each(String::clear);
    wire.env.values_mut().for_each(String::clear);
    pb::McpServerInfo {
        server: Some(wire),
        source: source.to_owned(),
        snapshot_version: version,
        warnings,
    }
}

/// An agent as the admin API shows it: its headers' values hidden.
pub fn agent_info(s: &crate::agents::Stored, version: u64, warnings: Vec<String>) -> pb::AgentInfo {
    pb::AgentInfo {
        agent_id: s.agent.id.clone(),
        entry_json: routeiq_proto::litellm::agent_entry(&s.agent, false).to_string(),
        source: s.source.clone(),
        created_at: s.created_at,
        updated_at: s.updated_at,
        created_by: s.created_by.clone(),
        updated_by: s.updated_by.clone(),
        snapshot_version: version,
        warnings,
    }
}

pub fn budget_info(r: BudgetRecord) -> pb::BudgetInfo {
    pb::BudgetInfo {
        budget_id: r.budget_id,
        limits: Some(limits_info(r.limits)),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

pub fn model(d: &routeiq_proto::Deployment, source: &str, version: u64) -> pb::ModelResponse {
    let mut wire = pb::Deployment::from(d);
    wire.api_key = None;
    pb::ModelResponse {
        deployment: Some(wire),
        source: source.to_owned(),
        snapshot_version: version,
        warnings: Vec::new(),
    }
}

pub fn credential_info(r: CredentialRecord) -> pb::CredentialInfo {
    pb::CredentialInfo {
        credential_name: r.name,
        value_names: r.value_names,
        info_json: r.info.to_string(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

pub fn spend_filter(f: Option<pb::SpendFilter>) -> Result<spend::Filter, Status> {
    let f = f.unwrap_or_default();
    Ok(spend::Filter {
        key_hash: f.key_hash.as_deref().map(hash).transpose()?,
        team_id: f.team_id,
        user_id: f.user_id,
        model_group: f.model_group,
        since_ms: f.since_ms,
        until_ms: f.until_ms,
    })
}

pub fn agent_day(d: spend::AgentDay) -> pb::AgentDay {
    pb::AgentDay {
        day: d.day,
        agent_id: d.agent_id,
        requests: unsigned(Some(d.requests)).unwrap_or(0),
        successful: unsigned(Some(d.successful)).unwrap_or(0),
        spend: d.spend,
        prompt_tokens: unsigned(Some(d.prompt_tokens)).unwrap_or(0),
        completion_tokens: unsigned(Some(d.completion_tokens)).unwrap_or(0),
    }
}

pub fn spend_log(l: spend::Log) -> pb::SpendLog {
    pb::SpendLog {
        request_id: l.request_id,
        started_at_ms: l.started_at_ms,
        key_hash: l.key_hash.unwrap_or_default(),
        team_id: l.team_id.unwrap_or_default(),
        user_id: l.user_id.unwrap_or_default(),
        model_group: l.model_group,
        deployment_id: l.deployment_id,
        provider: l.provider,
        prompt_tokens: unsigned(Some(l.prompt_tokens)).unwrap_or(0),
        completion_tokens: unsigned(Some(l.completion_tokens)).unwrap_or(0),
        cost: l.cost,
        latency_ms: unsigned(Some(l.latency_ms)).unwrap_or(0),
        status: u32::try_from(l.status).unwrap_or(0),
        dataplane_id: l.dataplane_id,
        end_user: l.end_user.unwrap_or_default(),
        cache_hit: l.cache_hit,
        saved_cost: l.saved_cost,
        router_sha256: l.router_sha256.unwrap_or_default(),
        router_arm: l.router_arm.unwrap_or_default(),
        router_candidate: l.router_candidate.unwrap_or_default(),
        shadow_sha256: l.shadow_sha256.unwrap_or_default(),
        shadow_candidate: l.shadow_candidate.unwrap_or_default(),
    }
}

pub fn spend_group(g: i32) -> Result<spend::Group, Status> {
    Ok(match pb::SpendGroup::try_from(g) {
        Ok(pb::SpendGroup::Day) => spend::Group::Day,
        Ok(pb::SpendGroup::Key) => spend::Group::Key,
        Ok(pb::SpendGroup::Team) => spend::Group::Team,
        Ok(pb::SpendGroup::User) => spend::Group::User,
        Ok(pb::SpendGroup::Model) => spend::Group::Model,
        Err(_) => return Err(Status::invalid_argument(format!("group_by {g} is unknown"))),
    })
}

pub fn report_row(r: spend::ReportRow) -> pb::SpendReportRow {
    pb::SpendReportRow {
        group: r.group,
        requests: unsigned(Some(r.requests)).unwrap_or(0),
        prompt_tokens: unsigned(Some(r.prompt_tokens)).unwrap_or(0),
        completion_tokens: unsigned(Some(r.completion_tokens)).unwrap_or(0),
        spend: r.spend,
    }
}

pub fn audit_filter(q: &pb::AuditQuery) -> audit::Filter {
    audit::Filter {
        actor: q.actor.clone(),
        action: q.action.clone(),
        object_type: q.object_type.clone(),
        object_id: q.object_id.clone(),
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    }
}

pub fn routing_model_info(
    v: routing_models::Version,
    snapshot_version: u64,
) -> pb::RoutingModelInfo {
    pb::RoutingModelInfo {
        id: v.id,
        strategy: v.strategy,
        artifact_uri: v.artifact_uri,
        sha256: v.sha256,
        metrics_json: v.metrics.to_string(),
        active: v.active,
        created_at: v.created_at_ms / 1000,
        snapshot_version,
        mode: v.mode,
        share: v.share,
        sticky: v.sticky,
    }
}

pub fn routing_report_row(r: routing_models::ReportRow) -> pb::RoutingModelReportRow {
    let count = |n: i64| unsigned(Some(n)).unwrap_or(0);
    let interval = |i: Option<routing_models::Interval>| {
        i.map(|i| pb::ScoreInterval {
            low: i.low,
            high: i.high,
        })
    };
    let feedback = |f: routing_models::Feedback| pb::FeedbackStats {
        n: count(f.n),
        mean: f.mean,
        interval: interval(f.interval),
    };
    pb::RoutingModelReportRow {
        model: Some(routing_model_info(r.version, 0)),
        requests: count(r.served.requests),
        ab_requests: count(r.served.ab_requests),
        cost: r.served.cost,
        cost_per_request: r.served.cost_per_request,
        feedback: Some(feedback(r.served.feedback)),
        shadow_requests: count(r.shadow.requests),
        shadow_compared: count(r.shadow.compared),
        shadow_agreed: count(r.shadow.agreed),
        agreement: r.shadow.agreement,
        agreement_interval: interval(r.shadow.agreement_interval),
        feedback_agreed: Some(feedback(r.shadow.feedback_agreed)),
        feedback_disagreed: Some(feedback(r.shadow.feedback_disagreed)),
    }
}

pub fn audit_entry(r: audit::Record) -> pb::AuditEntry {
    pb::AuditEntry {
        id: r.id,
        at_ms: r.at_ms,
        actor: r.actor,
        source_ip: r.source_ip,
        action: r.action,
        object_type: r.object_type,
        object_id: r.object_id,
        before_json: r.before.map(|v| v.to_string()).unwrap_or_default(),
        after_json: r.after.map(|v| v.to_string()).unwrap_or_default(),
        snapshot_version: r.snapshot_version.and_then(|v| u64::try_from(v).ok()),
    }
}

pub fn principal_message(v: principal::Verdict) -> pb::Principal {
    let p = match v {
        principal::Verdict::Accepted(p) => p,
        principal::Verdict::Rejected(why) => {
            return pb::Principal {
                rejected: why,
                ..pb::Principal::default()
            }
        }
    };
    pb::Principal {
        rejected: String::new(),
        master: p.master,
        key_hash: p.key_hash,
        user_id: p.user_id.unwrap_or_default(),
        user_role: p.user_role.unwrap_or_default(),
        team_id: p.team_id.unwrap_or_default(),
        member_team_ids: p.member_team_ids,
        admin_team_ids: p.admin_team_ids,
    }
}

pub fn skill_files(files: Vec<pb::SkillFile>) -> Vec<crate::skills::bundle::File> {
    files
        .into_iter()
        .map(|f| crate::skills::bundle::File {
            path: f.path,
            content: f.content,
        })
        .collect()
}

pub fn skill_info(s: crate::skills::SkillInfo, version: u64) -> pb::SkillInfo {
    pb::SkillInfo {
        id: s.id,
        display_name: s.display_name,
        name: s.name,
        latest_version: s.latest_version,
        created_at_ms: s.created_at_ms,
        updated_at_ms: s.updated_at_ms,
        created_by: s.created_by,
        copies: s
            .copies
            .into_iter()
            .map(|c| pb::SkillCopyInfo {
                version: c.version,
                deployment_id: c.deployment_id,
                upstream_skill_id: c.upstream_skill_id,
                upstream_version: c.upstream_version,
            })
            .collect(),
        snapshot_version: version,
        description: s.description,
    }
}

pub fn skill_version_info(v: crate::skills::VersionInfo, version: u64) -> pb::SkillVersionInfo {
    pb::SkillVersionInfo {
        skill_id: v.skill_id,
        version: v.version,
        name: v.name,
        description: v.description,
        directory: v.directory,
        created_at_ms: v.created_at_ms,
        size: v.size,
        sha256: v.sha256,
        snapshot_version: version,
    }
}
