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
//! here. With Redis configured, RPM and TPM are shared by every data plane ([`shared`]);
//! `max_parallel_requests` stays per data plane.
//!
//! Shared, each data plane holds the tokens Redis granted it for the minute and admits a
//! request while its own tokens (used plus reserved) are below that grant, exactly as one
//! data plane does against the limit alone. Redis never grants past the limit, so the data
//! planes together admit at most the limit plus one request's tokens per data plane (and
//! what requests use beyond their reservation).

pub mod shared;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use routeiq_proto::KeyHash;

use crate::holder::Holder;

use crate::error::ApiError;
use crate::per_key::{lock, PerKey};

/// Completion tokens reserved when neither the request nor the deployment bounds them.
pub const DEFAULT_COMPLETION_RESERVE: u64 = 256;

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
    /// This data plane's admitted requests, and tokens used plus reserved.
    requests: u64,
    tokens: u64,
    /// Shared mode: the requests granted and not yet admitted, the tokens granted to this
    /// data plane (compared with `tokens`), and the minute's grants across data planes at
    /// the last grant.
    lease_requests: u64,
    granted_tokens: u64,
    total_requests: u64,
    total_tokens: u64,
}

impl Window {
    /// Shared mode: the tokens this data plane's grants still allow.
    fn left(&self) -> u64 {
        self.granted_tokens.saturating_sub(self.tokens)
    }

    /// Moves to `minute` if it is later (a request that read the clock just before a
    /// minute ended counts in the newer window, never rolls it back).
    fn roll(&mut self, minute: u64) {
        if minute > self.minute {
            *self = Window {
                minute,
                ..Window::default()
            };
        }
    }
}

/// Every key's counters, sharded by key hash; shared through Redis when configured.
#[derive(Debug)]
pub struct Limiter {
    counters: PerKey<Counters>,
    shared: Option<Arc<shared::Shared>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(None)
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
    /// Where the holder stood against its limits when it was admitted.
    pub standing: Standing,
}

/// Where a holder stands against its limits: what each limit allows and what is left of it
/// this minute (with the request just admitted counted), and the seconds until the minute
/// ends. The `x-ratelimit-*` headers and LiteLLM's rate-limit gauges say the same.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    pub requests: Option<Left>,
    pub tokens: Option<Left>,
    reset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    pub limit: u64,
    pub remaining: u64,
}

impl Standing {
    /// The `x-ratelimit-*` headers (OpenAI's names).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(l) = self.requests {
            h.push(("x-ratelimit-limit-requests", l.limit.to_string()));
            h.push(("x-ratelimit-remaining-requests", l.remaining.to_string()));
            h.push(("x-ratelimit-reset-requests", format!("{}s", self.reset)));
        }
        if let Some(l) = self.tokens {
            h.push(("x-ratelimit-limit-tokens", l.limit.to_string()));
            h.push(("x-ratelimit-remaining-tokens", l.remaining.to_string()));
            h.push(("x-ratelimit-reset-tokens", format!("{}s", self.reset)));
        }
        h
    }
}

/// A refused request: the 429 and its `x-ratelimit-*` headers.
#[derive(Debug)]
pub struct Refused {
    pub error: ApiError,
    pub headers: Vec<(&'static str, String)>,
}

impl Limiter {
    /// Local limits, or shared ones through Redis.
    pub fn new(shared: Option<Arc<shared::Shared>>) -> Self {
        Self {
            counters: PerKey::default(),
            shared,
        }
    }

    /// `hash`'s counters; a sweep keeps those in use in `minute` or the one before.
    fn counters(&self, hash: &KeyHash, minute: u64) -> Arc<Counters> {
        self.counters.get(hash, |c| {
            c.in_flight.load(Ordering::Relaxed) > 0 || lock(&c.window).minute + 1 >= minute
        })
    }

