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
//! The [`Index`] is each data plane's own: an HNSW graph per partition (usearch, int8
//! cosine) over the embeddings of stored answers, bounded to `semantic_max_entries` in
//! all (the oldest entry goes first; an expired one is never matched). An entry points at the exact key its answer is
//! stored under, so the answer itself lives in the memory tier and Redis, and a deleted or
//! evicted answer is a miss.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};

use routeiq_proto::SemanticSettings;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::ClientApi;
use crate::handlers::request::RawObject;

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
}

impl Query {
    /// The request's last message and the rest of it, when the semantic cache takes the
    /// request: at most `max_messages` messages (system messages aside), no tools, and a
    /// last message from the user in text.
    pub fn split(
        client: ClientApi,
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
        let Some(Value::Array(mut messages)) = req.value("messages") else {
            return None;
        };
        let system = |m: &Value| {
            client == ClientApi::OpenAi
                && matches!(m["role"].as_str(), Some("system" | "developer"))
        };
        let turns = messages.iter().filter(|m| !system(m)).count();
        if turns == 0 || turns > settings.max_messages as usize {
            return None;
        }
        let last = messages.pop()?;
        if last["role"].as_str() != Some("user") {
            return None;
        }
        let text = text_of(&last["content"])?;
        let mut rest = req.clone();
        rest.set("messages", &messages).ok()?;
        Some((text.into(), rest))
    }
}

