//! RouteIQ admin API: LiteLLM's management REST API (`/key/generate`, `/team/new`, ...) on
//! axum, documented by the OpenAPI spec it serves. It holds no state: every call goes to
//! the control plane over gRPC.
//!
//! - [`routes`]: one module per resource; [`auth`]: callers and roles, enforced from the
//!   spec's security requirements; [`openapi`]: the spec; [`client`]: the control-plane
//!   channel; [`error`]: OpenAI-shaped errors.
#![forbid(unsafe_code)]

use std::sync::Arc;

use axum::Router;

pub mod auth;
pub mod client;
pub mod error;
pub mod openapi;
pub mod routes;
use routeiq_proto::time;

/// What every handler shares.
pub struct AppState {
    pub cp: client::Grpc,
    pub access: auth::Access,
}

/// The whole service: routes, access checks, the spec at `/openapi.json` and the docs page
/// at `/docs`. Each routed call is served in a server span when `spans` has a tracer, and
/// its calls to the control plane carry that span's `traceparent`.
pub fn app(cp: client::Grpc, spans: routeiq_service::telemetry::ServerSpans) -> Router {
    let (router, spec) = openapi::router().split_for_parts();
    let spec = openapi::finish(spec);
    let state = Arc::new(AppState {
        cp,
        access: auth::Access::from_spec(&spec),
    });
    router
        .route_layer(axum::middleware::from_fn(routes::nul_free_uri))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .route_layer(spans)
        .with_state(state)
        .merge(utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", spec))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
}
