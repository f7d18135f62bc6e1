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
        handlers::handle(&self.app, session, ctx).await;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        // Unreachable: request_filter answers every request.
        Error::e_explain(
            ErrorType::InternalError,
            "every request is answered in request_filter",
        )
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
            h.settle(cost);
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
        if let Some(spans) = &self.app.spans {
            spans.record(
                &mut *ctx,
                self.app.load().router_settings().routing_strategy.name(),
            );
        }
        if let Some(a) = &self.app.attached {
            a.reporter.record(ctx, &self.app.metrics);
        }
        tracing::debug!(
            request_id = %ctx.request_id,
            route = ctx.route,
            model = ctx.model.as_deref().unwrap_or(""),
            status = ctx.status,
            elapsed_us = ctx.start.elapsed().as_micros() as u64,
            "request"
        );
    }
}

/// Runs the gateway until the process is told to stop. Never returns. With `tls`, the
/// listener serves HTTPS with its reloading certificate (and verifies client certificates
/// when it has a client CA).
pub fn run(app: Arc<App>, listen: SocketAddr, threads: usize, tls: Option<ServerTls>) -> ! {
    let conf = ServerConf {
        threads: threads.max(1),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = http_proxy_service(&server.configuration, Gateway::new(app));
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
    server.run_forever()
}
