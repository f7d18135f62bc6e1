//! The pingora service. Every request is answered in `request_filter` by the handlers, which
//! make their upstream calls through the pooled connector in `upstream`; this file only
//! wires pingora's hooks to those modules.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;
use routeiq_service::tls::ServerTls;

use crate::context::RequestCtx;
use crate::handlers;
use crate::state::App;

pub struct Gateway {
    app: Arc<App>,
}

impl Gateway {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.in_flight = Some(self.app.metrics.in_flight());
        handlers::handle(&self.app, session, ctx).await;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        no_peer()
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        // A cached answer uses no tokens of the key's limits.
        let tokens = match &ctx.usage {
            Some(u) if !ctx.cache_hit() => u.total(),
            _ => 0,
        };
        for a in ctx.admissions.drain(..) {
            a.settle(tokens);
        }
        let cost = ctx.cost().unwrap_or(0.0);
        for h in ctx.budget_holds.drain(..) {
            self.app.metrics.budget(&h.settle(cost), ctx.key.as_deref());
        }
        ctx.charge_holds.clear();
        if let Some(lease) = ctx.lease.take() {
            let served = ctx.status == 200 && ctx.error_type.is_none();
            lease.settle(
                ctx.usage.as_ref().map(crate::usage::Usage::total),
                ctx.upstream_latency.filter(|_| served),
                ctx.time_to_first_token,
            );
        }
        self.app.metrics.observe(ctx);
        if let Some(m) = &self.app.genai_metrics {
            m.record(ctx);
        }
        // The usage event carries the request's trace context, so that its ingestion in the
        // control plane joins the trace: its span, else the caller's.
        let trace = match (&self.app.attached, &ctx.span) {
            (None, _) => None,
            (Some(_), Some(span)) => Some(span.traceparent()),
            (Some(_), None) => ctx.traceparent.as_deref().cloned(),
        };
        if tracing::enabled!(target: "routeiq.request", tracing::Level::DEBUG) {
            log_request(ctx);
        }
        if let Some(spans) = &self.app.spans {
            spans.record(
                &mut *ctx,
                self.app.load().router_settings().routing_strategy.name(),
            );
        }
        if let Some(a) = &self.app.attached {
            a.reporter.record(ctx, trace, &self.app.metrics);
        }
    }
}

/// Unreachable: `request_filter` answers every request, so pingora never asks for a peer.
fn no_peer() -> Result<Box<HttpPeer>> {
    Error::e_explain(
        ErrorType::InternalError,
        "every request is answered in request_filter",
    )
}

/// The separate metrics listener: `GET /metrics` and nothing else; its scrapes are not
/// requests of the gateway (no metrics, spans or usage of their own). A service of its own,
/// so the gateway's request future stays what it was.
struct Scrape {
    app: Arc<App>,
}

#[async_trait]
impl ProxyHttp for Scrape {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        handlers::metrics_listener(&self.app, session, ctx).await;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        no_peer()
    }
}

/// The request's one structured line (target `routeiq.request`, level debug): ids and
/// trace (as fields, and as the OTLP log record's context), model group, deployment, key (alias and hash prefix), team, user, tokens, cost,
/// latency parts, cache, status and error class. Never content or a secret.
fn log_request(ctx: &RequestCtx) {
    // The request's span; without one, the caller's trace (and no span of ours).
    let own = ctx.span.as_ref().map(crate::otel::RouteSpan::traceparent);
    let trace_id = own
        .as_ref()
        .or(ctx.traceparent.as_deref())
        .map_or("", |t| t.trace_id.as_str());
    let span_id = own.as_ref().map_or("", |t| t.parent_id.as_str());
    // The request's span is the current context while the line is logged, so an OTLP log
    // record of it carries the trace and span.
    let _in_span = own.as_ref().map(|t| t.context().attach());
    let key = ctx.key.as_deref();
    let usage = ctx.usage.unwrap_or_default();
    let ms = |d: Option<std::time::Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1000.0);
    let total = ctx.start.elapsed();
    tracing::debug!(
        target: "routeiq.request",
        request_id = %ctx.request_id,
        trace_id,
        span_id,
        route = ctx.route,
        model_group = ctx.model.as_deref().unwrap_or(""),
        deployment = ctx.deployment.as_ref().map_or("", |d| d.deployment.id.0.as_str()),
        provider = ctx.deployment.as_ref().map_or("", |d| d.deployment.provider.as_str()),
        key_alias = key.map_or("", |k| k.alias.as_str()),
        key_hash = %key.map_or_else(String::new, |k| routeiq_proto::hex(&k.hash.0[..4])),
        team_id = key.map_or("", |k| k.team_id.as_str()),
        team_alias = key.map_or("", |k| k.team_alias.as_str()),
        user_id = key.map_or("", |k| k.user_id.as_str()),
        org_id = key.map_or("", |k| k.organization_id.as_str()),
        end_user = ctx.end_user.as_deref().unwrap_or(""),
        prompt_tokens = usage.input_tokens,
        completion_tokens = usage.output_tokens,
        cost = ctx.cost().unwrap_or(0.0),
        total_ms = total.as_secs_f64() * 1000.0,
        llm_api_ms = ms(ctx.upstream_latency),
        time_to_first_token_ms = ms(ctx.time_to_first_token),
        overhead_ms = ctx.upstream_latency.map_or(-1.0, |u| total.saturating_sub(u).as_secs_f64() * 1000.0),
        cache_hit = ctx.cache_hit(),
        status = ctx.status,
        error_class = ctx.error_type.unwrap_or(""),
        retries = ctx.retries,
        fallbacks = ctx.fallbacks,
        "request"
    );
}

/// Where the gateway listens.
pub struct Listeners {
    pub api: SocketAddr,
    /// HTTPS for the API listener, with its reloading certificate (and client certificate
    /// checks when it has a client CA).
    pub tls: Option<ServerTls>,
    /// A second, plain-HTTP listener that serves only `GET /metrics` (one thread).
    pub metrics: Option<SocketAddr>,
}

/// Runs the gateway until the process is told to stop, then sends what its requests queued
/// (usage events, spans, log records; [`App::finish`]) and exits. Never returns.
pub fn run(app: Arc<App>, listeners: Listeners, threads: usize) -> ! {
    let Listeners {
        api: listen,
        tls,
        metrics,
    } = listeners;
    let conf = ServerConf {
        threads: threads.max(1),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    if let Some(addr) = metrics {
        let mut scrape = http_proxy_service(
            &server.configuration,
            Scrape {
                app: Arc::clone(&app),
            },
        );
        scrape.threads = Some(1);
        scrape.add_tcp(&addr.to_string());
        server.add_service(scrape);
    }
    let mut service = http_proxy_service(&server.configuration, Gateway::new(Arc::clone(&app)));
    match tls {
        None => service.add_tcp(&listen.to_string()),
        Some(tls) => {
            // Files are not read here (the resolver serves the certificate).
            let mut settings = match TlsSettings::intermediate("", "") {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("routeiq-dataplane: TLS settings: {e}");
                    std::process::exit(2);
                }
            };
            settings.set_cert_resolver(tls.resolver);
            if let Some(verifier) = tls.client_verifier {
                settings.set_client_cert_verifier(verifier);
            }
            service.add_tls_with_settings(&listen.to_string(), None, settings);
        }
    }
    server.add_service(service);
    server.run(pingora::server::RunArgs::default());
    // Every request has been answered (or cut at the shutdown timeout): what they queued
    // for others goes out before the process ends.
    app.finish();
    std::process::exit(0)
}
