//! What the data plane has seen of each deployment: requests in flight, latency, this
//! minute's usage and failures, and its circuit breaker. Kept per deployment id beside the
//! snapshot, so a snapshot swap keeps it; read by the strategies with atomic loads only.
//!
//! The breaker: *closed* (serving); *open* for `cooldown_time` once the deployment failed
//! more than its allowed fails in the current minute (a 429 or refused credentials open it
//! at once, as in LiteLLM); then *half-open*: one request at a time probes it, and the
//! probe's success closes it while its failure opens it again. Only the probe decides:
//! requests that were already in flight when the breaker opened do not close it. A probe
//! that never reports (its request was refused by a limit before it was sent) stops
//! counting after `cooldown_time`, when another may start. A model group with one
//! deployment never opens its breaker (there is nothing to route to instead), as in
//! LiteLLM. Failures a client caused (bad requests) never count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use routeiq_proto::{DeploymentId, ErrorClass, RouterSettings};

use crate::clock::now_ms;

/// Weight of a new latency sample in the moving average.
const EWMA_ALPHA: f64 = 0.3;

/// Breaker state, for metrics (LiteLLM's `litellm_deployment_state` uses 0/1/2 the same
/// way: healthy, partial, outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

/// This minute's failures per error class.
#[derive(Debug, Default)]
struct Failures {
    minute: u64,
    counts: [u32; ErrorClass::ALL.len()],
}

/// This minute's requests and tokens, in atomics: the strategies read them for every
/// candidate of every request. A count racing the minute's rollover may land in either
/// minute (routing needs an estimate, not an account).
#[derive(Debug, Default)]
struct Usage {
    minute: AtomicU64,
    requests: AtomicU64,
    tokens: AtomicU64,
}

impl Usage {
    fn roll(&self, now_ms: u64) {
        let m = now_ms / 60_000;
        let seen = self.minute.load(Ordering::Acquire);
        if m > seen
            && self
                .minute
                .compare_exchange(seen, m, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.requests.store(0, Ordering::Release);
            self.tokens.store(0, Ordering::Release);
        }
    }

    fn get(&self, now_ms: u64) -> (u64, u64) {
        if self.minute.load(Ordering::Acquire) == now_ms / 60_000 {
            (
                self.requests.load(Ordering::Relaxed),
                self.tokens.load(Ordering::Relaxed),
            )
        } else {
            (0, 0)
        }
    }
}

/// A failure's effect on the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still closed (or half-open probe pending elsewhere).
    Counted,
    /// The breaker opened until this Unix millisecond.
    Opened(u64),
}

#[derive(Debug, Default)]
pub struct DeploymentHealth {
    in_flight: AtomicU32,
    /// EWMA of whole-request latency (f64 seconds as bits; 0: no sample yet).
    latency: AtomicU64,
    /// EWMA of time to first token of streams.
    ttft: AtomicU64,
    usage: Usage,
    failures: Mutex<Failures>,
    /// 0: closed. Otherwise open until this Unix millisecond, half-open after it.
    open_until_ms: AtomicU64,
    /// When the half-open probe in flight started (Unix ms; 0: none).
    probe_started_ms: AtomicU64,
    /// When the latency averages were last updated (Unix ms).
    latency_at_ms: AtomicU64,
    /// Requests and tokens this minute across data planes (from Redis), and the minute
    /// they count; only with shared state.
    shared_minute: AtomicU64,
    shared_requests: AtomicU64,
    shared_tokens: AtomicU64,
    /// Local usage not yet added to Redis (tokens: corrections to actual usage may be
    /// negative).
    unflushed_requests: AtomicU64,
    unflushed_tokens: AtomicI64,
}

