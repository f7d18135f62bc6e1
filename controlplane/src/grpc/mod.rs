//! The `routeiq.v1.ControlPlane` gRPC service: thin handlers that convert messages
//! (`convert`), call the store modules, and convert back. Optional bearer-token check on
//! every call.

use std::sync::Arc;

use routeiq_proto::wire::pb;
use routeiq_proto::KeyHash;
use sqlx::PgPool;
use tonic::{Request, Response, Status};

use crate::crypto::SecretBox;
use crate::error::StoreError;
use crate::skills::{self, Skills};
use crate::{
    agents, audit, budget, changes, deployments, feedback, keys, mcp_servers, orgs, principal,
    routing_models, snapshot, spend, teams, users, Page,
};

mod convert;
use convert::*;

pub use pb::control_plane_server::ControlPlaneServer;

/// Largest gRPC message either way: a skill upload carries a bundle of up to 8 MiB.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub struct Service {
    pub pool: PgPool,
    pub secrets: Arc<SecretBox>,
    /// The skill registry's object store and uploader; `None`: no `--skill-store`.
    pub skills: Option<Arc<Skills>>,
    /// The Redis the data planes share (`--redis-url`), for the response cache.
    pub redis: Option<crate::cache::Redis>,
}

/// Rejects calls without `authorization: Bearer <token>` when a token is configured.
pub fn check_token(
    token: Option<Arc<str>>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req: Request<()>| {
        let Some(want) = &token else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if KeyHash::of(g).ct_eq(&KeyHash::of(want)) => Ok(req),
            _ => Err(Status::unauthenticated(
                "missing or wrong control-plane token",
            )),
        }
    }
}

#[tonic::async_trait]
impl pb::control_plane_server::ControlPlane for Service {
    async fn generate_key(
        &self,
        req: Request<pb::GenerateKeyRequest>,
    ) -> Result<Response<pb::GenerateKeyResponse>, Status> {
        let r = req.into_inner();
        let (key, rec, version) =
            keys::generate(&self.pool, &actor(r.actor), r.key, &key_fields(r.fields)?).await?;
        Ok(Response::new(pb::GenerateKeyResponse {
            key,
            info: Some(key_info(rec, version)),
            snapshot_version: version,
        }))
    }

