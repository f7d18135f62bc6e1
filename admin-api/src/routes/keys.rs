//! Virtual keys: `/key/generate`, `/key/info`, `/key/update`, `/key/delete`, `/key/list`,
//! `/key/regenerate`, `/key/block`, `/key/unblock`.
//!
//! Admins manage every key; a team admin the keys of their teams; an internal user their
//! own keys. Viewers read.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, ToSchema};

use super::{
    count_param, non_empty, object, total_pages, Body, Duration, LimitFields, ObjectPermission,
    Params, MAX_PAGE,
};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

/// Settable key fields (absent: unchanged on update). Fields RouteIQ does not support are
/// ignored, as LiteLLM ignores unknown ones.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct KeySettings {
    /// A unique, human-readable name.
    pub key_alias: Option<String>,
    /// Model names (or access groups) the key may call; empty: every model.
    pub models: Option<Vec<String>>,
    #[serde(flatten)]
    pub limits: LimitFields,
    /// Lifetime from now (`30d`, ...); the key expires then. Absent: never.
    #[schema(value_type = Option<Duration>, inline)]
    pub duration: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    pub tags: Option<Vec<String>>,
    #[schema(schema_with = model_budgets)]
    pub model_max_budget: Option<Map<String, Value>>,
    /// MCP grants (LiteLLM's `object_permission`).
    pub object_permission: Option<ObjectPermission>,
}

impl KeySettings {
    fn into_fields(self) -> pb::KeyFields {
        pb::KeyFields {
            key_alias: self.key_alias,
            set_models: self.models.is_some(),
            models: self.models.unwrap_or_default(),
            max_budget: self.limits.max_budget,
            soft_budget: self.limits.soft_budget,
            budget_duration: self.limits.budget_duration,
            rpm_limit: self.limits.rpm_limit,
            tpm_limit: self.limits.tpm_limit,
            max_parallel_requests: self.limits.max_parallel_requests,
            expires_at: None,
            duration: self.duration,
            team_id: self.team_id,
            user_id: self.user_id,
            metadata_json: super::json_text(self.metadata),
            tags: self.tags.unwrap_or_default(),
            model_max_budget_json: super::json_text(self.model_max_budget),
            object_permission_json: ObjectPermission::json_text(self.object_permission),
        }
    }
}

/// `model_max_budget`, as the control plane reads it.
fn model_budgets() -> Object {
    let limit = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(0)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]{1,15}(\\.[0-9]{1,15})?$")),
        )
        .description(Some("USD: a number, or one in a string (`\"0.5\"`)."));
    let budget = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("budget_limit", limit)
        .required("budget_limit")
        .property(
            "time_period",
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .pattern(Some(super::DURATION_PATTERN))
                .description(Some(
                    "The window spend is counted in; absent: the key's life.",
                )),
        )
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(
            "Budgets per model, LiteLLM's shape: `{\"gpt-4o\": {\"budget_limit\": 0.5, \
             \"time_period\": \"1d\"}}`. Replaces the key's.",
        ))
        .additional_properties(Some(budget))
        .build()
}

/// What a chosen key may be, as the control plane checks it: `sk-`, then at least 8
/// characters that are neither whitespace nor control characters (Rust's `char` classes).
const CUSTOM_KEY: &str = "^sk-[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]{8,}$";

/// The schema of a chosen key.
pub struct CustomKey;

impl utoipa::PartialSchema for CustomKey {
    fn schema() -> RefOr<Schema> {
        super::text_matching(CUSTOM_KEY)
    }
}

