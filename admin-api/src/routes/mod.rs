//! The REST routes, one module per resource. Handlers are thin: check the request, narrow it
//! to what the caller may do, call the control plane, shape LiteLLM's answer.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::error::ApiError;

pub mod agents;
pub mod audit;
pub mod budgets;
pub mod cache;
pub mod credentials;
pub mod feedback;
pub mod health;
pub mod keys;
pub mod mcp;
pub mod models;
pub mod orgs;
pub mod routing_models;
pub mod skills;
pub mod spend;
pub mod teams;
pub mod users;

/// A JSON body. Unreadable JSON is a 400; JSON of the wrong shape a 422 naming the field;
/// U+0000 (NUL) in any text the route reads (as `T` serializes it) a 400 naming the field:
/// PostgreSQL cannot store it, and fields the route ignores are ignored whatever they hold.
/// Numbers with a zero fraction are integers (`5.0` is `5`), as JSON Schema counts them.
pub struct Body<T>(pub T);

/// A body read as [`Body`] reads it, and kept as sent (with integral numbers as integers),
/// for a route that forwards it.
pub struct Forwarded<T> {
    pub read: T,
    pub json: Value,
}

impl<S: Send + Sync, T: DeserializeOwned + Serialize> FromRequest<S> for Forwarded<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        if !json {
            return Err(ApiError::bad_request(
                "expected a JSON body with `Content-Type: application/json`",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let mut json: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        if !json.is_object() {
            // serde would read a struct from an array of its fields.
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object",
            ));
        }
        integers(&mut json);
        let read = typed(&json)?;
        nul_free(&read)?;
        Ok(Self { read, json })
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Serialize> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Forwarded::from_request(req, state)
            .await
            .map(|f| Self(f.read))
    }
}

/// The body as `T`, or a 422 naming the field at fault.
fn typed<T: DeserializeOwned>(body: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = Some(e.path().to_string())
            .filter(|p| p != ".")
            .or_else(|| culprit::<T>(body));
        let status = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
        match path {
            Some(p) => ApiError::new(status, format!("{p}: {}", e.inner())).param(p),
            None => ApiError::new(status, e.inner().to_string()),
        }
    })
}

/// The top-level field at fault, for errors in flattened fields (where serde loses the
/// path): the one without which the body is read, else the one that fails on its own.
fn culprit<T: DeserializeOwned>(body: &Value) -> Option<String> {
    let Value::Object(fields) = body else {
        return None;
    };
    let without = fields.keys().find(|name| {
        let mut rest = fields.clone();
        rest.remove(name.as_str());
        serde_json::from_value::<T>(Value::Object(rest)).is_ok()
    });
    without.cloned().or_else(|| {
        fields.iter().find_map(|(name, v)| {
            let alone = Value::Object(Map::from_iter([(name.clone(), v.clone())]));
            match serde_json::from_value::<T>(alone) {
                Err(e) if !e.to_string().starts_with("missing field") => Some(name.clone()),
                _ => None,
            }
        })
    })
}

/// Turns numbers with a zero fraction that fit an `i64` or `u64` into integers.
fn integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) {
                if (0.0..2f64.powi(64)).contains(&f) {
                    *n = (f as u64).into();
                } else if (-(2f64.powi(63))..0.0).contains(&f) {
                    *n = (f as i64).into();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integers),
        Value::Object(fields) => fields.values_mut().for_each(integers),
        _ => {}
    }
}

/// A 400 naming the first text in `value` (as the route read it) that holds U+0000.
fn nul_free<T: Serialize>(value: &T) -> Result<(), ApiError> {
    let read = serde_json::to_value(value).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot re-read the request: {e}"),
        )
    })?;
    match nul_at(&read, "") {
        None => Ok(()),
        Some(field) => Err(ApiError::bad_request(format!(
            "`{field}`: text may not contain U+0000 (NUL)"
        ))
        .param(field)),
    }
}

/// Where in `v` (found at `at`) a text or an object's key holds U+0000: `a.b[2]`.
fn nul_at(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) => s.contains('\0').then(|| at.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_at(item, &format!("{at}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(k, item)| {
            let here = match at {
                "" => k.escape_debug().to_string(),
                _ => format!("{at}.{}", k.escape_debug()),
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_at(item, &here)
            }
        }),
        _ => None,
    }
}

/// Query parameters; rejections are 422 errors naming the parameter.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                e.body_text(),
            )),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// A JSON object as the control plane stores it (`metadata_json`, `info_json`).
pub fn object(json: &str) -> Map<String, Value> {
    match serde_json::from_str(json) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `Some` unless empty (the control plane's "unset" for strings).
pub fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Pages count from 1; the control plane caps sizes at 1,000.
pub fn total_pages(total: u64, size: u32) -> u64 {
    total.div_ceil(u64::from(size.max(1)))
}

/// The highest page number a listing accepts.
pub const MAX_PAGE: u32 = 1_000_000;

/// Standard page size when a query gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// A page number or size from the query: `default` when absent, 400 naming the parameter
/// outside 1..=`max`.
pub fn count_param(name: &str, v: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "`{name}` must be between 1 and {max}, got {n}"
        ))
        .param(name)),
    }
}

/// Budget and rate limits of a team, user, organization or budget (absent: unchanged).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct LimitFields {
    /// Spend limit in USD.
    #[schema(minimum = 0)]
    pub max_budget: Option<f64>,
    #[schema(minimum = 0)]
    pub soft_budget: Option<f64>,
    /// Budget window: `30s`, `10m`, `2h`, `30d`, `1mo` (1 to 6 digits and a unit).
    #[schema(value_type = Option<Duration>, inline)]
    pub budget_duration: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
}

