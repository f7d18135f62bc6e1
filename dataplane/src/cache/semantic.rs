//! The semantic cache: a request the exact cache cannot answer is given the answer of an
//! earlier request whose last message means nearly the same, when everything else about
//! the two is the same.
//!
//! A request is matched on its last message (a user's, in text), embedded by the sentence
//! encoder of a routing-model artifact (`cache_params.semantic_model_path`: the MiniLM
//! encoder the learned routers run, in process). Only short conversations are matched
//! (`semantic_max_messages`, system messages aside; 1 by default), and never requests with
//! tools: an agent's multi-turn traffic would be given stale answers.
//!
//! Everything but the last message must be equal: the request's *partition* is the exact
//! key of the request without its last message (tenant, namespaces, model group, system
//! prompt, sampling parameters...), so a semantic hit is scoped exactly like an exact one.
//!
//! The [`Index`] is each data plane's own, per partition (scanned exactly while small, an
//! HNSW graph past that), bounded to `semantic_max_entries` in all (the oldest entry goes
//! first; an expired one is never matched). Its entries are added by the [`Indexer`], a
//! thread of its own, off the request path. An entry points at the exact key its answer is
//! stored under, so the answer itself lives in the memory tier and Redis, and a deleted or
//! evicted answer is a miss; a stored answer also records its partition, which a semantic
//! hit must match.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use routeiq_proto::SemanticSettings;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Api;
use crate::handlers::request::RawObject;
use crate::routing::learned::featurize::Encoder;

/// What a request is matched on (see [`Query::of`]).
#[derive(Debug, Clone)]
pub struct Query {
    /// Everything about the request but its last message.
    pub partition: [u8; 32],
    /// The last message's text.
    pub text: Arc<str>,
    /// The cosine similarity a match needs at least.
    pub threshold: f32,
    /// The text's embedding, once computed (at lookup, to store it under after).
    pub vector: Option<Arc<[f32]>>,
    /// What embedded (or embeds) the text when the request was looked up (none: the
    /// encoder is not loaded).
    pub embedder: Option<Embedder>,
}

/// What makes the semantic cache's vectors.
#[derive(Clone)]
pub enum Embedder {
    /// The MiniLM encoder, in process: a lookup embeds when its partition has entries,
    /// the indexer otherwise.
    Encoder(Arc<Encoder>),
    /// A model group's embedding deployments (`redis_semantic_cache_embedding_model`):
    /// the handler embeds each request the semantic cache takes before its lookup (the
    /// request pays for it), so its query always has its vector.
    Deployment {
        /// The group and its deployments' models: vectors of one are comparable.
        id: Arc<str>,
    },
}

impl Embedder {
    /// Which vectors it makes: the index holds one embedder's at a time.
    pub fn id(&self) -> &Arc<str> {
        match self {
            Self::Encoder(e) => &e.id,
            Self::Deployment { id } => id,
        }
    }
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Embedder").field(self.id()).finish()
    }
}

/// A vector an embedding deployment returned, as the index takes it: finite, not zero,
/// scaled to unit length (providers do not all normalise).
pub fn unit(v: &[f32]) -> Option<Arc<[f32]>> {
    let norm = norm(v);
    (!v.is_empty() && norm.is_finite() && norm > 0.0)
        .then(|| v.iter().map(|x| (f64::from(*x) / norm) as f32).collect())
}

impl Query {
    /// The request's last message and the rest of it, when the semantic cache takes the
    /// request: at most `max_messages` messages (system messages aside), no tools, and a
    /// last message from the user in text. A Responses request's messages are its `input`
    /// (a string is one user message; one that continues a stored conversation never gets
    /// here: `handlers::responses` keeps it from the cache).
    pub fn split(
        api: Api,
        req: &RawObject,
        settings: &SemanticSettings,
    ) -> Option<(Arc<str>, RawObject)> {
        let has = |f: &str| {
            req.value(f)
                .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        };
        if has("tools") || has("functions") {
            return None;
        }
        let field = match api {
            Api::Responses => "input",
            Api::Chat | Api::Messages => "messages",
        };
        let mut messages = match req.value(field)? {
            Value::Array(m) => m,
            Value::String(text) if api == Api::Responses => {
                vec![json!({"role": "user", "content": text})]
            }
            _ => return None,
        };
        let system = |m: &Value| {
            api != Api::Messages && matches!(m["role"].as_str(), Some("system" | "developer"))
        };
        let turns = messages.iter().filter(|m| !system(m)).count();
        if turns == 0 || turns > settings.max_messages as usize {
            return None;
        }
        let last = messages.pop()?;
        let is_message = last.get("type").is_none_or(|t| t == "message");
        if !is_message || last["role"].as_str() != Some("user") {
            return None;
        }
        let text = text_of(&last["content"]).filter(|t| t.len() <= MAX_TEXT_BYTES)?;
        let mut rest = req.clone();
        rest.set(field, &messages).ok()?;
        Some((text.into(), rest))
    }
}