impl ToSchema for CustomKey {}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct GenerateKeyRequest {
    /// A chosen key (`sk-` and at least 8 more characters, none a space or a control
    /// character); generated when absent.
    #[schema(value_type = Option<CustomKey>, inline)]
    pub key: Option<String>,
    #[serde(flatten)]
    pub settings: KeySettings,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct UpdateKeyRequest {
    /// The key, or its token (SHA-256, hex).
    pub key: String,
    #[serde(flatten)]
    pub settings: KeySettings,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct RegenerateKeyRequest {
    /// The key to replace, or its token.
    pub key: String,
    /// The replacement (as `key` of `/key/generate`); generated when absent.
    #[schema(value_type = Option<CustomKey>, inline)]
    pub new_key: Option<String>,
    #[serde(flatten)]
    pub settings: KeySettings,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct KeyRequest {
    /// The key, or its token.
    pub key: String,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct DeleteKeyRequest {
    /// Keys or tokens.
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub key_aliases: Vec<String>,
}

/// A key as stored: never the key itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyObject {
    /// The SHA-256 of the key, hex: how the key is named once it is shown.
    pub token: String,
    /// `sk-...abcd`.
    pub key_name: String,
    pub key_alias: Option<String>,
    pub spend: f64,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
    pub models: Vec<String>,
    /// When the key stops working (ISO 8601, UTC); null: never.
    pub expires: Option<String>,
    pub blocked: bool,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
    /// Budgets per model (`{model: {budget_limit, time_period}}`).
    #[schema(value_type = Object)]
    pub model_max_budget: Map<String, Value>,
    /// MCP grants; null: none.
    pub object_permission: Option<ObjectPermission>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<pb::KeyInfo> for KeyObject {
    fn from(k: pb::KeyInfo) -> Self {
        Self {
            token: k.key_hash,
            key_name: k.key_name,
            key_alias: non_empty(k.key_alias),
            spend: k.spend,
            max_budget: k.max_budget,
            soft_budget: k.soft_budget,
            budget_duration: k.budget_duration,
            budget_reset_at: k.budget_reset_at.map(iso),
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
            max_parallel_requests: k.max_parallel_requests,
            models: k.models,
            expires: k.expires_at.map(iso),
            blocked: k.blocked,
            team_id: non_empty(k.team_id),
            user_id: non_empty(k.user_id),
            metadata: object(&k.metadata_json),
            tags: k.tags,
            model_max_budget: object(&k.model_max_budget_json),
            object_permission: ObjectPermission::from_json_text(&k.object_permission_json),
            created_at: iso(k.created_at),
            updated_at: iso(k.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateKeyResponse {
    /// The key: shown this once, stored only as its hash.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyInfoResponse {
    /// The key or token asked about.
    pub key: String,
    pub info: KeyObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteKeyResponse {
    pub deleted_keys: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyInfoQuery {
    /// The key or its token; absent: the calling key (404 for the master key, which is not
    /// a stored key).
    pub key: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListQuery {
    /// From 1.
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    /// Keys per page (at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub size: Option<u32>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub key_alias: Option<String>,
    /// Whole key objects instead of tokens.
    pub return_full_object: Option<bool>,
}

/// A token, or the whole key with `return_full_object=true`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum KeyListItem {
    Token(String),
    Full(Box<KeyObject>),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyListResponse {
    pub keys: Vec<KeyListItem>,
    pub total_count: u64,
    pub current_page: u32,
    pub total_pages: u64,
}

/// A key named by itself or by its token (64 hex digits).
pub fn key_ref(key: &str) -> pb::KeyRef {
    pb::KeyRef {
        r#ref: Some(match as_token(key) {
            Some(token) => pb::key_ref::Ref::KeyHash(token),
            None => pb::key_ref::Ref::Key(key.to_owned()),
        }),
    }
}

/// `key` as a token (lowercase hex) if it is one: the key routes accept either.
pub fn as_token(key: &str) -> Option<String> {
    routeiq_proto::KeyHash::from_hex(key).map(|h| h.to_hex())
}

/// The key, if this caller may change it (404 for unknown keys). A team admin may not
/// touch the keys of users with an admin role, even in their team: a key's role is its
/// user's.
async fn manageable(state: &AppState, caller: &Caller, key: &str) -> ApiResult<pb::KeyInfo> {
    let k = state.cp.clone().get_key(key_ref(key)).await?.into_inner();
    if !caller.can_manage_key(&k) {
        return Err(ApiError::forbidden(
            "you may not manage this key: it belongs to another user or team",
        ));
    }
    if !caller.is_admin() && Some(k.user_id.as_str()) != caller.user_id() && !k.user_id.is_empty() {
        let user = state
            .cp
            .clone()
            .get_user(pb::IdRef {
                id: k.user_id.clone(),
            })
            .await?
            .into_inner();
        if is_privileged(&user.user_role) {
            return Err(ApiError::forbidden(format!(
                "this key belongs to `{}`, a {}: only proxy admins manage it",
                user.user_id, user.user_role
            )));
        }
    }
    Ok(k)
}

fn is_privileged(role: &str) -> bool {
    role == crate::auth::PROXY_ADMIN || role == crate::auth::PROXY_ADMIN_VIEWER
}

/// A non-admin may give a key only to themselves, or (a team admin) to a member of the
/// key's team who holds no admin role.
async fn check_assignee(
    state: &AppState,
    caller: &Caller,
    team: Option<&str>,
    user: Option<&str>,
) -> ApiResult<()> {
    let Some(user) = user.filter(|u| !caller.is_admin() && Some(*u) != caller.user_id()) else {
        return Ok(());
    };
    let refused = || {
        ApiError::forbidden(format!(
            "`{user}` must be a member of the key's team, without an admin role"
        ))
        .param("user_id")
    };
    let info = match state
        .cp
        .clone()
        .get_user(pb::IdRef {
            id: user.to_owned(),
        })
        .await
    {
        Ok(u) => u.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Err(refused()),
        Err(s) => return Err(s.into()),
    };
    let member = team.is_some_and(|t| info.teams.iter().any(|m| m == t));
    if !member || is_privileged(&info.user_role) {
        return Err(refused());
    }
    Ok(())
}

/// Fields only admins (and a key's team admin) change: a key's owner may rename it and
/// change its metadata and tags, not lift what an admin set.
fn restricted_fields(s: &KeySettings) -> Vec<&'static str> {
    [
        ("models", s.models.is_some()),
        ("max_budget", s.limits.max_budget.is_some()),
        ("soft_budget", s.limits.soft_budget.is_some()),
        ("budget_duration", s.limits.budget_duration.is_some()),
        ("rpm_limit", s.limits.rpm_limit.is_some()),
        ("tpm_limit", s.limits.tpm_limit.is_some()),
        (
            "max_parallel_requests",
            s.limits.max_parallel_requests.is_some(),
        ),
        ("duration", s.duration.is_some()),
        ("model_max_budget", s.model_max_budget.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// Whether the caller manages `k` only as its owner (not as an admin or its team's admin).
fn owner_only(caller: &Caller, k: &pb::KeyInfo) -> bool {
    !caller.is_admin() && (k.team_id.is_empty() || !caller.admins_team(&k.team_id))
}

/// Checks a change by a non-admin: who the key may belong to (see [`Caller::key_owner`])
/// and, for a key's mere owner, which fields they may change.
async fn check_change(
    state: &AppState,
    caller: &Caller,
    current: &pb::KeyInfo,
    s: &mut KeySettings,
) -> ApiResult<()> {
    if caller.is_admin() {
        return Ok(());
    }
    if owner_only(caller, current) {
        let fields = restricted_fields(s);
        if !fields.is_empty() {
            return Err(ApiError::forbidden(format!(
                "only an admin changes {} of this key",
                fields.join(", ")
            ))
            .param(fields[0]));
        }
    }
    if s.team_id.is_none() && s.user_id.is_none() {
        return Ok(());
    }
    let team = s.team_id.clone().unwrap_or_else(|| current.team_id.clone());
    let user = s
        .user_id
        .take()
        .or_else(|| non_empty(current.user_id.clone()));
    s.user_id = caller.key_owner(Some(&team), user)?;
    check_assignee(state, caller, Some(&team), s.user_id.as_deref()).await
}

/// Create a virtual key.
#[utoipa::path(post, path = "/key/generate", tag = "keys",
    request_body = GenerateKeyRequest,
    responses((status = 200, description = "The new key, shown once", body = GenerateKeyResponse)),
    security(("api_key" = ["proxy_admin", "team_admin", "internal_user"])))]
pub async fn generate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(mut req): Body<GenerateKeyRequest>,
) -> ApiResult<Json<GenerateKeyResponse>> {
    let s = &mut req.settings;
    s.user_id = caller.key_owner(s.team_id.as_deref(), s.user_id.take())?;
    check_assignee(&state, &caller, s.team_id.as_deref(), s.user_id.as_deref()).await?;
    let out = state
        .cp
        .clone()
        .generate_key(pb::GenerateKeyRequest {
            actor: Some(caller.actor),
            fields: Some(req.settings.into_fields()),
            key: req.key,
        })
        .await?
        .into_inner();
    Ok(Json(GenerateKeyResponse {
        key: out.key,
        info: out.info.unwrap_or_default().into(),
    }))
}

/// A key's settings and spend.
#[utoipa::path(get, path = "/key/info", tag = "keys", params(KeyInfoQuery),
    responses((status = 200, description = "The key", body = KeyInfoResponse)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "team_admin", "internal_user", "internal_user_viewer"])))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Params(q): Params<KeyInfoQuery>,
) -> ApiResult<Json<KeyInfoResponse>> {
    let asked = match q.key {
        Some(k) => k,
        None if caller.principal.master => {
            return Err(ApiError::not_found(
                "the master key is not a stored key: give `key` to describe one",
            )
            .param("key"))
        }
        None => caller.principal.key_hash.clone(),
    };
    let k = state
        .cp
        .clone()
        .get_key(key_ref(&asked))
        .await?
        .into_inner();
    if !caller.can_view_key(&k) {
        return Err(ApiError::forbidden("you may not view this key"));
    }
    Ok(Json(KeyInfoResponse {
        key: asked,
        info: k.into(),
    }))
}

/// Change a key's settings.
#[utoipa::path(post, path = "/key/update", tag = "keys", request_body = UpdateKeyRequest,
    responses((status = 200, description = "The key as changed", body = KeyObject)),
    security(("api_key" = ["proxy_admin", "team_admin", "internal_user"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(mut req): Body<UpdateKeyRequest>,
) -> ApiResult<Json<KeyObject>> {
    let current = manageable(&state, &caller, &req.key).await?;
    check_change(&state, &caller, &current, &mut req.settings).await?;
    let k = state
        .cp
        .clone()
        .update_key(pb::UpdateKeyRequest {
            actor: Some(caller.actor),
            r#ref: Some(key_ref(&req.key)),
            fields: Some(req.settings.into_fields()),
        })
        .await?
        .into_inner();
    Ok(Json(k.into()))
}

/// Delete keys, by key, token or alias. Unknown keys fail the whole request; none given
/// deletes none.
#[utoipa::path(post, path = "/key/delete", tag = "keys", request_body = DeleteKeyRequest,
    responses((status = 200, description = "Deleted", body = DeleteKeyResponse)),
    security(("api_key" = ["proxy_admin", "team_admin", "internal_user"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<DeleteKeyRequest>,
) -> ApiResult<Json<DeleteKeyResponse>> {
    let mut refs = Vec::new();
    for key in &req.keys {
        manageable(&state, &caller, key).await?;
        refs.push(key_ref(key));
    }
    for alias in &req.key_aliases {
        let found = state
            .cp
            .clone()
            .list_keys(pb::ListKeysRequest {
                key_alias: Some(alias.clone()),
                page_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner()
            .keys
            .pop()
            .ok_or_else(|| ApiError::not_found(format!("no key with alias `{alias}`")))?;
        manageable(&state, &caller, &found.key_hash).await?;
        refs.push(key_ref(&found.key_hash));
    }
    if !refs.is_empty() {
        state
            .cp
            .clone()
            .delete_keys(pb::DeleteKeysRequest {
                actor: Some(caller.actor),
                refs,
            })
            .await?;
    }
    let mut deleted_keys = req.keys;
    deleted_keys.extend(req.key_aliases);
    Ok(Json(DeleteKeyResponse { deleted_keys }))
}

/// List keys: every key for admins and viewers, a team's keys for its admin, otherwise the
/// caller's own keys.
#[utoipa::path(get, path = "/key/list", tag = "keys", params(KeyListQuery),
    responses((status = 200, description = "A page of keys", body = KeyListResponse)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer", "team_admin", "internal_user", "internal_user_viewer"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Params(q): Params<KeyListQuery>,
) -> ApiResult<Json<KeyListResponse>> {
    let mut user_id = q.user_id;
    let team_id = q.team_id;
    let team_scope = team_id.as_deref().is_some_and(|t| caller.admins_team(t));
    if !caller.is_viewer() && !team_scope {
        let me = caller.user_id().unwrap_or_default();
        if user_id.as_deref().is_some_and(|u| u != me) {
            return Err(ApiError::forbidden("you may only list your own keys").param("user_id"));
        }
        user_id = Some(me.to_owned());
    }
    let page = count_param("page", q.page, 1, MAX_PAGE)?;
    let size = count_param("size", q.size, 10, 1000)?;
    let out = state
        .cp
        .clone()
        .list_keys(pb::ListKeysRequest {
            team_id,
            user_id,
            key_alias: q.key_alias,
            page,
            page_size: size,
        })
        .await?
        .into_inner();
    let full = q.return_full_object.unwrap_or(false);
    Ok(Json(KeyListResponse {
        keys: out
            .keys
            .into_iter()
            .map(|k| {
                if full {
                    KeyListItem::Full(Box::new(k.into()))
                } else {
                    KeyListItem::Token(k.key_hash)
                }
            })
            .collect(),
        total_count: out.total,
        current_page: page,
        total_pages: total_pages(out.total, size),
    }))
}

/// Replace a key by a new one with the same settings and spend; the old key stops working.
#[utoipa::path(post, path = "/key/regenerate", tag = "keys", request_body = RegenerateKeyRequest,
    responses((status = 200, description = "The new key, shown once", body = GenerateKeyResponse)),
    security(("api_key" = ["proxy_admin", "team_admin", "internal_user"])))]
pub async fn regenerate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(mut req): Body<RegenerateKeyRequest>,
) -> ApiResult<Json<GenerateKeyResponse>> {
    let current = manageable(&state, &caller, &req.key).await?;
    check_change(&state, &caller, &current, &mut req.settings).await?;
    let out = state
        .cp
        .clone()
        .regenerate_key(pb::RegenerateKeyRequest {
            actor: Some(caller.actor),
            r#ref: Some(key_ref(&req.key)),
            new_key: req.new_key,
            fields: Some(req.settings.into_fields()),
        })
        .await?
        .into_inner();
    Ok(Json(GenerateKeyResponse {
        key: out.key,
        info: out.info.unwrap_or_default().into(),
    }))
}

async fn set_blocked(
    state: &AppState,
    caller: Caller,
    key: &str,
    blocked: bool,
) -> ApiResult<Json<KeyObject>> {
    let current = manageable(state, &caller, key).await?;
    if !blocked && owner_only(&caller, &current) {
        return Err(ApiError::forbidden(
            "only an admin (or the key's team admin) unblocks a key",
        ));
    }
    let k = state
        .cp
        .clone()
        .set_key_blocked(pb::SetKeyBlockedRequest {
            actor: Some(caller.actor),
            r#ref: Some(key_ref(key)),
            blocked,
        })
        .await?
        .into_inner();
    Ok(Json(k.into()))
}

/// Block a key: every request with it gets 401 until it is unblocked.
#[utoipa::path(post, path = "/key/block", tag = "keys", request_body = KeyRequest,
    responses((status = 200, description = "The blocked key", body = KeyObject)),
    security(("api_key" = ["proxy_admin", "team_admin", "internal_user"])))]
pub async fn block(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<KeyRequest>,
) -> ApiResult<Json<KeyObject>> {
    set_blocked(&state, caller, &req.key, true).await
}

/// Unblock a key.
#[utoipa::path(post, path = "/key/unblock", tag = "keys", request_body = KeyRequest,
    responses((status = 200, description = "The unblocked key", body = KeyObject)),
    security(("api_key" = ["proxy_admin", "team_admin", "internal_user"])))]
pub async fn unblock(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<KeyRequest>,
) -> ApiResult<Json<KeyObject>> {
    set_blocked(&state, caller, &req.key, false).await
}
