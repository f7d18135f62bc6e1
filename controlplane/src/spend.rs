//! Spend queries: request logs (`spend_logs`) and reports from the daily aggregates
//! (`daily_spend`). Both use the time-leading indexes, so they stay fast as logs grow.

use routeiq_proto::KeyHash;
use sqlx::{PgPool, Row};

use crate::error::StoreError;
use crate::Page;

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub key_hash: Option<KeyHash>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub model_group: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub request_id: String,
    pub started_at_ms: i64,
    pub key_hash: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub model_group: String,
    pub deployment_id: String,
    pub provider: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost: f64,
    pub latency_ms: i64,
    pub status: i32,
    pub dataplane_id: String,
    pub end_user: Option<String>,
    /// Answered from the response cache.
    pub cache_hit: bool,
    /// A hit's: what the cached answer cost when it was made (USD).
    pub saved_cost: f64,
    /// The learned router that decided: its manifest sha256, arm and candidate.
    pub router_sha256: Option<String>,
    pub router_arm: Option<String>,
    pub router_candidate: Option<String>,
    /// The shadow version's choice, never acted on.
    pub shadow_sha256: Option<String>,
    pub shadow_candidate: Option<String>,
}

/// Newest first.
/// The filter's first four parameters, shared by both queries.
const DIMENSIONS: &str = "($1::bytea IS NULL OR key_hash = $1)
            AND ($2::text IS NULL OR team_id = $2)
            AND ($3::text IS NULL OR user_id = $3)
            AND ($4::text IS NULL OR model_group = $4)";

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the filter as parameters `$1..$6`.
fn bind<'q>(q: PgQuery<'q>, f: &'q Filter) -> PgQuery<'q> {
    q.bind(f.key_hash.map(|h| h.0.to_vec()))
        .bind(&f.team_id)
        .bind(&f.user_id)
        .bind(&f.model_group)
        .bind(f.since_ms)
        .bind(f.until_ms)
}

pub async fn logs(pool: &PgPool, f: &Filter, page: Page) -> Result<Vec<Log>, StoreError> {
    // DIMENSIONS is a constant.
    let sql = format!(
        "SELECT request_id, (EXTRACT(EPOCH FROM started_at) * 1000)::bigint AS started_at_ms,
                encode(key_hash, 'hex') AS key_hash, team_id, user_id, model_group,
                deployment_id, provider, prompt_tokens, completion_tokens, cost, latency_ms,
                status, dataplane_id, end_user, cache_hit, saved_cost, router_sha256,
                router_arm, router_candidate, shadow_sha256, shadow_candidate
           FROM spend_logs
          WHERE {DIMENSIONS}
            AND ($5::bigint IS NULL OR started_at >= to_timestamp($5 / 1000.0))
            AND ($6::bigint IS NULL OR started_at < to_timestamp($6 / 1000.0))
          ORDER BY started_at DESC, request_id
          LIMIT $7 OFFSET $8"
    );
    let rows = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), f)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Log {
                request_id: r.try_get("request_id")?,
                started_at_ms: r.try_get("started_at_ms")?,
                key_hash: r.try_get("key_hash")?,
                team_id: r.try_get("team_id")?,
                user_id: r.try_get("user_id")?,
                model_group: r.try_get("model_group")?,
                deployment_id: r.try_get("deployment_id")?,
                provider: r.try_get("provider")?,
                prompt_tokens: r.try_get("prompt_tokens")?,
                completion_tokens: r.try_get("completion_tokens")?,
                cost: r.try_get("cost")?,
                latency_ms: r.try_get("latency_ms")?,
                status: r.try_get("status")?,
                dataplane_id: r.try_get("dataplane_id")?,
                end_user: r.try_get("end_user")?,
                cache_hit: r.try_get("cache_hit")?,
                saved_cost: r.try_get("saved_cost")?,
                router_sha256: r.try_get("router_sha256")?,
                router_arm: r.try_get("router_arm")?,
                router_candidate: r.try_get("router_candidate")?,
                shadow_sha256: r.try_get("shadow_sha256")?,
                shadow_candidate: r.try_get("shadow_candidate")?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Day,
    Key,
    Team,
    User,
    Model,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub group: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub spend: f64,
}

/// Totals per group over whole UTC days (the bounds are truncated to their day).
pub async fn report(pool: &PgPool, f: &Filter, by: Group) -> Result<Vec<ReportRow>, StoreError> {
    let group = match by {
        Group::Day => "to_char(day, 'YYYY-MM-DD')",
        Group::Key => "encode(key_hash, 'hex')",
        Group::Team => "team_id",
        Group::User => "user_id",
        Group::Model => "model_group",
    };
    // `group` is one of the constant expressions above.
    let sql = format!(
        "SELECT {group} AS grp, sum(requests)::bigint AS requests,
                sum(prompt_tokens)::bigint AS prompt_tokens,
                sum(completion_tokens)::bigint AS completion_tokens, sum(spend) AS spend
           FROM daily_spend
          WHERE {DIMENSIONS}
            AND ($5::bigint IS NULL OR day >= (to_timestamp($5 / 1000.0) AT TIME ZONE 'UTC')::date)
            AND ($6::bigint IS NULL OR day <= (to_timestamp($6 / 1000.0) AT TIME ZONE 'UTC')::date)
          GROUP BY 1 ORDER BY spend DESC, 1"
    );
    let rows = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), f)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ReportRow {
                group: r.try_get("grp")?,
                requests: r.try_get("requests")?,
                prompt_tokens: r.try_get("prompt_tokens")?,
                completion_tokens: r.try_get("completion_tokens")?,
                spend: r.try_get("spend")?,
            })
        })
        .collect()
}

/// One agent's calls on one UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentDay {
    pub day: String,
    pub agent_id: String,
    pub requests: i64,
    pub successful: i64,
    pub spend: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// Calls to A2A agents (spend logs of provider `a2a`, whose deployment is the agent) per
/// UTC day and agent, within `[since_ms, until_ms)`, of `agent_ids` when not empty.
pub async fn agent_activity(
    pool: &PgPool,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    agent_ids: &[String],
) -> Result<Vec<AgentDay>, StoreError> {
    let rows = sqlx::query(
        "SELECT to_char((started_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day,
                deployment_id AS agent_id, count(*) AS requests,
                count(*) FILTER (WHERE status BETWEEN 200 AND 299) AS successful,
                sum(cost) AS spend, sum(prompt_tokens)::bigint AS prompt_tokens,
                sum(completion_tokens)::bigint AS completion_tokens
           FROM spend_logs
          WHERE provider = 'a2a'
            AND ($1::bigint IS NULL OR started_at >= to_timestamp($1 / 1000.0))
            AND ($2::bigint IS NULL OR started_at < to_timestamp($2 / 1000.0))
            AND (cardinality($3::text[]) = 0 OR deployment_id = ANY($3))
          GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(since_ms)
    .bind(until_ms)
    .bind(agent_ids)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AgentDay {
                day: r.try_get("day")?,
                agent_id: r.try_get("agent_id")?,
                requests: r.try_get("requests")?,
                successful: r.try_get("successful")?,
                spend: r.try_get("spend")?,
                prompt_tokens: r.try_get("prompt_tokens")?,
                completion_tokens: r.try_get("completion_tokens")?,
            })
        })
        .collect()
}
