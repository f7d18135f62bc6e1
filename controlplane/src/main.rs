//! `routeiq-controlplane --database-url <url> --nats <url> [--config <config.yaml>]`
//!
//! Applies the migrations, imports the config if one is given, then serves: gRPC, the
//! health endpoints, snapshot publishing, usage ingestion and budget resets. `--once` stops
//! after the import.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use routeiq_controlplane::crypto::SecretBox;
use routeiq_controlplane::{
    db, grpc, health, import, ingest, nats, partitions, publisher, resets, skills, snapshot,
};
use routeiq_nats::NatsArgs;
use routeiq_service::telemetry::{Protocol, ServerSpans, Tracing};

#[derive(Debug, Parser)]
#[command(
    name = "routeiq-controlplane",
    version,
    about = "RouteIQ control plane"
)]
struct Args {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// LiteLLM-style config.yaml to import at startup.
    #[arg(long, env = "ROUTEIQ_CONFIG")]
    config: Option<PathBuf>,
    /// Key that encrypts stored secrets (LiteLLM's LITELLM_SALT_KEY is read too).
    #[arg(long, env = "ROUTEIQ_SALT_KEY", hide_env_values = true)]
    salt_key: Option<String>,
    #[command(flatten)]
    nats: NatsArgs,
    /// gRPC listen address.
    #[arg(long, env = "ROUTEIQ_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    grpc_listen: SocketAddr,
    /// Bearer token gRPC callers must present (none: no check; keep the port private).
    #[arg(long, env = "ROUTEIQ_GRPC_TOKEN", hide_env_values = true)]
    grpc_token: Option<String>,
    /// Health and metrics listen address.
    #[arg(long, env = "ROUTEIQ_HTTP_LISTEN", default_value = "127.0.0.1:4100")]
    http_listen: SocketAddr,
    /// Longest time between full snapshots while deltas flow (seconds).
    #[arg(long, default_value_t = 60.0)]
    snapshot_interval: f64,
    /// Also rewrite the full snapshot after this many deltas.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// The most bytes the `ROUTEIQ_USAGE` stream holds: data planes' usage events not yet
    /// ingested (while the control plane is away). Reserved in the NATS server's file store
    /// when the stream is created; an existing stream keeps its size.
    #[arg(long, env = "ROUTEIQ_USAGE_STREAM_BYTES", default_value_t = nats::USAGE_MAX_BYTES)]
    usage_stream_bytes: i64,
    /// How often due budgets are reset (seconds).
    #[arg(long, default_value_t = 30.0)]
    reset_interval: f64,
    /// `spend_logs` months created ahead of the current one.
    #[arg(long, default_value_t = 3)]
    spend_logs_months_ahead: u32,
    /// `spend_logs` months kept attached (the current one included); older ones are
    /// detached, left as tables to archive or drop. Default: all are kept.
    #[arg(long)]
    spend_logs_retention_months: Option<u32>,
    /// TLS for the gRPC and health listeners; `--tls-client-ca` makes gRPC callers (the
    /// admin API) present a certificate (mutual TLS), while health stays open to probes.
    #[command(flatten)]
    tls: routeiq_service::tls::ServerTlsArgs,
    /// Where skill bundles are stored (`s3://bucket[/prefix]`, credentials and endpoint from
    /// the standard AWS variables); without it `/v1/skills` is unavailable.
    #[arg(long, env = "ROUTEIQ_SKILL_STORE")]
    skill_store: Option<String>,
    /// How often skills are copied to Anthropic deployments that lack them (seconds);
    /// every skill change starts a round at once.
    #[arg(long, default_value_t = 30.0)]
    skill_sync_interval: f64,
    /// The Redis the data planes share (`redis://[:password@]host:port[/db]`): the response
    /// cache's `/cache/*` operations reach it from here.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Migrate and import, then exit.
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    routeiq_service::tls::install_crypto_provider();
    routeiq_service::init_logging("info");
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("routeiq-controlplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("--{name}: {e}"))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let salt = args
        .salt_key
        .clone()
        .or_else(|| std::env::var("LITELLM_SALT_KEY").ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "set ROUTEIQ_SALT_KEY (or LITELLM_SALT_KEY): it encrypts stored secrets"
            )
        })?;
    let secrets = Arc::new(SecretBox::new(&salt));
    let pool = db::connect(&args.database_url).await?;
    db::migrate(&pool).await?;
    if let Some(path) = &args.config {
        let loaded = routeiq_proto::litellm::load(path)?;
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let r = import::import(&pool, &secrets, &loaded, &path.display().to_string()).await?;
        tracing::info!(?r, "config imported");
    }
    let s = snapshot::build(&pool, &secrets).await?;
    tracing::info!(
        version = s.version,
        deployments = s.deployments.len(),
        keys = s.keys.len(),
        "snapshot ready"
    );
    if args.once {
        return Ok(());
    }

    let url = args
        .nats
        .url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--nats (ROUTEIQ_NATS_URL) is required"))?;
    let tracing = Tracing::from_env("routeiq-controlplane");
    routeiq_service::telemetry::export_logs("routeiq-controlplane");
    let (client, reconnects) = args.nats.connect(url, "routeiq-controlplane").await?;
    let streams = Arc::new(
        nats::ensure(
            args.nats.jetstream(client.clone()),
            args.usage_stream_bytes.max(1024 * 1024),
        )
        .await?,
    );
    let registry = prometheus::Registry::new();
    let pub_status = publisher::Status::new(&registry)?;
    let ingest_status = ingest::Status::new(&registry)?;
    let reset_status = resets::Status::new(&registry)?;

    tokio::spawn(publisher::run(
        pool.clone(),
        Arc::clone(&secrets),
        Arc::clone(&streams),
        publisher::Config {
            snapshot_interval: seconds("snapshot-interval", args.snapshot_interval)?,
            snapshot_every: args.snapshot_every.max(1),
            ..publisher::Config::default()
        },
        pub_status.clone(),
        reconnects.clone(),
    ));
    tokio::spawn(ingest::run(
        pool.clone(),
        Arc::clone(&streams),
        ingest::Config {
            tracer: tracing.as_ref().map(|t| t.tracer().clone()),
            ..ingest::Config::default()
        },
        ingest_status,
        reconnects,
    ));
    tokio::spawn(partitions::run(
        pool.clone(),
        partitions::Policy {
            ahead: args.spend_logs_months_ahead,
            retention: args.spend_logs_retention_months,
        },
    ));
    tokio::spawn(resets::run(
        pool.clone(),
        seconds("reset-interval", args.reset_interval)?,
        reset_status,
    ));

    let health = health::router(health::Health::new(
        pool.clone(),
        client,
        pub_status,
        registry,
    )?);
    let tls = args.tls.load()?;
    let health_tls = tls.as_ref().map(|t| t.server_config(false)).transpose()?;
    let http_listen = args.http_listen;
    tokio::spawn(async move {
        if let Err(e) = routeiq_service::http::serve(http_listen, health, health_tls).await {
            tracing::error!(error = %e, listen = %http_listen, "health server stopped");
        }
    });

    let skills = match &args.skill_store {
        Some(uri) => {
            let skills = skills::Skills::new(
                skills::objects::Objects::new(uri)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?,
            );
            tokio::spawn(skills::sync::run(
                pool.clone(),
                Arc::clone(&secrets),
                Arc::clone(&skills),
                seconds("skill-sync-interval", args.skill_sync_interval)?,
            ));
            Some(skills)
        }
        None => None,
    };
    let redis = args
        .redis_url
        .as_deref()
        .map(routeiq_controlplane::cache::Redis::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--redis-url: {e}"))?;
    let redis_on = redis.is_some();
    let service = grpc::Service {
        pool,
        secrets,
        skills,
        redis,
    };
    let token: Option<Arc<str>> = args.grpc_token.as_deref().map(Arc::from);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        grpc = %args.grpc_listen,
        http = %args.http_listen,
        tls = args.tls.cert.is_some(),
        mtls = args.tls.client_ca.is_some(),
        grpc_token = token.is_some(),
        redis = redis_on,
        otlp = tracing.is_some(),
        otlp_logs = routeiq_service::telemetry::exporting_logs(),
        "routeiq-controlplane serving"
    );
    // Skill uploads carry bundles of up to 8 MiB.
    let grpc = tonic::transport::Server::builder()
        .layer(ServerSpans::new(tracing.as_ref(), Protocol::Grpc))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            grpc::ControlPlaneServer::new(service)
                .max_decoding_message_size(grpc::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(grpc::MAX_MESSAGE_BYTES),
            grpc::check_token(token),
        ));
    match tls {
        None => {
            grpc.serve_with_shutdown(args.grpc_listen, routeiq_service::shutdown_signal())
                .await?
        }
        Some(tls) => {
            // gRPC is HTTP/2 only.
            let mut config = tls.server_config(true)?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            let listener = tokio::net::TcpListener::bind(args.grpc_listen).await?;
            grpc.serve_with_incoming_shutdown(
                routeiq_service::tls::incoming(listener, Arc::new(config)),
                routeiq_service::shutdown_signal(),
            )
            .await?
        }
    }
    routeiq_service::telemetry::flush_all(tracing.as_ref(), None);
    Ok(())
}
