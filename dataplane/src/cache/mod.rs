//! The response cache (`litellm_settings.cache`): exact answers to chat requests
//! (`/v1/chat/completions`, `/v1/messages`) and to Responses requests (`/v1/responses`), by
//! a key over everything that changes the answer ([`key`]), scoped to the tenant.
//!
//! Two tiers. Each data plane keeps answers in memory in a quick_cache cache (CLOCK-Pro:
//! once the tier is full, a new answer enters cold and goes first unless it is asked for
//! again, so a run of one-off requests does not push out the answers that are; weighed in
//! bytes: `cache_params.max_memory_mb`). With `type: redis` and a Redis
//! (`--redis-url`), answers are also kept in Redis under `routeiq:cache:<key>` for their
//! TTL, shared by every data plane: a memory miss reads Redis, and a Redis hit is kept in
//! memory. Writes to Redis happen off the request path. Redis trouble is a miss, never an
//! error: it is counted in `routeiq_cache_redis_errors_total`, and after a failure Redis is
//! left alone for [`REDIS_BACKOFF`].
//!
//! Only complete, successful answers are stored: a stream is kept as the events the client
//! got, with their boundaries, and replayed as they were ([`replay`] converts between a
//! stream and one response when the delivery differs).
//!
//! With a semantic type (`redis-semantic`, `local-semantic`), a request the exact cache
//! cannot answer may be answered with the answer of a similar earlier request
//! ([`semantic`]).

pub mod control;
pub mod key;
pub mod replay;
pub mod semantic;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use redis::aio::ConnectionManager;
use routeiq_proto::{CacheMode, CacheSettings};
use smallvec::SmallVec;

use crate::clock::now_ms;
use crate::context::RequestCtx;
use crate::error::{ApiError, ClientApi};
use crate::handlers::request::RawObject;
use crate::usage::Usage;

/// A Redis call's longest wait on the request path.
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// After a Redis failure, how long lookups skip it.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);
/// Largest answer kept at all.
const MAX_ENTRY: usize = 16 * 1024 * 1024;
const REDIS_PREFIX: &str = "routeiq:cache:";
/// The memory tier's size before the settings give one.
const UNCONFIGURED_BYTES: u64 = 64 * 1024;

/// The API a cached answer is in: each has its own keys, and its own way to read a stream
/// as one response and the other way round ([`replay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI's `/v1/chat/completions`.
    Chat,
    /// Anthropic's `/v1/messages`.
    Messages,
    /// OpenAI's `/v1/responses`.
    Responses,
}

impl Api {
    /// The chat API a client speaks.
    pub fn chat(client: ClientApi) -> Self {
        match client {
            ClientApi::OpenAi => Self::Chat,
            ClientApi::Anthropic => Self::Messages,
        }
    }
}

/// What the request was answered from, for its headers, logs and span.
#[derive(Debug, Clone)]
pub enum Outcome {
    Hit {
        key: String,
        /// What the answer cost when it was made (USD).
        saved_cost: f64,
        /// A semantic hit: how similar the answered request was (cosine).
        similarity: Option<f32>,
    },
    Miss {
        key: String,
    },
    Bypass,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Hit { .. } => "hit",
            Self::Miss { .. } => "miss",
            Self::Bypass => "bypass",
        }
    }

    /// `x-routeiq-cache` and, when the cache was consulted, `x-litellm-cache-key`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("x-routeiq-cache", self.label().to_owned())];
        if let Self::Hit { key, .. } | Self::Miss { key } = self {
            h.push(("x-litellm-cache-key", key.clone()));
        }
        if let Self::Hit {
            similarity: Some(s),
            ..
        } = self
        {
            h.push(("x-litellm-semantic-similarity", format!("{s:.4}")));
        }
        h
    }
}

/// A stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub created_ms: u64,
    pub expires_ms: u64,
    pub answer: Answer,
    pub usage: Option<Usage>,
    /// What the answer cost (USD).
    pub cost: f64,
    /// The semantic partition of the request it answered, if the semantic cache took it: a
    /// semantic hit must match it (see [`semantic`]).
    pub partition: Option<[u8; 32]>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The response body the client got.
    Full(Bytes),
    /// The stream's events as the client got them (OpenAI's usage chunk included).
    Stream(Vec<Bytes>),
}

impl Entry {
    fn size(&self) -> usize {
        match &self.answer {
            Answer::Full(b) => b.len(),
            Answer::Stream(e) => e.iter().map(Bytes::len).sum(),
        }
    }

    const MAGIC: &'static [u8; 4] = b"RQC3";
    /// The format before usage recorded cache writes and reasoning tokens (read as none).
    const MAGIC_V2: &'static [u8; 4] = b"RQC2";
    /// The format before answers recorded their partition (read as having none).
    const MAGIC_V1: &'static [u8; 4] = b"RQC1";

