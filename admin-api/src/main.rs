//! `routeiq-admin`: the admin API server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "RouteIQ admin API: LiteLLM-compatible management REST over the control plane's gRPC API"
)]
struct Args {
    /// Address to serve HTTP on.
    #[arg(long, env = "ROUTEIQ_ADMIN_LISTEN", default_value = "0.0.0.0:4001")]
    listen: SocketAddr,
    /// The control plane's gRPC URL.
    #[arg(
        long,
        env = "ROUTEIQ_CONTROLPLANE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    controlplane: String,
    /// Bearer token the control plane requires (its --grpc-token).
    #[arg(long, env = "ROUTEIQ_GRPC_TOKEN", hide_env_values = true)]
    grpc_token: Option<String>,
    /// Deadline of each control-plane call, in milliseconds; past it the request gets 503.
    #[arg(long, env = "ROUTEIQ_ADMIN_TIMEOUT_MS", default_value_t = 5000)]
    timeout_ms: u64,
    /// Print the OpenAPI document and exit.
    #[arg(long)]
    print_openapi: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.print_openapi {
        println!("{}", routeiq_admin::openapi::spec().to_pretty_json()?);
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROUTEIQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cp = routeiq_admin::client::connect(
        &args.controlplane,
        args.grpc_token.as_deref(),
        Duration::from_millis(args.timeout_ms.max(1)),
    )?;
    let app = routeiq_admin::app(cp);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, controlplane = %args.controlplane, "admin API serving");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
