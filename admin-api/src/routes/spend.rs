//! Spend: `/spend/logs`, `/global/spend`, `/global/spend/report`, and the top spenders by
//! key, team and model (`/global/spend/keys`, `/global/spend/teams`,
//! `/global/spend/models`). Admins and viewers read them.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use routeiq_proto::wire::pb;
use routeiq_proto::KeyHash;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{count_param, date_ms, non_empty, Date, Params, DEFAULT_PAGE_SIZE, MAX_PAGE};
use crate::error::ApiResult;
use crate::time;
use crate::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SpendLogsQuery {
    /// A key or its token.
    pub api_key: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    /// The model name clients asked for.
    pub model: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), inclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub start_date: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), exclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub end_date: Option<String>,
    #[param(minimum = 1, maximum = 1000000)]
    pub page: Option<u32>,
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u32>,
}

/// One request, as LiteLLM's spend logs name its columns.
#[derive(Debug, Serialize, ToSchema)]
#[allow(non_snake_case)]
pub struct SpendLogObject {
    pub request_id: String,
    /// The key's token.
    pub api_key: Option<String>,
    pub spend: f64,
    pub total_tokens: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(rename = "startTime")]
    pub start_time: String,
    #[serde(rename = "endTime")]
    pub end_time: String,
    pub model: String,
    pub model_group: String,
    /// The deployment that served it.
    pub model_id: String,
    pub custom_llm_provider: String,
    pub user: Option<String>,
    pub team_id: Option<String>,
    /// The HTTP status returned to the client.
    pub status: u32,
    pub latency_ms: u64,
    pub dataplane_id: String,
    /// The end user the request was made for (`user_header_name`, or the body's `user`).
    pub end_user: Option<String>,
    /// Answered from the response cache (its spend is 0).
    pub cache_hit: bool,
    /// A cache hit's: what the cached answer cost when it was made (USD).
    pub saved_cost: f64,
    /// The learned router version that decided (its artifact manifest's SHA-256), null
    /// when no learned model decided.
    pub router_sha256: Option<String>,
    /// `serving`, or `ab` when the A/B version decided.
    pub router_arm: Option<String>,
    /// The candidate the learned router chose.
    pub router_candidate: Option<String>,
    /// The shadow version (its manifest's SHA-256) and what it would have chosen; never
    /// acted on.
    pub shadow_sha256: Option<String>,
    pub shadow_candidate: Option<String>,
}

