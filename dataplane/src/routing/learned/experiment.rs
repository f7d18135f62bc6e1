//! Router versions under evaluation beside the serving one (`routing_strategy_args.shadow`
//! and `.ab`, written by the control plane's registry or by hand in `config.yaml`):
//! - a **shadow** version decides every request too, on a worker thread of its own and
//!   never on the request path; its choice is recorded (routing span, spend log), never
//!   acted on;
//! - an **A/B** version decides a share of the traffic, sticky per end user or key.
//!
//! Each names its artifact as the serving strategy does (`model_path`, or
//! `model_s3_bucket` and `model_s3_key`; `model_sha256` pins it) and may name another
//! learned strategy (`strategy`). Both decide with the serving router's policy
//! (`cost_weight`, the dollar knob, `conservative`), so their choices compare.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use prometheus::IntCounterVec;
use routeiq_proto::{RouterSettings, RoutingStrategy};
use serde_json::Value;

use super::{Chooser, Query, Slot, Spec};

/// Shadow decisions waiting for the worker; past this, requests go unshadowed (and are
/// counted), so a shadow never costs more than one core however heavy it is.
const SHADOW_QUEUE: usize = 1024;
/// How often the worker looks for work: soon after it found some, backing off to
/// [`IDLE_POLL`] when there is none. The request path only pushes onto a queue (no wake-up,
/// no system call).
const BUSY_POLL: Duration = Duration::from_millis(1);
const IDLE_POLL: Duration = Duration::from_millis(16);

/// The spec of the challenger under `routing_strategy_args[key]` (`shadow`, `ab`): the
/// serving settings with the challenger's own strategy and artifact.
pub fn spec(settings: &RouterSettings, key: &str) -> Option<Spec> {
    let own = settings.routing_strategy_args.get(key)?.as_object()?;
    let mut args = settings.routing_strategy_args.clone();
    for k in [
        "model_path",
        "model_s3_bucket",
        "model_s3_key",
        "model_sha256",
        "shadow",
        "ab",
    ] {
        args.remove(k);
    }
    args.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    let strategy = match own.get("strategy").and_then(Value::as_str) {
        Some(s) => format!("llmrouter-{}", s.trim_start_matches("llmrouter-")),
        None => settings.routing_strategy.name().to_owned(),
    };
    let challenger = RouterSettings {
        routing_strategy: RoutingStrategy::LlmRouter(strategy),
        routing_strategy_args: args,
        ..settings.clone()
    };
    Spec::of(&challenger).map(|mut s| {
        s.challenger = true;
        s
    })
}

/// Which version decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arm {
    #[default]
    Serving,
    Ab,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Ab => "ab",
        }
    }
}

/// What keeps a client on one side of an A/B split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// The end user (`user`), else the key.
    User,
    /// The key, else the end user.
    Key,
}

/// The A/B version: its model slot and the share of clients it decides for.
pub struct Ab {
    pub slot: Arc<Slot>,
    share: f64,
    sticky: Sticky,
    /// Mixed into the client's hash so each experiment draws its own clients.
    salt: u64,
}

impl Ab {
    pub fn new(slot: Arc<Slot>, settings: &RouterSettings) -> Option<Self> {
        let own = settings.routing_strategy_args.get("ab")?;
        // Out of range: off (`RouterSettings::learned_arg_warnings` names it at load).
        let share = own
            .get("share")
            .and_then(Value::as_f64)
            .filter(|s| routeiq_proto::is_ab_share(*s))?;
        let sticky = match own.get("sticky").and_then(Value::as_str) {
            Some("key") => Sticky::Key,
            _ => Sticky::User,
        };
        // The artifact's pinned hash when there is one (the registry always pins), else
        // its source as written.
        let salt = match &slot.spec.pin {
            Some(pin) => fnv1a(FNV_OFFSET, pin.as_bytes()),
            None => fnv1a(FNV_OFFSET, slot.spec.source.to_string().as_bytes()),
        };
        Some(Self {
            slot,
            share,
            sticky,
            salt,
        })
    }