impl LimitFields {
    pub fn is_empty(&self) -> bool {
        self.max_budget.is_none()
            && self.soft_budget.is_none()
            && self.budget_duration.is_none()
            && self.rpm_limit.is_none()
            && self.tpm_limit.is_none()
            && self.max_parallel_requests.is_none()
    }

    pub fn into_pb(self) -> routeiq_proto::wire::pb::Limits {
        routeiq_proto::wire::pb::Limits {
            max_budget: self.max_budget,
            soft_budget: self.soft_budget,
            budget_duration: self.budget_duration,
            rpm_limit: self.rpm_limit,
            tpm_limit: self.tpm_limit,
            max_parallel_requests: self.max_parallel_requests,
        }
    }
}

/// Limits as stored.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct LimitsObject {
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub budget_duration: Option<String>,
    /// When the budget window next resets (ISO 8601, UTC).
    pub budget_reset_at: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
}

impl From<Option<routeiq_proto::wire::pb::LimitsInfo>> for LimitsObject {
    fn from(l: Option<routeiq_proto::wire::pb::LimitsInfo>) -> Self {
        let l = l.unwrap_or_default();
        Self {
            max_budget: l.max_budget,
            soft_budget: l.soft_budget,
            budget_duration: l.budget_duration,
            budget_reset_at: l.budget_reset_at.map(crate::time::iso),
            rpm_limit: l.rpm_limit,
            tpm_limit: l.tpm_limit,
            max_parallel_requests: l.max_parallel_requests,
        }
    }
}

/// LiteLLM's `object_permission` on keys, teams and organizations. RouteIQ enforces its MCP
/// and agent fields; others LiteLLM has (`vector_stores`, ...) are accepted and ignored. On
/// update, the fields given replace the stored ones and the others stay.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct ObjectPermission {
    /// MCP servers (by name) the holder may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Vec<String>>,
    /// Every MCP server in one of these access groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_access_groups: Option<Vec<String>>,
    /// Per server, the only tools that may be called (the server is granted too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_tool_permissions: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// A2A agents (by id or name) the holder may call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    /// Every agent in one of these access groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_access_groups: Option<Vec<String>>,
}

impl ObjectPermission {
    /// For the control plane (`object_permission_json`).
    pub fn json_text(p: Option<Self>) -> Option<String> {
        p.and_then(|p| serde_json::to_string(&p).ok())
    }

    /// From the control plane's `object_permission_json` (`null`: none).
    pub fn from_json_text(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// A JSON object for the control plane (`metadata_json`).
pub fn json_text(m: Option<Map<String, Value>>) -> Option<String> {
    m.map(|m| Value::Object(m).to_string())
}

/// A known route asked with another method: an OpenAI-shaped 405.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not accept {method}; see /openapi.json", uri.path()),
    )
}

/// Refuses U+0000 (`%00`) in a route's path or query, as [`Body`] refuses it in bodies.
pub async fn nul_free_uri(req: Request, next: Next) -> Response {
    let uri = req.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        return ApiError::bad_request("the URL holds U+0000 (`%00`): text may not contain it")
            .into_response();
    }
    next.run(req).await
}

/// Unknown routes: an OpenAI-shaped 404.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; see /openapi.json", uri.path()))
}

/// What date query parameters accept: `YYYY-MM-DD` (midnight UTC) or
/// `YYYY-MM-DDTHH:MM:SSZ`, real calendar dates only, or nothing (empty: no bound).
/// [`date_ms`] reads exactly these.
pub const DATE_PATTERN: &str = "^(?:(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])\
|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))\
|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)-02-29)\
(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z)?)?$";

/// What budget windows (`budget_duration`) and key lifetimes (`duration`) accept: the control
/// plane's `budget::GRAMMAR`.
pub const DURATION_PATTERN: &str = "^[1-9][0-9]{0,5}(s|m|h|d|mo)$";

/// The schema of a date query parameter (`#[param(value_type = Option<Date>, inline)]`).
pub struct Date;

/// The schema of a budget window or key lifetime (`#[schema(value_type = Option<Duration>,
/// inline)]`).
pub struct Duration;

/// A string schema with `pattern`.
pub fn text_matching(pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .into()
}

impl utoipa::PartialSchema for Date {
    fn schema() -> RefOr<Schema> {
        text_matching(DATE_PATTERN)
    }
}

impl utoipa::ToSchema for Date {}

impl utoipa::PartialSchema for Duration {
    fn schema() -> RefOr<Schema> {
        text_matching(DURATION_PATTERN)
    }
}

impl utoipa::ToSchema for Duration {}

/// Unix milliseconds of a date query parameter (see [`DATE_PATTERN`]; empty: absent, as
/// LiteLLM reads it), or a 400 naming the parameter.
pub fn date_ms(param: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.filter(|t| !t.is_empty())
        .map(|t| {
            crate::time::parse(t).map(|s| s * 1000).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{param}`: `{t}` is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)"
                ))
                .param(param)
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integral_numbers_are_integers() {
        let mut v = json!({"a": 5.0, "b": [-3.0, 0.5], "c": 1e300, "d": -0.0});
        integers(&mut v);
        assert_eq!(v, json!({"a": 5, "b": [-3, 0.5], "c": 1e300, "d": 0}));
        assert!(v["a"].is_u64() && v["b"][0].is_i64());
    }

    #[test]
    fn nul_is_named_where_it_is() {
        let at = |v: Value| nul_at(&v, "");
        assert_eq!(
            at(json!({"a": {"b": ["x", "y\u{0}"]}})),
            Some("a.b[1]".into())
        );
        assert_eq!(at(json!({"k\u{0}": 1})), Some("k\\0".into()));
        assert_eq!(at(json!({"a": "fine", "b": [1, null]})), None);
    }
}
