//! The routing-model registry of the learned `llmrouter-*` strategies:
//! `/routing_model/new` registers an artifact version, `/routing_model/activate` routes
//! with it from now on (the router settings switch to its strategy and artifact, pinned by
//! its manifest's sha256, and data planes load it), `/routing_model/list` lists versions.
//!
//! Evaluation beside the serving version: `/routing_model/shadow` makes a version decide
//! every learned-routed request too, never acted on; `/routing_model/ab` lets it decide a
//! share of the clients (sticky per end user or key); `/routing_model/stop` ends either;
//! `/routing_model/report` compares the versions (requests, cost, agreement with the
//! acting router, feedback from `/feedback`). Promoting the challenger is
//! `/routing_model/activate` of it (which ends its experiment); rolling back is
//! `/routing_model/activate` of the previous version.
//!
//! Admins manage them; viewers read.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::wire::pb;
use routeiq_proto::LEARNED_STRATEGIES;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

use super::{date_ms, Body, Date, Params};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::time::iso;
use crate::AppState;

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct NewRoutingModelRequest {
    #[schema(schema_with = learned_strategy)]
    pub strategy: String,
    /// `s3://bucket/prefix`, `file:///dir` or `/dir`: where `manifest.json` is.
    #[schema(pattern = "^(?:s3://[^/\\u0000]|(?:file://)?/)[^\\u0000]*$")]
    pub artifact_uri: String,
    /// SHA-256 of the artifact's `manifest.json`, 64 hex digits.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub sha256: String,
    /// Evaluation metrics (the manifest's `metrics`).
    #[schema(value_type = Option<Object>)]
    pub metrics: Option<Value>,
    /// Activate the version at once.
    #[serde(default)]
    pub activate: bool,
}