    /// Whether the request's client is on the A/B version's side: a stable hash of its
    /// end user or key under the share; a client with neither goes by `draw`, the
    /// request's own uniform draw (the same on every pick of the request).
    pub fn takes(&self, user: Option<&str>, key: Option<&[u8]>, draw: f64) -> bool {
        let id = match self.sticky {
            Sticky::User => user.map(str::as_bytes).or(key),
            Sticky::Key => key.or(user.map(str::as_bytes)),
        };
        let draw = match id {
            Some(id) => unit(fnv1a(self.salt, id)),
            None => draw,
        };
        draw < self.share
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64 bits: stable across processes and versions, so every data plane puts a
/// client on the same side.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `h` as a number in [0, 1), from its high bits mixed (FNV's low bits are weak).
fn unit(h: u64) -> f64 {
    let mut x = h;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The shadow version's decision for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadowed {
    /// The artifact's manifest sha256 and version.
    pub sha256: String,
    pub version: String,
    /// The candidate it chose; `None` when it could not decide (no features, a failed
    /// score).
    pub candidate: Option<String>,
}

/// Where the worker leaves a request's shadow decision, read when the request ends.
#[derive(Debug, Default)]
pub struct ShadowCell {
    /// The router (its policy's address; 0: none yet) that handed the request to the
    /// worker. A request that falls back to another group is not shadowed again there.
    sent: AtomicUsize,
    /// Set once the worker is done: `None` when the version had no model loaded or could
    /// not embed the query.
    decided: OnceLock<Option<Shadowed>>,
}

impl ShadowCell {
    /// The decision, if the worker has made one by now.
    pub fn get(&self) -> Option<&Shadowed> {
        self.decided.get()?.as_ref()
    }

    /// Whether the worker is done with the request.
    pub fn settled(&self) -> bool {
        self.decided.get().is_some()
    }
}

/// The shadow version of a router: its slot and the process's shadow worker.
pub struct Shadow {
    pub slot: Arc<Slot>,
    queue: Arc<ShadowQueue>,
}

impl Shadow {
    pub fn new(slot: Arc<Slot>, queue: Arc<ShadowQueue>) -> Self {
        Self { slot, queue }
    }

    /// Hands the request to the shadow worker (once per request: retries pick again);
    /// returns the cell its decision will be in, or `None` when the queue is full or the
    /// request was shadowed in another group.
    pub fn submit(
        &self,
        chooser: &Arc<Chooser>,
        candidates: &[usize],
        query: &Arc<Query>,
    ) -> Option<Arc<ShadowCell>> {
        let cell = Arc::clone(&query.shadow);
        let me = Arc::as_ptr(chooser) as usize;
        match cell
            .sent
            .compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => {}
            Err(router) if router == me => return Some(cell),
            Err(_) => return None,
        }
        let job = Job {
            chooser: Arc::clone(chooser),
            slot: Arc::clone(&self.slot),
            candidates: candidates.to_vec(),
            query: Arc::clone(query),
        };
        if self.queue.push(job) {
            Some(cell)
        } else {
            self.queue.count(&self.slot, "dropped");
            None
        }
    }
}

struct Job {
    chooser: Arc<Chooser>,
    slot: Arc<Slot>,
    candidates: Vec<usize>,
    query: Arc<Query>,
}

/// A job that never ran (a full queue, a panic in the worker) still settles its cell, so
/// nothing waits for it.
impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.query.shadow.decided.set(None);
    }
}

impl Job {
    /// Decides with the slot's current model, embedding the query on this thread when its
    /// encoder's embedding was not made for the serving version.
    fn run(&self) -> bool {
        let decided = self.decide();
        let scored = decided.as_ref().is_some_and(|d| d.candidate.is_some());
        let _ = self.query.shadow.decided.set(decided);
        scored
    }

    fn decide(&self) -> Option<Shadowed> {
        let model = self.slot.current()?;
        if let Some(e) = model.featurizer.encoder() {
            let key = super::FeatureKey::encoder(e);
            if self.query.cached(key).is_none() {
                let v = e.embed_now(&self.query.text).ok()?;
                self.query.store(key, v);
            }
        }
        let chosen = self
            .chooser
            .choose(&self.slot, &model, &self.candidates, &self.query);
        let candidate = chosen.map(|c| model.manifest.candidates[c.label].name.clone());
        Some(Shadowed {
            sha256: model.sha256.clone(),
            version: model.manifest.version.clone(),
            candidate,
        })
    }
}

/// The process's shadow worker: one thread, taking jobs from a bounded queue.
pub struct ShadowQueue {
    jobs: Mutex<Vec<Job>>,
    outcomes: IntCounterVec,
}

impl ShadowQueue {
    /// Starts the worker thread (it ends when the queue is dropped); `outcomes` counts
    /// shadow decisions by strategy and outcome (`scored`, `unscored`, `failed`,
    /// `dropped`).
    pub fn start(outcomes: IntCounterVec) -> std::io::Result<Arc<Self>> {
        let queue = Arc::new(Self {
            jobs: Mutex::new(Vec::with_capacity(SHADOW_QUEUE)),
            outcomes,
        });
        let weak = Arc::downgrade(&queue);
        std::thread::Builder::new()
            .name("routeiq-shadow".into())
            .spawn(move || work(&weak))?;
        Ok(queue)
    }

