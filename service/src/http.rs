//! Serving an axum router over HTTP or HTTPS (the admin API, the control plane's health
//! and metrics), until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

/// How long in-flight requests get after the stop signal.
const DRAIN: Duration = Duration::from_secs(10);

/// Binds `addr` (failing at once when it cannot) and serves `app` on it, with TLS when
/// `tls` is given, until the process is told to stop.
pub async fn serve(
    addr: SocketAddr,
    app: axum::Router,
    tls: Option<rustls::ServerConfig>,
) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let stop = handle.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        stop.graceful_shutdown(Some(DRAIN));
    });
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(config) => {
            axum_server::from_tcp_rustls(listener, RustlsConfig::from_config(Arc::new(config)))?
                .handle(handle)
                .serve(app)
                .await
        }
        None => {
            axum_server::from_tcp(listener)?
                .handle(handle)
                .serve(app)
                .await
        }
    }
}
