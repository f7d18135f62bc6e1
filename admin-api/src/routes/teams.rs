//! Teams and their members: `/team/new`, `/team/info`, `/team/update`, `/team/delete`,
//! `/team/list`, `/team/member_add`, `/team/member_delete`.
//!
//! Admins manage teams; a team admin manages their team's members; members read their
//! teams.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::keys::KeyObject;
use super::{
    json_text, non_empty, object, Body, LimitFields, LimitsObject, ObjectPermission, Params,
};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Admin,
    #[default]
    User,
}

impl MemberRole {
    fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct Member {
    #[schema(min_length = 1)]
    pub user_id: String,
    #[serde(default)]
    pub role: MemberRole,
    /// Accepted for LiteLLM compatibility; users are named by `user_id`.
    pub user_email: Option<String>,
}

impl Member {
    fn into_pb(self) -> pb::TeamMember {
        pb::TeamMember {
            user_id: self.user_id,
            role: self.role.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct TeamSettings {
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    /// Models the team's keys may call; empty: every model.
    pub models: Option<Vec<String>>,
    #[serde(flatten)]
    pub limits: LimitFields,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// A blocked team's keys are refused.
    pub blocked: Option<bool>,
    /// MCP grants (LiteLLM's `object_permission`): they bound the team's keys'.
    pub object_permission: Option<ObjectPermission>,
}

impl TeamSettings {
    fn into_pb(self) -> pb::TeamFields {
        pb::TeamFields {
            team_alias: self.team_alias,
            organization_id: self.organization_id,
            set_models: self.models.is_some(),
            models: self.models.unwrap_or_default(),
            limits: Some(self.limits.into_pb()),
            metadata_json: json_text(self.metadata),
            blocked: self.blocked,
            object_permission_json: ObjectPermission::json_text(self.object_permission),
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct NewTeamRequest {
    /// Generated when absent.
    pub team_id: Option<String>,
    #[serde(flatten)]
    pub settings: TeamSettings,
    #[serde(default)]
    pub members_with_roles: Vec<Member>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UpdateTeamRequest {
    pub team_id: String,
    #[serde(flatten)]
    pub settings: TeamSettings,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct DeleteTeamRequest {
    #[schema(min_items = 1)]
    pub team_ids: Vec<String>,
}

/// One member or several.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Members {
    One(Member),
    Many(MemberList),
}

/// Members, at least one.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(min_items = 1)]
pub struct MemberList(Vec<Member>);

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct MemberAddRequest {
    pub team_id: String,
    pub member: Members,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct MemberDeleteRequest {
    pub team_id: String,
    pub user_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberObject {
    pub user_id: String,
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamObject {
    pub team_id: String,
    pub team_alias: Option<String>,
    pub organization_id: Option<String>,
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: LimitsObject,
    pub spend: f64,
    pub blocked: bool,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub members_with_roles: Vec<MemberObject>,
    /// MCP grants; null: none.
    pub object_permission: Option<ObjectPermission>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<pb::TeamInfo> for TeamObject {
    fn from(t: pb::TeamInfo) -> Self {
        Self {
            team_id: t.team_id,
            team_alias: non_empty(t.team_alias),
            organization_id: non_empty(t.organization_id),
            models: t.models,
            limits: t.limits.into(),
            spend: t.spend,
            blocked: t.blocked,
            metadata: object(&t.metadata_json),
            members_with_roles: t
                .members
                .into_iter()
                .map(|m| MemberObject {
                    user_id: m.user_id,
                    role: m.role,
                })
                .collect(),
            object_permission: ObjectPermission::from_json_text(&t.object_permission_json),
            created_at: iso(t.created_at),
            updated_at: iso(t.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamInfoResponse {
    pub team_id: String,
    pub team_info: TeamObject,
    /// The team's keys (up to 1,000).
    pub keys: Vec<KeyObject>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpdateTeamResponse {
    pub team_id: String,
    pub data: TeamObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteTeamResponse {
    pub deleted_teams: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TeamQuery {
    pub team_id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TeamListQuery {
    /// Teams this user belongs to.
    pub user_id: Option<String>,
    pub organization_id: Option<String>,
}

/// Create a team, with its first members.
#[utoipa::path(post, path = "/team/new", tag = "teams", request_body = NewTeamRequest,
    responses((status = 200, description = "The new team", body = TeamObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn new(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<NewTeamRequest>,
) -> ApiResult<Json<TeamObject>> {
    let t = state
        .cp
        .clone()
        .create_team(pb::CreateTeamRequest {
            actor: Some(caller.actor),
            team_id: req.team_id.unwrap_or_default(),
            fields: Some(req.settings.into_pb()),
            members: req
                .members_with_roles
                .into_iter()
                .map(Member::into_pb)
                .collect(),
        })
        .await?
        .into_inner();
    Ok(Json(t.into()))
}

/// A team, its members and its keys.
#[utoipa::path(get, path = "/team/info", tag = "teams", params(TeamQuery),
    responses((status = 200, description = "The team", body = TeamInfoResponse)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "team_admin", "internal_user", "internal_user_viewer"])))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Params(q): Params<TeamQuery>,
) -> ApiResult<Json<TeamInfoResponse>> {
    if !caller.is_viewer() && !caller.member_of(&q.team_id) {
        return Err(ApiError::forbidden(format!(
            "you are not a member of team `{}`",
            q.team_id
        )));
    }
    let mut cp = state.cp.clone();
    let team = cp
        .get_team(pb::IdRef {
            id: q.team_id.clone(),
        })
        .await?
        .into_inner();
    let keys = cp
        .list_keys(pb::ListKeysRequest {
            team_id: Some(q.team_id.clone()),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .keys;
    Ok(Json(TeamInfoResponse {
        team_id: q.team_id,
        team_info: team.into(),
        keys: keys.into_iter().map(KeyObject::from).collect(),
    }))
}

/// Change a team's settings.
#[utoipa::path(post, path = "/team/update", tag = "teams", request_body = UpdateTeamRequest,
    responses((status = 200, description = "The team as changed", body = UpdateTeamResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<UpdateTeamRequest>,
) -> ApiResult<Json<UpdateTeamResponse>> {
    let t = state
        .cp
        .clone()
        .update_team(pb::UpdateTeamRequest {
            actor: Some(caller.actor),
            team_id: req.team_id,
            fields: Some(req.settings.into_pb()),
        })
        .await?
        .into_inner();
    Ok(Json(UpdateTeamResponse {
        team_id: t.team_id.clone(),
        data: t.into(),
    }))
}

/// Delete teams and their keys.
#[utoipa::path(post, path = "/team/delete", tag = "teams", request_body = DeleteTeamRequest,
    responses((status = 200, description = "Deleted", body = DeleteTeamResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<DeleteTeamRequest>,
) -> ApiResult<Json<DeleteTeamResponse>> {
    let out = state
        .cp
        .clone()
        .delete_teams(pb::DeleteRequest {
            actor: Some(caller.actor),
            ids: req.team_ids,
        })
        .await?
        .into_inner();
    Ok(Json(DeleteTeamResponse {
        deleted_teams: out.deleted,
    }))
}

/// Teams: all of them for admins and viewers, otherwise the caller's.
#[utoipa::path(get, path = "/team/list", tag = "teams", params(TeamListQuery),
    responses((status = 200, description = "Teams", body = Vec<TeamObject>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "team_admin", "internal_user", "internal_user_viewer"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Params(q): Params<TeamListQuery>,
) -> ApiResult<Json<Vec<TeamObject>>> {
    let mut member = q.user_id;
    if !caller.is_viewer() {
        let me = caller.user_id().unwrap_or_default();
        if member.as_deref().is_some_and(|u| u != me) {
            return Err(ApiError::forbidden("you may only list your own teams").param("user_id"));
        }
        member = Some(me.to_owned());
    }
    let out = state
        .cp
        .clone()
        .list_teams(pb::ListRequest {
            page_size: 1000,
            organization_id: q.organization_id,
            member_user_id: member,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Json(out.teams.into_iter().map(TeamObject::from).collect()))
}

/// Add members to a team (admins, or an admin of that team).
#[utoipa::path(post, path = "/team/member_add", tag = "teams", request_body = MemberAddRequest,
    responses((status = 200, description = "The team with its members", body = TeamObject)),
    security(("api_key" = ["proxy_admin", "team_admin"])))]
pub async fn member_add(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<MemberAddRequest>,
) -> ApiResult<Json<TeamObject>> {
    if !caller.admins_team(&req.team_id) {
        return Err(ApiError::forbidden(format!(
            "only an admin of team `{}` may change its members",
            req.team_id
        )));
    }
    let members = match req.member {
        Members::One(m) => vec![m],
        Members::Many(MemberList(ms)) => ms,
    };
    let t = state
        .cp
        .clone()
        .add_team_members(pb::TeamMembersRequest {
            actor: Some(caller.actor),
            team_id: req.team_id,
            members: members.into_iter().map(Member::into_pb).collect(),
        })
        .await?
        .into_inner();
    Ok(Json(t.into()))
}

/// Remove a member from a team (admins, or an admin of that team).
#[utoipa::path(post, path = "/team/member_delete", tag = "teams", request_body = MemberDeleteRequest,
    responses((status = 200, description = "The team with its members", body = TeamObject)),
    security(("api_key" = ["proxy_admin", "team_admin"])))]
pub async fn member_delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<MemberDeleteRequest>,
) -> ApiResult<Json<TeamObject>> {
    if !caller.admins_team(&req.team_id) {
        return Err(ApiError::forbidden(format!(
            "only an admin of team `{}` may change its members",
            req.team_id
        )));
    }
    let t = state
        .cp
        .clone()
        .remove_team_members(pb::TeamMembersRequest {
            actor: Some(caller.actor),
            team_id: req.team_id,
            members: vec![pb::TeamMember {
                user_id: req.user_id,
                role: String::new(),
            }],
        })
        .await?
        .into_inner();
    Ok(Json(t.into()))
}
