//! `GET /health/liveliness` (the process is up) and `GET /health/readiness` (PostgreSQL
//! answers and NATS is connected), LiteLLM's paths; plus `/metrics` counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use sqlx::PgPool;

use crate::{ingest, publisher};

#[derive(Clone)]
pub struct Health {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub publisher: Arc<publisher::Status>,
    pub ingest: Arc<ingest::Status>,
}

pub fn router(h: Health) -> Router {
    Router::new()
        .route("/health/liveliness", get(liveliness))
        .route("/health/liveness", get(liveliness))
        .route("/health/readiness", get(readiness))
        .route("/metrics", get(metrics))
        .with_state(h)
}

async fn liveliness() -> &'static str {
    "I'm alive!"
}

async fn readiness(State(h): State<Health>) -> impl IntoResponse {
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&h.pool),
    )
    .await
    .map(|r| r.is_ok())
    .unwrap_or(false);
    let nats = matches!(
        h.nats.connection_state(),
        async_nats::connection::State::Connected
    );
    let ok = db && nats;
    let body = json!({
        "status": if ok { "healthy" } else { "unhealthy" },
        "db": if db { "connected" } else { "unreachable" },
        "nats": if nats { "connected" } else { "disconnected" },
        "publisher_leader": h.publisher.leader.load(Ordering::Relaxed),
        "published_version": h.publisher.published_version.load(Ordering::Relaxed),
        "snapshot_version": h.publisher.snapshot_version.load(Ordering::Relaxed),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(h): State<Health>) -> String {
    let p = &h.publisher;
    let i = &h.ingest;
    format!(
        "# TYPE routeiq_controlplane_published_version gauge\n\
         routeiq_controlplane_published_version {}\n\
         # TYPE routeiq_controlplane_snapshot_version gauge\n\
         routeiq_controlplane_snapshot_version {}\n\
         # TYPE routeiq_usage_events_ingested_total counter\n\
         routeiq_usage_events_ingested_total {}\n\
         # TYPE routeiq_usage_events_duplicate_total counter\n\
         routeiq_usage_events_duplicate_total {}\n\
         # TYPE routeiq_usage_events_rejected_total counter\n\
         routeiq_usage_events_rejected_total {}\n",
        p.published_version.load(Ordering::Relaxed),
        p.snapshot_version.load(Ordering::Relaxed),
        i.ingested.load(Ordering::Relaxed),
        i.duplicates.load(Ordering::Relaxed),
        i.rejected.load(Ordering::Relaxed),
    )
}