    /// The entry as stored in Redis.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.size() + 64);
        b.put_slice(Self::MAGIC);
        b.put_u64(self.created_ms);
        b.put_u64(self.expires_ms);
        b.put_f64(self.cost);
        match self.usage {
            Some(u) => {
                b.put_u8(1);
                b.put_u64(u.input_tokens);
                b.put_u64(u.output_tokens);
                b.put_u64(u.cached_input_tokens);
                b.put_u64(u.cache_write_input_tokens);
                b.put_u64(u.reasoning_tokens);
            }
            None => b.put_u8(0),
        }
        match &self.partition {
            Some(p) => {
                b.put_u8(1);
                b.put_slice(p);
            }
            None => b.put_u8(0),
        }
        let parts: &[Bytes] = match &self.answer {
            Answer::Full(body) => {
                b.put_u8(0);
                std::slice::from_ref(body)
            }
            Answer::Stream(events) => {
                b.put_u8(1);
                events
            }
        };
        b.put_u32(parts.len() as u32);
        for p in parts {
            b.put_u32(p.len() as u32);
            b.put_slice(p);
        }
        b.freeze()
    }

    /// An entry read from Redis; `None` if it is not one.
    pub fn decode(mut b: Bytes) -> Option<Self> {
        let need = |b: &Bytes, n: usize| (b.remaining() >= n).then_some(());
        need(&b, 4 + 8 * 3 + 1)?;
        let version = match &b.split_to(4)[..] {
            m if m == Self::MAGIC => 3,
            m if m == Self::MAGIC_V2 => 2,
            m if m == Self::MAGIC_V1 => 1,
            _ => return None,
        };
        let created_ms = b.get_u64();
        let expires_ms = b.get_u64();
        let cost = b.get_f64();
        let usage = match b.get_u8() {
            0 => None,
            _ => {
                need(&b, if version >= 3 { 40 } else { 24 })?;
                let mut u = Usage {
                    input_tokens: b.get_u64(),
                    output_tokens: b.get_u64(),
                    cached_input_tokens: b.get_u64(),
                    ..Usage::default()
                };
                if version >= 3 {
                    u.cache_write_input_tokens = b.get_u64();
                    u.reasoning_tokens = b.get_u64();
                }
                Some(u)
            }
        };
        need(&b, 1)?;
        let partition = match if version == 1 { 0 } else { b.get_u8() } {
            0 => None,
            _ => {
                need(&b, 32)?;
                let mut p = [0u8; 32];
                b.copy_to_slice(&mut p);
                Some(p)
            }
        };
        need(&b, 5)?;
        let kind = b.get_u8();
        let n = b.get_u32() as usize;
        let mut parts = Vec::with_capacity(n.min(65_536));
        for _ in 0..n {
            need(&b, 4)?;
            let len = b.get_u32() as usize;
            need(&b, len)?;
            parts.push(b.split_to(len));
        }
        let answer = match kind {
            0 if parts.len() == 1 => Answer::Full(parts.pop()?),
            1 => Answer::Stream(parts),
            _ => return None,
        };
        Some(Self {
            created_ms,
            expires_ms,
            answer,
            usage,
            cost,
            partition,
        })
    }
}

/// How one request uses the cache (see [`Plan::of`]).
#[derive(Debug, Clone)]
pub struct Plan {
    pub key: [u8; 32],
    pub hex: String,
    /// Answer from the cache when it can.
    pub read: bool,
    /// Accept only entries at most this old.
    pub max_age: Option<Duration>,
    /// Keep the answer this long (`None`: do not keep it).
    pub store: Option<Duration>,
    pub store_truncated: bool,
    /// The answers' API.
    pub api: Api,
    /// What embedding the request's message cost (an embedding deployment's): part of the
    /// request's cost, not of the answer's.
    pub embedding_cost: f64,
    /// `type: redis`: Redis is a tier (else memory only, even where the data plane has a
    /// Redis for its limits).
    pub shared: bool,
    /// The cache's epoch when the request was looked up (see [`Cache::epoch`]).
    pub epoch: u64,
    /// What the semantic cache matches the request on, when it takes the request.
    pub semantic: Option<semantic::Query>,
}

impl Plan {
    /// How a chat request uses the cache under `settings`, its key's (or team's) policy and
    /// its own controls (its body's `cache` field is taken out whatever the settings).
    /// `None`: it does not (the cache is off, or not for this call type, or off for the
    /// key, or `default_off` and neither the request nor its key asked).
    pub fn of(
        settings: Option<&CacheSettings>,
        key: Option<&routeiq_proto::VirtualKey>,
        api: Api,
        model: &str,
        req: &mut RawObject,
        cache_control: Option<&str>,
    ) -> Result<Option<Self>, ApiError> {
        let controls = control::Controls::take(req, cache_control)?;
        let Some(s) = settings else {
            return Ok(None);
        };
        let supported = match api {
            Api::Chat => s.call_types.chat,
            Api::Messages => s.call_types.messages,
            Api::Responses => s.call_types.responses,
        };
        // The key's (else its team's) policy: what it turns off, its requests cannot undo.
        let policy = key.and_then(|k| k.cache.as_ref());
        let opted_in = controls.use_cache || policy.is_some_and(|p| p.use_cache);
        if !supported || (s.mode == CacheMode::DefaultOff && !opted_in) {
            return Ok(None);
        }
        let read = !controls.no_cache && !policy.is_some_and(|p| p.no_cache);
        let store = (!controls.no_store && !policy.is_some_and(|p| p.no_store))
            .then(|| controls.ttl.unwrap_or(s.ttl));
        if !read && store.is_none() {
            return Ok(None);
        }
        let namespaces = [
            s.namespace.as_deref(),
            policy.and_then(|p| p.namespace.as_deref()),
            controls.namespace.as_deref(),
        ];
        let tenant = key::tenant(s.scope, key);
        let k = key::of(api, &tenant, namespaces, model, req)?;
        let split = s
            .semantic
            .as_ref()
            .and_then(|sem| semantic::Query::split(api, req, sem));
        let semantic = match split {
            Some((text, rest)) => Some(semantic::Query {
                partition: semantic::partition(&key::of(api, &tenant, namespaces, model, &rest)?),
                text,
                threshold: s.similarity_threshold as f32,
                vector: None,
                embedder: None,
            }),
            None => None,
        };
        Ok(Some(Self {
            key: k,
            hex: routeiq_proto::hex(&k),
            read,
            max_age: controls.max_age,
            store: store.filter(|t| !t.is_zero()),
            store_truncated: s.store_truncated,
            api,
            embedding_cost: 0.0,
            shared: s.kind == routeiq_proto::CacheKind::Redis,
            epoch: 0,
            semantic,
        }))
    }
}

