//! Response caching settings: LiteLLM's `litellm_settings.cache` and `cache_params`.

use std::time::Duration;

use serde_json::{Map, Value as Json};

/// Where cached answers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// Each data plane's memory only.
    Local,
    /// Each data plane's memory, then Redis, shared by every data plane.
    Redis,
}

impl CacheKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Redis => "redis",
        }
    }
}

/// Whose requests may share an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// The key's team (a key without a team is its own tenant). The default.
    Team,
    /// Each virtual key alone.
    Key,
    /// Everyone: the operator asks for cross-tenant hits.
    Global,
}

impl CacheScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Team => "team",
            Self::Key => "key",
            Self::Global => "global",
        }
    }
}

/// LiteLLM's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Every request of a supported call type uses the cache unless it says otherwise.
    DefaultOn,
    /// Only requests that ask (`cache: {"use-cache": true}`) use it.
    DefaultOff,
}

/// The call types RouteIQ caches (LiteLLM's `supported_call_types` names, sync and async
/// spellings alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTypes {
    /// `completion` / `acompletion`: `/v1/chat/completions`.
    pub chat: bool,
    /// `anthropic_messages` / `aanthropic_messages`: `/v1/messages`.
    pub messages: bool,
    /// `responses` / `aresponses`: `/v1/responses`.
    pub responses: bool,
}

impl CallTypes {
    const ALL: CallTypes = CallTypes {
        chat: true,
        messages: true,
        responses: true,
    };
    const NONE: CallTypes = CallTypes {
        chat: false,
        messages: false,
        responses: false,
    };

    fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.chat {
            v.extend(["completion", "acompletion"]);
        }
        if self.messages {
            v.extend(["anthropic_messages", "aanthropic_messages"]);
        }
        if self.responses {
            v.extend(["responses", "aresponses"]);
        }
        v
    }
}

/// LiteLLM call types RouteIQ accepts in `supported_call_types` but does not cache (yet).
const UNCACHED_CALL_TYPES: [&str; 10] = [
    "embedding",
    "aembedding",
    "text_completion",
    "atext_completion",
    "transcription",
    "atranscription",
    "rerank",
    "arerank",
    "image_generation",
    "aimage_generation",
];

/// Where the semantic cache's embeddings come from: the in-process sentence encoder of a
/// routing-model artifact with the `minilm` featurizer (`models/ARTIFACTS.md`), such as a
/// `knn` model the learned routers serve; or a model group of `model_list` that serves
/// embeddings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncoderSource {
    /// `semantic_model_path`: the artifact's directory.
    Path(String),
    /// `semantic_model_s3_bucket` and `semantic_model_s3_key` (the manifest's prefix).
    S3 { bucket: String, key: String },
    /// `redis_semantic_cache_embedding_model` (LiteLLM's key): a model group name.
    Deployment(String),
}

/// The semantic cache (`type: redis-semantic`, `local-semantic` or `qdrant-semantic`): a
/// request the exact cache cannot answer gets the answer of a similar enough earlier one.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticSettings {
    pub encoder: EncoderSource,
    /// Only requests with at most this many messages (system messages aside) are looked up
    /// and stored semantically (`semantic_max_messages`): multi-turn traffic would be given
    /// stale answers.
    pub max_messages: u32,
    /// The entries each data plane's index holds (`semantic_max_entries`).
    pub max_entries: u32,
}

impl SemanticSettings {
    pub const DEFAULT_MAX_MESSAGES: u32 = 1;
    pub const DEFAULT_MAX_ENTRIES: u32 = 100_000;
}

/// A semantic-cache entry one data plane indexed, shared with the others (over core NATS,
/// `subjects::CACHE_SEMANTIC_SUBJECT`). Its answer is in Redis under `key`.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticEntry {
    /// The data plane that indexed it.
    pub origin: String,
    /// The encoder that made `vector` (its files' SHA-256 and truncation): data planes
    /// serving another encoder drop the entry.
    pub encoder: String,
    /// The request's key without its last message.
    pub partition: [u8; 32],
    /// The exact key its answer is stored under.
    pub key: [u8; 32],
    pub expires_ms: u64,
    /// The last message's embedding.
    pub vector: Vec<f32>,
}