    /// Admits a request of `key` that may use up to `reserve` tokens, or refuses it with
    /// a 429 naming the limit. `None` when the key has no limits.
    pub async fn admit(
        &self,
        key: &Holder<'_>,
        reserve: u64,
    ) -> Result<Option<Admission>, Refused> {
        if !key.has_limits() {
            return Ok(None);
        }
        let (minute, reset) = crate::clock::minute();
        let counters = self.counters(key.hash, minute);
        let slot = Slot::take(&counters);
        let parallel = slot.parallel;
        let outcome = if key.max_parallel_requests.is_some_and(|max| parallel > max) {
            let w = *lock(&counters.window);
            Err(Refusal::Parallel(standing(key, &w, reset)))
        } else if key.rpm_limit.is_none() && key.tpm_limit.is_none() {
            Ok((standing(key, &Window::default(), reset), minute))
        } else {
            match self.shared.as_deref() {
                Some(s) if s.usable() => {
                    self.admit_shared(s, key, &counters, minute, reserve, reset)
                        .await
                }
                Some(s) => {
                    // Within the backoff after a Redis failure: a decision on the local
                    // share, counted as one like the decision that met the failure.
                    s.fallbacks.inc();
                    admit_local(key, &counters, minute, reserve, reset, s.dataplanes())
                }
                None => admit_local(key, &counters, minute, reserve, reset, 1),
            }
        };
        match outcome {
            Ok((standing, minute)) => {
                slot.keep(); // the admission gives it back
                Ok(Some(Admission {
                    counters,
                    minute,
                    reserved: reserve,
                    settled: false,
                    standing,
                }))
            }
            Err(refusal) => Err(refusal.into_refused(key, reset)),
        }
    }

    /// Shared mode: serve from this data plane's grant, taking a new one from Redis when it
    /// runs short; on a Redis failure, the local share.
    async fn admit_shared(
        &self,
        s: &shared::Shared,
        key: &Holder<'_>,
        counters: &Counters,
        minute: u64,
        reserve: u64,
        reset: u64,
    ) -> Admitted {
        let mut asked = false;
        loop {
            let ask = match take_or_ask(key, counters, minute, reserve, reset, asked) {
                Step::Done(result) => return result,
                Step::Ask(ask) => ask,
            };
            asked = true;
            match s.lease(key.hash, minute, ask).await {
                Ok(g) => {
                    let mut w = lock(&counters.window);
                    if w.minute == minute {
                        w.lease_requests += g.requests;
                        w.granted_tokens += g.tokens;
                        w.total_requests = g.total_requests;
                        w.total_tokens = g.total_tokens;
                    }
                }
                Err(e) => {
                    s.failed(&e);
                    return admit_local(key, counters, minute, reserve, reset, s.dataplanes());
                }
            }
        }
    }
}

/// Admitted: the holder's standing, and the window's minute.
type Admitted = Result<(Standing, u64), Refusal>;

enum Step {
    Done(Admitted),
    Ask(shared::Ask),
}

/// Shared mode, without waiting: admit while this data plane's tokens are below its grant
/// and a granted request is left, asking Redis first when the grant does not cover the
/// request. Once asked, what is left decides: a request admitted on a partial grant may
/// end past it by its own tokens, as the last request below a local limit does.
fn take_or_ask(
    key: &Holder<'_>,
    counters: &Counters,
    minute: u64,
    reserve: u64,
    reset: u64,
    asked: bool,
) -> Step {
    let mut w = lock(&counters.window);
    w.roll(minute);
    let left = w.left();
    let short_requests = key.rpm_limit.is_some() && w.lease_requests == 0;
    let short_tokens = key.tpm_limit.is_some() && left < reserve;
    if asked || (!short_requests && !short_tokens) {
        if short_requests {
            return Step::Done(Err(Refusal::Requests(shared_standing(key, &w, reset))));
        }
        if key.tpm_limit.is_some() && left == 0 {
            return Step::Done(Err(Refusal::Tokens(shared_standing(key, &w, reset))));
        }
        if key.rpm_limit.is_some() {
            w.lease_requests -= 1;
        }
        w.requests += 1;
        w.tokens = w.tokens.saturating_add(reserve);
        return Step::Done(Ok((shared_standing(key, &w, reset), w.minute)));
    }
    let chunk =
        |limit: Option<u64>, total: u64| limit.map_or(0, |l| (l.saturating_sub(total) / 8).max(1));
    Step::Ask(shared::Ask {
        requests: if short_requests {
            chunk(key.rpm_limit, w.total_requests)
        } else {
            0
        },
        tokens: if short_tokens {
            (reserve - left).saturating_add(chunk(key.tpm_limit, w.total_tokens))
        } else {
            0
        },
        rpm: key.rpm_limit,
        tpm: key.tpm_limit,
    })
}

/// A parallel slot taken at admission: given back on drop (a refused request, or an
/// admission future dropped while it waits for Redis) unless an admission keeps it.
struct Slot<'a> {
    counters: &'a Counters,
    parallel: u64,
    kept: bool,
}

