//! Internal users: `/user/new`, `/user/info`, `/user/update`, `/user/delete`, `/user/list`.
//!
//! Admins manage users; a user reads their own record.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::keys::KeyObject;
use super::teams::TeamObject;
use super::{
    count_param, json_text, non_empty, object, total_pages, Body, Duration, LimitFields,
    LimitsObject, Params, DEFAULT_PAGE_SIZE, MAX_PAGE,
};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    ProxyAdmin,
    ProxyAdminViewer,
    InternalUser,
    InternalUserViewer,
}

impl UserRole {
    fn as_str(self) -> &'static str {
        match self {
            Self::ProxyAdmin => crate::auth::PROXY_ADMIN,
            Self::ProxyAdminViewer => crate::auth::PROXY_ADMIN_VIEWER,
            Self::InternalUser => crate::auth::INTERNAL_USER,
            Self::InternalUserViewer => crate::auth::INTERNAL_USER_VIEWER,
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct UserSettings {
    pub user_email: Option<String>,
    /// Default for new users: `internal_user`.
    pub user_role: Option<UserRole>,
    pub organization_id: Option<String>,
    pub models: Option<Vec<String>>,
    #[serde(flatten)]
    pub limits: LimitFields,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

impl UserSettings {
    fn into_pb(self) -> pb::UserFields {
        pb::UserFields {
            user_email: self.user_email,
            user_role: self.user_role.map(|r| r.as_str().to_owned()),
            organization_id: self.organization_id,
            set_models: self.models.is_some(),
            models: self.models.unwrap_or_default(),
            limits: Some(self.limits.into_pb()),
            metadata_json: json_text(self.metadata),
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct NewUserRequest {
    /// Generated when absent.
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub settings: UserSettings,
    /// Teams to add the user to (as `user`).
    #[serde(default)]
    pub teams: Vec<String>,
    /// A team to add the user to whose key the first key becomes (LiteLLM's `team_id`);
    /// with exactly one of `teams` and no `team_id`, that team.
    pub team_id: Option<String>,
    /// Also create a key for the user (LiteLLM's default: true).
    pub auto_create_key: Option<bool>,
    /// The alias of that key.
    pub key_alias: Option<String>,
    /// That key's lifetime (`30d`, ...).
    #[schema(value_type = Option<Duration>, inline)]
    pub duration: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UpdateUserRequest {
    pub user_id: String,
    #[serde(flatten)]
    pub settings: UserSettings,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct DeleteUserRequest {
    #[schema(min_items = 1)]
    pub user_ids: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserObject {
    pub user_id: String,
    pub user_email: Option<String>,
    pub user_role: String,
    pub organization_id: Option<String>,
    pub models: Vec<String>,
    #[serde(flatten)]
    pub limits: LimitsObject,
    pub spend: f64,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub teams: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<pb::UserInfo> for UserObject {
    fn from(u: pb::UserInfo) -> Self {
        Self {
            user_id: u.user_id,
            user_email: non_empty(u.user_email),
            user_role: u.user_role,
            organization_id: non_empty(u.organization_id),
            models: u.models,
            limits: u.limits.into(),
            spend: u.spend,
            metadata: object(&u.metadata_json),
            teams: u.teams,
            created_at: iso(u.created_at),
            updated_at: iso(u.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewUserResponse {
    #[serde(flatten)]
    pub user: UserObject,
    /// The user's first key, shown once (when `auto_create_key`).
    pub key: Option<String>,
    /// That key's token.
    pub token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfoResponse {
    pub user_id: String,
    pub user_info: UserObject,
    pub keys: Vec<KeyObject>,
    pub teams: Vec<TeamObject>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpdateUserResponse {
    pub user_id: String,
    pub data: UserObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteUserResponse {
    pub deleted_users: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserListResponse {
    pub users: Vec<UserObject>,
    pub total: u64,
    pub page: u32,
    pub page_size: u32,
    pub total_pages: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// Absent: the caller's own user (404 for the master key and other keys without a
    /// user).
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u32>,
    pub role: Option<UserRole>,
    /// Comma-separated user ids.
    pub user_ids: Option<String>,
    pub organization_id: Option<String>,
}

/// Create a user, optionally in teams and with a first key.
#[utoipa::path(post, path = "/user/new", tag = "users", request_body = NewUserRequest,
    responses((status = 200, description = "The new user (and key)", body = NewUserResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn new(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<NewUserRequest>,
) -> ApiResult<Json<NewUserResponse>> {
    let mut cp = state.cp.clone();
    let mut user = cp
        .create_user(pb::CreateUserRequest {
            actor: Some(caller.actor.clone()),
            user_id: req.user_id.unwrap_or_default(),
            fields: Some(req.settings.into_pb()),
        })
        .await?
        .into_inner();
    let partly = |step: String| {
        let user_id = user.user_id.clone();
        move |s: tonic::Status| {
            let mut e = ApiError::from(s);
            e.message = format!(
                "user `{user_id}` was created, but {step} failed: {}",
                e.message
            );
            e
        }
    };
    let key_team = req
        .team_id
        .clone()
        .or_else(|| (req.teams.len() == 1).then(|| req.teams[0].clone()));
    let mut teams = req.teams;
    if let Some(t) = &req.team_id {
        if !teams.contains(t) {
            teams.push(t.clone());
        }
    }
    for team in teams {
        cp.add_team_members(pb::TeamMembersRequest {
            actor: Some(caller.actor.clone()),
            team_id: team.clone(),
            members: vec![pb::TeamMember {
                user_id: user.user_id.clone(),
                role: "user".into(),
            }],
        })
        .await
        .map_err(partly(format!("adding it to team `{team}`")))?;
    }
    let (mut key, mut token) = (None, None);
    if req.auto_create_key.unwrap_or(true) {
        let out = cp
            .generate_key(pb::GenerateKeyRequest {
                actor: Some(caller.actor),
                fields: Some(pb::KeyFields {
                    user_id: Some(user.user_id.clone()),
                    team_id: key_team,
                    key_alias: req.key_alias,
                    duration: req.duration,
                    ..Default::default()
                }),
                key: None,
            })
            .await
            .map_err(partly("creating its key".into()))?
            .into_inner();
        key = Some(out.key);
        token = out.info.map(|i| i.key_hash);
    }
    user = cp
        .get_user(pb::IdRef {
            id: user.user_id.clone(),
        })
        .await?
        .into_inner();
    Ok(Json(NewUserResponse {
        user: user.into(),
        key,
        token,
    }))
}

/// A user, their keys and their teams.
#[utoipa::path(get, path = "/user/info", tag = "users", params(UserQuery),
    responses((status = 200, description = "The user", body = UserInfoResponse)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "team_admin", "internal_user", "internal_user_viewer"])))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Params(q): Params<UserQuery>,
) -> ApiResult<Json<UserInfoResponse>> {
    let user_id = match (q.user_id, caller.user_id()) {
        (Some(u), me) if caller.is_viewer() || me == Some(u.as_str()) => u,
        (Some(_), _) => return Err(ApiError::forbidden("you may only view your own user")),
        (None, Some(me)) => me.to_owned(),
        (None, None) => {
            return Err(ApiError::not_found(
                "this key has no user (the master key or a service key): give `user_id`",
            )
            .param("user_id"))
        }
    };
    let mut cp = state.cp.clone();
    let user = cp
        .get_user(pb::IdRef {
            id: user_id.clone(),
        })
        .await?
        .into_inner();
    let keys = cp
        .list_keys(pb::ListKeysRequest {
            user_id: Some(user_id.clone()),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .keys;
    let teams = if user.teams.is_empty() {
        Vec::new()
    } else {
        cp.list_teams(pb::ListRequest {
            ids: user.teams.clone(),
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .teams
    };
    Ok(Json(UserInfoResponse {
        user_id,
        user_info: user.into(),
        keys: keys.into_iter().map(KeyObject::from).collect(),
        teams: teams.into_iter().map(TeamObject::from).collect(),
    }))
}

/// Change a user's settings or role.
#[utoipa::path(post, path = "/user/update", tag = "users", request_body = UpdateUserRequest,
    responses((status = 200, description = "The user as changed", body = UpdateUserResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<UpdateUserRequest>,
) -> ApiResult<Json<UpdateUserResponse>> {
    let u = state
        .cp
        .clone()
        .update_user(pb::UpdateUserRequest {
            actor: Some(caller.actor),
            user_id: req.user_id,
            fields: Some(req.settings.into_pb()),
        })
        .await?
        .into_inner();
    Ok(Json(UpdateUserResponse {
        user_id: u.user_id.clone(),
        data: u.into(),
    }))
}

/// Delete users and their keys.
#[utoipa::path(post, path = "/user/delete", tag = "users", request_body = DeleteUserRequest,
    responses((status = 200, description = "Deleted", body = DeleteUserResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<DeleteUserRequest>,
) -> ApiResult<Json<DeleteUserResponse>> {
    let out = state
        .cp
        .clone()
        .delete_users(pb::DeleteRequest {
            actor: Some(caller.actor),
            ids: req.user_ids,
        })
        .await?
        .into_inner();
    Ok(Json(DeleteUserResponse {
        deleted_users: out.deleted,
    }))
}

/// A page of users.
#[utoipa::path(get, path = "/user/list", tag = "users", params(UserListQuery),
    responses((status = 200, description = "Users", body = UserListResponse)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Params(q): Params<UserListQuery>,
) -> ApiResult<Json<UserListResponse>> {
    let page = count_param("page", q.page, 1, MAX_PAGE)?;
    let page_size = count_param("page_size", q.page_size, DEFAULT_PAGE_SIZE, 1000)?;
    let ids = q
        .user_ids
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let out = state
        .cp
        .clone()
        .list_users(pb::ListRequest {
            page,
            page_size,
            organization_id: q.organization_id,
            ids,
            user_role: q.role.map(|r| r.as_str().to_owned()),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Json(UserListResponse {
        users: out.users.into_iter().map(UserObject::from).collect(),
        total: out.total,
        page,
        page_size,
        total_pages: total_pages(out.total, page_size),
    }))
}