/// The cache, when `litellm_settings.cache` is on.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub kind: CacheKind,
    /// How long an answer is kept (`ttl`; a request's `cache.ttl` overrides it).
    pub ttl: Duration,
    /// Prefix of every key (`namespace`); a request's `cache.namespace` adds to it.
    pub namespace: Option<String>,
    pub call_types: CallTypes,
    pub mode: CacheMode,
    pub scope: CacheScope,
    /// `similarity_threshold`: the cosine similarity a semantic hit needs at least.
    pub similarity_threshold: f64,
    /// The semantic cache, when the type is a semantic one.
    pub semantic: Option<SemanticSettings>,
    /// RouteIQ's `max_memory_mb`: the bytes each data plane's memory tier holds.
    pub max_memory_bytes: u64,
    /// RouteIQ's `cache_truncated`: also keep answers cut short by `max_tokens`.
    pub store_truncated: bool,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            kind: CacheKind::Local,
            ttl: Self::DEFAULT_TTL,
            namespace: None,
            call_types: CallTypes::ALL,
            mode: CacheMode::DefaultOn,
            scope: CacheScope::Team,
            similarity_threshold: Self::DEFAULT_SIMILARITY,
            semantic: None,
            max_memory_bytes: Self::DEFAULT_MEMORY_BYTES,
            store_truncated: false,
        }
    }
}

/// Longest TTL accepted (30 days).
const MAX_TTL_SECS: f64 = 30.0 * 86_400.0;

impl CacheSettings {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
    pub const DEFAULT_MEMORY_BYTES: u64 = 256 * 1024 * 1024;
    /// The default `similarity_threshold`, from the paraphrase evaluation in
    /// `docs/configuration.md`.
    pub const DEFAULT_SIMILARITY: f64 = 0.95;

    /// The keys of `cache_params` read here; `host`, `port` and `password` name the
    /// Redis server and are read with the config's other Redis keys.
    pub const KEYS: [&'static str; 20] = [
        "type",
        "ttl",
        "namespace",
        "supported_call_types",
        "mode",
        "similarity_threshold",
        "scope",
        "max_memory_mb",
        "cache_truncated",
        "host",
        "port",
        "password",
        "default_in_memory_ttl",
        "semantic_model_path",
        "semantic_model_s3_bucket",
        "semantic_model_s3_key",
        "semantic_max_messages",
        "semantic_max_entries",
        "redis_semantic_cache_embedding_model",
        "qdrant_semantic_cache_embedding_model",
    ];