/// A stream being recorded for the cache (see `handlers::streaming::pump`). It is
/// recorded with OpenAI's usage chunk, which [`Recording::pass`] then takes out of what a
/// client that did not ask for it gets.
#[derive(Debug, Default)]
pub struct Recording {
    pub events: Vec<Bytes>,
    bytes: usize,
    /// The client did not ask for the usage chunk.
    pub drop_usage: bool,
    /// The upstream stream ended normally.
    pub complete: bool,
    /// Past [`MAX_ENTRY`]: not kept.
    pub too_large: bool,
}

impl Recording {
    pub fn new(drop_usage: bool) -> Self {
        Self {
            drop_usage,
            ..Self::default()
        }
    }

    /// Records the events about to go to the client, and takes out those it must not get.
    pub fn pass(&mut self, out: &mut Vec<Bytes>) {
        if !self.too_large {
            self.bytes += out.iter().map(Bytes::len).sum::<usize>();
            if self.bytes > MAX_ENTRY {
                self.too_large = true;
                self.events = Vec::new();
            } else {
                self.events.extend(out.iter().cloned());
            }
        }
        if self.drop_usage {
            out.retain(|e| !replay::is_usage_chunk(e));
        }
    }

    /// The stream to keep, if it may be kept: it ended with its closing event and carried
    /// no error event (whether it was cut short is [`Cache::put`]'s to decide).
    pub fn keepable(self, plan: &Plan) -> Option<Answer> {
        let ok = self.complete
            && !self.too_large
            && replay::closed(plan.api, &self.events)
            && !self.events.iter().any(replay::is_error);
        ok.then_some(Answer::Stream(self.events))
    }
}

/// One data plane's memory tier: answers by key, weighed in bytes.
struct Memory {
    answers: quick_cache::sync::Cache<
        [u8; 32],
        Arc<Stored>,
        ByBytes,
        quick_cache::DefaultHashBuilder,
        Tally,
    >,
    limit_bytes: u64,
    /// The largest answer kept (see [`Memory::new`]).
    largest: u64,
    tally: Tally,
}

/// An entry and its size (the weigher reads it on every eviction scan).
struct Stored {
    bytes: usize,
    entry: Entry,
}

/// Weighs an answer by its bytes (at least 1: an entry of weight 0 is never evicted).
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<[u8; 32], Arc<Stored>> for ByBytes {
    fn weight(&self, _: &[u8; 32], s: &Arc<Stored>) -> u64 {
        s.bytes.max(1) as u64
    }
}

/// A memory tier's entries and bytes, kept in its gauges; counts its evictions.
#[derive(Clone)]
struct Tally {
    entries: Arc<AtomicI64>,
    bytes: Arc<AtomicI64>,
    entries_gauge: IntGauge,
    bytes_gauge: IntGauge,
    evictions: IntCounter,
}

impl Tally {
    fn add(&self, entries: i64, bytes: i64) {
        let e = self.entries.fetch_add(entries, Ordering::Relaxed) + entries;
        let b = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.entries_gauge.set(e);
        self.bytes_gauge.set(b);
    }
}

/// The answers an insertion pushes out (the one it replaces, the ones it evicts, or itself
/// when the tier does not admit it): counted out of the tally, and freed after the shard's
/// lock is released.
#[derive(Default)]
struct Leaving {
    /// The key inserted: an answer of another key leaving is an eviction.
    key: [u8; 32],
    held: SmallVec<[Arc<Stored>; 2]>,
}

impl quick_cache::Lifecycle<[u8; 32], Arc<Stored>> for Tally {
    type RequestState = Leaving;

    fn on_evict(&self, state: &mut Leaving, key: [u8; 32], s: Arc<Stored>) {
        self.add(-1, -(s.bytes as i64));
        if key != state.key {
            self.evictions.inc();
        }
        state.held.push(s);
    }
}

impl Memory {
    fn new(limit_bytes: u64, m: &CacheMetrics) -> Self {
        let tally = Tally {
            entries: Arc::default(),
            bytes: Arc::default(),
            entries_gauge: m.memory_entries.clone(),
            bytes_gauge: m.memory_bytes.clone(),
            evictions: m.evictions.clone(),
        };
        // The estimate sizes the shards' tables: answers of ~4 KiB.
        let estimated = (limit_bytes / 4096).clamp(16, 1 << 20) as usize;
        let weight = limit_bytes.max(1);
        // Shards of at least twice the largest answer kept (see [`Memory::fits`]), up to
        // 64 (a power of two: quick_cache rounds a count up to one).
        let shards = 1 << (limit_bytes / (2 * MAX_ENTRY as u64)).clamp(1, 64).ilog2();
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated)
            .weight_capacity(weight)
            .shards(shards)
            .build();
        let hasher = quick_cache::DefaultHashBuilder::default;
        let answers = match options {
            Ok(o) => quick_cache::sync::Cache::with_options(o, ByBytes, hasher(), tally.clone()),
            // Not reached: both required options are set.
            Err(_) => {
                quick_cache::sync::Cache::with(estimated, weight, ByBytes, hasher(), tally.clone())
            }
        };
        // At most half a shard's share of the tier (quick_cache refuses an answer heavier
        // than most of a shard): up to [`MAX_ENTRY`] in a tier of at least 32 MiB, up to
        // half the tier in a smaller one.
        let largest = answers.shard_capacity() / 2;
        Self {
            answers,
            limit_bytes,
            largest,
            tally,
        }
    }

    /// Whether an answer of `bytes` is kept in memory.
    fn fits(&self, bytes: usize) -> bool {
        bytes as u64 <= self.largest
    }
}