fn load_f64(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn ewma(a: &AtomicU64, sample: f64) {
    // Lost updates under a race only drop a sample; no lock on the hot path.
    let old = load_f64(a);
    let new = if old == 0.0 {
        sample
    } else {
        old + EWMA_ALPHA * (sample - old)
    };
    a.store(new.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
}

impl DeploymentHealth {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Average latency in seconds for streams (time to first token) or whole requests; 0
    /// when never measured, or not for `ttl_ms` (then it is measured afresh).
    pub fn latency(&self, stream: bool, now_ms: u64, ttl_ms: u64) -> f64 {
        if now_ms.saturating_sub(self.latency_at_ms.load(Ordering::Relaxed)) > ttl_ms {
            return 0.0;
        }
        if stream {
            let t = load_f64(&self.ttft);
            if t > 0.0 {
                return t;
            }
        }
        load_f64(&self.latency)
    }

    /// Requests and tokens used this minute: this data plane's, or, with shared state,
    /// every data plane's as of the last sync plus what this one has not reported yet.
    pub fn usage(&self, now_ms: u64) -> (u64, u64) {
        let minute = now_ms / 60_000;
        let local = self.usage.get(now_ms);
        if self.shared_minute.load(Ordering::Relaxed) == minute {
            let shared = (
                self.shared_requests.load(Ordering::Relaxed)
                    + self.unflushed_requests.load(Ordering::Relaxed),
                self.shared_tokens
                    .load(Ordering::Relaxed)
                    .saturating_add_signed(self.unflushed_tokens.load(Ordering::Relaxed)),
            );
            (shared.0.max(local.0), shared.1.max(local.1))
        } else {
            local
        }
    }

    pub fn state(&self, now_ms: u64) -> BreakerState {
        match self.open_until_ms.load(Ordering::Acquire) {
            0 => BreakerState::Closed,
            until if now_ms < until => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Whether the router may pick it now: closed, or half-open with no live probe (one
    /// started less than `probe_ttl_ms` ago).
    pub fn available(&self, now_ms: u64, probe_ttl_ms: u64) -> bool {
        match self.state(now_ms) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let started = self.probe_started_ms.load(Ordering::Acquire);
                started == 0 || now_ms.saturating_sub(started) > probe_ttl_ms
            }
        }
    }

    /// Claims the deployment for a request the router picked. `Some(false)`: a plain
    /// request (closed breaker); `Some(true)`: this request is the half-open probe; `None`:
    /// not available (another request took the probe first).
    pub fn claim(&self, now_ms: u64, probe_ttl_ms: u64) -> Option<bool> {
        match self.state(now_ms) {
            BreakerState::Closed => Some(false),
            BreakerState::Open => None,
            BreakerState::HalfOpen => {
                let started = self.probe_started_ms.load(Ordering::Acquire);
                let free = started == 0 || now_ms.saturating_sub(started) > probe_ttl_ms;
                (free
                    && self
                        .probe_started_ms
                        .compare_exchange(
                            started,
                            now_ms.max(1),
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        )
                        .is_ok())
                .then_some(true)
            }
        }
    }

    /// A probe that will not report (its request ended before it was sent) lets another
    /// start.
    pub fn release_probe(&self) {
        self.probe_started_ms.store(0, Ordering::Release);
    }

    /// A request starts: counted in flight and in this minute's usage.
    pub fn start(&self, tokens: u64, now_ms: u64) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.usage.roll(now_ms);
        self.usage.requests.fetch_add(1, Ordering::Relaxed);
        self.usage.tokens.fetch_add(tokens, Ordering::Relaxed);
        self.unflushed_requests.fetch_add(1, Ordering::Relaxed);
        self.unflushed_tokens
            .fetch_add(tokens as i64, Ordering::Relaxed);
    }

    /// The request used `actual` tokens where `counted` were counted at its start.
    pub fn adjust_tokens(&self, counted: u64, actual: u64, now_ms: u64) {
        if self.usage.minute.load(Ordering::Acquire) == now_ms / 60_000 {
            if actual > counted {
                self.usage
                    .tokens
                    .fetch_add(actual - counted, Ordering::Relaxed);
            } else {
                let less = counted - actual;
                let _ = self
                    .usage
                    .tokens
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                        Some(t.saturating_sub(less))
                    });
            }
        }
        self.unflushed_tokens
            .fetch_add(actual as i64 - counted as i64, Ordering::Relaxed);
    }

    /// The request ended.
    pub fn finish(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The probe succeeded: the breaker closes. Returns whether it was not closed.
    pub fn probe_succeeded(&self) -> bool {
        self.probe_started_ms.store(0, Ordering::Release);
        self.open_until_ms.swap(0, Ordering::AcqRel) != 0
    }

    /// A served request's latency, and its time to first token for streams; a failed
    /// attempt records a penalty (so a failing deployment does not look unmeasured).
    pub fn record_latency(&self, latency: Duration, ttft: Option<Duration>) {
        ewma(&self.latency, latency.as_secs_f64());
        if let Some(t) = ttft {
            ewma(&self.ttft, t.as_secs_f64());
        }
        self.latency_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// A failed attempt of `class` (`probe`: the attempt was the half-open probe). Opens
    /// the breaker when the minute's failures of that class pass what the settings allow
    /// (`allowed_fails_for`), or when the probe failed. `alone`: the deployment is its
    /// group's only one (never opened).
    pub fn failed(
        &self,
        class: ErrorClass,
        settings: &RouterSettings,
        alone: bool,
        probe: bool,
        now_ms: u64,
    ) -> Outcome {
        if probe {
            self.probe_started_ms.store(0, Ordering::Release);
        }
        let count = match self.failures.lock() {
            Ok(mut f) => {
                let minute = now_ms / 60_000;
                if f.minute != minute {
                    *f = Failures {
                        minute,
                        counts: [0; ErrorClass::ALL.len()],
                    };
                }
                let c = &mut f.counts[class.index()];
                *c += 1;
                *c
            }
            Err(_) => 0,
        };
        if alone || settings.disable_cooldowns {
            return Outcome::Counted;
        }
        if probe || count > settings.allowed_fails_for(class) {
            let until = now_ms.saturating_add(settings.cooldown_time().as_millis() as u64);
            self.open_until(until);
            Outcome::Opened(until)
        } else {
            Outcome::Counted
        }
    }

    /// Opens the breaker until `until_ms` (a later time than the current one wins).
    pub fn open_until(&self, until_ms: u64) {
        self.open_until_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    /// Unix millisecond the breaker is open until (0: closed).
    pub fn open_until_ms(&self) -> u64 {
        self.open_until_ms.load(Ordering::Acquire)
    }

    /// Shared state: usage not yet reported, taken for reporting.
    pub fn take_unflushed(&self) -> (u64, i64) {
        (
            self.unflushed_requests.swap(0, Ordering::AcqRel),
            self.unflushed_tokens.swap(0, Ordering::AcqRel),
        )
    }

    /// Shared state: usage taken for reporting that did not reach Redis, put back.
    pub fn unflush(&self, requests: u64, tokens: i64) {
        self.unflushed_requests
            .fetch_add(requests, Ordering::AcqRel);
        self.unflushed_tokens.fetch_add(tokens, Ordering::AcqRel);
    }

    /// Shared state: every data plane's usage of `minute`, as Redis counts it.
    pub fn set_shared(&self, minute: u64, requests: u64, tokens: u64) {
        self.shared_requests.store(requests, Ordering::Relaxed);
        self.shared_tokens.store(tokens, Ordering::Relaxed);
        self.shared_minute.store(minute, Ordering::Relaxed);
    }
}

/// Every deployment's health, by id. Entries are made when a snapshot compiles and live
/// as long as the process (a deployment removed and added back keeps its history).
#[derive(Debug, Default)]
pub struct Health {
    by_id: Mutex<HashMap<DeploymentId, Arc<DeploymentHealth>>>,
}

impl Health {
    pub fn of(&self, id: &DeploymentId) -> Arc<DeploymentHealth> {
        match self.by_id.lock() {
            Ok(mut m) => Arc::clone(m.entry(id.clone()).or_default()),
            Err(_) => Arc::default(),
        }
    }

    /// A copy of the current entries (for the shared-state sync and metrics).
    pub fn all(&self) -> Vec<(DeploymentId, Arc<DeploymentHealth>)> {
        self.by_id
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 5000;

    #[test]
    fn breaker_opens_after_allowed_fails_and_closes_after_a_good_probe() {
        let h = DeploymentHealth::default();
        let s = RouterSettings {
            allowed_fails: Some(2),
            ..RouterSettings::default()
        };
        let t = 1_000_000;
        for _ in 0..2 {
            assert_eq!(
                h.failed(ErrorClass::InternalServer, &s, false, false, t),
                Outcome::Counted
            );
        }
        assert_eq!(
            h.failed(ErrorClass::InternalServer, &s, false, false, t),
            Outcome::Opened(t + 5000)
        );
        assert!(!h.available(t + 10, TTL));
        assert_eq!(h.state(t + 5000), BreakerState::HalfOpen);
        assert_eq!(h.claim(t + 5000, TTL), Some(true));
        assert!(!h.available(t + 5001, TTL), "one probe at a time");
        assert_eq!(h.claim(t + 5001, TTL), None);
        assert!(h.probe_succeeded());
        assert_eq!(h.state(t + 5002), BreakerState::Closed);
        assert_eq!(h.claim(t + 5003, TTL), Some(false));
    }

    #[test]
    fn failed_probe_reopens_and_rate_limits_open_at_once() {
        let h = DeploymentHealth::default();
        let s = RouterSettings::default();
        assert!(matches!(
            h.failed(ErrorClass::RateLimit, &s, false, false, 0),
            Outcome::Opened(5000)
        ));
        assert_eq!(h.claim(6000, TTL), Some(true));
        assert!(matches!(
            h.failed(ErrorClass::Timeout, &s, false, true, 6000),
            Outcome::Opened(11_000)
        ));
        let alone = DeploymentHealth::default();
        assert_eq!(
            alone.failed(ErrorClass::RateLimit, &s, true, false, 0),
            Outcome::Counted
        );
        assert!(alone.available(1, TTL));
    }

    #[test]
    fn a_probe_that_never_reports_expires_and_can_be_released() {
        let h = DeploymentHealth::default();
        h.open_until(1000);
        assert_eq!(h.claim(1000, TTL), Some(true));
        assert!(!h.available(1000 + TTL, TTL));
        assert!(
            h.available(1001 + TTL, TTL),
            "a silent probe stops counting"
        );
        assert_eq!(h.claim(1001 + TTL, TTL), Some(true));
        h.release_probe();
        assert!(h.available(1002 + TTL, TTL));
    }

    #[test]
    fn only_the_probe_closes_the_breaker() {
        let h = DeploymentHealth::default();
        let s = RouterSettings::default();
        // A request in flight when the breaker opened fails or succeeds: still open.
        h.failed(ErrorClass::RateLimit, &s, false, false, 0);
        assert_eq!(h.state(100), BreakerState::Open);
        h.record_latency(Duration::from_millis(5), None);
        assert_eq!(h.state(100), BreakerState::Open);
        assert!(h.probe_succeeded(), "a probe's success closes it");
    }

    #[test]
    fn latency_is_a_moving_average_that_expires() {
        let h = DeploymentHealth::default();
        let now = now_ms();
        assert_eq!(h.latency(false, now, 60_000), 0.0);
        h.record_latency(Duration::from_secs(1), Some(Duration::from_millis(100)));
        h.record_latency(Duration::from_secs(2), None);
        assert!((h.latency(false, now, 60_000) - 1.3).abs() < 1e-9);
        assert!((h.latency(true, now, 60_000) - 0.1).abs() < 1e-9);
        assert_eq!(
            h.latency(false, now + 120_000, 60_000),
            0.0,
            "stale: measure again"
        );
    }

    #[test]
    fn usage_counts_this_minute_and_corrections_reach_the_shared_count() {
        let h = DeploymentHealth::default();
        h.start(100, 60_000);
        h.start(50, 60_001);
        h.adjust_tokens(50, 80, 60_002);
        h.adjust_tokens(100, 10, 60_002);
        assert_eq!(h.usage(60_003), (2, 90));
        assert_eq!(h.usage(120_000), (0, 0));
        h.set_shared(1, 10, 1000);
        assert_eq!(h.take_unflushed(), (2, 90));
        assert_eq!(h.usage(60_004), (10, 1000));
        h.adjust_tokens(100, 0, 60_005);
        assert_eq!(h.take_unflushed(), (0, -100));
    }
}