    /// `cache_params` (`prefix` is its path, for errors). Warnings name what is accepted
    /// but not done.
    pub fn from_litellm(
        m: &Map<String, Json>,
        prefix: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Self, (String, String)> {
        let mut s = Self::default();
        let mut semantic = false;
        let (mut max_messages, mut max_entries) = (
            SemanticSettings::DEFAULT_MAX_MESSAGES,
            SemanticSettings::DEFAULT_MAX_ENTRIES,
        );
        for (k, v) in m {
            if v.is_null() {
                continue;
            }
            let at = format!("{prefix}.{k}");
            let text = || {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| (at.clone(), "must be a string".to_owned()))
            };
            match k.as_str() {
                "type" => {
                    s.kind = match text()?.as_str() {
                        "local" | "in-memory" => CacheKind::Local,
                        "redis" => CacheKind::Redis,
                        "redis-semantic" => {
                            semantic = true;
                            CacheKind::Redis
                        }
                        "local-semantic" => {
                            semantic = true;
                            CacheKind::Local
                        }
                        "qdrant-semantic" => {
                            warnings.push(format!(
                                "{at}: RouteIQ keeps its semantic index in each data plane's memory and its answers in Redis; Qdrant is not used (as `redis-semantic`)"
                            ));
                            semantic = true;
                            CacheKind::Redis
                        }
                        other => {
                            return Err((
                                at,
                                format!("`{other}` is not a cache type RouteIQ has (local, redis, local-semantic, redis-semantic, qdrant-semantic)"),
                            ))
                        }
                    }
                }
                "ttl" | "default_in_memory_ttl" => {
                    let secs = v
                        .as_f64()
                        .filter(|s| s.is_finite() && *s > 0.0 && *s <= MAX_TTL_SECS)
                        .ok_or_else(|| {
                            (
                                at.clone(),
                                format!("must be a number of seconds above 0, at most {MAX_TTL_SECS}"),
                            )
                        })?;
                    if k == "ttl" || !m.contains_key("ttl") {
                        s.ttl = Duration::from_secs_f64(secs);
                    }
                }
                "namespace" => s.namespace = Some(text()?).filter(|n| !n.is_empty()),
                "supported_call_types" => {
                    let list = v
                        .as_array()
                        .ok_or_else(|| (at.clone(), "must be a list of call types".to_owned()))?;
                    let mut t = CallTypes::NONE;
                    for (i, name) in list.iter().enumerate() {
                        let name = name.as_str().ok_or_else(|| {
                            (format!("{at}[{i}]"), "must be a string".to_owned())
                        })?;
                        match name {
                            "completion" | "acompletion" => t.chat = true,
                            "anthropic_messages" | "aanthropic_messages" => t.messages = true,
                            "responses" | "aresponses" => t.responses = true,
                            n if UNCACHED_CALL_TYPES.contains(&n) => warnings.push(format!(
                                "{at}[{i}]: `{n}` calls are not cached by this RouteIQ version"
                            )),
                            n => {
                                return Err((
                                    format!("{at}[{i}]"),
                                    format!("`{n}` is not a LiteLLM call type"),
                                ))
                            }
                        }
                    }
                    s.call_types = t;
                }
                "mode" => {
                    s.mode = match text()?.as_str() {
                        "default_on" => CacheMode::DefaultOn,
                        "default_off" => CacheMode::DefaultOff,
                        other => {
                            return Err((
                                at,
                                format!("`{other}` is not a mode (default_on, default_off)"),
                            ))
                        }
                    }
                }
                "scope" => {
                    s.scope = match text()?.as_str() {
                        "team" => CacheScope::Team,
                        "key" => CacheScope::Key,
                        "global" => CacheScope::Global,
                        other => {
                            return Err((
                                at,
                                format!("`{other}` is not a scope (team, key, global)"),
                            ))
                        }
                    }
                }
                "similarity_threshold" => {
                    s.similarity_threshold = v
                        .as_f64()
                        .filter(|t| (0.0..=1.0).contains(t))
                        .ok_or_else(|| (at.clone(), "must be a number from 0 to 1".to_owned()))?;
                }
                "max_memory_mb" => {
                    let mb = v
                        .as_u64()
                        .filter(|mb| (1..=1 << 20).contains(mb))
                        .ok_or_else(|| {
                            (at.clone(), "must be a whole number of MiB, at least 1".to_owned())
                        })?;
                    s.max_memory_bytes = mb * 1024 * 1024;
                }
                "cache_truncated" => {
                    s.store_truncated = v
                        .as_bool()
                        .ok_or_else(|| (at.clone(), "must be true or false".to_owned()))?;
                }
                "semantic_max_messages" | "semantic_max_entries" => {
                    let n = v
                        .as_u64()
                        .filter(|n| (1..=10_000_000).contains(n))
                        .ok_or_else(|| {
                            (at.clone(), "must be a whole number from 1 to 10000000".to_owned())
                        })? as u32;
                    if k == "semantic_max_messages" {
                        max_messages = n;
                    } else {
                        max_entries = n;
                    }
                }
                "host"
                | "port"
                | "password"
                | "semantic_model_path"
                | "semantic_model_s3_bucket"
                | "semantic_model_s3_key"
                | "redis_semantic_cache_embedding_model"
                | "qdrant_semantic_cache_embedding_model" => {}
                other => warnings.push(format!(
                    "config key `{prefix}.{other}` is not supported by this RouteIQ version and is ignored"
                )),
            }
        }
        if semantic {
            let text = |k: &str| -> Result<Option<String>, (String, String)> {
                match m.get(k) {
                    None | Some(Json::Null) => Ok(None),
                    Some(Json::String(t)) if !t.is_empty() => Ok(Some(t.clone())),
                    Some(_) => Err((format!("{prefix}.{k}"), "must be a string".to_owned())),
                }
            };
            let artifact = match (
                text("semantic_model_path")?,
                text("semantic_model_s3_bucket")?,
                text("semantic_model_s3_key")?,
            ) {
                (Some(path), _, _) => Some(EncoderSource::Path(path)),
                (None, Some(bucket), Some(key)) => Some(EncoderSource::S3 { bucket, key }),
                _ => None,
            };
            let deployment = match text("redis_semantic_cache_embedding_model")? {
                Some(group) => Some(group),
                None => text("qdrant_semantic_cache_embedding_model")?,
            };
            let encoder = match (artifact, deployment) {
                (Some(_), Some(_)) => {
                    return Err((
                        format!("{prefix}.redis_semantic_cache_embedding_model"),
                        "name either an embedding model group or the encoder's artifact \
                         (`semantic_model_path` or S3), not both"
                            .to_owned(),
                    ))
                }
                (Some(artifact), None) => Some(artifact),
                (None, Some(group)) => Some(EncoderSource::Deployment(group)),
                (None, None) => None,
            };
            match encoder {
                Some(encoder) => {
                    s.semantic = Some(SemanticSettings {
                        encoder,
                        max_messages,
                        max_entries,
                    })
                }
                None => warnings.push(format!(
                    "{prefix}.type: a semantic cache needs its embeddings: `redis_semantic_cache_embedding_model` (a model group of model_list), or `semantic_model_path` (or `semantic_model_s3_bucket` and `semantic_model_s3_key`: a routing-model artifact with the minilm featurizer); without one, requests use the exact cache only"
                )),
            }
        }
        Ok(s)
    }