pub struct CacheMetrics {
    pub hits: IntCounterVec,
    pub misses: IntCounterVec,
    pub cached_tokens: IntCounterVec,
    pub memory_bytes: IntGauge,
    pub memory_entries: IntGauge,
    pub evictions: IntCounter,
    pub redis_errors: IntCounter,
    pub stored: IntCounterVec,
    /// `stored`'s two series, resolved once.
    stored_memory: IntCounter,
    stored_redis: IntCounter,
    pub semantic_similarity: Histogram,
    pub semantic_entries: IntGauge,
    pub semantic_embedding_errors: IntCounter,
}

impl CacheMetrics {
    fn new() -> prometheus::Result<Self> {
        let counter_by_model =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["model"]);
        let stored = IntCounterVec::new(
            Opts::new(
                "routeiq_cache_stored_total",
                "Answers offered to the response cache, by tier (memory, redis)",
            ),
            &["tier"],
        )?;
        Ok(Self {
            stored_memory: stored.with_label_values(&["memory"]),
            stored_redis: stored.with_label_values(&["redis"]),
            stored,
            hits: counter_by_model("litellm_cache_hits_metric_total", "Requests answered from the response cache")?,
            misses: counter_by_model(
                "litellm_cache_misses_metric_total",
                "Requests the response cache could not answer",
            )?,
            cached_tokens: counter_by_model(
                "litellm_cached_tokens_metric_total",
                "Tokens (prompt and completion) of answers served from the response cache",
            )?,
            memory_bytes: IntGauge::new(
                "routeiq_cache_memory_bytes",
                "Bytes of answers in this data plane's memory tier",
            )?,
            memory_entries: IntGauge::new(
                "routeiq_cache_memory_entries",
                "Answers in this data plane's memory tier",
            )?,
            evictions: IntCounter::new(
                "routeiq_cache_evictions_total",
                "Answers evicted from the memory tier to make room",
            )?,
            redis_errors: IntCounter::new(
                "routeiq_cache_redis_errors_total",
                "Response-cache Redis calls that failed or timed out (each served as a miss or not shared)",
            )?,
            semantic_similarity: Histogram::with_opts(
                HistogramOpts::new(
                    "routeiq_cache_semantic_similarity",
                    "Cosine similarity of the nearest stored request, per semantic lookup that found one",
                )
                .buckets(vec![0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0]),
            )?,
            semantic_entries: IntGauge::new(
                "routeiq_cache_semantic_entries",
                "Requests in this data plane's semantic index",
            )?,
            semantic_embedding_errors: IntCounter::new(
                "routeiq_cache_semantic_embedding_errors_total",
                "Messages the semantic cache's embedding deployments did not embed (each request matched exactly only)",
            )?,
        })
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.hits.clone()),
            Box::new(self.misses.clone()),
            Box::new(self.cached_tokens.clone()),
            Box::new(self.memory_bytes.clone()),
            Box::new(self.memory_entries.clone()),
            Box::new(self.evictions.clone()),
            Box::new(self.redis_errors.clone()),
            Box::new(self.stored.clone()),
            Box::new(self.semantic_similarity.clone()),
            Box::new(self.semantic_entries.clone()),
            Box::new(self.semantic_embedding_errors.clone()),
        ]
    }
}

/// The response cache of one data plane.
pub struct Cache {
    memory: ArcSwap<Memory>,
    redis: Option<ConnectionManager>,
    redis_down_until_ms: AtomicU64,
    /// Moves on at every deletion: an answer looked up before one is not stored after it.
    epoch: Arc<AtomicU64>,
    semantic: Arc<semantic::Index>,
    indexer: semantic::Indexer,
    /// Attached: where the entries this data plane indexes go to be shared with the others
    /// (see [`Cache::share_semantic`]), and this data plane's id.
    share: semantic::Share,
    /// When an embedding failure was last logged (they are counted each, logged at most
    /// every [`EMBED_WARN_EVERY`]).
    embedding_warned_ms: AtomicU64,
    pub metrics: CacheMetrics,
}

impl Cache {
    /// A cache with a token memory tier: [`Cache::configure`] sizes it when the cache is
    /// on.
    pub fn new(redis: Option<ConnectionManager>) -> prometheus::Result<Self> {
        let metrics = CacheMetrics::new()?;
        let epoch = Arc::new(AtomicU64::new(0));
        let semantic = Arc::new(semantic::Index::new(
            routeiq_proto::SemanticSettings::DEFAULT_MAX_ENTRIES as usize,
        ));
        let share = semantic::Share::default();
        let indexer = semantic::Indexer::start(
            Arc::clone(&semantic),
            Arc::clone(&epoch),
            Arc::clone(&share),
            metrics.semantic_entries.clone(),
        );
        Ok(Self {
            memory: ArcSwap::from_pointee(Memory::new(UNCONFIGURED_BYTES, &metrics)),
            redis,
            redis_down_until_ms: AtomicU64::new(0),
            epoch,
            semantic,
            indexer,
            share,
            embedding_warned_ms: AtomicU64::new(0),
            metrics,
        })
    }

    /// Follows the settings of a new state: a different memory size starts an empty
    /// memory tier of that size; a cache turned off empties it (it must not answer with
    /// old entries when it is turned on again).
    pub fn configure(&self, settings: Option<&CacheSettings>) {
        let memory = self.memory.load();
        match settings {
            Some(s) if memory.limit_bytes != s.max_memory_bytes => {
                self.replace_memory(s.max_memory_bytes)
            }
            None if memory.tally.entries.load(Ordering::Relaxed) > 0 => self.flush_memory(),
            _ => {}
        }
        match settings.and_then(|s| s.semantic.as_ref()) {
            Some(sem) => self.semantic.configure(Some(sem.max_entries as usize)),
            None => self.semantic.configure(None),
        }
        self.metrics
            .semantic_entries
            .set(self.semantic.len() as i64);
    }

