//! `routeiq-dataplane --config <config.yaml>` (standalone) or
//! `routeiq-dataplane --nats <url>` (attached to a control plane).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use routeiq_dataplane::attached::{self, report::Reporter};
use routeiq_dataplane::{server, state};
use routeiq_nats::NatsArgs;
use routeiq_proto::litellm as config;
use routeiq_service::tls::ServerTls;

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
    #[arg(
        long,
        env = "ROUTEIQ_CONFIG",
        conflicts_with = "url",
        required_unless_present = "url"
    )]
    config: Option<PathBuf>,
    #[command(flatten)]
    nats: NatsArgs,
    /// This data plane's id in usage events (default: host name and process id).
    #[arg(long, env = "ROUTEIQ_DATAPLANE_ID")]
    dataplane_id: Option<String>,
    /// Usage events held while NATS is unreachable; past this, new ones are dropped.
    #[arg(long, env = "ROUTEIQ_USAGE_BUFFER", default_value_t = 100_000)]
    usage_buffer: usize,
    /// Address to listen on.
    #[arg(long, env = "ROUTEIQ_LISTEN", default_value = "0.0.0.0:4000")]
    listen: SocketAddr,
    /// A second listener, plain HTTP, that serves only `GET /metrics`: for a scraper kept
    /// off the API port. LiteLLM's `PROMETHEUS_METRICS_PORT` (a port) sets it on 0.0.0.0
    /// when this is not given. `/metrics` stays on the API listener too.
    #[arg(long, env = "ROUTEIQ_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Worker threads (default: one per CPU).
    #[arg(long, env = "ROUTEIQ_THREADS")]
    threads: Option<usize>,
    /// Share rate limits and deployment health with the other data planes through this
    /// Redis (`redis://[:password@]host:port[/db]`); standalone, the config's
    /// `router_settings.redis_host` (`redis_port`, `redis_password`) is used when this is
    /// not given. Without either, limits and health are per data plane.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// CA (PEM) to verify a `rediss://` Redis with (default: the system's roots).
    #[arg(long, env = "REDIS_TLS_CA")]
    redis_tls_ca: Option<PathBuf>,
    /// LiteLLM's `model_prices_and_context_window.json` (or a file in its format): prices
    /// for models the deployments do not price themselves, before the built-in table.
    /// Read once at startup; nothing is fetched.
    #[arg(long, env = "ROUTEIQ_MODEL_PRICES")]
    model_prices: Option<PathBuf>,
    /// TLS for the listener (HTTPS), with mutual TLS when --tls-client-ca is given.
    #[command(flatten)]
    tls: routeiq_service::tls::ServerTlsArgs,
    /// Spawn the `stdio` MCP servers of the control plane's registry (whoever may change
    /// the registry may then run programs here). Standalone, the config file's always are.
    #[arg(long, env = "ROUTEIQ_MCP_STDIO")]
    mcp_stdio: bool,
    /// Check the config and exit.
    #[arg(long)]
    check: bool,
}

/// What outlives snapshot versions, with the operator's price file loaded.
fn lasting(args: &Args) -> Result<state::Lasting, ExitCode> {
    let prices = match &args.model_prices {
        None => Default::default(),
        Some(path) => match routeiq_dataplane::cost::PriceFile::load(path) {
            Ok(p) => {
                tracing::info!(path = %path.display(), models = p.len(), "model prices loaded");
                p
            }
            Err(e) => {
                eprintln!("routeiq-dataplane: {e}");
                return Err(ExitCode::from(2));
            }
        },
    };
    Ok(state::Lasting {
        prices: std::sync::Arc::new(prices),
        mcp_stdio: args.mcp_stdio || args.config.is_some(),
        ..Default::default()
    })
}

fn main() -> ExitCode {
    routeiq_service::tls::install_crypto_provider();
    routeiq_service::init_logging("info,pingora=warn");
    let args = Args::parse();
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let tls = match args.tls.load() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("routeiq-dataplane: TLS: {e}");
            return ExitCode::from(2);
        }
    };
    let listeners = match listeners(&args, tls) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match (&args.nats.url, &args.config) {
        (Some(url), _) => attached(&args, url, threads, listeners),
        (None, Some(path)) => standalone(&args, path, threads, listeners),
        (None, None) => {
            eprintln!("routeiq-dataplane: give --config (standalone) or --nats (attached)");
            ExitCode::from(2)
        }
    }
}

/// The listeners: the API's, and the metrics one when `--metrics-listen` or
/// `PROMETHEUS_METRICS_PORT` asks for it.
fn listeners(args: &Args, tls: Option<ServerTls>) -> Result<server::Listeners, ExitCode> {
    let port = std::env::var("PROMETHEUS_METRICS_PORT")
        .ok()
        .filter(|p| !p.trim().is_empty());
    let metrics = match (args.metrics_listen, port) {
        (Some(addr), _) => Some(addr),
        (None, None) => None,
        (None, Some(port)) => match port.trim().parse::<u16>() {
            Ok(port) => Some(SocketAddr::from(([0, 0, 0, 0], port))),
            Err(_) => {
                eprintln!(
                    "routeiq-dataplane: PROMETHEUS_METRICS_PORT must be a port, not {port:?}"
                );
                return Err(ExitCode::from(2));
            }
        },
    };
    if let Some(m) = metrics.filter(|m| m.port() == args.listen.port()) {
        eprintln!(
            "routeiq-dataplane: the metrics listener ({m}) needs a port of its own; the API listens on {}",
            args.listen
        );
        return Err(ExitCode::from(2));
    }
    Ok(server::Listeners {
        api: args.listen,
        tls,
        metrics,
    })
}

