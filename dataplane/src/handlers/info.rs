//! `/v1/models`, health and metrics.

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::json;

use crate::context::RequestCtx;
use crate::error::ApiError;
use crate::respond;
use crate::state::{App, LiveState};

fn write_failed(e: pingora::BError) -> ApiError {
    tracing::debug!(error = %e, "client went away");
    ApiError::internal("client went away")
}

pub async fn models(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), ApiError> {
    let created = crate::clock::now_secs().saturating_sub(app.started.elapsed().as_secs());
    // A key sees the models it may call.
    let data: Vec<_> = live
        .model_names
        .iter()
        .filter(|name| {
            ctx.key
                .as_deref()
                .is_none_or(|k| crate::access::refused_by(live, k, name).is_none())
        })
        .map(|name| {
            let owner = live
                .group(name)
                .and_then(|g| g.deployments.first())
                .map(|d| d.deployment.provider.as_str())
                .unwrap_or("routeiq");
            json!({"id": name, "object": "model", "created": created, "owned_by": owner})
        })
        .collect();
    let body = json!({"object": "list", "data": data}).to_string();
    respond::json(session, ctx, &[], Bytes::from(body))
        .await
        .map_err(write_failed)
}

pub async fn liveliness(session: &mut Session, ctx: &mut RequestCtx) -> Result<(), ApiError> {
    respond::json(session, ctx, &[], Bytes::from_static(b"\"I'm alive!\""))
        .await
        .map_err(write_failed)
}

/// Ready whenever a snapshot is loaded: in attached mode the data plane keeps serving from
/// its last snapshot while NATS or the control plane is down, and says so here.
pub async fn readiness(
    app: &App,
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), ApiError> {
    let (mode, nats) = match &app.attached {
        None => ("standalone", None),
        Some(a) => (
            "attached",
            Some(matches!(
                a.nats.connection_state(),
                async_nats::connection::State::Connected
            )),
        ),
    };
    let body = json!({
        "status": "healthy",
        "mode": mode,
        "nats": nats.map(|c| if c { "connected" } else { "disconnected" }),
        "snapshot_version": live.version,
        "models": live.model_names.len(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    respond::json(session, ctx, &[], crate::json::bytes(&body))
        .await
        .map_err(write_failed)
}

pub async fn metrics(
    app: &App,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), ApiError> {
    let body = Bytes::from(app.metrics.render());
    respond::full(session, ctx, 200, "text/plain; version=0.0.4", &[], body)
        .await
        .map_err(write_failed)
}

/// The learned strategies' routing models: version, hash, source, last check, last
/// reload, last error.
pub async fn hot_reload(
    live: &LiveState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<(), ApiError> {
    let body = live.lasting().models.status().to_string();
    respond::json(session, ctx, &[], Bytes::from(body))
        .await
        .map_err(write_failed)
}
