//! `routeiq-controlplane --database-url <url> [--config <config.yaml>]`
//!
//! Applies the migrations, imports the config if one is given, and reports the snapshot it
//! would distribute. (The long-running services, gRPC and NATS, are not built yet.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use routeiq_controlplane::{crypto::SecretBox, db, import, snapshot};

#[derive(Debug, Parser)]
#[command(
    name = "routeiq-controlplane",
    version,
    about = "RouteIQ control plane"
)]
struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// LiteLLM-style config.yaml to import at startup.
    #[arg(long, env = "ROUTEIQ_CONFIG")]
    config: Option<PathBuf>,
    /// Key that encrypts stored secrets (LiteLLM's LITELLM_SALT_KEY is read too).
    #[arg(long, env = "ROUTEIQ_SALT_KEY", hide_env_values = true)]
    salt_key: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ROUTEIQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("routeiq-controlplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let salt = args
        .salt_key
        .or_else(|| std::env::var("LITELLM_SALT_KEY").ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "set ROUTEIQ_SALT_KEY (or LITELLM_SALT_KEY): it encrypts stored secrets"
            )
        })?;
    let secrets = SecretBox::new(&salt);
    let pool = db::connect(&args.database_url).await?;
    db::migrate(&pool).await?;
    if let Some(path) = &args.config {
        let loaded = routeiq_proto::litellm::load(path)?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let r = import::import(
            &pool,
            &secrets,
            &loaded.snapshot,
            &path.display().to_string(),
        )
        .await?;
        tracing::info!(?r, "config imported");
    }
    let s = snapshot::build(&pool, &secrets).await?;
    tracing::info!(
        version = s.version,
        deployments = s.deployments.len(),
        keys = s.keys.len(),
        "snapshot ready"
    );
    Ok(())
}