    /// The current epoch (see [`Plan::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn replace_memory(&self, limit: u64) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.memory
            .store(Arc::new(Memory::new(limit, &self.metrics)));
        self.semantic.clear();
        self.metrics.memory_bytes.set(0);
        self.metrics.memory_entries.set(0);
        self.metrics.semantic_entries.set(0);
    }

    /// Empties this data plane's memory tier.
    pub fn flush_memory(&self) {
        let limit = self.memory.load().limit_bytes;
        self.replace_memory(limit);
    }

    /// Drops answers from this data plane's memory tier (the control plane removed them
    /// from Redis).
    pub fn forget(&self, what: &routeiq_proto::ForgetCached) {
        let keys = match what {
            routeiq_proto::ForgetCached::All => return self.flush_memory(),
            routeiq_proto::ForgetCached::Keys(keys) => keys,
        };
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let memory = self.memory.load();
        let keys = keys
            .iter()
            .filter_map(|k| routeiq_proto::KeyHash::from_hex(k));
        for routeiq_proto::KeyHash(key) in keys {
            if let Some((_, old)) = memory.answers.remove(&key) {
                memory.tally.add(-1, -(old.bytes as i64));
            }
        }
    }

    /// The entry under `plan`'s key, if there is one young enough: from memory, else
    /// Redis.
    pub async fn get(&self, plan: &Plan) -> Option<Entry> {
        let now = now_ms();
        let fresh = |e: &Entry| {
            e.expires_ms > now
                && plan
                    .max_age
                    .is_none_or(|age| now.saturating_sub(e.created_ms) <= age.as_millis() as u64)
        };
        // An expired entry stays until a new answer replaces it or it is evicted.
        if let Some(s) = self.memory.load().answers.get(&plan.key) {
            if fresh(&s.entry) {
                return Some(s.entry.clone());
            }
        }
        if !plan.shared {
            return None;
        }
        let entry = self.redis_get(&plan.hex).await?;
        if !fresh(&entry) {
            return None;
        }
        self.keep_in_memory(plan, entry.clone());
        Some(entry)
    }

    /// On an exact miss: the answer of the most similar earlier request in the plan's
    /// partition, when it is similar enough (the plan of that answer, the answer, the
    /// similarity). With the in-process encoder, the request's last message is embedded
    /// only when its partition has entries (the embedding is kept in the plan; otherwise
    /// [`Cache::put`] has the indexer embed it off the request path); an embedding
    /// deployment's vector is in the plan already.
    pub async fn similar(
        &self,
        plan: &mut Plan,
        embedder: Option<semantic::Embedder>,
    ) -> Option<(Plan, Entry, f32)> {
        let read = plan.read;
        let query = plan.semantic.as_mut()?;
        let embedder = embedder?;
        let id = Arc::clone(embedder.id());
        self.semantic.follow(&id);
        query.embedder = Some(embedder.clone());
        if !read || !self.semantic.has(&id, &query.partition) {
            return None;
        }
        let vector = match (&query.vector, &embedder) {
            (Some(v), _) => Arc::clone(v),
            (None, semantic::Embedder::Deployment { .. }) => return None,
            (None, semantic::Embedder::Encoder(encoder)) => {
                let embedded =
                    tokio::time::timeout(EMBED_WAIT, encoder.embed_whole_async(&query.text));
                match embedded.await {
                    Ok(Ok(Some(v))) => v,
                    Ok(Ok(None)) => {
                        // Longer than the encoder reads: matched exactly only, and not
                        // indexed.
                        plan.semantic = None;
                        return None;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "semantic cache: the encoder failed; exact cache only");
                        return None;
                    }
                    Err(_) => {
                        tracing::debug!("semantic cache: the encoder is busy; a miss");
                        return None;
                    }
                }
            }
        };
        query.vector = Some(Arc::clone(&vector));
        let found = self
            .semantic
            .search(&id, &query.partition, &vector, now_ms())
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "semantic cache: search failed");
                Vec::new()
            });
        if let Some(best) = found.first() {
            self.metrics
                .semantic_similarity
                .observe(f64::from(best.similarity));
        }
        let (partition, threshold) = (query.partition, query.threshold);
        // Best first; an answer deleted or evicted since leaves the next one its chance.
        for m in found.into_iter().take_while(|m| m.similarity >= threshold) {
            let matched = Plan {
                key: m.key,
                hex: routeiq_proto::hex(&m.key),
                semantic: None,
                ..plan.clone()
            };
            if let Some(entry) = self.get(&matched).await {
                // Only an answer stored for this very partition (an entry shared by
                // another data plane is not taken on trust).
                if entry.partition == Some(partition) {
                    return Some((matched, entry, m.similarity));
                }
            }
        }
        None
    }

    async fn redis_get(&self, hex: &str) -> Option<Entry> {
        let mut conn = self.redis_now()?;
        let get = redis::AsyncCommands::get::<_, Option<Vec<u8>>>(
            &mut conn,
            format!("{REDIS_PREFIX}{hex}"),
        );
        match tokio::time::timeout(REDIS_TIMEOUT, get).await {
            Ok(Ok(v)) => v.and_then(|b| Entry::decode(Bytes::from(b))),
            Ok(Err(e)) => {
                self.redis_failed(&e.to_string());
                None
            }
            Err(_) => {
                self.redis_failed("timed out");
                None
            }
        }
    }

    /// Redis, unless there is none or it failed within [`REDIS_BACKOFF`].
    fn redis_now(&self) -> Option<ConnectionManager> {
        let conn = self.redis.as_ref()?;
        (now_ms() >= self.redis_down_until_ms.load(Ordering::Relaxed)).then(|| conn.clone())
    }

    fn redis_failed(&self, error: &str) {
        self.metrics.redis_errors.inc();
        let until = now_ms() + REDIS_BACKOFF.as_millis() as u64;
        let before = self.redis_down_until_ms.swap(until, Ordering::Relaxed);
        if before < now_ms() {
            tracing::warn!(
                error,
                "response cache: Redis failed; serving misses from memory only for a while"
            );
        }
    }

    /// Keeps an answer in memory (in place of an answer of the same key), unless a deletion
    /// came after `plan` was made (the answer may be one of those deleted).
    fn keep_in_memory(&self, plan: &Plan, entry: Entry) {
        let memory = self.memory.load();
        let bytes = entry.size();
        if !memory.fits(bytes) || self.epoch() != plan.epoch {
            return;
        }
        self.metrics.stored_memory.inc();
        memory.tally.add(1, bytes as i64);
        let mut leaving = Leaving {
            key: plan.key,
            held: Default::default(),
        };
        let stored = Arc::new(Stored { bytes, entry });
        memory
            .answers
            .insert_with_lifecycle(plan.key, stored, &mut leaving);
    }

    /// Keeps an answer: in memory now, in Redis in the background. An answer cut short by
    /// the token limit is kept only with `cache_truncated`.
    pub fn put(self: &Arc<Self>, plan: &Plan, answer: Answer, usage: Option<Usage>, cost: f64) {
        let Some(ttl) = plan.store else {
            return;
        };
        if !plan.store_truncated && replay::truncated(plan.api, &answer) {
            return;
        }
        if plan.api == Api::Responses && !replay::response_finished(&answer) {
            return;
        }
        let now = now_ms();
        let entry = Entry {
            created_ms: now,
            expires_ms: now + ttl.as_millis() as u64,
            answer,
            usage,
            cost,
            partition: plan.semantic.as_ref().map(|q| q.partition),
        };
        let bytes = entry.size();
        if bytes > MAX_ENTRY || self.epoch() != plan.epoch {
            return;
        }
        // Kept nowhere: not indexed either.
        if !plan.shared && !self.memory.load().fits(bytes) {
            return;
        }
        if let Some(q) = &plan.semantic {
            self.index(plan, q, entry.expires_ms);
        }
        if let Some(mut conn) = self.redis_now().filter(|_| plan.shared) {
            let encoded = entry.encode();
            let me = Arc::clone(self);
            let name = format!("{REDIS_PREFIX}{}", plan.hex);
            let secs = ttl.as_secs().max(1);
            let epoch = plan.epoch;
            tokio::spawn(async move {
                if me.epoch() != epoch {
                    return;
                }
                let set = redis::AsyncCommands::set_ex::<_, _, ()>(
                    &mut conn,
                    name,
                    encoded.as_ref(),
                    secs,
                );
                match tokio::time::timeout(Duration::from_secs(2), set).await {
                    Ok(Ok(())) => me.metrics.stored_redis.inc(),
                    Ok(Err(e)) => me.redis_failed(&e.to_string()),
                    Err(_) => me.redis_failed("timed out"),
                }
            });
        }
        self.keep_in_memory(plan, entry);
    }
}