/// Longest last message the semantic cache takes (far more than the encoder's 256 tokens
/// read; a longer one is matched exactly only anyway, see `Encoder::embed_whole`).
const MAX_TEXT_BYTES: usize = 16 * 1024;

/// A message's content as text: a string, or parts that are all text (`text`, or the
/// Responses API's `input_text`; joined by a new line). `None` for anything else (images,
/// documents, tool results).
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Array(parts) if !parts.is_empty() => {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .map(|p| match p["type"].as_str() {
                    Some("text" | "input_text") => p["text"].as_str(),
                    _ => None,
                })
                .collect();
            let text = texts?.join("\n");
            (!text.trim().is_empty()).then_some(text)
        }
        _ => None,
    }
}

/// The partition of a request whose key without its last message is `rest_key`: a hash
/// of its own, so it never equals an exact key.
pub fn partition(rest_key: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"routeiq-semantic-v1");
    h.update(rest_key);
    h.finalize().into()
}

/// A match: the exact key of the answer, and how similar its request was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    pub key: [u8; 32],
    pub similarity: f32,
}

/// One entry's facts.
#[derive(Debug, Clone, Copy)]
struct Meta {
    key: [u8; 32],
    expires_ms: u64,
}

/// Candidates a search returns, best first (the first whose answer is still there wins).
const CANDIDATES: usize = 4;
/// A partition is scanned exactly up to this many entries; past it, it gets a graph.
const FLAT_MAX: usize = 256;

/// Each data plane's semantic index. Each partition is searched on its own, so a search
/// only ever reads entries it may match, however many tenants and prompts share the index:
/// a small partition is scanned exactly, a large one (past [`FLAT_MAX`]) has an HNSW
/// graph (usearch, cosine over int8-quantised vectors).
pub struct Index {
    inner: RwLock<Inner>,
}

struct Inner {
    /// Whether the semantic cache is on (entries queued before it was turned off are
    /// dropped).
    enabled: bool,
    /// The encoder whose vectors the index holds: the one lookups last used (see
    /// [`Index::follow`]); entries of any other are dropped.
    encoder: Arc<str>,
    dim: usize,
    max_entries: usize,
    parts: HashMap<[u8; 32], Part>,
    /// Partition and label by exact key: a key stored again replaces its entry.
    labels: HashMap<[u8; 32], ([u8; 32], u64)>,
    /// Labels with their partitions, oldest first (a replaced entry's stays until popped).
    order: VecDeque<(u64, [u8; 32])>,
    entries: usize,
    next_label: u64,
}

struct Part {
    /// By label: the search's filter asks it for every node it visits, so the labels (our
    /// own sequence numbers, not the client's) are hashed with foldhash, not SipHash.
    meta: foldhash::HashMap<u64, Meta>,
    /// The vectors while the partition is small (unit length: a dot product is the cosine).
    flat: Vec<(u64, Arc<[f32]>)>,
    graph: Option<usearch::Index>,
}

/// Why the index could not take or search an entry (usearch's own error).
#[derive(Debug, thiserror::Error)]
#[error("semantic index: {0}")]
pub struct IndexError(String);

fn index_err(e: impl std::fmt::Display) -> IndexError {
    IndexError(e.to_string())
}

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This data plane stored its answer.
    Local,
    /// Another data plane shared it.
    Peer,
}

