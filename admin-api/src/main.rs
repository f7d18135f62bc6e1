//! `routeiq-admin`: the admin API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use routeiq_service::telemetry::{Protocol, ServerSpans, Tracing};

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
    /// CA (PEM) to verify the control plane's certificate with (an https:// URL).
    #[arg(long, env = "ROUTEIQ_CONTROLPLANE_CA")]
    controlplane_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a control plane that requires one (mutual TLS).
    #[arg(long, env = "ROUTEIQ_CONTROLPLANE_CERT", requires = "controlplane_key")]
    controlplane_cert: Option<PathBuf>,
    #[arg(long, env = "ROUTEIQ_CONTROLPLANE_KEY", requires = "controlplane_cert")]
    controlplane_key: Option<PathBuf>,
    #[command(flatten)]
    tls: routeiq_service::tls::ServerTlsArgs,
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
    routeiq_service::tls::install_crypto_provider();
    routeiq_service::init_logging("info");
    let cp = routeiq_admin::client::connect(
        &args.controlplane,
        args.grpc_token.as_deref(),
        Duration::from_millis(args.timeout_ms.max(1)),
        &routeiq_admin::client::ClientTls {
            ca: args.controlplane_ca.clone(),
            cert: args.controlplane_cert.clone(),
            key: args.controlplane_key.clone(),
        },
    )?;
    let tracing = Tracing::from_env("routeiq-admin");
    routeiq_service::telemetry::export_logs("routeiq-admin");
    let app = routeiq_admin::app(cp, ServerSpans::new(tracing.as_ref(), Protocol::Http));
    let tls = args
        .tls
        .load()?
        .map(|t| t.server_config(true))
        .transpose()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %args.listen,
        tls = tls.is_some(),
        controlplane = %args.controlplane,
        otlp = tracing.is_some(),
        otlp_logs = routeiq_service::telemetry::exporting_logs(),
        "admin API serving"
    );
    let served = routeiq_service::http::serve(args.listen, app, tls)
        .await
        .with_context(|| format!("cannot serve on {}", args.listen));
    routeiq_service::telemetry::flush_all(tracing.as_ref(), None);
    served
}