    /// The settings as `cache_params` (what [`Self::from_litellm`] reads back).
    pub fn to_litellm(&self) -> Map<String, Json> {
        let mut m = Map::new();
        let kind = match (&self.semantic, self.kind) {
            (None, k) => k.as_str(),
            (Some(_), CacheKind::Local) => "local-semantic",
            (Some(_), CacheKind::Redis) => "redis-semantic",
        };
        m.insert("type".into(), kind.into());
        if let Some(sem) = &self.semantic {
            match &sem.encoder {
                EncoderSource::Path(p) => {
                    m.insert("semantic_model_path".into(), p.as_str().into());
                }
                EncoderSource::S3 { bucket, key } => {
                    m.insert("semantic_model_s3_bucket".into(), bucket.as_str().into());
                    m.insert("semantic_model_s3_key".into(), key.as_str().into());
                }
                EncoderSource::Deployment(group) => {
                    m.insert(
                        "redis_semantic_cache_embedding_model".into(),
                        group.as_str().into(),
                    );
                }
            }
            m.insert("semantic_max_messages".into(), sem.max_messages.into());
            m.insert("semantic_max_entries".into(), sem.max_entries.into());
        }
        m.insert("ttl".into(), self.ttl.as_secs_f64().into());
        if let Some(n) = &self.namespace {
            m.insert("namespace".into(), n.as_str().into());
        }
        m.insert(
            "supported_call_types".into(),
            self.call_types.names().into(),
        );
        m.insert(
            "mode".into(),
            match self.mode {
                CacheMode::DefaultOn => "default_on",
                CacheMode::DefaultOff => "default_off",
            }
            .into(),
        );
        m.insert("scope".into(), self.scope.as_str().into());
        m.insert(
            "similarity_threshold".into(),
            self.similarity_threshold.into(),
        );
        m.insert(
            "max_memory_mb".into(),
            (self.max_memory_bytes / (1024 * 1024)).into(),
        );
        m.insert("cache_truncated".into(), self.store_truncated.into());
        m
    }
}

