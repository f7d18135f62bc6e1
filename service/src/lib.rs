//! Process-level habits shared by `routeiq-dataplane`, `routeiq-controlplane` and
//! `routeiq-admin`: how they log and trace, when they stop, and how their listeners serve TLS.

pub mod http;
#[cfg(feature = "s3")]
pub mod s3;
pub mod telemetry;
pub mod tls;

pub use telemetry::init_logging;

/// Resolves on Ctrl-C or SIGTERM, the signal container runtimes and systemd stop a
/// service with. A process that ignored SIGTERM would be killed after the grace period
/// instead of finishing its requests.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