    async fn update_key(
        &self,
        req: Request<pb::UpdateKeyRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        let r = req.into_inner();
        let hash = key_ref(r.r#ref)?;
        let (rec, version) =
            keys::update(&self.pool, &actor(r.actor), &hash, &key_fields(r.fields)?).await?;
        Ok(Response::new(key_info(rec, version)))
    }

    async fn delete_keys(
        &self,
        req: Request<pb::DeleteKeysRequest>,
    ) -> Result<Response<pb::DeleteKeysResponse>, Status> {
        let r = req.into_inner();
        let hashes = r
            .refs
            .into_iter()
            .map(|k| key_ref(Some(k)))
            .collect::<Result<Vec<_>, _>>()?;
        let (deleted, version) = keys::delete(&self.pool, &actor(r.actor), &hashes).await?;
        Ok(Response::new(pb::DeleteKeysResponse {
            deleted_key_hashes: deleted.iter().map(KeyHash::to_hex).collect(),
            snapshot_version: version,
        }))
    }

    async fn set_key_blocked(
        &self,
        req: Request<pb::SetKeyBlockedRequest>,
    ) -> Result<Response<pb::KeyInfo>, Status> {
        let r = req.into_inner();
        let hash = key_ref(r.r#ref)?;
        let (rec, version) =
            keys::set_blocked(&self.pool, &actor(r.actor), &hash, r.blocked).await?;
        Ok(Response::new(key_info(rec, version)))
    }

    async fn get_key(&self, req: Request<pb::KeyRef>) -> Result<Response<pb::KeyInfo>, Status> {
        let hash = key_ref(Some(req.into_inner()))?;
        let rec = keys::get(&self.pool, &hash).await?;
        let version = changes::current(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(Response::new(key_info(rec, version)))
    }

    async fn regenerate_key(
        &self,
        req: Request<pb::RegenerateKeyRequest>,
    ) -> Result<Response<pb::GenerateKeyResponse>, Status> {
        let r = req.into_inner();
        let old = key_ref(r.r#ref)?;
        let fields = key_fields(r.fields)?;
        let (key, rec, version) =
            keys::regenerate(&self.pool, &actor(r.actor), &old, r.new_key, &fields).await?;
        Ok(Response::new(pb::GenerateKeyResponse {
            key,
            info: Some(key_info(rec, version)),
            snapshot_version: version,
        }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::Principal>, Status> {
        let p = principal::authenticate(&self.pool, &req.into_inner().key).await?;
        Ok(Response::new(principal_message(p)))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let r = req.into_inner();
        let filter = keys::ListFilter {
            team_id: r.team_id.as_deref(),
            user_id: r.user_id.as_deref(),
            alias: r.key_alias.as_deref(),
        };
        let (recs, total) = keys::list(&self.pool, filter, Page::new(r.page, r.page_size)).await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: recs.into_iter().map(|k| key_info(k, 0)).collect(),
            total,
        }))
    }

    async fn get_snapshot(
        &self,
        _req: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        let s = snapshot::build(&self.pool, &self.secrets).await?;
        let mut wire = pb::Snapshot::from(&s);
        // For inspection: provider keys never leave through this API (data planes get
        // them over NATS).
        for d in &mut wire.deployments {
            d.api_key = None;
        }
        Ok(Response::new(wire))
    }

    async fn get_snapshot_version(
        &self,
        _req: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::SnapshotVersion>, Status> {
        let version = changes::current(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(Response::new(pb::SnapshotVersion { version }))
    }

    // ---- teams ----

    async fn create_team(
        &self,
        req: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::TeamInfo>, Status> {
        let r = req.into_inner();
        let rec = teams::create(
            &self.pool,
            &actor(r.actor),
            Some(r.team_id),
            &team_fields(r.fields)?,
            &members(r.members),
        )
        .await?;
        Ok(Response::new(team_info(rec)))
    }

    async fn update_team(
        &self,
        req: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::TeamInfo>, Status> {
        let r = req.into_inner();
        let rec = teams::update(
            &self.pool,
            &actor(r.actor),
            &r.team_id,
            &team_fields(r.fields)?,
            &[],
            &[],
        )
        .await?;
        Ok(Response::new(team_info(rec)))
    }

    async fn delete_teams(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let version = teams::delete(&self.pool, &actor(r.actor), &r.ids).await?;
        Ok(Response::new(deleted(r.ids, version)))
    }

    async fn get_team(&self, req: Request<pb::IdRef>) -> Result<Response<pb::TeamInfo>, Status> {
        let rec = teams::get(&self.pool, &req.into_inner().id).await?;
        Ok(Response::new(team_info(rec)))
    }

    async fn list_teams(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let r = req.into_inner();
        let (recs, total) = teams::list(
            &self.pool,
            r.organization_id.as_deref(),
            &r.ids,
            r.member_user_id.as_deref(),
            Page::new(r.page, r.page_size),
        )
        .await?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: recs.into_iter().map(team_info).collect(),
            total,
        }))
    }

    async fn add_team_members(
        &self,
        req: Request<pb::TeamMembersRequest>,
    ) -> Result<Response<pb::TeamInfo>, Status> {
        let r = req.into_inner();
        if r.members.is_empty() {
            return Err(Status::invalid_argument("no members given"));
        }
        let rec = teams::update(
            &self.pool,
            &actor(r.actor),
            &r.team_id,
            &teams::TeamFields::default(),
            &members(r.members),
            &[],
        )
        .await?;
        Ok(Response::new(team_info(rec)))
    }

    async fn remove_team_members(
        &self,
        req: Request<pb::TeamMembersRequest>,
    ) -> Result<Response<pb::TeamInfo>, Status> {
        let r = req.into_inner();
        if r.members.is_empty() {
            return Err(Status::invalid_argument("no members given"));
        }
        let ids: Vec<String> = r.members.into_iter().map(|m| m.user_id).collect();
        let rec = teams::update(
            &self.pool,
            &actor(r.actor),
            &r.team_id,
            &teams::TeamFields::default(),
            &[],
            &ids,
        )
        .await?;
        Ok(Response::new(team_info(rec)))
    }

    // ---- users ----

    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        let r = req.into_inner();
        let rec = users::create(
            &self.pool,
            &actor(r.actor),
            Some(r.user_id),
            &user_fields(r.fields)?,
        )
        .await?;
        Ok(Response::new(user_info(rec)))
    }

    async fn update_user(
        &self,
        req: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::UserInfo>, Status> {
        let r = req.into_inner();
        let rec = users::update(
            &self.pool,
            &actor(r.actor),
            &r.user_id,
            &user_fields(r.fields)?,
        )
        .await?;
        Ok(Response::new(user_info(rec)))
    }

    async fn delete_users(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let version = users::delete(&self.pool, &actor(r.actor), &r.ids).await?;
        Ok(Response::new(deleted(r.ids, version)))
    }

    async fn get_user(&self, req: Request<pb::IdRef>) -> Result<Response<pb::UserInfo>, Status> {
        let rec = users::get(&self.pool, &req.into_inner().id).await?;
        Ok(Response::new(user_info(rec)))
    }

    async fn list_users(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let r = req.into_inner();
        let (recs, total) = users::list(
            &self.pool,
            r.organization_id.as_deref(),
            &r.ids,
            r.user_role.as_deref(),
            Page::new(r.page, r.page_size),
        )
        .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: recs.into_iter().map(user_info).collect(),
            total,
        }))
    }

    // ---- organizations ----

    async fn create_organization(
        &self,
        req: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::OrganizationInfo>, Status> {
        let r = req.into_inner();
        let rec = orgs::upsert(
            &self.pool,
            &actor(r.actor),
            Some(r.organization_id),
            &org_fields(r.fields)?,
            true,
        )
        .await?;
        Ok(Response::new(org_info(rec)))
    }

    async fn update_organization(
        &self,
        req: Request<pb::UpdateOrganizationRequest>,
    ) -> Result<Response<pb::OrganizationInfo>, Status> {
        let r = req.into_inner();
        let rec = orgs::upsert(
            &self.pool,
            &actor(r.actor),
            Some(r.organization_id),
            &org_fields(r.fields)?,
            false,
        )
        .await?;
        Ok(Response::new(org_info(rec)))
    }

    async fn delete_organizations(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        orgs::delete(&self.pool, &actor(r.actor), &r.ids).await?;
        Ok(Response::new(deleted(r.ids, None)))
    }

    async fn list_organizations(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        let r = req.into_inner();
        let (recs, total) = orgs::list(&self.pool, &r.ids, Page::new(r.page, r.page_size)).await?;
        Ok(Response::new(pb::ListOrganizationsResponse {
            organizations: recs.into_iter().map(org_info).collect(),
            total,
        }))
    }

    // ---- budgets ----

    async fn create_budget(
        &self,
        req: Request<pb::UpsertBudgetRequest>,
    ) -> Result<Response<pb::BudgetInfo>, Status> {
        let r = req.into_inner();
        let rec = budget::upsert(
            &self.pool,
            &actor(r.actor),
            Some(r.budget_id),
            &limits(r.limits),
            true,
        )
        .await?;
        Ok(Response::new(budget_info(rec)))
    }

    async fn update_budget(
        &self,
        req: Request<pb::UpsertBudgetRequest>,
    ) -> Result<Response<pb::BudgetInfo>, Status> {
        let r = req.into_inner();
        let rec = budget::upsert(
            &self.pool,
            &actor(r.actor),
            Some(r.budget_id),
            &limits(r.limits),
            false,
        )
        .await?;
        Ok(Response::new(budget_info(rec)))
    }

    async fn delete_budgets(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        budget::delete(&self.pool, &actor(r.actor), &r.ids).await?;
        Ok(Response::new(deleted(r.ids, None)))
    }

    async fn list_budgets(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListBudgetsResponse>, Status> {
        let r = req.into_inner();
        let (recs, total) =
            budget::list(&self.pool, &r.ids, Page::new(r.page, r.page_size)).await?;
        Ok(Response::new(pb::ListBudgetsResponse {
            budgets: recs.into_iter().map(budget_info).collect(),
            total,
        }))
    }

    // ---- models ----

    async fn add_model(
        &self,
        req: Request<pb::UpsertModelRequest>,
    ) -> Result<Response<pb::ModelResponse>, Status> {
        self.save_model(req.into_inner(), true).await
    }

    async fn update_model(
        &self,
        req: Request<pb::UpsertModelRequest>,
    ) -> Result<Response<pb::ModelResponse>, Status> {
        self.save_model(req.into_inner(), false).await
    }

    async fn delete_model(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let version =
            deployments::delete(&self.pool, &self.secrets, &actor(r.actor), &r.ids).await?;
        Ok(Response::new(deleted(r.ids, Some(version))))
    }

    async fn list_models(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let r = req.into_inner();
        let page = Page::new(r.page, r.page_size);
        let all: Vec<_> = deployments::load_all(&self.pool, &self.secrets)
            .await?
            .into_iter()
            .filter(|(d, _)| r.ids.is_empty() || r.ids.contains(&d.id.0))
            .collect();
        let total = all.len() as u64;
        let models = all
            .iter()
            .skip(page.offset() as usize)
            .take(page.limit() as usize)
            .map(|(d, source)| model(d, source, 0))
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models, total }))
    }

    // ---- MCP servers ----

    async fn create_mcp_server(
        &self,
        req: Request<pb::UpsertMcpServerRequest>,
    ) -> Result<Response<pb::McpServerInfo>, Status> {
        self.save_mcp_server(req.into_inner(), true).await
    }

    async fn update_mcp_server(
        &self,
        req: Request<pb::UpsertMcpServerRequest>,
    ) -> Result<Response<pb::McpServerInfo>, Status> {
        self.save_mcp_server(req.into_inner(), false).await
    }

    async fn delete_mcp_servers(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let version =
            mcp_servers::delete_many(&self.pool, &self.secrets, &actor(r.actor), &r.ids).await?;
        Ok(Response::new(deleted(r.ids, Some(version))))
    }

    async fn list_mcp_servers(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListMcpServersResponse>, Status> {
        let r = req.into_inner();
        let page = Page::new(r.page, r.page_size);
        let all: Vec<_> = mcp_servers::load_all(&self.pool, &self.secrets)
            .await?
            .into_iter()
            .filter(|(m, _)| r.ids.is_empty() || r.ids.contains(&m.name))
            .collect();
        let total = all.len() as u64;
        let servers = all
            .iter()
            .skip(page.offset() as usize)
            .take(page.limit() as usize)
            .map(|(m, source)| mcp_server_info(m, source, 0, Vec::new()))
            .collect();
        Ok(Response::new(pb::ListMcpServersResponse { servers, total }))
    }

    // ---- A2A agents ----

    async fn create_agent(
        &self,
        req: Request<pb::UpsertAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        self.save_agent(req.into_inner(), agents::Change::Create)
            .await
    }

    async fn update_agent(
        &self,
        req: Request<pb::UpsertAgentRequest>,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let r = req.into_inner();
        let change = if r.patch {
            agents::Change::Patch
        } else {
            agents::Change::Replace
        };
        self.save_agent(r, change).await
    }

    async fn delete_agent(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let [id] = r.ids.as_slice() else {
            return Err(Status::invalid_argument("give one agent id"));
        };
        let version = agents::remove(&self.pool, &self.secrets, &actor(r.actor), id).await?;
        Ok(Response::new(deleted(r.ids, Some(version))))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let r = req.into_inner();
        let page = Page::new(r.page, r.page_size);
        let all: Vec<_> = agents::load_all(&self.pool, &self.secrets)
            .await?
            .into_iter()
            .filter(|s| r.ids.is_empty() || r.ids.contains(&s.agent.id))
            .collect();
        let total = all.len() as u64;
        let agents = all
            .iter()
            .skip(page.offset() as usize)
            .take(page.limit() as usize)
            .map(|s| agent_info(s, 0, Vec::new()))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents, total }))
    }

    // ---- skills ----

    async fn create_skill(
        &self,
        req: Request<pb::CreateSkillRequest>,
    ) -> Result<Response<pb::SkillInfo>, Status> {
        let r = req.into_inner();
        let (info, version) = skills::create(
            &self.pool,
            self.skills()?,
            &actor(r.actor),
            r.display_name,
            skill_files(r.files),
        )
        .await?;
        Ok(Response::new(skill_info(info, version)))
    }

    async fn get_skill(
        &self,
        req: Request<pb::SkillRef>,
    ) -> Result<Response<pb::SkillInfo>, Status> {
        let info = skills::get(&self.pool, &req.into_inner().skill_id).await?;
        Ok(Response::new(skill_info(info, 0)))
    }

    async fn list_skills(
        &self,
        req: Request<pb::ListSkillsRequest>,
    ) -> Result<Response<pb::ListSkillsResponse>, Status> {
        let r = req.into_inner();
        let (list, next) = skills::list(&self.pool, skills::Cursor::new(r.limit, &r.page)?).await?;
        Ok(Response::new(pb::ListSkillsResponse {
            skills: list.into_iter().map(|s| skill_info(s, 0)).collect(),
            next_page: next.unwrap_or_default(),
        }))
    }

    async fn delete_skill(
        &self,
        req: Request<pb::SkillRef>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let version = skills::delete(
            &self.pool,
            self.skills()?,
            &self.secrets,
            &actor(r.actor),
            &r.skill_id,
        )
        .await?;
        Ok(Response::new(deleted(vec![r.skill_id], Some(version))))
    }

    async fn create_skill_version(
        &self,
        req: Request<pb::CreateSkillRequest>,
    ) -> Result<Response<pb::SkillVersionInfo>, Status> {
        let r = req.into_inner();
        let (v, version) = skills::add_version(
            &self.pool,
            self.skills()?,
            &actor(r.actor),
            &r.skill_id,
            skill_files(r.files),
        )
        .await?;
        Ok(Response::new(skill_version_info(v, version)))
    }

    async fn get_skill_version(
        &self,
        req: Request<pb::SkillRef>,
    ) -> Result<Response<pb::SkillVersionInfo>, Status> {
        let r = req.into_inner();
        let v = skills::get_version(&self.pool, &r.skill_id, &r.version).await?;
        Ok(Response::new(skill_version_info(v, 0)))
    }

    async fn list_skill_versions(
        &self,
        req: Request<pb::ListSkillsRequest>,
    ) -> Result<Response<pb::ListSkillVersionsResponse>, Status> {
        let r = req.into_inner();
        let cursor = skills::Cursor::new(r.limit, &r.page)?;
        let (list, next) = skills::list_versions(&self.pool, &r.skill_id, cursor).await?;
        Ok(Response::new(pb::ListSkillVersionsResponse {
            versions: list.into_iter().map(|v| skill_version_info(v, 0)).collect(),
            next_page: next.unwrap_or_default(),
        }))
    }

    async fn delete_skill_version(
        &self,
        req: Request<pb::SkillRef>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        let (snapshot, version) = skills::delete_version(
            &self.pool,
            self.skills()?,
            &self.secrets,
            &actor(r.actor),
            &r.skill_id,
            &r.version,
        )
        .await?;
        Ok(Response::new(deleted(vec![version], Some(snapshot))))
    }

    async fn get_skill_content(
        &self,
        req: Request<pb::SkillRef>,
    ) -> Result<Response<pb::SkillContent>, Status> {
        let r = req.into_inner();
        let (zip, name) =
            skills::content(&self.pool, self.skills()?, &r.skill_id, &r.version).await?;
        Ok(Response::new(pb::SkillContent { zip, name }))
    }

    // ---- response cache ----

    async fn ping_cache(
        &self,
        _req: Request<pb::CacheRequest>,
    ) -> Result<Response<pb::CachePing>, Status> {
        let p = crate::cache::ping(&self.pool, self.redis.as_ref()).await?;
        Ok(Response::new(pb::CachePing {
            cache_type: p.settings.kind.as_str().into(),
            params_json: serde_json::Value::Object(p.settings.to_litellm()).to_string(),
            redis_ok: p.redis_ok.unwrap_or(false),
        }))
    }

    async fn delete_cache_keys(
        &self,
        req: Request<pb::DeleteCacheKeysRequest>,
    ) -> Result<Response<pb::CacheChange>, Status> {
        let r = req.into_inner();
        let what = routeiq_proto::ForgetCached::Keys(r.keys);
        let (snapshot_version, redis_deleted) =
            crate::cache::forget(&self.pool, self.redis.as_ref(), &actor(r.actor), what).await?;
        Ok(Response::new(pb::CacheChange {
            snapshot_version,
            redis_deleted,
        }))
    }

    async fn flush_cache(
        &self,
        req: Request<pb::CacheRequest>,
    ) -> Result<Response<pb::CacheChange>, Status> {
        let r = req.into_inner();
        let what = routeiq_proto::ForgetCached::All;
        let (snapshot_version, redis_deleted) =
            crate::cache::forget(&self.pool, self.redis.as_ref(), &actor(r.actor), what).await?;
        Ok(Response::new(pb::CacheChange {
            snapshot_version,
            redis_deleted,
        }))
    }

    async fn cache_redis_info(
        &self,
        _req: Request<pb::CacheRequest>,
    ) -> Result<Response<pb::CacheRedisInfoResponse>, Status> {
        let info = crate::cache::redis_info(&self.pool, self.redis.as_ref()).await?;
        Ok(Response::new(pb::CacheRedisInfoResponse {
            info: info.into_iter().collect(),
        }))
    }

    // ---- credentials ----

    async fn create_credential(
        &self,
        req: Request<pb::UpsertCredentialRequest>,
    ) -> Result<Response<pb::CredentialInfo>, Status> {
        self.save_credential(req.into_inner(), true).await
    }

    async fn update_credential(
        &self,
        req: Request<pb::UpsertCredentialRequest>,
    ) -> Result<Response<pb::CredentialInfo>, Status> {
        self.save_credential(req.into_inner(), false).await
    }

    async fn delete_credential(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.into_inner();
        deployments::delete_credential(&self.pool, &actor(r.actor), &r.ids).await?;
        Ok(Response::new(deleted(r.ids, None)))
    }

    async fn list_credentials(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListCredentialsResponse>, Status> {
        let r = req.into_inner();
        let (recs, total) = deployments::credentials(
            &self.pool,
            &self.secrets,
            &r.ids,
            Page::new(r.page, r.page_size),
        )
        .await?;
        Ok(Response::new(pb::ListCredentialsResponse {
            credentials: recs.into_iter().map(credential_info).collect(),
            total,
        }))
    }

    // ---- spend and audit ----

    async fn list_spend_logs(
        &self,
        req: Request<pb::SpendQuery>,
    ) -> Result<Response<pb::SpendLogsResponse>, Status> {
        let r = req.into_inner();
        let logs = spend::logs(
            &self.pool,
            &spend_filter(r.filter)?,
            Page::new(r.page, r.page_size),
        )
        .await?;
        Ok(Response::new(pb::SpendLogsResponse {
            logs: logs.into_iter().map(spend_log).collect(),
        }))
    }

    async fn spend_report(
        &self,
        req: Request<pb::SpendReportRequest>,
    ) -> Result<Response<pb::SpendReportResponse>, Status> {
        let r = req.into_inner();
        let rows = spend::report(
            &self.pool,
            &spend_filter(r.filter)?,
            spend_group(r.group_by)?,
        )
        .await?;
        let total_spend = rows.iter().map(|r| r.spend).sum();
        Ok(Response::new(pb::SpendReportResponse {
            rows: rows.into_iter().map(report_row).collect(),
            total_spend,
        }))
    }

    async fn agent_activity(
        &self,
        req: Request<pb::AgentActivityRequest>,
    ) -> Result<Response<pb::AgentActivityResponse>, Status> {
        let r = req.into_inner();
        let days = spend::agent_activity(&self.pool, r.since_ms, r.until_ms, &r.agent_ids)
            .await?
            .into_iter()
            .map(agent_day)
            .collect();
        Ok(Response::new(pb::AgentActivityResponse { days }))
    }

    async fn list_audit_log(
        &self,
        req: Request<pb::AuditQuery>,
    ) -> Result<Response<pb::AuditLogResponse>, Status> {
        let q = req.into_inner();
        let entries = audit::list(
            &self.pool,
            &audit_filter(&q),
            Page::new(q.page, q.page_size),
        )
        .await?;
        Ok(Response::new(pb::AuditLogResponse {
            entries: entries.into_iter().map(audit_entry).collect(),
        }))
    }

    // ---- routing models ----

    async fn register_routing_model(
        &self,
        req: Request<pb::RegisterRoutingModelRequest>,
    ) -> Result<Response<pb::RoutingModelInfo>, Status> {
        let r = req.into_inner();
        let metrics = match r.metrics_json.trim() {
            "" => serde_json::json!({}),
            m => serde_json::from_str(m)
                .map_err(|e| Status::invalid_argument(format!("metrics_json: {e}")))?,
        };
        let v = routing_models::register(
            &self.pool,
            &actor(r.actor),
            &r.strategy,
            &r.artifact_uri,
            &r.sha256,
            metrics,
        )
        .await?;
        Ok(Response::new(routing_model_info(v, 0)))
    }

    async fn activate_routing_model(
        &self,
        req: Request<pb::ActivateRoutingModelRequest>,
    ) -> Result<Response<pb::RoutingModelInfo>, Status> {
        let r = req.into_inner();
        let (v, version) = routing_models::activate(&self.pool, &actor(r.actor), r.id).await?;
        Ok(Response::new(routing_model_info(v, version)))
    }

    async fn list_routing_models(
        &self,
        req: Request<pb::ListRoutingModelsRequest>,
    ) -> Result<Response<pb::ListRoutingModelsResponse>, Status> {
        let models = routing_models::list(&self.pool, &req.into_inner().strategy).await?;
        Ok(Response::new(pb::ListRoutingModelsResponse {
            models: models
                .into_iter()
                .map(|v| routing_model_info(v, 0))
                .collect(),
        }))
    }

    async fn start_routing_experiment(
        &self,
        req: Request<pb::StartRoutingExperimentRequest>,
    ) -> Result<Response<pb::RoutingModelInfo>, Status> {
        let r = req.into_inner();
        let mode = match routing_models::Kind::parse(&r.mode)? {
            routing_models::Kind::Shadow => routing_models::Mode::Shadow,
            routing_models::Kind::Ab => routing_models::Mode::Ab {
                share: r.share,
                sticky: routing_models::Sticky::parse(&r.sticky)?,
            },
        };
        let (v, version) =
            routing_models::start_experiment(&self.pool, &actor(r.actor), r.id, mode).await?;
        Ok(Response::new(routing_model_info(v, version)))
    }

    async fn stop_routing_experiment(
        &self,
        req: Request<pb::StopRoutingExperimentRequest>,
    ) -> Result<Response<pb::RoutingModelInfo>, Status> {
        let r = req.into_inner();
        let kind = routing_models::Kind::parse(&r.mode)?;
        let (v, version) =
            routing_models::stop_experiment(&self.pool, &actor(r.actor), kind).await?;
        Ok(Response::new(routing_model_info(v, version)))
    }

    async fn record_feedback(
        &self,
        req: Request<pb::RecordFeedbackRequest>,
    ) -> Result<Response<pb::RecordFeedbackResponse>, Status> {
        let r = req.into_inner();
        let only_key = r.key_hash.as_deref().map(hash).transpose()?;
        feedback::record(
            &self.pool,
            &r.request_id,
            r.score,
            r.comment.as_deref(),
            only_key,
        )
        .await?;
        Ok(Response::new(pb::RecordFeedbackResponse {}))
    }

    async fn routing_model_report(
        &self,
        req: Request<pb::RoutingModelReportRequest>,
    ) -> Result<Response<pb::RoutingModelReportResponse>, Status> {
        let r = req.into_inner();
        let since_ms = r.since_ms.unwrap_or_else(routing_models::default_since_ms);
        let rows = routing_models::report(&self.pool, &r.strategy, since_ms).await?;
        Ok(Response::new(pb::RoutingModelReportResponse {
            rows: rows.into_iter().map(routing_report_row).collect(),
            since_ms,
        }))
    }
}