impl From<pb::SpendLog> for SpendLogObject {
    fn from(l: pb::SpendLog) -> Self {
        let start_ms = l.started_at_ms;
        let end_ms = start_ms.saturating_add(i64::try_from(l.latency_ms).unwrap_or(i64::MAX));
        Self {
            request_id: l.request_id,
            api_key: non_empty(l.key_hash),
            spend: l.cost,
            total_tokens: l.prompt_tokens + l.completion_tokens,
            prompt_tokens: l.prompt_tokens,
            completion_tokens: l.completion_tokens,
            start_time: time::iso(start_ms.div_euclid(1000)),
            end_time: time::iso(end_ms.div_euclid(1000)),
            model: l.model_group.clone(),
            model_group: l.model_group,
            model_id: l.deployment_id,
            custom_llm_provider: l.provider,
            user: non_empty(l.user_id),
            team_id: non_empty(l.team_id),
            status: l.status,
            latency_ms: l.latency_ms,
            dataplane_id: l.dataplane_id,
            end_user: non_empty(l.end_user),
            cache_hit: l.cache_hit,
            saved_cost: l.saved_cost,
            router_sha256: non_empty(l.router_sha256),
            router_arm: non_empty(l.router_arm),
            router_candidate: non_empty(l.router_candidate),
            shadow_sha256: non_empty(l.shadow_sha256),
            shadow_candidate: non_empty(l.shadow_candidate),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), inclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub start_date: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), exclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub end_date: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Day,
    Team,
    #[serde(alias = "key")]
    ApiKey,
    #[serde(alias = "customer")]
    User,
    Model,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), inclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub start_date: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), exclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub end_date: Option<String>,
    /// Default: `day`.
    pub group_by: Option<GroupBy>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TopQuery {
    /// How many (default 10).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), inclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub start_date: Option<String>,
    /// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC), exclusive; empty: no bound.
    #[param(value_type = Option<Date>, inline)]
    pub end_date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GlobalSpend {
    /// USD, over every request recorded.
    pub spend: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReportRow {
    /// The day (`YYYY-MM-DD`), team id, key token, user id or model name.
    pub group: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub spend: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpendReport {
    pub group_by: String,
    pub rows: Vec<ReportRow>,
    pub total_spend: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeySpend {
    /// The key's token.
    pub api_key: String,
    pub total_spend: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamSpend {
    pub team_id: String,
    pub total_spend: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelSpend {
    pub model: String,
    pub total_spend: f64,
}

pub(super) fn range(start: Option<&str>, end: Option<&str>) -> ApiResult<pb::SpendFilter> {
    Ok(pb::SpendFilter {
        since_ms: date_ms("start_date", start)?,
        until_ms: date_ms("end_date", end)?,
        ..Default::default()
    })
}

/// A key given as itself or as its token → its token.
fn token(key: String) -> String {
    super::keys::as_token(&key).unwrap_or_else(|| KeyHash::of(&key).to_hex())
}

async fn report_rows(
    state: &AppState,
    filter: pb::SpendFilter,
    group: pb::SpendGroup,
) -> ApiResult<pb::SpendReportResponse> {
    Ok(state
        .cp
        .clone()
        .spend_report(pb::SpendReportRequest {
            filter: Some(filter),
            group_by: group as i32,
        })
        .await?
        .into_inner())
}

/// Requests with their cost, newest first.
#[utoipa::path(get, path = "/spend/logs", tag = "spend", params(SpendLogsQuery),
    responses((status = 200, description = "Spend logs", body = Vec<SpendLogObject>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Params(q): Params<SpendLogsQuery>,
) -> ApiResult<Json<Vec<SpendLogObject>>> {
    let mut filter = range(q.start_date.as_deref(), q.end_date.as_deref())?;
    filter.key_hash = q.api_key.map(token);
    filter.user_id = q.user_id;
    filter.team_id = q.team_id;
    filter.model_group = q.model;
    let out = state
        .cp
        .clone()
        .list_spend_logs(pb::SpendQuery {
            filter: Some(filter),
            page: count_param("page", q.page, 1, MAX_PAGE)?,
            page_size: count_param("page_size", q.page_size, DEFAULT_PAGE_SIZE, 1000)?,
        })
        .await?
        .into_inner();
    Ok(Json(out.logs.into_iter().map(Into::into).collect()))
}

/// Total spend.
#[utoipa::path(get, path = "/global/spend", tag = "spend",
    responses((status = 200, description = "Total spend", body = GlobalSpend)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn global(State(state): State<Arc<AppState>>) -> ApiResult<Json<GlobalSpend>> {
    let out = report_rows(&state, pb::SpendFilter::default(), pb::SpendGroup::Day).await?;
    Ok(Json(GlobalSpend {
        spend: out.total_spend,
    }))
}

/// Spend over whole UTC days, grouped by day, team, key, user or model.
#[utoipa::path(get, path = "/global/spend/report", tag = "spend", params(ReportQuery),
    responses((status = 200, description = "The report", body = SpendReport)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn report(
    State(state): State<Arc<AppState>>,
    Params(q): Params<ReportQuery>,
) -> ApiResult<Json<SpendReport>> {
    let by = q.group_by.unwrap_or(GroupBy::Day);
    let (group, name) = match by {
        GroupBy::Day => (pb::SpendGroup::Day, "day"),
        GroupBy::Team => (pb::SpendGroup::Team, "team"),
        GroupBy::ApiKey => (pb::SpendGroup::Key, "api_key"),
        GroupBy::User => (pb::SpendGroup::User, "user"),
        GroupBy::Model => (pb::SpendGroup::Model, "model"),
    };
    let filter = range(q.start_date.as_deref(), q.end_date.as_deref())?;
    let out = report_rows(&state, filter, group).await?;
    Ok(Json(SpendReport {
        group_by: name.into(),
        rows: out
            .rows
            .into_iter()
            .map(|r| ReportRow {
                group: r.group,
                requests: r.requests,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                spend: r.spend,
            })
            .collect(),
        total_spend: out.total_spend,
    }))
}

/// The groups with the highest spend, highest first.
async fn top(
    state: &AppState,
    q: TopQuery,
    group: pb::SpendGroup,
) -> ApiResult<Vec<pb::SpendReportRow>> {
    let limit = count_param("limit", q.limit, 10, 1000)?;
    let filter = range(q.start_date.as_deref(), q.end_date.as_deref())?;
    let mut rows = report_rows(state, filter, group).await?.rows;
    rows.sort_by(|a, b| b.spend.total_cmp(&a.spend));
    rows.truncate(limit as usize);
    Ok(rows)
}

/// Keys by spend.
#[utoipa::path(get, path = "/global/spend/keys", tag = "spend", params(TopQuery),
    responses((status = 200, description = "Top keys", body = Vec<KeySpend>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn keys(
    State(state): State<Arc<AppState>>,
    Params(q): Params<TopQuery>,
) -> ApiResult<Json<Vec<KeySpend>>> {
    let rows = top(&state, q, pb::SpendGroup::Key).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| KeySpend {
                api_key: r.group,
                total_spend: r.spend,
            })
            .collect(),
    ))
}

/// Teams by spend.
#[utoipa::path(get, path = "/global/spend/teams", tag = "spend", params(TopQuery),
    responses((status = 200, description = "Top teams", body = Vec<TeamSpend>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn teams(
    State(state): State<Arc<AppState>>,
    Params(q): Params<TopQuery>,
) -> ApiResult<Json<Vec<TeamSpend>>> {
    let rows = top(&state, q, pb::SpendGroup::Team).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| TeamSpend {
                team_id: r.group,
                total_spend: r.spend,
            })
            .collect(),
    ))
}

/// Models by spend.
#[utoipa::path(get, path = "/global/spend/models", tag = "spend", params(TopQuery),
    responses((status = 200, description = "Top models", body = Vec<ModelSpend>)),
    security(("api_key" = ["proxy_admin", "proxy_admin_viewer"])))]
pub async fn models(
    State(state): State<Arc<AppState>>,
    Params(q): Params<TopQuery>,
) -> ApiResult<Json<Vec<ModelSpend>>> {
    let rows = top(&state, q, pb::SpendGroup::Model).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| ModelSpend {
                model: r.group,
                total_spend: r.spend,
            })
            .collect(),
    ))
}