/// A key's or team's own use of the cache: its `metadata.cache` (the key's, else its
/// team's). `false` keeps its requests out of the cache; `true` opts them in under
/// `default_off`; an object takes LiteLLM's request controls, which its requests cannot
/// undo: `no-cache` (never answered from the cache), `no-store` (never stored),
/// `use-cache` (opted in), `namespace` (its entries' own namespace).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CachePolicy {
    pub no_cache: bool,
    pub no_store: bool,
    pub use_cache: bool,
    pub namespace: Option<String>,
}

impl CachePolicy {
    /// The policy of `metadata.cache`; `Ok(None)` when it is absent or null.
    pub fn from_metadata(metadata: &Json) -> Result<Option<Self>, String> {
        let off = |on: bool| Self {
            no_cache: !on,
            no_store: !on,
            use_cache: on,
            namespace: None,
        };
        match metadata.get("cache") {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Bool(on)) => Ok(Some(off(*on))),
            Some(Json::Object(m)) => {
                let mut p = Self::default();
                for (k, v) in m {
                    let flag = || {
                        v.as_bool()
                            .ok_or_else(|| format!("metadata.cache.{k} must be true or false"))
                    };
                    match k.as_str() {
                        "no-cache" => p.no_cache = flag()?,
                        "no-store" => p.no_store = flag()?,
                        "use-cache" => p.use_cache = flag()?,
                        "namespace" => {
                            p.namespace = Some(
                                v.as_str()
                                    .ok_or("metadata.cache.namespace must be a string")?
                                    .to_owned(),
                            )
                            .filter(|n| !n.is_empty())
                        }
                        other => {
                            return Err(format!(
                                "metadata.cache.{other} is not a cache control (no-cache, no-store, use-cache, namespace)"
                            ))
                        }
                    }
                }
                Ok(Some(p))
            }
            Some(_) => Err("metadata.cache must be true, false or an object".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_policies_read_from_metadata() {
        let p = |v: Json| CachePolicy::from_metadata(&json!({ "cache": v }));
        assert_eq!(CachePolicy::from_metadata(&json!({})), Ok(None));
        let off = p(json!(false)).unwrap().unwrap();
        assert!(off.no_cache && off.no_store && !off.use_cache);
        let on = p(json!(true)).unwrap().unwrap();
        assert!(!on.no_cache && !on.no_store && on.use_cache);
        let ns = p(json!({"namespace": "team-a", "no-store": true}))
            .unwrap()
            .unwrap();
        assert_eq!(ns.namespace.as_deref(), Some("team-a"));
        assert!(ns.no_store && !ns.no_cache);
        assert!(p(json!({"nocache": true})).is_err());
        assert!(p(json!("yes")).is_err());
    }

    fn parse(v: Json) -> Result<(CacheSettings, Vec<String>), (String, String)> {
        let mut w = Vec::new();
        let Json::Object(m) = v else { panic!() };
        CacheSettings::from_litellm(&m, "litellm_settings.cache_params", &mut w).map(|s| (s, w))
    }

    #[test]
    fn reads_litellm_keys_and_round_trips() {
        let (s, w) = parse(json!({
            "type": "redis", "ttl": 30, "namespace": "ns", "mode": "default_off",
            "supported_call_types": ["acompletion", "embedding", "aresponses"], "scope": "key",
            "similarity_threshold": 0.8, "max_memory_mb": 8, "host": "localhost"
        }))
        .unwrap();
        assert_eq!(s.kind, CacheKind::Redis);
        assert_eq!(s.ttl, Duration::from_secs(30));
        assert_eq!(s.namespace.as_deref(), Some("ns"));
        assert_eq!(s.mode, CacheMode::DefaultOff);
        assert!(s.call_types.chat && !s.call_types.messages && s.call_types.responses);
        assert_eq!(s.scope, CacheScope::Key);
        assert_eq!(s.max_memory_bytes, 8 << 20);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("embedding"), "{w:?}");
        let (back, _) = parse(Json::Object(s.to_litellm())).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn semantic_types_need_an_encoder_and_round_trip() {
        let (s, w) = parse(json!({
            "type": "redis-semantic", "similarity_threshold": 0.85,
            "semantic_model_path": "/models/knn-minilm", "semantic_max_messages": 2,
        }))
        .unwrap();
        assert_eq!(s.kind, CacheKind::Redis);
        let sem = s.semantic.clone().unwrap();
        assert_eq!(
            sem.encoder,
            EncoderSource::Path("/models/knn-minilm".into())
        );
        assert_eq!(sem.max_messages, 2);
        assert_eq!(sem.max_entries, SemanticSettings::DEFAULT_MAX_ENTRIES);
        assert!(w.is_empty(), "{w:?}");
        let (back, _) = parse(Json::Object(s.to_litellm())).unwrap();
        assert_eq!(back, s);
        // LiteLLM's key: a model group embeds.
        let (remote, w) = parse(json!({
            "type": "redis-semantic",
            "redis_semantic_cache_embedding_model": "text-embedding-3-small"
        }))
        .unwrap();
        assert_eq!(
            remote.semantic.as_ref().unwrap().encoder,
            EncoderSource::Deployment("text-embedding-3-small".into())
        );
        assert!(w.is_empty(), "{w:?}");
        let (back, _) = parse(Json::Object(remote.to_litellm())).unwrap();
        assert_eq!(back, remote);
        let both = parse(json!({
            "type": "redis-semantic", "semantic_model_path": "/m",
            "redis_semantic_cache_embedding_model": "e"
        }));
        assert!(both.unwrap_err().1.contains("not both"));
        let (s3, _) = parse(json!({
            "type": "local-semantic", "semantic_model_s3_bucket": "b",
            "semantic_model_s3_key": "routers/knn/"
        }))
        .unwrap();
        assert_eq!(s3.kind, CacheKind::Local);
        let (back, _) = parse(Json::Object(s3.to_litellm())).unwrap();
        assert_eq!(back, s3);
        // LiteLLM configs name no encoder: they load, warned, with the exact cache.
        let (exact, w) = parse(json!({"type": "redis-semantic"})).unwrap();
        assert_eq!((exact.kind, exact.semantic), (CacheKind::Redis, None));
        assert!(w[0].contains("semantic_model_path"), "{w:?}");
        assert!(parse(json!({"type": "local", "semantic_model_path": "/m"}))
            .unwrap()
            .0
            .semantic
            .is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (v, at) in [
            (
                json!({"type": "disk"}),
                "litellm_settings.cache_params.type",
            ),
            (json!({"ttl": -1}), "litellm_settings.cache_params.ttl"),
            (
                json!({"type": "local-semantic", "semantic_model_path": "/m", "semantic_max_entries": 0}),
                "litellm_settings.cache_params.semantic_max_entries",
            ),
            (
                json!({"scope": "org"}),
                "litellm_settings.cache_params.scope",
            ),
            (
                json!({"supported_call_types": ["chat"]}),
                "litellm_settings.cache_params.supported_call_types[0]",
            ),
        ] {
            assert_eq!(parse(v).unwrap_err().0, at);
        }
    }
}
