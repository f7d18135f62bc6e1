//! The REST routes, one module per resource. Handlers are thin: check the request, narrow it
//! to what the caller may do, call the control plane, shape LiteLLM's answer.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

pub mod audit;
pub mod budgets;
pub mod credentials;
pub mod health;
pub mod keys;
pub mod models;
pub mod orgs;
pub mod routing_models;
pub mod spend;
pub mod teams;
pub mod users;

/// A JSON body. Unreadable JSON is a 400; JSON of the wrong shape a 422 naming the field.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
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
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = Some(e.path().to_string())
                .filter(|p| p != ".")
                .or_else(|| culprit::<T>(&bytes));
            body_error(e.into_inner(), path)
        })?;
        de.end().map_err(|e| body_error(e, None))?;
        Ok(Self(value))
    }
}

/// The top-level field that fails to deserialize on its own, for errors in flattened
/// fields (where serde loses the path).
fn culprit<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(bytes) else {
        return None;
    };
    fields.into_iter().find_map(|(name, v)| {
        let alone = Value::Object(Map::from_iter([(name.clone(), v)]));
        match serde_json::from_value::<T>(alone) {
            Err(e) if !e.to_string().starts_with("missing field") => Some(name),
            _ => None,
        }
    })
}

fn body_error(e: serde_json::Error, path: Option<String>) -> ApiError {
    if !e.is_data() {
        return ApiError::bad_request(format!("the body is not valid JSON: {e}"));
    }
    let status = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
    match path {
        Some(p) => ApiError::new(status, format!("{p}: {e}")).param(p),
        None => ApiError::new(status, e.to_string()),
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
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
pub struct LimitFields {
    /// Spend limit in USD.
    #[schema(minimum = 0)]
    pub max_budget: Option<f64>,
    #[schema(minimum = 0)]
    pub soft_budget: Option<f64>,
    /// Budget window: `30s`, `10m`, `2h`, `30d`, `1mo`.
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

/// Unknown routes: an OpenAI-shaped 404.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}; see /openapi.json", uri.path()))
}

/// Unix milliseconds of a date query parameter (`YYYY-MM-DD` or ISO 8601, UTC), or a 400
/// naming the parameter.
pub fn date_ms(param: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|t| {
        crate::time::parse(t).map(|s| s * 1000).ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{param}`: `{t}` is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)"
            ))
            .param(param)
        })
    })
    .transpose()
}