impl Index {
    pub fn new(max_entries: usize) -> Self {
        Self {
            inner: RwLock::new(Inner::empty(max_entries)),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.read().entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `partition` has entries of `encoder` (a lookup is worth an embedding).
    pub fn has(&self, encoder: &str, partition: &[u8; 32]) -> bool {
        let inner = self.read();
        *inner.encoder == *encoder && inner.parts.contains_key(partition)
    }

    /// Turns the index on with this bound (a new one empties it), or off (`None`: empty,
    /// and taking nothing until turned on again).
    pub fn configure(&self, max_entries: Option<usize>) {
        let now = {
            let i = self.read();
            i.enabled.then_some(i.max_entries)
        };
        match max_entries {
            Some(max) if now != Some(max.max(1)) => self.replace(max, Arc::from("")),
            None if now.is_some() || !self.is_empty() => {
                let old = std::mem::replace(&mut *self.write(), Inner::disabled());
                drop(old);
            }
            _ => {}
        }
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        let (enabled, max, encoder) = {
            let i = self.read();
            (i.enabled, i.max_entries, Arc::clone(&i.encoder))
        };
        if enabled {
            self.replace(max, encoder);
        }
    }

    /// Makes `encoder` the one whose vectors the index holds: a new one (a reload)
    /// empties it, and entries of the old one still queued are dropped.
    pub fn follow(&self, encoder: &Arc<str>) {
        let (same, max) = {
            let i = self.read();
            (*i.encoder == **encoder || !i.enabled, i.max_entries)
        };
        if !same {
            self.replace(max, Arc::clone(encoder));
        }
    }

    /// Starts empty; the old entries are dropped after the lock is released.
    fn replace(&self, max_entries: usize, encoder: Arc<str>) {
        let mut fresh = Inner::empty(max_entries);
        fresh.encoder = encoder;
        let old = std::mem::replace(&mut *self.write(), fresh);
        drop(old);
    }

    /// Adds the embedding of a stored answer's request (its exact `key`), made by
    /// `encoder`, making room by dropping the oldest entries, unless `still` (asked under
    /// the lock) says it no longer should.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        origin: Origin,
        encoder: &Arc<str>,
        partition: [u8; 32],
        key: [u8; 32],
        expires_ms: u64,
        vector: &Arc<[f32]>,
        still: impl FnOnce() -> bool,
    ) -> Result<(), IndexError> {
        let mut guard = self.write();
        if !guard.enabled || !still() {
            return Ok(());
        }
        if guard.encoder.is_empty() && origin == Origin::Local {
            // The first entry since the index started: its encoder is the live one.
            guard.encoder = Arc::clone(encoder);
        }
        // Another encoder's vectors are not comparable with these.
        if *guard.encoder != **encoder || (guard.dim != 0 && guard.dim != vector.len()) {
            return Ok(());
        }
        guard.dim = vector.len();
        guard.add(partition, key, expires_ms, vector)
    }

    /// The live entries of `partition` most similar to `vector` (of `encoder`), best first.
    pub fn search(
        &self,
        encoder: &str,
        partition: &[u8; 32],
        vector: &[f32],
        now_ms: u64,
    ) -> Result<Vec<Match>, IndexError> {
        let inner = self.read();
        let part = inner
            .parts
            .get(partition)
            .filter(|_| *inner.encoder == *encoder && inner.dim == vector.len());
        let Some(part) = part else {
            return Ok(Vec::new());
        };
        let live = |label: &u64| part.meta.get(label).filter(|m| m.expires_ms > now_ms);
        let mut found: Vec<Match> = match &part.graph {
            None => part
                .flat
                .iter()
                .filter_map(|(label, v)| {
                    let m = live(label)?;
                    Some(Match {
                        key: m.key,
                        similarity: crate::routing::learned::artifact::dot(v, vector),
                    })
                })
                .filter(|m| m.similarity.is_finite())
                .collect(),
            Some(graph) => {
                // The filter is a call (and a label lookup) for every node the search
                // visits: asked for only when the nearest entries include an expired one
                // (then the partition is searched twice).
                let mut hits = graph.search(vector, CANDIDATES).map_err(index_err)?;
                if hits.keys.iter().any(|label| live(label).is_none()) {
                    hits = graph
                        .filtered_search(vector, CANDIDATES, |label: u64| live(&label).is_some())
                        .map_err(index_err)?;
                }
                hits.keys
                    .iter()
                    .zip(&hits.distances)
                    .filter_map(|(label, d)| {
                        Some(Match {
                            key: live(label)?.key,
                            similarity: 1.0 - d,
                        })
                    })
                    .filter(|m| m.similarity.is_finite())
                    .collect()
            }
        };
        found.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        found.truncate(CANDIDATES);
        Ok(found)
    }
}

impl Part {
    fn new() -> Self {
        Self {
            meta: foldhash::HashMap::default(),
            flat: Vec::new(),
            graph: None,
        }
    }

