//! Per-key rate limits, exact within one data plane: `rpm_limit`, `tpm_limit` and
//! `max_parallel_requests` of the key's snapshot view, counted here.
//!
//! Windows are fixed calendar minutes (as LiteLLM's). A request is admitted while the
//! minute's requests are under `rpm_limit` and its tokens, counting the *reservations* of
//! requests still in flight, are under `tpm_limit`. A request reserves its worst case:
//! the body's length / 4 for the prompt plus `max_tokens` (or the deployment's
//! `max_output_tokens`, or [`DEFAULT_COMPLETION_RESERVE`]). When it ends, the reservation
//! is replaced by the tokens it used. So a minute's admitted tokens exceed `tpm_limit` by
//! at most one request's tokens: the last request admitted below the limit.
//!
//! The counters outlive snapshot swaps (the limits are read from the current key view on
//! every request, so a changed limit applies at once). Keys without limits cost nothing
//! here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use routeiq_proto::{KeyHash, VirtualKey};

use crate::error::ApiError;

/// Completion tokens reserved when neither the request nor the deployment bounds them.
pub const DEFAULT_COMPLETION_RESERVE: u64 = 256;

const SHARDS: usize = 64;
/// A shard sweeps idle counters when it grows past this.
const SWEEP_AT: usize = 4096;

/// One key's counters.
#[derive(Debug, Default)]
struct Counters {
    window: Mutex<Window>,
    in_flight: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    /// Unix minute.
    minute: u64,
    requests: u64,
    /// Used plus reserved.
    tokens: u64,
}

impl Window {
    fn roll(&mut self, minute: u64) {
        if self.minute != minute {
            *self = Window {
                minute,
                ..Window::default()
            };
        }
    }
}

/// Every key's counters, sharded by key hash.
#[derive(Debug)]
pub struct Limiter {
    shards: Vec<Mutex<HashMap<KeyHash, Arc<Counters>>>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// An admitted request: holds its parallel slot and its token reservation until
/// [`Admission::settle`] (or drop, which settles with zero tokens).
#[derive(Debug)]
pub struct Admission {
    counters: Arc<Counters>,
    minute: u64,
    reserved: u64,
    settled: bool,
    /// `x-ratelimit-*` headers for the response.
    pub headers: Vec<(&'static str, String)>,
}

/// A refused request: the 429 and its `x-ratelimit-*` headers.
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub headers: Vec<(&'static str, String)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a counter lock cannot leave it inconsistent (plain integers).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> (u64, u64) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 60, 60 - secs % 60)
}

pub fn has_limits(k: &VirtualKey) -> bool {
    k.rpm_limit.is_some() || k.tpm_limit.is_some() || k.max_parallel_requests.is_some()
}

impl Limiter {
    fn counters(&self, hash: &KeyHash) -> Arc<Counters> {
        let shard = &self.shards[usize::from(hash.0[0]) % SHARDS];
        let mut map = lock(shard);
        if let Some(c) = map.get(hash) {
            return Arc::clone(c);
        }
        if map.len() >= SWEEP_AT {
            let (minute, _) = now();
            map.retain(|_, c| {
                c.in_flight.load(Ordering::Relaxed) > 0 || lock(&c.window).minute + 1 >= minute
            });
        }
        Arc::clone(map.entry(*hash).or_default())
    }

    /// Admits a request of `key` that may use up to `reserve` tokens, or refuses it with
    /// a 429 naming the limit. `None` when the key has no limits.
    pub fn admit(&self, key: &VirtualKey, reserve: u64) -> Result<Option<Admission>, Refused> {
        if !has_limits(key) {
            return Ok(None);
        }
        let counters = self.counters(&key.hash);
        let (minute, reset) = now();
        let parallel = counters.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let mut w = lock(&counters.window);
        w.roll(minute);
        let refusal = if key.max_parallel_requests.is_some_and(|max| parallel > max) {
            Some((
                format!(
                    "max_parallel_requests limit of {} reached for this key",
                    key.max_parallel_requests.unwrap_or_default()
                ),
                1,
            ))
        } else if key.rpm_limit.is_some_and(|max| w.requests >= max) {
            Some((
                format!(
                    "rpm_limit of {} requests per minute reached for this key",
                    key.rpm_limit.unwrap_or_default()
                ),
                reset,
            ))
        } else if key.tpm_limit.is_some_and(|max| w.tokens >= max) {
            Some((
                format!(
                    "tpm_limit of {} tokens per minute reached for this key",
                    key.tpm_limit.unwrap_or_default()
                ),
                reset,
            ))
        } else {
            None
        };
        if refusal.is_none() {
            w.requests += 1;
            w.tokens = w.tokens.saturating_add(reserve);
        }
        let headers = headers(key, &w, reset);
        drop(w);
        match refusal {
            Some((message, retry)) => {
                counters.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(Refused {
                    error: ApiError::rate_limited(message).with_retry_after(Some(retry)),
                    headers,
                })
            }
            None => Ok(Some(Admission {
                counters,
                minute,
                reserved: reserve,
                settled: false,
                headers,
            })),
        }
    }
}

fn headers(key: &VirtualKey, w: &Window, reset: u64) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    if let Some(max) = key.rpm_limit {
        h.push(("x-ratelimit-limit-requests", max.to_string()));
        h.push((
            "x-ratelimit-remaining-requests",
            max.saturating_sub(w.requests).to_string(),
        ));
        h.push(("x-ratelimit-reset-requests", format!("{reset}s")));
    }
    if let Some(max) = key.tpm_limit {
        h.push(("x-ratelimit-limit-tokens", max.to_string()));
        h.push((
            "x-ratelimit-remaining-tokens",
            max.saturating_sub(w.tokens).to_string(),
        ));
        h.push(("x-ratelimit-reset-tokens", format!("{reset}s")));
    }
    h
}

impl Admission {
    /// Replaces the reservation with the tokens the request used.
    pub fn settle(mut self, used: u64) {
        self.finish(used);
    }