/// At most one embedding failure is logged in this time (all are counted).
const EMBED_WARN_EVERY: Duration = Duration::from_secs(10);

/// Entries waiting to be shared; past this, new ones are not shared.
const SHARE_BUFFER: usize = 1024;
/// The longest a lookup waits for the encoder (it is a miss after that).
pub const EMBED_WAIT: Duration = Duration::from_secs(1);

impl Cache {
    /// Has the indexer index a stored answer under its request's embedding; with Redis
    /// (where the answer is shared), the entry is offered to the other data planes.
    fn index(&self, plan: &Plan, query: &semantic::Query, expires_ms: u64) {
        if query.embedder.is_some() {
            self.indexer.offer(semantic::Job::Local {
                query: query.clone(),
                key: plan.key,
                expires_ms,
                epoch: plan.epoch,
                share: plan.shared,
            });
        }
    }

    /// Whether the semantic index holds entries of embedder `id` in `partition`.
    pub fn indexed(&self, id: &str, partition: &[u8; 32]) -> bool {
        self.semantic.has(id, partition)
    }

    /// Counts a message the embedding deployments of model group `group` did not embed
    /// (the request is matched exactly only).
    pub fn embedding_failed(&self, group: &str, error: &str) {
        self.metrics.semantic_embedding_errors.inc();
        let now = now_ms();
        let last = self.embedding_warned_ms.load(Ordering::Relaxed);
        let due = now >= last + EMBED_WARN_EVERY.as_millis() as u64;
        if due
            && self
                .embedding_warned_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(group, error, "semantic cache: the embedding deployments failed; exact cache only (logged at most every 10 s)");
        }
    }

    /// Starts sharing indexed entries (attached): the receiver gets each entry this data
    /// plane (`origin`) indexes for a `redis-semantic` cache from now on.
    pub fn share_semantic(
        &self,
        origin: String,
    ) -> Option<tokio::sync::mpsc::Receiver<routeiq_proto::SemanticEntry>> {
        let (tx, rx) = tokio::sync::mpsc::channel(SHARE_BUFFER);
        self.share.set((origin, tx)).ok()?;
        Some(rx)
    }

    /// Has the indexer index an entry another data plane shared (its answer is in Redis),
    /// unless it is this data plane's own, expired, not a unit vector, or of another
    /// encoder than `encoder` (this data plane's).
    pub fn index_shared(&self, e: routeiq_proto::SemanticEntry, encoder: &Arc<str>) {
        self.semantic.follow(encoder);
        self.indexer.offer(semantic::Job::Peer(e));
    }
}