    fn add(&mut self, label: u64, vector: &Arc<[f32]>) -> Result<(), IndexError> {
        if self.graph.is_none() && self.flat.len() < FLAT_MAX {
            self.flat.push((label, Arc::clone(vector)));
            return Ok(());
        }
        if self.graph.is_none() {
            let graph = new_graph(vector.len())?;
            graph.reserve(FLAT_MAX * 2).map_err(index_err)?;
            for (l, v) in &self.flat {
                graph.add(*l, v).map_err(index_err)?;
            }
            self.flat = Vec::new();
            self.graph = Some(graph);
        }
        if let Some(graph) = &self.graph {
            if graph.size() + 1 > graph.capacity() {
                graph.reserve(graph.capacity() * 2).map_err(index_err)?;
            }
            graph.add(label, vector).map_err(index_err)?;
        }
        Ok(())
    }

    fn remove(&mut self, label: u64) -> Result<(), IndexError> {
        match &self.graph {
            Some(graph) => graph.remove(label).map(drop).map_err(index_err),
            None => {
                self.flat.retain(|(l, _)| *l != label);
                Ok(())
            }
        }
    }
}

/// A partition's graph. Connectivity 32 (at 100,000 clustered entries, 16 missed 1.4 % of
/// near-duplicates and 32 missed 0.2 %, with no search time lost that the bench could
/// show; docs/benchmarks.md), and a search expansion of 48 for that recall: a neighbour
/// the graph misses is a lost hit.
fn new_graph(dim: usize) -> Result<usearch::Index, IndexError> {
    usearch::Index::new(&usearch::IndexOptions {
        dimensions: dim,
        metric: usearch::MetricKind::Cos,
        quantization: usearch::ScalarKind::I8,
        connectivity: 32,
        expansion_add: 64,
        expansion_search: 48,
        multi: false,
    })
    .map_err(index_err)
}

impl Inner {
    fn empty(max_entries: usize) -> Self {
        Self {
            enabled: true,
            encoder: Arc::from(""),
            dim: 0,
            max_entries: max_entries.max(1),
            parts: HashMap::new(),
            labels: HashMap::new(),
            order: VecDeque::new(),
            entries: 0,
            next_label: 0,
        }
    }

    fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::empty(routeiq_proto::SemanticSettings::DEFAULT_MAX_ENTRIES as usize)
        }
    }

    fn add(
        &mut self,
        partition: [u8; 32],
        key: [u8; 32],
        expires_ms: u64,
        vector: &Arc<[f32]>,
    ) -> Result<(), IndexError> {
        if let Some((part, label)) = self.labels.remove(&key) {
            self.drop_entry(&part, label)?;
        }
        // The oldest go first: when there is no room, and while they have expired.
        let now = crate::clock::now_ms();
        while let Some(&(label, part)) = self.order.front() {
            let meta = self
                .parts
                .get(&part)
                .and_then(|p| p.meta.get(&label))
                .copied();
            let full = self.entries >= self.max_entries;
            match meta {
                Some(m) if full || m.expires_ms <= now => {
                    self.labels.remove(&m.key);
                    self.drop_entry(&part, label)?;
                }
                // Replaced since.
                None => {}
                Some(_) => break,
            }
            self.order.pop_front();
        }
        let label = self.next_label;
        self.next_label += 1;
        let part = self.parts.entry(partition).or_insert_with(Part::new);
        if let Err(e) = part.add(label, vector) {
            if part.meta.is_empty() {
                self.parts.remove(&partition);
            }
            return Err(e);
        }
        part.meta.insert(label, Meta { key, expires_ms });
        self.labels.insert(key, (partition, label));
        self.order.push_back((label, partition));
        self.entries += 1;
        if self.order.len() > 2 * self.max_entries {
            // Mostly replaced entries' labels: keep the live ones.
            let parts = &self.parts;
            self.order
                .retain(|(l, p)| parts.get(p).is_some_and(|x| x.meta.contains_key(l)));
        }
        Ok(())
    }

    /// Drops an entry from its partition (and the partition once it is empty).
    fn drop_entry(&mut self, partition: &[u8; 32], label: u64) -> Result<(), IndexError> {
        let Some(part) = self.parts.get_mut(partition) else {
            return Ok(());
        };
        let mut done = Ok(());
        if part.meta.remove(&label).is_some() {
            self.entries -= 1;
            done = part.remove(label);
        }
        if part.meta.is_empty() {
            self.parts.remove(partition);
        }
        done
    }
}

