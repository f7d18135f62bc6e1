//! Model deployments: `/model/new`, `/model/update`, `/model/delete`, `/model/info` and
//! `/v1/model/info`. A model is given as a LiteLLM `model_list` entry and compiled by the
//! control plane exactly as `config.yaml` entries are. API keys are never returned.
//! Admins manage models; viewers read.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use routeiq_proto::litellm::{known_prefixes, parse_model};
use routeiq_proto::wire::pb;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{AllOfBuilder, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::{object, Body, Forwarded, Params};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// `litellm_params` as RouteIQ reads them; other keys are reported back as ignored. Unless
/// the deployment is a mock (`mock_response`, or a `mock/` model), `api_base` is an http(s)
/// URL, Azure and providers without a default base need one, and Azure an `api_version`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct LitellmParams {
    #[schema(schema_with = model_schema)]
    pub model: String,
    pub api_base: Option<String>,
    /// Stored encrypted; never returned. `os.environ/NAME` reads the control plane's
    /// environment.
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    /// Seconds (at most a year).
    #[schema(exclusive_minimum = 0, maximum = 31_536_000)]
    pub timeout: Option<f64>,
    /// Seconds to the first streamed token (at most a year).
    #[schema(exclusive_minimum = 0, maximum = 31_536_000)]
    pub stream_timeout: Option<f64>,
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    pub rpm: Option<u64>,
    #[schema(maximum = 9_223_372_036_854_775_807_u64)]
    pub tpm: Option<u64>,
    #[schema(minimum = 0)]
    pub weight: Option<f64>,
    /// Answer with this text instead of calling a provider.
    pub mock_response: Option<String>,
    /// Tags requests can be routed by.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A credential from `/credentials`, for `api_key`, `api_base`, `api_version`.
    pub litellm_credential_name: Option<String>,
    #[schema(minimum = 0)]
    pub input_cost_per_token: Option<f64>,
    #[schema(minimum = 0)]
    pub output_cost_per_token: Option<f64>,
}

/// `model_info`: free-form; these keys have meaning.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct ModelInfoIn {
    /// The deployment id: generated on `/model/new` when absent, required on
    /// `/model/update`.
    pub id: Option<String>,
    pub mode: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    #[schema(minimum = 0)]
    pub input_cost_per_token: Option<f64>,
    #[schema(minimum = 0)]
    pub output_cost_per_token: Option<f64>,
    #[serde(default)]
    pub access_groups: Vec<String>,
    /// The rest of `model_info`, kept as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct ModelRequest {
    /// The public model name clients ask for (not blank).
    #[schema(
        pattern = "^[^\\u0000]*[^\\u0000\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000]*$"
    )]
    pub model_name: String,
    pub litellm_params: LitellmParams,
    #[serde(default)]
    pub model_info: ModelInfoIn,
}

/// `/model/update`'s body: a [`ModelRequest`] whose `model_info.id` names the deployment.
pub struct UpdateModelRequest;

impl PartialSchema for UpdateModelRequest {
    fn schema() -> RefOr<Schema> {
        let id = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1));
        AllOfBuilder::new()
            .item(Ref::from_schema_name(ModelRequest::name()))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .required("model_info")
                    .property(
                        "model_info",
                        ObjectBuilder::new()
                            .schema_type(Type::Object)
                            .required("id")
                            .property("id", id),
                    ),
            )
            .into()
    }
}

impl ToSchema for UpdateModelRequest {}

/// `litellm_params.model` as the compiler reads it: a known `<provider>/` prefix and a
/// model, or a bare model name.
fn model_schema() -> Object {
    let prefixes = known_prefixes().join("|");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(
            "^(?:[^/\\u0000]+|(?:{prefixes})/[^\\u0000]+)$"
        )))
        .description(Some(format!(
            "`provider/model` (`openai/gpt-4o`, `azure/my-deployment`, \
             `anthropic/claude-sonnet-4`; providers: {}), or a bare name (`claude-*` is \
             Anthropic's, others OpenAI's).",
            known_prefixes().join(", ")
        )))
        .build()
}

/// An `api_base` the compiler takes: an http(s) URL with a host. (The compiler takes any
/// URL `http::Uri` reads; the spec names the plain ones: a port of at most 4 digits,
/// unreserved characters in the path.)
const API_BASE: &str = "^https?://[A-Za-z0-9.-]+(?::[0-9]{1,4})?(?:/[A-Za-z0-9._~/-]*)?$";