fn deleted(ids: Vec<String>, version: Option<u64>) -> pb::DeleteResponse {
    pb::DeleteResponse {
        deleted: ids,
        snapshot_version: version.unwrap_or(0),
    }
}

impl Service {
    /// The skill registry, or why there is none.
    fn skills(&self) -> Result<&Arc<Skills>, Status> {
        self.skills.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "skills need an object store: start the control plane with --skill-store s3://bucket/prefix",
            )
        })
    }

    async fn save_model(
        &self,
        r: pb::UpsertModelRequest,
        create: bool,
    ) -> Result<Response<pb::ModelResponse>, Status> {
        let (d, warnings) = match (r.litellm_json, r.deployment) {
            (Some(json), _) => {
                let entry: serde_json::Value = serde_json::from_str(&json)
                    .map_err(|e| Status::invalid_argument(format!("litellm_json: {e}")))?;
                deployments::compile_entry(&self.pool, &self.secrets, &entry).await?
            }
            (None, Some(mut wire)) => {
                if wire.model_info.is_none() {
                    wire.model_info = Some(pb::ModelInfo::default());
                }
                let d = routeiq_proto::Deployment::try_from(wire)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                (d, Vec::new())
            }
            (None, None) => {
                return Err(Status::invalid_argument(
                    "deployment or litellm_json is required",
                ))
            }
        };
        let (d, version) =
            deployments::save(&self.pool, &self.secrets, &actor(r.actor), d, create).await?;
        let mut out = model(&d, "api", version);
        out.warnings = warnings;
        Ok(Response::new(out))
    }

    async fn save_mcp_server(
        &self,
        r: pb::UpsertMcpServerRequest,
        create: bool,
    ) -> Result<Response<pb::McpServerInfo>, Status> {
        let entry: serde_json::Value = serde_json::from_str(&r.entry_json)
            .map_err(|e| Status::invalid_argument(format!("entry_json: {e}")))?;
        let (m, warnings, version) = mcp_servers::save(
            &self.pool,
            &self.secrets,
            &actor(r.actor),
            &r.name,
            &entry,
            create,
        )
        .await?;
        Ok(Response::new(mcp_server_info(&m, "api", version, warnings)))
    }

    async fn save_agent(
        &self,
        r: pb::UpsertAgentRequest,
        change: agents::Change,
    ) -> Result<Response<pb::AgentInfo>, Status> {
        let entry: serde_json::Value = serde_json::from_str(&r.entry_json)
            .map_err(|e| Status::invalid_argument(format!("entry_json: {e}")))?;
        let (stored, warnings, version) = agents::save(
            &self.pool,
            &self.secrets,
            &actor(r.actor),
            &r.agent_id,
            &entry,
            change,
        )
        .await?;
        Ok(Response::new(agent_info(&stored, version, warnings)))
    }

    async fn save_credential(
        &self,
        r: pb::UpsertCredentialRequest,
        create: bool,
    ) -> Result<Response<pb::CredentialInfo>, Status> {
        let values: std::collections::BTreeMap<String, String> = r.values.into_iter().collect();
        let rec = deployments::save_credential(
            &self.pool,
            &self.secrets,
            &actor(r.actor),
            &r.credential_name,
            &values,
            metadata(r.info_json, "info_json")?,
            create,
        )
        .await?;
        Ok(Response::new(credential_info(rec)))
    }
}