/// Work for the [`Indexer`].
pub enum Job {
    /// An answer this data plane stored: its request's query (embedded here when the
    /// lookup did not), under the cache epoch it was looked up in.
    Local {
        query: Query,
        key: [u8; 32],
        expires_ms: u64,
        epoch: u64,
        /// Offer it to the other data planes (its answer is in Redis).
        share: bool,
    },
    /// An entry another data plane shared.
    Peer(routeiq_proto::SemanticEntry),
}

/// Whether a shared vector is what an encoder makes: finite, of length 1 (a longer one
/// would out-score every real match).
fn unit_length(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite()) && (norm(v) - 1.0).abs() < 1e-3
}

/// `v`'s Euclidean length, summed in f64.
fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()
}

/// Jobs waiting; past this, new ones are dropped (each costs a future hit, nothing else).
const JOBS: usize = 4096;

/// Where this data plane's new entries go to be shared, and its id (attached mode).
pub type Share = Arc<
    std::sync::OnceLock<(
        String,
        tokio::sync::mpsc::Sender<routeiq_proto::SemanticEntry>,
    )>,
>;

/// One thread that embeds (when needed) and indexes stored answers and shared entries, off
/// the request path, one at a time, from a bounded queue.
pub struct Indexer {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
}

impl Indexer {
    pub fn start(
        index: Arc<Index>,
        epoch: Arc<std::sync::atomic::AtomicU64>,
        share: Share,
        entries: prometheus::IntGauge,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(JOBS);
        let run = move || {
            for job in rx {
                run(&index, &epoch, &share, job);
                entries.set(index.len() as i64);
            }
        };
        let spawned = std::thread::Builder::new()
            .name("routeiq-semantic".into())
            .spawn(run);
        if let Err(e) = &spawned {
            tracing::error!(error = %e, "semantic cache: cannot start its indexer; nothing is indexed");
        }
        Self {
            jobs: spawned.ok().map(|_| tx),
        }
    }

    /// Queues a job; a full queue drops it.
    pub fn offer(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            if jobs.try_send(job).is_err() {
                tracing::debug!("semantic cache: indexer busy; an entry is not indexed");
            }
        }
    }
}