impl<'a> Slot<'a> {
    fn take(counters: &'a Counters) -> Self {
        let parallel = counters.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        Self {
            counters,
            parallel,
            kept: false,
        }
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Why a request was refused, with the standing its headers show.
enum Refusal {
    Parallel(Standing),
    Requests(Standing),
    Tokens(Standing),
}

impl Refusal {
    fn into_refused(self, key: &Holder<'_>, reset: u64) -> Refused {
        let (message, retry, headers) = match self {
            Self::Parallel(h) => (
                format!(
                    "max_parallel_requests limit of {} reached for {}",
                    key.max_parallel_requests.unwrap_or_default(),
                    key.label()
                ),
                1,
                h,
            ),
            Self::Requests(h) => (
                format!(
                    "rpm_limit of {} requests per minute reached for {}",
                    key.rpm_limit.unwrap_or_default(),
                    key.label()
                ),
                reset,
                h,
            ),
            Self::Tokens(h) => (
                format!(
                    "tpm_limit of {} tokens per minute reached for {}",
                    key.tpm_limit.unwrap_or_default(),
                    key.label()
                ),
                reset,
                h,
            ),
        };
        Refused {
            error: ApiError::rate_limited(message).with_retry_after(Some(retry)),
            headers: headers.headers(),
        }
    }
}

/// Local mode (and the fallback when Redis fails): this data plane's window against the
/// limits divided by `share` (the number of data planes).
fn admit_local(
    key: &Holder<'_>,
    counters: &Counters,
    minute: u64,
    reserve: u64,
    reset: u64,
    share: u64,
) -> Admitted {
    let part = |l: Option<u64>| l.map(|l| l.div_ceil(share.max(1)));
    let (rpm, tpm) = (part(key.rpm_limit), part(key.tpm_limit));
    let mut w = lock(&counters.window);
    w.roll(minute);
    if rpm.is_some_and(|max| w.requests >= max) {
        return Err(Refusal::Requests(standing(key, &w, reset)));
    }
    if tpm.is_some_and(|max| w.tokens >= max) {
        return Err(Refusal::Tokens(standing(key, &w, reset)));
    }
    w.requests += 1;
    w.tokens = w.tokens.saturating_add(reserve);
    Ok((standing(key, &w, reset), w.minute))
}

/// Shared mode's standing: what is left across data planes (as of the last grant) plus
/// this data plane's unused grant.
fn shared_standing(key: &Holder<'_>, w: &Window, reset: u64) -> Standing {
    let left = w.left();
    let view = Window {
        requests: key.rpm_limit.map_or(0, |l| {
            l.saturating_sub(w.lease_requests).min(w.total_requests)
        }),
        tokens: key
            .tpm_limit
            .map_or(0, |l| l.saturating_sub(left).min(w.total_tokens)),
        ..*w
    };
    standing(key, &view, reset)
}

fn standing(key: &Holder<'_>, w: &Window, reset: u64) -> Standing {
    let left = |limit: Option<u64>, used: u64| {
        limit.map(|limit| Left {
            limit,
            remaining: limit.saturating_sub(used),
        })
    };
    Standing {
        requests: left(key.rpm_limit, w.requests),
        tokens: left(key.tpm_limit, w.tokens),
        reset,
    }
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
        let mut w = lock(&self.counters.window);
        if w.minute == self.minute {
            // Shared too: what the request did not use is again below the grant.
            w.tokens = w.tokens.saturating_sub(self.reserved).saturating_add(used);
        } else {
            // The window moved on: the usage counts in the new one.
            w.roll(crate::clock::minute().0);
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
    use routeiq_proto::VirtualKey;

    fn admit(l: &Limiter, k: &VirtualKey, reserve: u64) -> Result<Option<Admission>, Refused> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(l.admit(&Holder::key(k), reserve))
    }

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
        let admitted: Vec<_> = (0..3).map(|_| admit(&l, &k, 10).unwrap()).collect();
        let refused = admit(&l, &k, 10).unwrap_err();
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
        assert!(admit(&l, &k, 10).is_err());
    }

    #[test]
    fn tokens_are_reserved_then_settled() {
        let l = Limiter::default();
        let k = key(None, Some(100), None);
        let a = admit(&l, &k, 60).unwrap().unwrap();
        let b = admit(&l, &k, 60).unwrap().unwrap(); // 60 < 100: admitted, now 120 reserved
        assert!(admit(&l, &k, 1).is_err());
        a.settle(10);
        b.settle(10); // 20 used
        let c = admit(&l, &k, 50).unwrap().unwrap();
        assert!(c
            .standing
            .headers()
            .contains(&("x-ratelimit-remaining-tokens", "30".into())));
        assert_eq!(
            c.standing.tokens,
            Some(Left {
                limit: 100,
                remaining: 30
            })
        );
        assert_eq!(c.standing.requests, None);
        drop(c); // dropped without settling: nothing used
        assert!(admit(&l, &k, 79).is_ok());
    }

    #[test]
    fn parallel_slots_are_released() {
        let l = Limiter::default();
        let k = key(None, None, Some(2));
        let a = admit(&l, &k, 1).unwrap();
        let _b = admit(&l, &k, 1).unwrap();
        assert!(admit(&l, &k, 1)
            .unwrap_err()
            .error
            .message
            .contains("max_parallel_requests"));
        drop(a);
        assert!(admit(&l, &k, 1).is_ok());
        assert!(admit(&l, &key(None, None, None), 1).unwrap().is_none());
    }

    /// Redis's grant script, in-process, against `planes` data planes admitting and
    /// settling requests in a random order: the tokens used never exceed the limit plus
    /// one request per data plane (the documented bound), whatever the interleaving.
    #[test]
    fn shared_grants_bound_tokens_to_the_limit_plus_one_request_per_data_plane() {
        const LIMIT: u64 = 100;
        const RESERVE: u64 = 24;
        const USED: u64 = 16;
        let k = key(None, Some(LIMIT), None);
        let holder = Holder::key(&k);
        let minute = crate::clock::minute().0;
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let planes: Vec<Arc<Counters>> = (0..1 + seed % 3)
                .map(|_| Arc::new(Counters::default()))
                .collect();
            let mut granted = 0;
            let (mut in_flight, mut used, mut admitted) = (Vec::new(), 0, 0);
            for _ in 0..400 {
                if in_flight.is_empty() || rng.bool() {
                    let c = &planes[rng.usize(..planes.len())];
                    let mut asked = false;
                    loop {
                        match take_or_ask(&holder, c, minute, RESERVE, 1, asked) {
                            Step::Done(Ok((_, m))) => {
                                c.in_flight.fetch_add(1, Ordering::AcqRel);
                                admitted += 1;
                                in_flight.push(Admission {
                                    counters: Arc::clone(c),
                                    minute: m,
                                    reserved: RESERVE,
                                    settled: false,
                                    standing: Standing::default(),
                                });
                                break;
                            }
                            Step::Done(Err(_)) => break,
                            Step::Ask(ask) => {
                                let grant = ask.tokens.min(LIMIT - granted);
                                granted += grant;
                                let mut w = lock(&c.window);
                                w.granted_tokens += grant;
                                w.total_tokens = granted;
                                asked = true;
                            }
                        }
                    }
                } else {
                    let a: Admission = in_flight.swap_remove(rng.usize(..in_flight.len()));
                    a.settle(USED);
                    used += USED;
                }
            }
            for a in in_flight {
                a.settle(USED);
                used += USED;
            }
            let bound = LIMIT + planes.len() as u64 * USED;
            assert!(
                used <= bound,
                "seed {seed}: {admitted} admitted on {} data planes used {used} > {bound}",
                planes.len()
            );
            assert!(
                granted <= LIMIT && used >= LIMIT - RESERVE,
                "seed {seed}: {used}"
            );
        }
    }
}