    fn finish(&mut self, used: u64) {
        if self.settled {
            return;
        }
        self.settled = true;
        let (minute, _) = now();
        let mut w = lock(&self.counters.window);
        if w.minute == self.minute {
            w.tokens = w.tokens.saturating_sub(self.reserved).saturating_add(used);
        } else {
            // The window moved on: the usage counts in the new one.
            w.roll(minute);
            w.tokens = w.tokens.saturating_add(used);
        }
        drop(w);
        self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.finish(0);
    }
}

/// The most tokens a request may use: its body's length / 4 for the prompt, plus its
/// completion bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstCase {
    pub prompt: u64,
    pub completion: u64,
}

impl WorstCase {
    pub fn of(body_len: usize, max_tokens: Option<u64>, model_max_output: Option<u64>) -> Self {
        Self {
            prompt: (body_len as u64).div_ceil(4),
            completion: max_tokens
                .or(model_max_output)
                .unwrap_or(DEFAULT_COMPLETION_RESERVE),
        }
    }

    pub fn tokens(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rpm: Option<u64>, tpm: Option<u64>, parallel: Option<u64>) -> VirtualKey {
        VirtualKey {
            hash: KeyHash::of("sk-limited"),
            rpm_limit: rpm,
            tpm_limit: tpm,
            max_parallel_requests: parallel,
            ..VirtualKey::default()
        }
    }

    #[test]
    fn rpm_is_exact_and_names_the_limit() {
        let l = Limiter::default();
        let k = key(Some(3), None, None);
        let admitted: Vec<_> = (0..3).map(|_| l.admit(&k, 10).unwrap()).collect();
        let refused = l.admit(&k, 10).unwrap_err();
        assert_eq!(refused.error.status, 429);
        assert!(refused.error.message.contains("rpm_limit of 3"));
        assert!(refused
            .error
            .retry_after
            .is_some_and(|s| (1..=60).contains(&s)));
        assert!(refused
            .headers
            .contains(&("x-ratelimit-remaining-requests", "0".into())));
        drop(admitted);
        // Requests, unlike tokens and slots, stay counted for the minute.
        assert!(l.admit(&k, 10).is_err());
    }

    #[test]
    fn tokens_are_reserved_then_settled() {
        let l = Limiter::default();
        let k = key(None, Some(100), None);
        let a = l.admit(&k, 60).unwrap().unwrap();
        let b = l.admit(&k, 60).unwrap().unwrap(); // 60 < 100: admitted, now 120 reserved
        assert!(l.admit(&k, 1).is_err());
        a.settle(10);
        b.settle(10); // 20 used
        let c = l.admit(&k, 50).unwrap().unwrap();
        assert!(c
            .headers
            .contains(&("x-ratelimit-remaining-tokens", "30".into())));
        drop(c); // dropped without settling: nothing used
        assert!(l.admit(&k, 79).is_ok());
    }

    #[test]
    fn parallel_slots_are_released() {
        let l = Limiter::default();
        let k = key(None, None, Some(2));
        let a = l.admit(&k, 1).unwrap();
        let _b = l.admit(&k, 1).unwrap();
        assert!(l
            .admit(&k, 1)
            .unwrap_err()
            .error
            .message
            .contains("max_parallel_requests"));
        drop(a);
        assert!(l.admit(&k, 1).is_ok());
        assert!(l.admit(&key(None, None, None), 1).unwrap().is_none());
    }
}