fn run(index: &Index, epoch: &std::sync::atomic::AtomicU64, share: &Share, job: Job) {
    use std::sync::atomic::Ordering;
    let done = match job {
        Job::Local {
            query,
            key,
            expires_ms,
            epoch: at,
            share: shared,
        } => {
            let Some(embedder) = query.embedder.clone() else {
                return;
            };
            let vector = match (query.vector.clone(), &embedder) {
                (Some(v), _) => Some(v),
                (None, Embedder::Encoder(encoder)) => {
                    encoder.embed_whole(&query.text).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "semantic cache: the encoder failed");
                        None
                    })
                }
                // Its lookup could not embed it: not indexed.
                (None, Embedder::Deployment { .. }) => None,
            };
            let Some(vector) = vector else {
                return;
            };
            let still = || epoch.load(Ordering::Acquire) == at;
            let id = embedder.id();
            let done = index.insert(
                Origin::Local,
                id,
                query.partition,
                key,
                expires_ms,
                &vector,
                still,
            );
            if done.is_ok() && shared {
                if let Some((origin, tx)) = share.get() {
                    let entry = routeiq_proto::SemanticEntry {
                        origin: origin.clone(),
                        encoder: id.to_string(),
                        partition: query.partition,
                        key,
                        expires_ms,
                        vector: vector.to_vec(),
                    };
                    if tx.try_send(entry).is_err() {
                        tracing::debug!("semantic cache: share buffer full; entry kept local");
                    }
                }
            }
            done
        }
        Job::Peer(e) => {
            let own = share.get().is_some_and(|(origin, _)| *origin == e.origin);
            if own || e.expires_ms <= crate::clock::now_ms() || !unit_length(&e.vector) {
                return;
            }
            let vector: Arc<[f32]> = e.vector.into();
            let encoder: Arc<str> = e.encoder.into();
            index.insert(
                Origin::Peer,
                &encoder,
                e.partition,
                e.key,
                e.expires_ms,
                &vector,
                || true,
            )
        }
    };
    if let Err(e) = done {
        tracing::warn!(error = %e, "semantic cache: indexing failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        super::unit(v).unwrap().to_vec()
    }

    fn settings(max_messages: u32) -> SemanticSettings {
        SemanticSettings {
            encoder: routeiq_proto::EncoderSource::Path("/m".into()),
            max_messages,
            max_entries: 10,
        }
    }

    #[test]
    fn takes_short_text_conversations_only() {
        let split = |body: serde_json::Value, n: u32| {
            let req = RawObject::parse(body.to_string().as_bytes()).unwrap();
            Query::split(Api::Chat, &req, &settings(n))
                .map(|(t, rest)| (t.to_string(), rest.value("messages").unwrap()))
        };
        let (text, rest) = split(
            serde_json::json!({"model": "m", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ]}),
            1,
        )
        .unwrap();
        assert_eq!(text, "a\nb");
        assert_eq!(
            rest,
            serde_json::json!([{"role": "system", "content": "be brief"}])
        );
        let two_turns = serde_json::json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "what is 2+2?"}
        ]});
        assert!(split(two_turns.clone(), 1).is_none(), "three turns");
        assert_eq!(split(two_turns, 3).unwrap().0, "what is 2+2?");
        for body in [
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}]}),
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:,"}}]}]}),
            serde_json::json!({"model": "m", "messages": [{"role": "assistant", "content": "x"}]}),
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "  "}]}),
            serde_json::json!({"model": "m", "messages": []}),
        ] {
            assert!(split(body.clone(), 1).is_none(), "{body}");
        }
        let empty_tools = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": []});
        assert!(split(empty_tools, 1).is_some());
    }

    #[test]
    fn deployment_vectors_are_scaled_to_unit_length() {
        let v = super::unit(&[3.0, 4.0]).unwrap();
        assert_eq!(&*v, &[0.6, 0.8]);
        assert!(unit_length(&v));
        assert!(super::unit(&[]).is_none());
        assert!(super::unit(&[0.0, 0.0]).is_none());
        assert!(super::unit(&[f32::NAN, 1.0]).is_none());
        assert!(super::unit(&[f32::INFINITY, 1.0]).is_none());
    }

    #[test]
    fn takes_a_responses_input_as_its_messages() {
        let split = |body: serde_json::Value| {
            let req = RawObject::parse(body.to_string().as_bytes()).unwrap();
            Query::split(Api::Responses, &req, &settings(1))
                .map(|(t, rest)| (t.to_string(), rest.value("input").unwrap()))
        };
        let (text, rest) = split(json!({"model": "m", "input": "What is 2+2?",
                                        "instructions": "be brief"}))
        .unwrap();
        assert_eq!((text.as_str(), rest), ("What is 2+2?", json!([])));
        let (text, rest) = split(json!({"model": "m", "input": [
            {"role": "developer", "content": "be brief"},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "What is 2+2?"}]}]}))
        .unwrap();
        assert_eq!(text, "What is 2+2?");
        assert_eq!(rest, json!([{"role": "developer", "content": "be brief"}]));
        for body in [
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
            json!({"model": "m", "input": [{"type": "function_call_output", "call_id": "c",
                                           "output": "4"}]}),
            json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "data:,"}]}]}),
        ] {
            assert!(split(body.clone()).is_none(), "{body}");
        }
    }

    fn add(index: &Index, origin: Origin, enc: &str, p: [u8; 32], key: u8, exp: u64, v: &[f32]) {
        let v: Arc<[f32]> = v.into();
        index
            .insert(origin, &Arc::from(enc), p, [key; 32], exp, &v, || true)
            .unwrap();
    }

    fn best(index: &Index, enc: &str, p: &[u8; 32], v: &[f32], now: u64) -> Option<Match> {
        index.search(enc, p, v, now).unwrap().first().copied()
    }

    #[test]
    fn finds_the_nearest_entry_of_its_partition_only() {
        let index = Index::new(100);
        let (p, q) = ([1u8; 32], [2u8; 32]);
        add(
            &index,
            Origin::Local,
            "e",
            p,
            10,
            u64::MAX,
            &unit(&[1.0, 0.0, 0.0, 0.1]),
        );
        add(
            &index,
            Origin::Local,
            "e",
            p,
            11,
            u64::MAX,
            &unit(&[0.0, 1.0, 0.0, 0.1]),
        );
        add(
            &index,
            Origin::Local,
            "e",
            q,
            12,
            u64::MAX,
            &unit(&[1.0, 0.05, 0.0, 0.1]),
        );
        assert!(index.has("e", &p) && !index.has("other", &p) && !index.has("e", &[3; 32]));
        let found = index
            .search("e", &p, &unit(&[0.9, 0.1, 0.0, 0.1]), 0)
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].key, [10; 32], "best first");
        assert!(
            found[0].similarity > 0.95 && found[0].similarity <= 1.01,
            "{found:?}"
        );
        assert!(found[1].similarity < found[0].similarity);
        let m = best(&index, "e", &q, &unit(&[0.0, 1.0, 0.0, 0.1]), 0).unwrap();
        assert_eq!(m.key, [12; 32], "only its own partition");
        assert!(m.similarity < 0.2, "{m:?}");
        assert_eq!(
            best(&index, "e", &[3; 32], &unit(&[1.0, 0.0, 0.0, 0.0]), 0),
            None
        );
        assert_eq!(
            best(&index, "other", &p, &unit(&[1.0, 0.0, 0.0, 0.1]), 0),
            None,
            "another encoder"
        );
        // Expired entries are never matched.
        add(
            &index,
            Origin::Local,
            "e",
            p,
            13,
            5,
            &unit(&[0.0, 0.0, 1.0, 0.0]),
        );
        let m = best(&index, "e", &p, &unit(&[0.0, 0.0, 1.0, 0.0]), 10).unwrap();
        assert_ne!(m.key, [13; 32]);
        assert_eq!(index.len(), 4);
        // An insert that no longer should (a flush came first) is dropped under the lock.
        let v: Arc<[f32]> = unit(&[0.5, 0.5, 0.0, 0.0]).into();
        index
            .insert(
                Origin::Local,
                &Arc::from("e"),
                p,
                [14; 32],
                u64::MAX,
                &v,
                || false,
            )
            .unwrap();
        assert_eq!(index.len(), 4);
        index.clear();
        assert!(index.is_empty());
        assert_eq!(best(&index, "e", &p, &unit(&[1.0, 0.0, 0.0, 0.1]), 0), None);
    }

    #[test]
    fn only_the_live_encoders_entries_are_taken() {
        let index = Index::new(100);
        let p = [1u8; 32];
        // The first local entry names the encoder.
        add(&index, Origin::Local, "a", p, 1, u64::MAX, &[1.0, 0.0]);
        // Another encoder's entries (or another dimension) are not comparable: dropped.
        add(&index, Origin::Peer, "b", p, 2, u64::MAX, &[1.0, 0.0]);
        add(&index, Origin::Local, "b", p, 3, u64::MAX, &[1.0, 0.0]);
        add(&index, Origin::Peer, "a", p, 4, u64::MAX, &[1.0, 0.0, 0.0]);
        assert_eq!(index.len(), 1);
        add(&index, Origin::Peer, "a", p, 5, u64::MAX, &[0.0, 1.0]);
        assert_eq!(index.len(), 2);
        // A reload: lookups follow the new encoder, which empties the index; entries of
        // the old one still queued are dropped.
        index.follow(&Arc::from("b"));
        assert!(index.is_empty());
        add(&index, Origin::Local, "a", p, 6, u64::MAX, &[1.0, 0.0]);
        add(&index, Origin::Local, "b", p, 7, u64::MAX, &[1.0, 0.0]);
        assert_eq!(index.len(), 1);
        assert_eq!(best(&index, "b", &p, &[1.0, 0.0], 0).unwrap().key, [7; 32]);
        assert_eq!(best(&index, "a", &p, &[1.0, 0.0], 0), None);
        index.follow(&Arc::from("b"));
        assert_eq!(index.len(), 1, "the same encoder keeps its entries");
    }

    #[test]
    fn a_large_partition_moves_to_a_graph_and_still_finds_its_entries() {
        let index = Index::new(10_000);
        let p = [1u8; 32];
        let vector = |i: usize| -> Vec<f32> {
            let a = i as f32 * 0.37;
            unit(&[a.cos(), a.sin(), (a * 0.5).cos(), (a * 1.7).sin()])
        };
        let key = |i: usize| {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            key
        };
        // Entry 7 expires at 1,000; the others never do.
        for i in 0..(FLAT_MAX + 100) {
            let v: Arc<[f32]> = vector(i).into();
            let expires = if i == 7 { 1_000 } else { u64::MAX };
            index
                .insert(
                    Origin::Local,
                    &Arc::from("e"),
                    p,
                    key(i),
                    expires,
                    &v,
                    || true,
                )
                .unwrap();
        }
        assert!(index.read().parts[&p].graph.is_some());
        for i in [0, 7, FLAT_MAX + 50] {
            let m = best(&index, "e", &p, &vector(i), 0).unwrap();
            assert_eq!(m.key, key(i), "{i}: {m:?}");
            assert!(m.similarity > 0.99, "{i}: {m:?}");
        }
        // Once 7 has expired, its vector finds the live entries nearest it: as many as
        // asked for, 7 not among them.
        let found = index.search("e", &p, &vector(7), 1_000).unwrap();
        assert_eq!(found.len(), CANDIDATES, "{found:?}");
        assert!(found.iter().all(|m| m.key != key(7)), "{found:?}");
        assert!(found[0].similarity > 0.9, "{found:?}");
    }

    #[test]
    fn stays_within_its_bound_dropping_the_oldest() {
        let index = Index::new(3);
        let p = [1u8; 32];
        for i in 0..10u8 {
            let angle = f32::from(i) * 0.3;
            add(
                &index,
                Origin::Local,
                "e",
                p,
                i,
                u64::MAX,
                &[angle.cos(), angle.sin()],
            );
            assert!(index.len() <= 3);
        }
        assert_eq!(index.len(), 3);
        // The oldest went first: the first entries' own vectors find only newer ones.
        assert_eq!(best(&index, "e", &p, &[1.0, 0.0], 0).unwrap().key, [7; 32]);
        // Storing a key again replaces its entry.
        add(&index, Origin::Local, "e", p, 9, u64::MAX, &[1.0, 0.0]);
        assert_eq!(index.len(), 3);
        assert_eq!(best(&index, "e", &p, &[1.0, 0.0], 0).unwrap().key, [9; 32]);
        index.configure(Some(5));
        assert!(index.is_empty(), "a new bound empties it");
        // Off: empty, and entries still queued are dropped; on again: it takes them.
        add(&index, Origin::Local, "e", p, 1, u64::MAX, &[1.0, 0.0]);
        index.configure(None);
        add(&index, Origin::Local, "e", p, 2, u64::MAX, &[1.0, 0.0]);
        assert!(index.is_empty());
        index.configure(Some(5));
        add(&index, Origin::Local, "e", p, 3, u64::MAX, &[1.0, 0.0]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn shared_vectors_must_be_unit_length_and_finite() {
        assert!(unit_length(&unit(&[3.0, 4.0])));
        assert!(
            !unit_length(&[3.0, 4.0]),
            "scaled up: would out-score every match"
        );
        assert!(!unit_length(&[f32::NAN, 1.0]));
        assert!(!unit_length(&[f32::INFINITY, 0.0]));
        assert!(!unit_length(&[]));
    }
}
