//! `routeiq-dataplane --config <config.yaml> [--listen <host:port>]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use routeiq_dataplane::{server, state};
use routeiq_proto::litellm as config;

// mimalloc: fewer cycles per allocation than glibc malloc on the request path and less
// fragmentation under many short-lived buffers (figures in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "routeiq-dataplane",
    version,
    about = "RouteIQ data plane: an OpenAI- and Anthropic-compatible LLM gateway"
)]
struct Args {
    /// LiteLLM-style config.yaml to serve from (standalone mode).
    #[arg(long, env = "ROUTEIQ_CONFIG")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "ROUTEIQ_LISTEN", default_value = "0.0.0.0:4000")]
    listen: SocketAddr,
    /// Worker threads (default: one per CPU).
    #[arg(long, env = "ROUTEIQ_THREADS")]
    threads: Option<usize>,
    /// Check the config and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROUTEIQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,pingora=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let loaded = match config::load(&args.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("routeiq-dataplane: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let deployments = loaded.snapshot.deployments.len();
    let live = match state::LiveState::prepare(loaded.snapshot) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("routeiq-dataplane: {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: ok ({deployments} deployments)", args.config.display());
        return ExitCode::SUCCESS;
    }
    let app = match state::App::new(live) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("routeiq-dataplane: cannot set up metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    tracing::info!(listen = %args.listen, deployments, threads, "routeiq-dataplane serving (standalone)");
    server::run(app, args.listen, threads)
}
