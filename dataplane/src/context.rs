//! Per-request context: what the request was, what served it, and how it ended. Filled by
//! the handlers, read by telemetry when the request is logged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use routeiq_proto::VirtualKey;

use crate::state::CompiledDeployment;

use crate::usage::Usage;

pub struct RequestCtx {
    pub start: Instant,
    pub request_id: String,
    /// Low-cardinality route label (`chat`, `messages`, ...).
    pub route: &'static str,
    /// The virtual key that authenticated the request (none for the master key).
    pub key: Option<Arc<VirtualKey>>,
    pub model: Option<String>,
    /// The deployment that served the request.
    pub deployment: Option<Arc<CompiledDeployment>>,
    pub status: u16,
    /// Whether the response header has gone out (errors after that cannot change it).
    pub response_started: bool,
    pub usage: Option<Usage>,
    /// Time spent waiting for the upstream (or the mock) to answer.
    pub upstream_latency: Option<Duration>,
    pub time_to_first_token: Option<Duration>,
    /// `error.type` of a failed request.
    pub error_type: Option<&'static str>,
    /// The key's rate-limit slot and token reservation, settled when the request is logged.
    pub admission: Option<crate::limits::Admission>,
    /// `x-ratelimit-*` headers for the response (keys with limits).
    pub rate_headers: Vec<(&'static str, String)>,
    /// The key's budget reservation, settled to the request's cost when it is logged.
    pub budget_hold: Option<crate::budgets::Hold>,
    /// The end user the request was made for (`user_header_name`, or the body's `user`).
    pub end_user: Option<String>,
    /// The serving deployment's hold (in flight, usage), settled when the request is logged.
    pub lease: Option<crate::routing::Lease>,
    /// Retries and fallback groups it took to serve the request.
    pub retries: u32,
    pub fallbacks: u32,
}

impl RequestCtx {
    /// Admits the request under its key's budget (`budgets`) and rate limits (`limits`)
    /// with its worst case, served by `d`; both holds last until the request is logged.
    pub async fn admit(
        &mut self,
        app: &crate::state::App,
        version: u64,
        d: &CompiledDeployment,
        worst: crate::limits::WorstCase,
    ) -> Result<(), crate::error::ApiError> {
        let Some(key) = self.key.as_deref() else {
            return Ok(());
        };
        let cost = d.prices.of(&Usage {
            input_tokens: worst.prompt,
            output_tokens: worst.completion,
            cached_input_tokens: 0,
        });
        self.budget_hold = app.budgets.admit(key, version, cost)?;
        if self
            .budget_hold
            .as_ref()
            .is_some_and(|h| h.over_soft_budget)
        {
            app.metrics.soft_budget_exceeded.inc();
        }
        match app.limiter.admit(key, worst.tokens()).await {
            Ok(Some(a)) => {
                self.rate_headers = a.headers.clone();
                self.admission = Some(a);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(refused) => {
                self.rate_headers = refused.headers;
                Err(refused.error)
            }
        }
    }

    /// What the request cost (USD): its usage at its deployment's prices, once both are
    /// known.
    pub fn cost(&self) -> Option<f64> {
        Some(self.deployment.as_ref()?.prices.of(self.usage.as_ref()?))
    }

    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            request_id: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
            route: "other",
            key: None,
            model: None,
            deployment: None,
            status: 0,
            response_started: false,
            usage: None,
            upstream_latency: None,
            time_to_first_token: None,
            error_type: None,
            admission: None,
            rate_headers: Vec::new(),
            budget_hold: None,
            end_user: None,
            lease: None,
            retries: 0,
            fallbacks: 0,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