/// Records a hit on `ctx`: its usage is the answer's (for the logs); it costs nothing but
/// what embedding its message cost (see `RequestCtx::cost`).
pub fn hit(ctx: &mut RequestCtx, plan: &Plan, entry: &Entry, similarity: Option<f32>) {
    ctx.usage = entry.usage;
    ctx.cache = Some(Outcome::Hit {
        key: plan.hex.clone(),
        saved_cost: entry.cost,
        similarity,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(key: u8, store: Option<Duration>) -> Plan {
        Plan {
            key: [key; 32],
            hex: routeiq_proto::hex(&[key; 32]),
            read: true,
            max_age: None,
            store,
            store_truncated: false,
            api: Api::Chat,
            embedding_cost: 0.0,
            shared: false,
            epoch: 0,
            semantic: None,
        }
    }

    #[test]
    fn entries_round_trip_through_their_encoding() {
        for answer in [
            Answer::Full(Bytes::from_static(b"{\"a\":1}")),
            Answer::Stream(vec![Bytes::from_static(b"data: 1\n\n"), Bytes::new()]),
        ] {
            let e = Entry {
                created_ms: 1,
                expires_ms: 2,
                answer,
                usage: Some(Usage {
                    input_tokens: 3,
                    output_tokens: 4,
                    cached_input_tokens: 1,
                    cache_write_input_tokens: 2,
                    reasoning_tokens: 3,
                }),
                cost: 0.25,
                partition: Some([7; 32]),
            };
            assert_eq!(Entry::decode(e.encode()), Some(e.clone()));
            let enc = e.encode();
            assert_eq!(Entry::decode(enc.slice(..enc.len() - 1)), None, "truncated");
        }
        assert_eq!(Entry::decode(Bytes::from_static(b"nope")), None);
        // An entry written before answers recorded their partition reads as having none.
        let e = Entry {
            created_ms: 1,
            expires_ms: 2,
            answer: Answer::Full(Bytes::from_static(b"{}")),
            usage: None,
            cost: 0.5,
            partition: None,
        };
        let mut v1 = e.encode().to_vec();
        v1[..4].copy_from_slice(b"RQC1");
        v1.remove(4 + 8 * 3 + 1);
        assert_eq!(Entry::decode(Bytes::from(v1)), Some(e));
        // One written before usage recorded cache writes and reasoning reads them as none.
        let e = Entry {
            created_ms: 1,
            expires_ms: 2,
            answer: Answer::Full(Bytes::from_static(b"{}")),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                cached_input_tokens: 1,
                ..Usage::default()
            }),
            cost: 0.5,
            partition: None,
        };
        let mut v2 = e.encode().to_vec();
        v2[..4].copy_from_slice(b"RQC2");
        // The usage flag, then three counts of 8 bytes; the two after them go.
        let at = 4 + 8 * 3 + 1 + 8 * 3;
        v2.drain(at..at + 16);
        assert_eq!(Entry::decode(Bytes::from(v2)), Some(e));
    }

    #[tokio::test]
    async fn memory_tier_hits_expires_and_flushes() {
        let cache = Arc::new(Cache::new(None).unwrap());
        let p = plan(1, Some(Duration::from_secs(60)));
        assert!(cache.get(&p).await.is_none());
        cache.put(&p, Answer::Full(Bytes::from_static(b"x")), None, 0.5);
        let e = cache.get(&p).await.unwrap();
        assert_eq!(e.answer, Answer::Full(Bytes::from_static(b"x")));
        assert_eq!(e.cost, 0.5);
        assert!(cache.get(&plan(2, None)).await.is_none(), "another key");
        let mut young = p.clone();
        young.max_age = Some(Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(cache.get(&young).await.is_none(), "s-maxage 0 refuses it");
        let short = plan(3, Some(Duration::from_millis(1)));
        cache.put(&short, Answer::Full(Bytes::from_static(b"y")), None, 0.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(cache.get(&short).await.is_none(), "expired");
        assert_eq!(cache.metrics.memory_entries.get(), 2, "kept until replaced");
        // A new answer replaces the one of its key.
        let long = plan(3, Some(Duration::from_secs(60)));
        cache.put(&long, Answer::Full(Bytes::from_static(b"z")), None, 0.0);
        cache.put(&long, Answer::Full(Bytes::from_static(b"w")), None, 0.0);
        let e = cache.get(&long).await.unwrap();
        assert_eq!(e.answer, Answer::Full(Bytes::from_static(b"w")));
        assert_eq!(
            cache.metrics.evictions.get(),
            0,
            "a replacement is no eviction"
        );
        assert_eq!(cache.metrics.memory_entries.get(), 2);
        assert_eq!(cache.metrics.memory_bytes.get(), 2);
        // An answer looked up before a deletion is not stored after it.
        let before = plan(4, Some(Duration::from_secs(60)));
        cache.forget(&routeiq_proto::ForgetCached::Keys(vec![
            routeiq_proto::hex(&[9; 32]),
        ]));
        cache.put(&before, Answer::Full(Bytes::from_static(b"v")), None, 0.0);
        assert!(cache.get(&before).await.is_none());
        cache.forget(&routeiq_proto::ForgetCached::Keys(vec![p.hex.clone()]));
        assert!(cache.get(&p).await.is_none(), "deleted");
        assert_eq!(cache.metrics.memory_entries.get(), 1);
        assert_eq!(cache.metrics.memory_bytes.get(), 1);
        let mut again = p.clone();
        again.epoch = cache.epoch();
        cache.put(&again, Answer::Full(Bytes::from_static(b"x2")), None, 0.0);
        assert_eq!(
            cache.get(&again).await.unwrap().answer,
            Answer::Full(Bytes::from_static(b"x2"))
        );
        assert_eq!(cache.metrics.memory_entries.get(), 2);
        assert_eq!(cache.metrics.memory_bytes.get(), 3);
        cache.flush_memory();
        assert!(cache.get(&long).await.is_none());
        assert_eq!(cache.metrics.memory_entries.get(), 0);
        assert_eq!(cache.metrics.memory_bytes.get(), 0);
    }

    #[tokio::test]
    async fn memory_tier_stays_within_its_bytes_and_counts_evictions() {
        let cache = Arc::new(Cache::new(None).unwrap());
        cache.configure(Some(&CacheSettings {
            max_memory_bytes: 4096,
            ..CacheSettings::default()
        }));
        let body = Bytes::from(vec![b'a'; 100]);
        for k in 0..100 {
            let mut p = plan(k, Some(Duration::from_secs(60)));
            p.epoch = cache.epoch();
            cache.put(&p, Answer::Full(body.clone()), None, 0.0);
        }
        let mut kept = 0;
        for k in 0..100 {
            if cache.get(&plan(k, None)).await.is_some() {
                kept += 1;
            }
        }
        assert!(kept > 0 && kept * 100 <= 4096, "{kept} answers kept");
        assert_eq!(cache.metrics.memory_entries.get(), kept);
        assert_eq!(cache.metrics.memory_bytes.get(), kept * 100);
        assert_eq!(cache.metrics.evictions.get(), 100 - kept as u64);
        // The most recent answer is still there.
        assert!(cache.get(&plan(99, None)).await.is_some());
    }

    #[test]
    fn the_memory_tier_keeps_any_answer_the_cache_keeps() {
        let m = CacheMetrics::new().unwrap();
        for mib in [32, 256, 1024] {
            assert!(Memory::new(mib << 20, &m).fits(MAX_ENTRY), "{mib} MiB");
        }
        // A smaller tier keeps answers up to half its size.
        let small = Memory::new(8 << 20, &m);
        assert!(small.fits(4 << 20) && !small.fits((4 << 20) + 1));
    }

    #[test]
    fn no_store_keeps_nothing() {
        let cache = Arc::new(Cache::new(None).unwrap());
        cache.put(
            &plan(1, None),
            Answer::Full(Bytes::from_static(b"x")),
            None,
            0.0,
        );
        assert_eq!(cache.metrics.memory_entries.get(), 0);
    }

    #[test]
    fn key_policies_narrow_what_requests_may_do() {
        use routeiq_proto::{CachePolicy, VirtualKey};
        let plan = |policy: Option<CachePolicy>, s: &CacheSettings| {
            let key = VirtualKey {
                cache: policy,
                ..Default::default()
            };
            let body = br#"{"model":"m","messages":[],"cache":{"no-cache":false}}"#;
            let mut req = RawObject::parse(body).unwrap();
            Plan::of(Some(s), Some(&key), Api::Chat, "m", &mut req, None).unwrap()
        };
        let on = CacheSettings::default();
        let open = plan(None, &on).unwrap();
        assert!(open.read && open.store.is_some());
        let off = CachePolicy::from_metadata(&serde_json::json!({"cache": false})).unwrap();
        assert!(plan(off, &on).is_none(), "the key is kept out");
        let no_store = CachePolicy {
            no_store: true,
            ..Default::default()
        };
        let p = plan(Some(no_store), &on).unwrap();
        assert!(p.read && p.store.is_none());
        let ns = CachePolicy {
            namespace: Some("a".into()),
            ..Default::default()
        };
        assert_ne!(plan(Some(ns), &on).unwrap().key, open.key);
        let default_off = CacheSettings {
            mode: CacheMode::DefaultOff,
            ..CacheSettings::default()
        };
        assert!(plan(None, &default_off).is_none());
        let opted = CachePolicy {
            use_cache: true,
            ..Default::default()
        };
        assert!(plan(Some(opted), &default_off).is_some());
    }

    #[test]
    fn semantic_partitions_are_scoped_like_exact_keys() {
        use routeiq_proto::{EncoderSource, SemanticSettings, VirtualKey};
        let settings = CacheSettings {
            semantic: Some(SemanticSettings {
                encoder: EncoderSource::Path("/m".into()),
                max_messages: 1,
                max_entries: 10,
            }),
            ..CacheSettings::default()
        };
        let query = |team: &str, system: &str, text: &str| {
            let key = VirtualKey {
                team_id: team.into(),
                ..Default::default()
            };
            let body = serde_json::json!({"model": "m", "messages": [
                {"role": "system", "content": system}, {"role": "user", "content": text}]});
            let mut req = RawObject::parse(body.to_string().as_bytes()).unwrap();
            let plan = Plan::of(Some(&settings), Some(&key), Api::Chat, "m", &mut req, None)
                .unwrap()
                .unwrap();
            let q = plan.semantic.unwrap();
            assert_eq!(&*q.text, text);
            assert_ne!(q.partition, plan.key, "never an exact key");
            q.partition
        };
        let p = query("a", "brief", "What is the capital of France?");
        assert_eq!(p, query("a", "brief", "Which city is France's capital?"));
        assert_ne!(
            p,
            query("b", "brief", "What is the capital of France?"),
            "another team"
        );
        assert_ne!(
            p,
            query("a", "long", "What is the capital of France?"),
            "another system"
        );
        let exact_only = CacheSettings::default();
        let mut req =
            RawObject::parse(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
                .unwrap();
        let plan = Plan::of(Some(&exact_only), None, Api::Chat, "m", &mut req, None);
        assert!(plan.unwrap().unwrap().semantic.is_none());
    }

    #[test]
    fn hex_keys_parse() {
        let k = [0xab; 32];
        let parse = |s: &str| routeiq_proto::KeyHash::from_hex(s).map(|h| h.0);
        assert_eq!(parse(&routeiq_proto::hex(&k)), Some(k));
        assert_eq!(parse("zz"), None);
    }
}
