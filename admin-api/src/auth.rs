//! Who is calling and what they may do.
//!
//! Every route of the OpenAPI spec names the roles allowed to call it in its `security`
//! requirement (OpenAPI 3.1 role lists). [`authorize`] enforces exactly that list, taken from
//! the generated spec, so the spec and the enforcement cannot disagree. Handlers then narrow
//! to the caller's own objects (an internal user's keys, a team admin's team) with the
//! [`Caller`] methods.
//!
//! Roles: `proxy_admin` (the master key, or a user with that role), `proxy_admin_viewer`,
//! `internal_user`, `internal_user_viewer`, and `team_admin` (a user who is an admin of at
//! least one team). A key without a user has no role.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use routeiq_proto::wire::pb;
use utoipa::openapi::OpenApi;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub const PROXY_ADMIN: &str = "proxy_admin";
pub const PROXY_ADMIN_VIEWER: &str = "proxy_admin_viewer";
pub const INTERNAL_USER: &str = "internal_user";
pub const INTERNAL_USER_VIEWER: &str = "internal_user_viewer";
pub const TEAM_ADMIN: &str = "team_admin";

/// The name of the security scheme whose role lists [`authorize`] enforces.
pub const SCHEME: &str = "api_key";

/// The authenticated caller of a route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: pb::Principal,
    /// Recorded with every mutation in the control plane's audit log.
    pub actor: pb::Actor,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.principal.master || self.principal.user_role == PROXY_ADMIN
    }

    /// May read everything.
    pub fn is_viewer(&self) -> bool {
        self.is_admin() || self.principal.user_role == PROXY_ADMIN_VIEWER
    }

    pub fn roles(&self) -> Vec<&str> {
        if self.principal.master {
            return vec![PROXY_ADMIN];
        }
        let mut roles = Vec::new();
        if !self.principal.user_id.is_empty() && !self.principal.user_role.is_empty() {
            roles.push(self.principal.user_role.as_str());
        }
        if !self.principal.admin_team_ids.is_empty() {
            roles.push(TEAM_ADMIN);
        }
        roles
    }

    /// The caller's user, if the key has one.
    pub fn user_id(&self) -> Option<&str> {
        Some(self.principal.user_id.as_str()).filter(|u| !u.is_empty())
    }

    fn is(&self, role: &str) -> bool {
        self.user_id().is_some() && self.principal.user_role == role
    }

    pub fn admins_team(&self, team_id: &str) -> bool {
        self.is_admin() || self.principal.admin_team_ids.iter().any(|t| t == team_id)
    }

    pub fn member_of(&self, team_id: &str) -> bool {
        self.admins_team(team_id) || self.principal.member_team_ids.iter().any(|t| t == team_id)
    }

    fn owns(&self, user_id: &str) -> bool {
        self.user_id().is_some_and(|u| u == user_id)
    }

    /// May change or delete this key: an admin, the admin of the key's team, or the
    /// internal user who owns it.
    pub fn can_manage_key(&self, k: &pb::KeyInfo) -> bool {
        self.is_admin()
            || (!k.team_id.is_empty() && self.admins_team(&k.team_id))
            || (self.is(INTERNAL_USER) && self.owns(&k.user_id))
    }

    pub fn can_view_key(&self, k: &pb::KeyInfo) -> bool {
        self.can_manage_key(k)
            || self.is_viewer()
            || (self.is(INTERNAL_USER_VIEWER) && self.owns(&k.user_id))
            || k.key_hash == self.principal.key_hash
    }

    /// Checks that a key may belong to `team_id` / `user_id` when this caller creates or
    /// changes it, and fills in the caller as the owner of a personal key. Admins may
    /// assign any owner; a team admin keys of their team; an internal user only their own
    /// keys, in teams they belong to.
    pub fn key_owner(
        &self,
        team_id: Option<&str>,
        user_id: Option<String>,
    ) -> ApiResult<Option<String>> {
        if self.is_admin() {
            return Ok(user_id);
        }
        let team = team_id.filter(|t| !t.is_empty());
        if let Some(team) = team {
            if self.admins_team(team) {
                return Ok(user_id);
            }
        }
        if !self.is(INTERNAL_USER) {
            return Err(ApiError::forbidden(match team {
                Some(t) => format!("only an admin of team `{t}` may manage its keys"),
                None => "only proxy admins may manage keys of other users".into(),
            }));
        }
        let me = self.principal.user_id.clone();
        if user_id.as_deref().is_some_and(|u| u != me) {
            return Err(
                ApiError::forbidden("an internal user may only manage their own keys")
                    .param("user_id"),
            );
        }
        if let Some(team) = team {
            if !self.member_of(team) {
                return Err(
                    ApiError::forbidden(format!("you are not a member of team `{team}`"))
                        .param("team_id"),
                );
            }
        }
        Ok(Some(me))
    }
}

