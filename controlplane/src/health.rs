//! `GET /health/liveliness` (the process is up) and `GET /health/readiness` (PostgreSQL
//! answers and NATS is connected), LiteLLM's paths; plus `GET /metrics`: the publisher's,
//! ingestion's and budget resets' metrics, and the database pool and NATS connection as
//! they are at the scrape.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use serde_json::json;
use sqlx::PgPool;

use crate::publisher;

#[derive(Clone)]
pub struct Health {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub publisher: publisher::Status,
    /// The other parts' metrics are registered here too.
    pub registry: Registry,
    scraped: Scraped,
}

/// Gauges read at each scrape.
#[derive(Clone)]
struct Scraped {
    /// Open connections, by `state`: `idle` or `in_use`.
    pool: IntGaugeVec,
    pool_max: IntGauge,
    nats: IntGauge,
}

impl Health {
    pub fn new(
        pool: PgPool,
        nats: async_nats::Client,
        publisher: publisher::Status,
        registry: Registry,
    ) -> prometheus::Result<Self> {
        let scraped = Scraped {
            pool: IntGaugeVec::new(
                Opts::new(
                    "routeiq_controlplane_db_pool_connections",
                    "Open PostgreSQL connections of the pool, by state",
                ),
                &["state"],
            )?,
            pool_max: IntGauge::new(
                "routeiq_controlplane_db_pool_max_connections",
                "The most connections the pool opens",
            )?,
            nats: IntGauge::new(
                "routeiq_controlplane_nats_connected",
                "1 while the NATS connection is up",
            )?,
        };
        registry.register(Box::new(scraped.pool.clone()))?;
        registry.register(Box::new(scraped.pool_max.clone()))?;
        registry.register(Box::new(scraped.nats.clone()))?;
        Ok(Self {
            pool,
            nats,
            publisher,
            registry,
            scraped,
        })
    }

    fn nats_connected(&self) -> bool {
        matches!(
            self.nats.connection_state(),
            async_nats::connection::State::Connected
        )
    }
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
    let nats = h.nats_connected();
    let ok = db && nats;
    let body = json!({
        "status": if ok { "healthy" } else { "unhealthy" },
        "db": if db { "connected" } else { "unreachable" },
        "nats": if nats { "connected" } else { "disconnected" },
        "publisher_leader": h.publisher.leader.get() == 1,
        "published_version": h.publisher.published_version.get(),
        "snapshot_version": h.publisher.snapshot_version.get(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    let size = i64::from(h.pool.size());
    let idle = h.pool.num_idle() as i64;
    h.scraped.pool.with_label_values(&["idle"]).set(idle);
    h.scraped
        .pool
        .with_label_values(&["in_use"])
        .set((size - idle).max(0));
    h.scraped
        .pool_max
        .set(i64::from(h.pool.options().get_max_connections()));
    h.scraped.nats.set(i64::from(h.nats_connected()));
    match TextEncoder::new().encode_to_string(&h.registry.gather()) {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            format!("metrics: {e}"),
        ),
    }
}
