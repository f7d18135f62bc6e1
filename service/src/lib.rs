//! Process-level habits shared by `routeiq-dataplane`, `routeiq-controlplane` and
//! `routeiq-admin`: how they log, when they stop, and how their listeners serve TLS.

pub mod http;
#[cfg(feature = "s3")]
pub mod s3;
pub mod tls;

/// Logs to stderr with the `ROUTEIQ_LOG` filter (`default` when it is unset), in colour
/// only on a terminal.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROUTEIQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

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