/// A message's content as text: a string, or parts that are all text (joined by a new
/// line). `None` for anything else (images, documents, tool results).
fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Array(parts) if !parts.is_empty() => {
            let texts: Option<Vec<&str>> = parts
                .iter()
                .map(|p| match p["type"].as_str() {
                    Some("text") => p["text"].as_str(),
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

/// One entry's facts (its partition's graph holds its vector under its label).
#[derive(Debug, Clone, Copy)]
struct Meta {
    key: [u8; 32],
    expires_ms: u64,
}

/// Candidates a graph returns per search (the best one that passes is used).
const CANDIDATES: usize = 4;
/// A partition graph's first reservation; it doubles as the partition grows.
const FIRST_RESERVE: usize = 16;

/// Each data plane's semantic index: one HNSW graph per partition, so a search only ever
/// walks entries it may match, however many tenants and prompts share the index.
pub struct Index {
    inner: RwLock<Inner>,
}

struct Inner {
    /// The embeddings' dimension (the first entry's; another one starts afresh).
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
    graph: usearch::Index,
    meta: HashMap<u64, Meta>,
}

/// Why the index could not take or search an entry (usearch's own error).
#[derive(Debug, thiserror::Error)]
#[error("semantic index: {0}")]
pub struct IndexError(String);

fn index_err(e: impl std::fmt::Display) -> IndexError {
    IndexError(e.to_string())
}

impl Index {
    pub fn new(max_entries: usize) -> Self {
        Self {
            inner: RwLock::new(Inner::empty(max_entries)),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.read().map_or(0, |i| i.entries)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound the index holds; a new one empties it.
    pub fn configure(&self, max_entries: usize) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if inner.max_entries != max_entries.max(1) {
            *inner = Inner::empty(max_entries);
        }
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        *inner = Inner::empty(inner.max_entries);
    }

    /// Adds the embedding of a stored answer's request (its exact `key`), making room by
    /// dropping the oldest entries. An embedding of another dimension (a new encoder)
    /// starts the index afresh.
    pub fn insert(
        &self,
        partition: [u8; 32],
        key: [u8; 32],
        expires_ms: u64,
        vector: &[f32],
    ) -> Result<(), IndexError> {
        let mut inner = self.inner.write().map_err(index_err)?;
        if inner.dim != vector.len() {
            *inner = Inner::empty(inner.max_entries);
            inner.dim = vector.len();
        }
        if let Some((part, label)) = inner.labels.remove(&key) {
            inner.drop_entry(&part, label)?;
        }
        // The oldest go first: when there is no room, and while they have expired.
        let now = crate::clock::now_ms();
        while let Some(&(label, part)) = inner.order.front() {
            let meta = inner
                .parts
                .get(&part)
                .and_then(|p| p.meta.get(&label))
                .copied();
            let full = inner.entries >= inner.max_entries;
            match meta {
                Some(m) if full || m.expires_ms <= now => {
                    inner.labels.remove(&m.key);
                    inner.drop_entry(&part, label)?;
                }
                // Replaced since.
                None => {}
                Some(_) => break,
            }
            inner.order.pop_front();
        }
        let label = inner.next_label;
        inner.next_label += 1;
        let dim = inner.dim;
        let part = match inner.parts.entry(partition) {
            std::collections::hash_map::Entry::Occupied(p) => p.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(Part::new(dim)?),
        };
        let graph = &part.graph;
        if graph.size() + 1 > graph.capacity() {
            graph
                .reserve((graph.capacity() * 2).max(FIRST_RESERVE))
                .map_err(index_err)?;
        }
        graph.add(label, vector).map_err(index_err)?;
        part.meta.insert(label, Meta { key, expires_ms });
        inner.labels.insert(key, (partition, label));
        inner.order.push_back((label, partition));
        inner.entries += 1;
        if inner.order.len() > 2 * inner.max_entries {
            // Mostly replaced entries' labels: keep the live ones.
            let Inner { order, parts, .. } = &mut *inner;
            order.retain(|(l, p)| parts.get(p).is_some_and(|x| x.meta.contains_key(l)));
        }
        Ok(())
    }

    /// The most similar live entry of `partition` to `vector`, if any.
    pub fn search(
        &self,
        partition: &[u8; 32],
        vector: &[f32],
        now_ms: u64,
    ) -> Result<Option<Match>, IndexError> {
        let inner = self.inner.read().map_err(index_err)?;
        let Some(part) = inner
            .parts
            .get(partition)
            .filter(|_| inner.dim == vector.len())
        else {
            return Ok(None);
        };
        let meta = &part.meta;
        let found = part
            .graph
            .filtered_search(vector, CANDIDATES, |label: u64| {
                meta.get(&label).is_some_and(|m| m.expires_ms > now_ms)
            })
            .map_err(index_err)?;
        let best = found
            .keys
            .iter()
            .zip(&found.distances)
            .filter_map(|(label, d)| Some((meta.get(label)?, 1.0 - d)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Ok(best.map(|(m, similarity)| Match {
            key: m.key,
            similarity,
        }))
    }
}

impl Part {
    fn new(dim: usize) -> Result<Self, IndexError> {
        let graph = usearch::Index::new(&usearch::IndexOptions {
            dimensions: dim,
            metric: usearch::MetricKind::Cos,
            quantization: usearch::ScalarKind::I8,
            connectivity: 16,
            expansion_add: 64,
            expansion_search: 48,
            multi: false,
        })
        .map_err(index_err)?;
        graph.reserve(FIRST_RESERVE).map_err(index_err)?;
        Ok(Self {
            graph,
            meta: HashMap::new(),
        })
    }
}

impl Inner {
    fn empty(max_entries: usize) -> Self {
        Self {
            dim: 0,
            max_entries: max_entries.max(1),
            parts: HashMap::new(),
            labels: HashMap::new(),
            order: VecDeque::new(),
            entries: 0,
            next_label: 0,
        }
    }

    /// Drops an entry from its partition (and the partition once it is empty).
    fn drop_entry(&mut self, partition: &[u8; 32], label: u64) -> Result<(), IndexError> {
        let Some(part) = self.parts.get_mut(partition) else {
            return Ok(());
        };
        if part.meta.remove(&label).is_some() {
            self.entries -= 1;
            part.graph.remove(label).map_err(index_err)?;
        }
        if part.meta.is_empty() {
            self.parts.remove(partition);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
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
            Query::split(ClientApi::OpenAi, &req, &settings(n))
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
    fn finds_the_nearest_entry_of_its_partition_only() {
        let index = Index::new(100);
        let (p, q) = ([1u8; 32], [2u8; 32]);
        index
            .insert(p, [10; 32], u64::MAX, &unit(&[1.0, 0.0, 0.0, 0.1]))
            .unwrap();
        index
            .insert(p, [11; 32], u64::MAX, &unit(&[0.0, 1.0, 0.0, 0.1]))
            .unwrap();
        index
            .insert(q, [12; 32], u64::MAX, &unit(&[1.0, 0.05, 0.0, 0.1]))
            .unwrap();
        let m = index
            .search(&p, &unit(&[0.9, 0.1, 0.0, 0.1]), 0)
            .unwrap()
            .unwrap();
        assert_eq!(m.key, [10; 32]);
        assert!(m.similarity > 0.95 && m.similarity <= 1.01, "{m:?}");
        let m = index
            .search(&q, &unit(&[0.0, 1.0, 0.0, 0.1]), 0)
            .unwrap()
            .unwrap();
        assert_eq!(m.key, [12; 32], "only its own partition");
        assert!(m.similarity < 0.2, "{m:?}");
        assert_eq!(
            index
                .search(&[3; 32], &unit(&[1.0, 0.0, 0.0, 0.0]), 0)
                .unwrap(),
            None
        );
        // Expired entries are never matched.
        index
            .insert(p, [13; 32], 5, &unit(&[0.0, 0.0, 1.0, 0.0]))
            .unwrap();
        let m = index
            .search(&p, &unit(&[0.0, 0.0, 1.0, 0.0]), 10)
            .unwrap()
            .unwrap();
        assert_ne!(m.key, [13; 32]);
        assert_eq!(index.len(), 4);
        index.clear();
        assert!(index.is_empty());
        assert_eq!(
            index.search(&p, &unit(&[1.0, 0.0, 0.0, 0.1]), 0).unwrap(),
            None
        );
    }

    #[test]
    fn stays_within_its_bound_dropping_the_oldest() {
        let index = Index::new(3);
        let p = [1u8; 32];
        for i in 0..10u8 {
            let angle = f32::from(i) * 0.3;
            index
                .insert(p, [i; 32], u64::MAX, &[angle.cos(), angle.sin()])
                .unwrap();
            assert!(index.len() <= 3);
        }
        assert_eq!(index.len(), 3);
        // The oldest went first: the first entries' own vectors find only newer ones.
        let m = index.search(&p, &[1.0, 0.0], 0).unwrap().unwrap();
        assert_eq!(m.key, [7; 32]);
        // Storing a key again replaces its entry.
        index.insert(p, [9; 32], u64::MAX, &[1.0, 0.0]).unwrap();
        assert_eq!(index.len(), 3);
        assert_eq!(
            index.search(&p, &[1.0, 0.0], 0).unwrap().unwrap().key,
            [9; 32]
        );
        // A new dimension (a new encoder) starts afresh.
        index
            .insert(p, [20; 32], u64::MAX, &[1.0, 0.0, 0.0])
            .unwrap();
        assert_eq!(index.len(), 1);
        index.configure(5);
        assert!(index.is_empty(), "a new bound empties it");
    }
}