/// Required roles by `(method, path)`, from the spec: `None` for public routes.
#[derive(Debug, Default)]
pub struct Access(HashMap<(Method, String), Option<Vec<String>>>);

impl Access {
    pub fn from_spec(api: &OpenApi) -> Self {
        let mut map = HashMap::new();
        for (path, item) in &api.paths.paths {
            let ops = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let roles: Vec<String> = op
                    .security
                    .iter()
                    .flatten()
                    .filter_map(|req| {
                        serde_json::to_value(req)
                            .ok()?
                            .get(SCHEME)?
                            .as_array()
                            .cloned()
                    })
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect();
                map.insert(
                    (method, path.clone()),
                    op.security.is_some().then_some(roles),
                );
            }
        }
        Self(map)
    }

    /// What `(method, path)` needs: `Ok(None)` public, `Ok(Some(roles))` one of the roles,
    /// `Err(())` not in the spec (refused: nothing is reachable that the spec does not
    /// describe). HEAD is checked as GET, which axum answers it with.
    #[allow(clippy::result_unit_err)]
    pub fn roles(&self, method: &Method, path: &str) -> Result<Option<&[String]>, ()> {
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        match self.0.get(&(method, path.to_owned())) {
            Some(roles) => Ok(roles.as_deref()),
            None => Err(()),
        }
    }
}

/// The key a request presents: `Authorization: Bearer`, `x-litellm-api-key`, `api-key`
/// or `x-api-key` (LiteLLM's headers; the last is the `anthropic` SDK's, for `/v1/skills`).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .filter(|v| !v.is_empty())
    };
    value("authorization")
        .or_else(|| value("x-litellm-api-key"))
        .or_else(|| value("api-key"))
        .or_else(|| value("x-api-key"))
}

/// Authenticates and authorizes every route that has a security requirement; puts the
/// [`Caller`] into the request's extensions.
pub async fn authorize(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(req).await; // no route: the fallback answers
    };
    let required = match state.access.roles(req.method(), &path) {
        Ok(None) => return next.run(req).await,
        Ok(Some(roles)) => roles,
        Err(()) => {
            return ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} does not accept {}; see /openapi.json", req.method()),
            )
            .into_response()
        }
    };
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    match caller(&state, req.headers(), source_ip).await {
        Ok(caller) => {
            let roles = caller.roles();
            if !roles.iter().any(|r| required.iter().any(|q| q == r)) {
                let has = if roles.is_empty() {
                    "this key has no role (it belongs to no user)".to_owned()
                } else {
                    format!("this key has {}", roles.join(", "))
                };
                return ApiError::forbidden(format!(
                    "this route needs one of the roles {}; {has}",
                    required.join(", ")
                ))
                .into_response();
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn caller(state: &AppState, headers: &HeaderMap, source_ip: String) -> ApiResult<Caller> {
    let key = presented_key(headers).ok_or_else(|| {
        ApiError::unauthorized(
            "no API key: send `Authorization: Bearer <master key or virtual key>`",
        )
    })?;
    let principal = state
        .cp
        .clone()
        .authenticate(pb::AuthenticateRequest {
            key: key.to_owned(),
        })
        .await?
        .into_inner();
    if !principal.rejected.is_empty() {
        return Err(ApiError::unauthorized(principal.rejected));
    }
    let id = if principal.master {
        "master_key".to_owned()
    } else if !principal.user_id.is_empty() {
        principal.user_id.clone()
    } else {
        format!("key:{}", principal.key_hash.get(..12).unwrap_or_default())
    };
    Ok(Caller {
        principal,
        actor: pb::Actor { id, source_ip },
    })
}