/// The strategies a version can be registered for: the learned ones, each also with its
/// `llmrouter-` prefix.
fn learned_strategy() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(
            "A learned strategy (the `llmrouter-` prefix is optional).",
        ))
        .enum_values(Some(
            LEARNED_STRATEGIES
                .iter()
                .flat_map(|s| [s.to_string(), format!("llmrouter-{s}")]),
        ))
        .build()
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ActivateRoutingModelRequest {
    pub id: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRoutingModelsQuery {
    /// Only this strategy's versions.
    pub strategy: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingModelObject {
    pub id: i64,
    pub strategy: String,
    pub artifact_uri: String,
    pub sha256: String,
    #[schema(value_type = Object)]
    pub metrics: Value,
    pub active: bool,
    pub created_at: String,
    /// The snapshot version that carried the change to data planes (activations,
    /// experiments started or stopped).
    pub snapshot_version: Option<u64>,
    /// `shadow` or `ab` while the version is evaluated; null otherwise.
    pub mode: Option<String>,
    /// An A/B version's share of the clients.
    pub share: Option<f64>,
    /// An A/B version's client identity: `user` or `key`.
    pub sticky: Option<String>,
}

impl From<pb::RoutingModelInfo> for RoutingModelObject {
    fn from(m: pb::RoutingModelInfo) -> Self {
        Self {
            id: m.id,
            strategy: m.strategy,
            artifact_uri: m.artifact_uri,
            sha256: m.sha256,
            metrics: serde_json::from_str(&m.metrics_json).unwrap_or(Value::Null),
            active: m.active,
            created_at: iso(m.created_at),
            snapshot_version: (m.snapshot_version > 0).then_some(m.snapshot_version),
            mode: m.mode,
            share: m.share,
            sticky: m.sticky,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ShadowRoutingModelRequest {
    /// The version to run in shadow: registered, not the serving one.
    pub id: i64,
}

/// What keeps a client on one side of an A/B split: its end user (else its key), or its
/// key (else its end user).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sticky {
    User,
    Key,
}

impl Sticky {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Key => "key",
        }
    }
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct AbRoutingModelRequest {
    /// The version to A/B test: registered, not the serving one.
    pub id: i64,
    /// The share of the clients it decides for, strictly between 0 and 1.
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub share: f64,
    /// Default `user`.
    pub sticky: Option<Sticky>,
}

/// An experiment: `shadow` or `ab`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentMode {
    Shadow,
    Ab,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct StopRoutingExperimentRequest {
    pub mode: ExperimentMode,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoutingModelReportQuery {
    /// Only this strategy's versions.
    pub strategy: Option<String>,
    /// Requests from then on: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC); empty or
    /// absent: the last 7 days.
    #[param(value_type = Option<Date>, inline)]
    pub since: Option<String>,
}

/// A 95 % interval.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntervalObject {
    pub low: f64,
    pub high: f64,
}

/// Feedback scores (0 to 1) on a set of requests.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackStatsObject {
    pub n: u64,
    /// Null without scores.
    pub mean: Option<f64>,
    /// 95 %: Wilson when every score is 0 or 1 (thumbs), else mean ± t·sd/√n (Student
    /// t), within [0, 1]; null below 2 scores.
    pub interval: Option<IntervalObject>,
}

/// The requests a version decided, as the serving version or as the A/B version.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServedObject {
    pub requests: u64,
    /// Of them, those it decided as the A/B version.
    pub ab_requests: u64,
    /// USD.
    pub cost: f64,
    /// Null without requests.
    pub cost_per_request: Option<f64>,
    pub feedback: FeedbackStatsObject,
}

/// The requests a version decided in shadow, never acted on.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowObject {
    pub requests: u64,
    /// Of them, those where the acting router's choice is known too.
    pub compared: u64,
    /// Of those, the ones where both chose the same candidate.
    pub agreed: u64,
    /// `agreed / compared`; null when nothing was compared.
    pub agreement: Option<f64>,
    /// The agreement's 95 % Wilson interval.
    pub agreement_interval: Option<IntervalObject>,
    /// Feedback on the compared requests where the shadow agreed ...
    pub feedback_agreed: FeedbackStatsObject,
    /// ... and where it did not (the acting router's choice was served there).
    pub feedback_disagreed: FeedbackStatsObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingModelReportRow {
    pub model: RoutingModelObject,
    pub served: ServedObject,
    pub shadow: ShadowObject,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RoutingModelReport {
    /// The report's start (ISO 8601, UTC).
    pub since: String,
    /// One row per version that is serving, under evaluation, or decided requests since.
    pub data: Vec<RoutingModelReportRow>,
}

fn interval(i: Option<pb::ScoreInterval>) -> Option<IntervalObject> {
    i.map(|i| IntervalObject {
        low: i.low,
        high: i.high,
    })
}

impl From<Option<pb::FeedbackStats>> for FeedbackStatsObject {
    fn from(f: Option<pb::FeedbackStats>) -> Self {
        let f = f.unwrap_or_default();
        Self {
            n: f.n,
            mean: f.mean,
            interval: interval(f.interval),
        }
    }
}

impl From<pb::RoutingModelReportRow> for RoutingModelReportRow {
    fn from(r: pb::RoutingModelReportRow) -> Self {
        Self {
            model: r.model.unwrap_or_default().into(),
            served: ServedObject {
                requests: r.requests,
                ab_requests: r.ab_requests,
                cost: r.cost,
                cost_per_request: r.cost_per_request,
                feedback: r.feedback.into(),
            },
            shadow: ShadowObject {
                requests: r.shadow_requests,
                compared: r.shadow_compared,
                agreed: r.shadow_agreed,
                agreement: r.agreement,
                agreement_interval: interval(r.agreement_interval),
                feedback_agreed: r.feedback_agreed.into(),
                feedback_disagreed: r.feedback_disagreed.into(),
            },
        }
    }
}

/// Register a routing-model version (and activate it with `activate: true`).
#[utoipa::path(post, path = "/routing_model/new", tag = "routing models",
    request_body = NewRoutingModelRequest,
    responses((status = 200, description = "The registered version", body = RoutingModelObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn new(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<NewRoutingModelRequest>,
) -> ApiResult<Json<RoutingModelObject>> {
    let metrics = match req.metrics {
        None | Some(Value::Null) => String::new(),
        Some(m @ Value::Object(_)) => m.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request("metrics must be a JSON object").param("metrics"))
        }
    };
    let mut cp = state.cp.clone();
    let m = cp
        .register_routing_model(pb::RegisterRoutingModelRequest {
            actor: Some(caller.actor.clone()),
            strategy: req.strategy,
            artifact_uri: req.artifact_uri,
            sha256: req.sha256,
            metrics_json: metrics,
        })
        .await?
        .into_inner();
    if !req.activate {
        return Ok(Json(m.into()));
    }
    let m = cp
        .activate_routing_model(pb::ActivateRoutingModelRequest {
            actor: Some(caller.actor),
            id: m.id,
        })
        .await?
        .into_inner();
    Ok(Json(m.into()))
}

/// Route with a registered version from now on.
#[utoipa::path(post, path = "/routing_model/activate", tag = "routing models",
    request_body = ActivateRoutingModelRequest,
    responses((status = 200, description = "The activated version", body = RoutingModelObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn activate(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<ActivateRoutingModelRequest>,
) -> ApiResult<Json<RoutingModelObject>> {
    let m = state
        .cp
        .clone()
        .activate_routing_model(pb::ActivateRoutingModelRequest {
            actor: Some(caller.actor),
            id: req.id,
        })
        .await?
        .into_inner();
    Ok(Json(m.into()))
}

/// Registered routing-model versions, oldest first.
#[utoipa::path(get, path = "/routing_model/list", tag = "routing models",
    params(ListRoutingModelsQuery),
    responses((status = 200, description = "Versions", body = Vec<RoutingModelObject>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Params(q): Params<ListRoutingModelsQuery>,
) -> ApiResult<Json<Vec<RoutingModelObject>>> {
    let r = state
        .cp
        .clone()
        .list_routing_models(pb::ListRoutingModelsRequest {
            strategy: q.strategy.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Json(r.models.into_iter().map(Into::into).collect()))
}

/// Run a version in shadow: it decides every learned-routed request too, and its choice is
/// logged, never acted on. A version in shadow before leaves it. The gateway must route with
/// a learned strategy.
#[utoipa::path(post, path = "/routing_model/shadow", tag = "routing models",
    request_body = ShadowRoutingModelRequest,
    responses((status = 200, description = "The version, now in shadow", body = RoutingModelObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn shadow(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<ShadowRoutingModelRequest>,
) -> ApiResult<Json<RoutingModelObject>> {
    let m = state
        .cp
        .clone()
        .start_routing_experiment(pb::StartRoutingExperimentRequest {
            actor: Some(caller.actor),
            id: req.id,
            mode: "shadow".into(),
            share: 0.0,
            sticky: String::new(),
        })
        .await?
        .into_inner();
    Ok(Json(m.into()))
}

/// A/B test a version: it decides for `share` of the clients, each client staying on its
/// side (by end user or by key). A version in A/B before leaves it. The gateway must route
/// with a learned strategy.
#[utoipa::path(post, path = "/routing_model/ab", tag = "routing models",
    request_body = AbRoutingModelRequest,
    responses((status = 200, description = "The version, now A/B tested", body = RoutingModelObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn ab(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<AbRoutingModelRequest>,
) -> ApiResult<Json<RoutingModelObject>> {
    if !routeiq_proto::is_ab_share(req.share) {
        return Err(ApiError::bad_request(format!(
            "`share` must be strictly between 0 and 1, got {}",
            req.share
        ))
        .param("share"));
    }
    let m = state
        .cp
        .clone()
        .start_routing_experiment(pb::StartRoutingExperimentRequest {
            actor: Some(caller.actor),
            id: req.id,
            mode: "ab".into(),
            share: req.share,
            sticky: req.sticky.unwrap_or(Sticky::User).as_str().into(),
        })
        .await?
        .into_inner();
    Ok(Json(m.into()))
}

/// End the shadow or A/B experiment; answers the version that was in it (404: none was).
#[utoipa::path(post, path = "/routing_model/stop", tag = "routing models",
    request_body = StopRoutingExperimentRequest,
    responses((status = 200, description = "The version, out of the experiment", body = RoutingModelObject)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn stop(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<StopRoutingExperimentRequest>,
) -> ApiResult<Json<RoutingModelObject>> {
    let mode = match req.mode {
        ExperimentMode::Shadow => "shadow",
        ExperimentMode::Ab => "ab",
    };
    let m = state
        .cp
        .clone()
        .stop_routing_experiment(pb::StopRoutingExperimentRequest {
            actor: Some(caller.actor),
            mode: mode.into(),
        })
        .await?
        .into_inner();
    Ok(Json(m.into()))
}

/// Per version: the requests it decided (serving or A/B) with their cost and feedback, and
/// the requests it decided in shadow with its agreement with the acting router.
#[utoipa::path(get, path = "/routing_model/report", tag = "routing models",
    params(RoutingModelReportQuery),
    responses((status = 200, description = "The report", body = RoutingModelReport)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn report(
    State(state): State<Arc<AppState>>,
    Params(q): Params<RoutingModelReportQuery>,
) -> ApiResult<Json<RoutingModelReport>> {
    let r = state
        .cp
        .clone()
        .routing_model_report(pb::RoutingModelReportRequest {
            strategy: q.strategy.unwrap_or_default(),
            since_ms: date_ms("since", q.since.as_deref())?,
        })
        .await?
        .into_inner();
    Ok(Json(RoutingModelReport {
        since: iso(r.since_ms.div_euclid(1000)),
        data: r.rows.into_iter().map(Into::into).collect(),
    }))
}