    /// Queues `job`; `false` (the job dropped, its cell settled) when the queue is full.
    fn push(&self, job: Job) -> bool {
        let Ok(mut jobs) = self.jobs.lock() else {
            return false;
        };
        if jobs.len() >= SHADOW_QUEUE {
            return false;
        }
        jobs.push(job);
        true
    }

    fn count(&self, slot: &Slot, outcome: &str) {
        self.outcomes
            .with_label_values(&[&slot.spec.strategy, outcome])
            .inc();
    }
}

/// The worker: runs what is queued, in order, then sleeps ([`BUSY_POLL`], doubling to
/// [`IDLE_POLL`] while nothing comes).
fn work(queue: &Weak<ShadowQueue>) {
    let mut batch = Vec::with_capacity(SHADOW_QUEUE);
    let mut pause = BUSY_POLL;
    loop {
        let Some(q) = queue.upgrade() else { return };
        if let Ok(mut jobs) = q.jobs.lock() {
            std::mem::swap(&mut *jobs, &mut batch);
        }
        pause = if batch.is_empty() {
            (pause * 2).min(IDLE_POLL)
        } else {
            BUSY_POLL
        };
        for job in batch.drain(..) {
            // A panic in a model ends the job (its cell is settled on drop), not the worker.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
            let outcome = match run {
                Ok(true) => "scored",
                Ok(false) => "unscored",
                Err(_) => "failed",
            };
            q.count(&job.slot, outcome);
        }
        drop(q);
        std::thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_sticky_and_holds_its_share() {
        let salt = fnv1a(FNV_OFFSET, b"file:/srv/v2");
        let takes = |id: &str| unit(fnv1a(salt, id.as_bytes())) < 0.25;
        let users: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let taken = users.iter().filter(|u| takes(u)).count();
        // Binomial(20000, 0.25): sd ≈ 61; 5 sd either side.
        assert!((4_695..=5_305).contains(&taken), "{taken}");
        for u in &users[..200] {
            assert_eq!(takes(u), takes(u));
        }
        // Another experiment draws other clients.
        let other = fnv1a(FNV_OFFSET, b"file:/srv/v3");
        let both = users[..4000]
            .iter()
            .filter(|u| takes(u) && unit(fnv1a(other, u.as_bytes())) < 0.25)
            .count();
        assert!((150..=350).contains(&both), "{both}");
    }

    /// A shadow slot with nothing to load, the worker, and a query.
    fn shadow() -> (Arc<super::super::Models>, Shadow, Arc<Chooser>) {
        let models = Arc::new(super::super::Models::new(Arc::default()));
        let settings = RouterSettings {
            routing_strategy: RoutingStrategy::LlmRouter("llmrouter-knn".into()),
            ..RouterSettings::default()
        };
        let spec = Spec::of(&settings).map(|mut s| {
            s.challenger = true;
            s
        });
        let slot = models.slot(spec.unwrap_or_else(|| unreachable!("a learned strategy")));
        let queue = models.shadow_queue();
        let shadow = Shadow::new(slot, queue.unwrap_or_else(|| unreachable!("worker")));
        (models, shadow, Arc::new(Chooser::new(&settings, &[])))
    }

    #[test]
    fn every_handed_over_request_is_settled_decided_or_not() {
        let (_models, shadow, chooser) = shadow();
        let query = Arc::new(Query::new("what is 2 + 2?".into()));
        let cell = shadow.submit(&chooser, &[], &query);
        let cell = cell.unwrap_or_else(|| unreachable!("the queue has room"));
        // No model loaded: the worker settles the request without a decision.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !cell.settled() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(cell.settled() && cell.get().is_none());
        // Picked again (a retry): the same cell, not a second job.
        let again = shadow.submit(&chooser, &[], &query);
        assert!(again.is_some_and(|c| Arc::ptr_eq(&c, &cell)));
        // Another router (a fallback group's) does not shadow the request again.
        let other = Arc::new(Chooser::new(&RouterSettings::default(), &[]));
        assert!(shadow.submit(&other, &[], &query).is_none());
    }

    #[test]
    fn a_job_that_never_runs_settles_its_request() {
        let (_models, shadow, chooser) = shadow();
        let query = Arc::new(Query::new("hello".into()));
        let job = Job {
            chooser,
            slot: Arc::clone(&shadow.slot),
            candidates: Vec::new(),
            query: Arc::clone(&query),
        };
        assert!(!query.shadow.settled());
        drop(job);
        assert!(query.shadow.settled() && query.shadow.get().is_none());
    }

    #[test]
    fn unit_is_in_range() {
        for h in [0, 1, u64::MAX, 0x8000_0000_0000_0000] {
            let u = unit(h);
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }
}