fn standalone(args: &Args, path: &Path, threads: usize, listeners: server::Listeners) -> ExitCode {
    let loaded = match config::load(path) {
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
    let lasting = match lasting(args) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let live = match state::LiveState::prepare(loaded.snapshot, &lasting) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("routeiq-dataplane: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{}: ok ({deployments} deployments)", path.display());
        return ExitCode::SUCCESS;
    }
    // Redis work (when configured) runs on a small runtime of its own, beside pingora's.
    let rt = match side_runtime("routeiq-redis") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _in_runtime = rt.enter();
    routeiq_service::telemetry::export_logs("routeiq-dataplane");
    let redis_url = args
        .redis_url
        .clone()
        .or_else(|| loaded.redis_url.as_ref().map(|u| u.expose().to_owned()));
    let shared = match redis_limits(
        redis_url.as_deref(),
        args.redis_tls_ca.as_deref(),
        &rt,
        &dataplane_id(args),
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let app = match state::App::new(live, None, shared) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("routeiq-dataplane: cannot set up metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    app.load().lasting().models.start(rt.handle());
    announce(&app, "standalone", &listeners, threads);
    server::run(app, listeners, threads)
}

/// The startup summary: what serves, from which snapshot, and which optional parts are on
/// (never a secret: no key, URL or credential).
fn announce(app: &state::App, mode: &'static str, listeners: &server::Listeners, threads: usize) {
    let live = app.load();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        mode,
        listen = %listeners.api,
        tls = listeners.tls.is_some(),
        metrics_listen = listeners.metrics.map(tracing::field::display),
        threads,
        snapshot = live.version,
        models = live.model_names.len(),
        deployments = live.deployment_count(),
        keys = live.keys.len(),
        routing_strategy = live.router_settings().routing_strategy.name(),
        redis = app.cooldowns.is_some(),
        otlp = app.spans.is_some(),
        otlp_metrics = app.genai_metrics.is_some(),
        otlp_logs = routeiq_service::telemetry::exporting_logs(),
        cache = live.cache.as_ref().map_or("off", |c| match (&c.kind, &c.semantic) {
            (_, Some(_)) => "semantic",
            (routeiq_proto::CacheKind::Local, None) => "local",
            (routeiq_proto::CacheKind::Redis, None) => "redis",
        }),
        mcp_servers = live.mcp.len(),
        "routeiq-dataplane serving"
    );
}

/// This data plane's id in usage events and in Redis: `--dataplane-id`, or host and pid.
fn dataplane_id(args: &Args) -> String {
    args.dataplane_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "dataplane".into());
        format!("{host}-{}", std::process::id())
    })
}

/// A one-thread runtime beside pingora's, for NATS and Redis work; it lives as long as
/// main.
fn side_runtime(name: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("routeiq-dataplane: cannot start the {name} runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Connects the shared rate limiter when a Redis URL is given (`--redis-url`, `REDIS_URL`,
/// or standalone the config's `router_settings.redis_*`). A Redis that is down at
/// startup is an error (a typo should not silently become per-data-plane limits); once
/// running, outages fall back to local shares.
fn redis_limits(
    url: Option<&str>,
    tls_ca: Option<&Path>,
    rt: &tokio::runtime::Runtime,
    id: &str,
) -> Result<Option<Arc<routeiq_dataplane::limits::shared::Shared>>, ExitCode> {
    let Some(url) = url else {
        return Ok(None);
    };
    match rt.block_on(routeiq_dataplane::limits::shared::Shared::connect(
        url, tls_ca, id,
    )) {
        Ok(s) => {
            tracing::info!("rate limits shared through Redis");
            Ok(Some(s))
        }
        Err(e) => {
            eprintln!("routeiq-dataplane: Redis ({}): {e}", redacted(url));
            Err(ExitCode::FAILURE)
        }
    }
}

/// A Redis URL without its password.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

fn attached(args: &Args, url: &str, threads: usize, listeners: server::Listeners) -> ExitCode {
    let id = dataplane_id(args);
    // NATS (and Redis) work runs on a runtime of its own, beside pingora's.
    let rt = match side_runtime("routeiq-nats") {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let _in_runtime = rt.enter();
    routeiq_service::telemetry::export_logs("routeiq-dataplane");
    let shared = match redis_limits(
        args.redis_url.as_deref(),
        args.redis_tls_ca.as_deref(),
        &rt,
        &id,
    ) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (client, reconnects) =
        match rt.block_on(args.nats.connect(url, &format!("routeiq-dataplane {id}"))) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("routeiq-dataplane: NATS: {e:#}");
                return ExitCode::FAILURE;
            }
        };
    let js = args.nats.jetstream(client.clone());
    tracing::info!(nats = url, dataplane_id = %id, "fetching the snapshot");
    let lasting = match lasting(args) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let stored = rt.block_on(attached::snapshot::bootstrap(&js, &lasting));
    let (reporter, events) = Reporter::new(&id, args.usage_buffer);
    let app = match state::App::new(
        stored.state,
        Some(state::Attached {
            nats: client.clone(),
            reporter,
        }),
        shared,
    ) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("routeiq-dataplane: cannot set up metrics: {e}");
            return ExitCode::FAILURE;
        }
    };
    app.load().lasting().models.start(rt.handle());
    rt.spawn(attached::snapshot::follow(
        js.clone(),
        Arc::clone(&app),
        stored.delta_seq,
        reconnects,
    ));
    if let Some(entries) = app.cache.share_semantic(id.clone()) {
        rt.spawn(attached::semantic::share(client.clone(), entries));
    }
    rt.spawn(attached::semantic::receive(
        client.clone(),
        Arc::clone(&app),
    ));
    rt.spawn(attached::report::publish(js, events, id, Arc::clone(&app)));
    announce(&app, "attached", &listeners, threads);
    server::run(app, listeners, threads)
}