/// What the compiler requires of `litellm_params` beyond each field's own schema, as JSON
/// Schema conditions (utoipa derives none): unless the deployment is a mock
/// (`mock_response` given, or a `mock/` model), `api_base` is an http(s) URL, providers
/// without a default base need one, and Azure needs an `api_version`.
pub fn litellm_conditions() -> Extensions {
    let baseless: Vec<&str> = known_prefixes()
        .into_iter()
        .filter(|p| *p != "mock")
        .filter(|p| parse_model(&format!("{p}/m")).is_ok_and(|m| m.default_api_base.is_none()))
        .collect();
    let needs = |prefixes: &str, field: &str| {
        json!({
            "if": {"properties": {"model": {"pattern": format!("^(?:{prefixes})/")}}},
            "then": {"required": [field], "properties": {field: {"type": "string"}}},
        })
    };
    let mut conditions = Extensions::default();
    conditions.extend([
        (
            "if".to_owned(),
            json!({"anyOf": [
                {"required": ["mock_response"], "properties": {"mock_response": {"type": "string"}}},
                {"properties": {"model": {"pattern": "^mock/"}}},
            ]}),
        ),
        (
            "else".to_owned(),
            json!({
                "properties": {"api_base": {"pattern": API_BASE}},
                "allOf": [needs(&baseless.join("|"), "api_base"), needs("azure", "api_version")],
            }),
        ),
    ]);
    conditions
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
pub struct DeleteModelRequest {
    /// The deployment id (`model_info.id`).
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParamsObject {
    /// `provider/model`.
    pub model: String,
    pub api_base: Option<String>,
    pub api_version: Option<String>,
    pub timeout: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub weight: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InfoObject {
    pub id: String,
    /// Added through this API (true) or from config.yaml (false).
    pub db_model: bool,
    pub mode: Option<String>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub access_groups: Vec<String>,
    /// The rest of `model_info`, as given.
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelObject {
    pub model_name: String,
    pub litellm_params: ParamsObject,
    pub model_info: InfoObject,
}

impl From<pb::ModelResponse> for ModelObject {
    fn from(m: pb::ModelResponse) -> Self {
        let d = m.deployment.unwrap_or_default();
        let info = d.model_info.unwrap_or_default();
        Self {
            model_name: d.model_name,
            litellm_params: ParamsObject {
                model: format!("{}/{}", d.provider, d.upstream_model),
                api_base: Some(d.api_base).filter(|b| !b.is_empty()),
                api_version: d.api_version,
                timeout: d.timeout_seconds,
                rpm: d.rpm,
                tpm: d.tpm,
                weight: d.weight,
            },
            model_info: InfoObject {
                id: d.id,
                db_model: m.source == "api",
                mode: info.mode,
                max_input_tokens: info.max_input_tokens,
                max_output_tokens: info.max_output_tokens,
                input_cost_per_token: info.input_cost_per_token,
                output_cost_per_token: info.output_cost_per_token,
                access_groups: info.access_groups,
                extra: object(&info.extra_json),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SavedModel {
    #[serde(flatten)]
    pub model: ModelObject,
    /// Parts of the request that were ignored.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeleteModelResponse {
    pub deleted: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelInfoQuery {
    /// One deployment by id.
    pub litellm_model_id: Option<String>,
}

/// Saves a body, forwarded as given so the control plane compiles it like a config entry
/// and reports unknown keys.
async fn save(
    state: &AppState,
    caller: Caller,
    body: Forwarded<ModelRequest>,
    create: bool,
) -> ApiResult<Json<SavedModel>> {
    let has_id = body
        .read
        .model_info
        .id
        .as_ref()
        .is_some_and(|i| !i.is_empty());
    if !create && !has_id {
        return Err(ApiError::bad_request("`model_info.id` is required").param("model_info.id"));
    }
    let request = pb::UpsertModelRequest {
        actor: Some(caller.actor),
        deployment: None,
        litellm_json: Some(body.json.to_string()),
    };
    let mut cp = state.cp.clone();
    let out = if create {
        cp.add_model(request).await
    } else {
        cp.update_model(request).await
    }?
    .into_inner();
    let warnings = out.warnings.clone();
    Ok(Json(SavedModel {
        model: out.into(),
        warnings,
    }))
}

/// Add a deployment.
#[utoipa::path(post, path = "/model/new", tag = "models", request_body = ModelRequest,
    responses((status = 200, description = "The deployment, without its API key", body = SavedModel)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn new(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Forwarded<ModelRequest>,
) -> ApiResult<Json<SavedModel>> {
    save(&state, caller, body, true).await
}

/// Replace a deployment (named by `model_info.id`); an absent `api_key` keeps the stored
/// one.
#[utoipa::path(post, path = "/model/update", tag = "models", request_body = UpdateModelRequest,
    responses((status = 200, description = "The deployment, without its API key", body = SavedModel)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    body: Forwarded<ModelRequest>,
) -> ApiResult<Json<SavedModel>> {
    save(&state, caller, body, false).await
}

/// Delete a deployment.
#[utoipa::path(post, path = "/model/delete", tag = "models", request_body = DeleteModelRequest,
    responses((status = 200, description = "Deleted", body = DeleteModelResponse)),
    security(("api_key" = ["proxy_admin"])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<DeleteModelRequest>,
) -> ApiResult<Json<DeleteModelResponse>> {
    let out = state
        .cp
        .clone()
        .delete_model(pb::DeleteRequest {
            actor: Some(caller.actor),
            ids: vec![req.id],
        })
        .await?
        .into_inner();
    Ok(Json(DeleteModelResponse {
        deleted: out.deleted,
    }))
}

async fn list(state: &AppState, q: ModelInfoQuery) -> ApiResult<Json<ModelList>> {
    let out = state
        .cp
        .clone()
        .list_models(pb::ListRequest {
            page_size: 1000,
            ids: q.litellm_model_id.iter().cloned().collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let data: Vec<ModelObject> = out.models.into_iter().map(ModelObject::from).collect();
    if let (Some(id), true) = (&q.litellm_model_id, data.is_empty()) {
        return Err(ApiError::not_found(format!("deployment `{id}` not found")));
    }
    Ok(Json(ModelList { data }))
}

/// Deployments, without API keys.
#[utoipa::path(get, path = "/model/info", tag = "models", params(ModelInfoQuery),
    responses((status = 200, description = "Deployments", body = ModelList)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn info(
    State(state): State<Arc<AppState>>,
    Params(q): Params<ModelInfoQuery>,
) -> ApiResult<Json<ModelList>> {
    list(&state, q).await
}

/// Deployments, without API keys (LiteLLM's `/v1/model/info`).
#[utoipa::path(get, path = "/v1/model/info", tag = "models", params(ModelInfoQuery),
    responses((status = 200, description = "Deployments", body = ModelList)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn info_v1(
    State(state): State<Arc<AppState>>,
    Params(q): Params<ModelInfoQuery>,
) -> ApiResult<Json<ModelList>> {
    list(&state, q).await
}
