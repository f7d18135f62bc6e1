//! Loading routing models and keeping them current: one [`Slot`] per strategy and source,
//! polled by a task of its own. A local artifact is watched by its manifest's mtime, an
//! S3 one by its manifest's ETag. A new version is fetched, verified and built off the
//! request path, then swapped in atomically; one that fails leaves the last good model
//! serving and is reported in `/hot-reload/status` and the metrics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};
use routeiq_proto::{RouterSettings, RoutingStrategy, LEARNED_STRATEGIES};
use serde_json::{json, Value};

use super::artifact::{self, Files, Model, MANIFEST};
use super::LoadError;
use crate::clock::now_ms;

/// Default `routing_strategy_args.reload_interval` (seconds).
const DEFAULT_RELOAD_SECS: f64 = 10.0;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// A directory holding `manifest.json` (`model_path`).
    File(PathBuf),
    /// `s3://bucket/prefix/manifest.json` (`model_s3_bucket`, `model_s3_key`).
    S3 { bucket: String, prefix: String },
    /// Nothing to load, and why.
    None(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::None(_) => f.write_str("none"),
        }
    }
}

/// Which model a group's learned router serves, from its router settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Spec {
    /// `llmrouter-<name>`.
    pub strategy: String,
    pub source: Source,
    pub hot_reload: bool,
    pub reload_ms: u64,
    /// `model_sha256`: only the artifact whose manifest has this SHA-256 loads (the control
    /// plane's registry pins the activated version).
    pub pin: Option<String>,
    /// A version under evaluation (`routing_strategy_args.shadow`, `.ab`): it never
    /// inherits the serving model while it loads, nor lends it.
    pub challenger: bool,
}

/// The strategy name of the semantic cache's encoder slot: its artifact may be any
/// strategy's, as long as its featurizer is a sentence encoder.
pub const SEMANTIC_ENCODER: &str = "semantic-cache-encoder";
/// all-MiniLM-L6-v2's layers: the semantic cache refuses an encoder cut shorter.
const FULL_ENCODER_LAYERS: u32 = 6;

impl Spec {
    /// The spec of the semantic cache's sentence encoder (`None`: the cache embeds with
    /// deployments, not an artifact).
    pub fn encoder(source: &routeiq_proto::EncoderSource) -> Option<Self> {
        let source = match source {
            routeiq_proto::EncoderSource::Path(p) => Source::File(artifact_dir(p)),
            routeiq_proto::EncoderSource::S3 { bucket, key } => Source::S3 {
                bucket: bucket.clone(),
                prefix: manifest_prefix(key),
            },
            routeiq_proto::EncoderSource::Deployment(_) => return None,
        };
        Some(Self {
            strategy: SEMANTIC_ENCODER.to_owned(),
            source,
            hot_reload: true,
            reload_ms: (DEFAULT_RELOAD_SECS * 1000.0) as u64,
            pin: None,
            challenger: false,
        })
    }

    /// The `role` label of the slot's metrics: `serving`, or `challenger` (shadow, A/B).
    pub fn role(&self) -> &'static str {
        if self.challenger {
            "challenger"
        } else {
            "serving"
        }
    }

    /// The spec of a learned strategy; `None` for LiteLLM's strategies.
    pub fn of(settings: &RouterSettings) -> Option<Self> {
        let RoutingStrategy::LlmRouter(strategy) = &settings.routing_strategy else {
            return None;
        };
        let args = &settings.routing_strategy_args;
        let text = |k: &str| settings.arg_text(k);
        let name = strategy.trim_start_matches("llmrouter-");
        let source = if !LEARNED_STRATEGIES.contains(&name) {
            Source::None(format!(
                "`{strategy}` is not served by this version (served: {})",
                LEARNED_STRATEGIES
                    .map(|s| format!("llmrouter-{s}"))
                    .join(", ")
            ))
        } else if let Some(path) = text("model_path") {
            Source::File(artifact_dir(path))
        } else if let (Some(bucket), Some(key)) = (text("model_s3_bucket"), text("model_s3_key")) {
            Source::S3 {
                bucket: bucket.to_owned(),
                prefix: manifest_prefix(key),
            }
        } else {
            Source::None(
                "routing_strategy_args needs model_path, or model_s3_bucket and model_s3_key"
                    .into(),
            )
        };
        let reload = settings
            .arg_number("reload_interval")
            .filter(|s| *s >= 0.1 && *s <= 86_400.0)
            .unwrap_or(DEFAULT_RELOAD_SECS);
        Some(Self {
            strategy: strategy.clone(),
            source,
            hot_reload: args
                .get("hot_reload")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            reload_ms: (reload * 1000.0) as u64,
            pin: text("model_sha256").map(str::to_ascii_lowercase),
            challenger: false,
        })
    }
}

/// The artifact directory `path` names (the directory, or its manifest).
fn artifact_dir(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.file_name().is_some_and(|n| n == MANIFEST) {
        p.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        p
    }
}

/// The S3 prefix of the artifact `key` names (the prefix, or its manifest).
fn manifest_prefix(key: &str) -> String {
    key.trim_end_matches('/')
        .trim_end_matches(MANIFEST)
        .trim_end_matches('/')
        .to_owned()
}

#[derive(Debug, Default)]
struct Status {
    /// The manifest's mtime and size, or its ETag, as last seen.
    seen: Option<String>,
    last_check_ms: Option<u64>,
    last_reload_ms: Option<u64>,
    last_error: Option<String>,
    reloads: u64,
    failures: u64,
}

/// A strategy's current model (if any) and how loading it went.
pub struct Slot {
    pub spec: Spec,
    model: ArcSwapOption<Model>,
    status: Mutex<Status>,
    /// Decisions by the model serving now (its version's series; none without a model).
    by_model: ArcSwapOption<IntCounter>,
    by_fallback: IntCounter,
    metrics: Metrics,
}

impl Slot {
    pub fn current(&self) -> Option<Arc<Model>> {
        self.model.load_full()
    }

    /// The sentence encoder of the current model, if it has one.
    pub fn encoder(&self) -> Option<Arc<super::featurize::Encoder>> {
        self.current()?.featurizer.encoder().cloned()
    }

    pub(super) fn decided(&self, by_model: bool) {
        if by_model {
            if let Some(c) = self.by_model.load().as_deref() {
                c.inc();
            }
        } else {
            self.by_fallback.inc();
        }
    }

    pub(super) fn scoring_failed(&self, e: &LoadError) {
        tracing::warn!(strategy = %self.spec.strategy, error = %e, "routing model failed to score; routing with the fallback strategy");
    }

    /// Serves `model` from now on; its decisions count under its version.
    fn serve(&self, model: Option<Arc<Model>>) {
        self.by_model.store(model.as_ref().map(|m| {
            Arc::new(self.metrics.decisions.with_label_values(&[
                &self.spec.strategy,
                self.spec.role(),
                "model",
                &m.manifest.version,
            ]))
        }));
        self.model.store(model);
    }

    fn with_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    fn checked(&self, seen: Option<String>, outcome: Result<Option<Model>, LoadError>) {
        let now = now_ms();
        let result = match outcome {
            Ok(None) => None,
            Ok(Some(model)) => {
                tracing::info!(strategy = %self.spec.strategy, version = %model.manifest.version, source = %self.spec.source, "routing model loaded");
                self.serve(Some(Arc::new(model)));
                Some("ok")
            }
            Err(e) => {
                tracing::warn!(strategy = %self.spec.strategy, source = %self.spec.source, error = %e, "routing model not loaded; the last good one (or the fallback strategy) keeps serving");
                self.with_status(|s| {
                    s.last_error = Some(e.to_string());
                    s.failures += 1;
                });
                Some("error")
            }
        };
        self.with_status(|s| {
            s.last_check_ms = Some(now);
            if seen.is_some() {
                s.seen = seen;
            }
            if result == Some("ok") {
                s.last_reload_ms = Some(now);
                s.last_error = None;
                s.reloads += 1;
            }
        });
        if let Some(r) = result {
            self.metrics
                .reloads
                .with_label_values(&[&self.spec.strategy, self.spec.role(), r])
                .inc();
        }
        self.metrics
            .loaded
            .with_label_values(&[&self.spec.strategy, self.spec.role()])
            .set(i64::from(self.model.load().is_some()));
    }

    fn seen(&self) -> Option<String> {
        self.status.lock().ok()?.seen.clone()
    }

    pub fn status(&self) -> Value {
        let model = self.current();
        let s = self.status.lock().ok();
        let s = s.as_deref();
        json!({
            "strategy": self.spec.strategy,
            "source": self.spec.source.to_string(),
            "hot_reload": self.spec.hot_reload,
            "reload_interval_ms": self.spec.reload_ms,
            "challenger": self.spec.challenger,
            "loaded": model.is_some(),
            "version": model.as_ref().map(|m| m.manifest.version.clone()),
            "sha256": model.as_ref().map(|m| m.sha256.clone()),
            "created_at": model.as_ref().and_then(|m| m.manifest.created_at.clone()),
            "last_check_ms": s.and_then(|s| s.last_check_ms),
            "last_reload_ms": s.and_then(|s| s.last_reload_ms),
            "last_error": match &self.spec.source {
                Source::None(why) => Some(why.clone()),
                _ => s.and_then(|s| s.last_error.clone()),
            },
            "reloads": s.map_or(0, |s| s.reloads),
            "failures": s.map_or(0, |s| s.failures),
        })
    }
}

#[derive(Clone)]
struct Metrics {
    reloads: IntCounterVec,
    loaded: IntGaugeVec,
    decisions: IntCounterVec,
    shadow: IntCounterVec,
}

/// Every routing model of the process, shared by all live-state versions.
pub struct Models {
    slots: Mutex<HashMap<Spec, Weak<Slot>>>,
    /// Slots created before [`Models::start`], to poll once it runs.
    waiting: Mutex<Vec<Weak<Slot>>>,
    runtime: OnceLock<tokio::runtime::Handle>,
    metrics: Metrics,
    s3: tokio::sync::OnceCell<aws_sdk_s3::Client>,
    /// The allow-list the S3 client connects under.
    egress: Arc<crate::egress::Egress>,
    /// The shadow versions' worker, started by the first router with a shadow.
    shadow: OnceLock<Option<Arc<super::experiment::ShadowQueue>>>,
}

impl Models {
    pub fn new(egress: Arc<crate::egress::Egress>) -> Self {
        let reloads = IntCounterVec::new(
            Opts::new(
                "routeiq_router_model_reloads_total",
                "Routing-model loads by strategy, role (serving, challenger) and result (ok, error)",
            ),
            &["strategy", "role", "result"],
        );
        let loaded = IntGaugeVec::new(
            Opts::new(
                "routeiq_router_model_loaded",
                "1 when the strategy's slot (serving, or a challenger) has a routing model loaded",
            ),
            &["strategy", "role"],
        );
        let decisions = IntCounterVec::new(
            Opts::new(
                "routeiq_learned_routing_decisions_total",
                "Picks by learned strategies: by the model (and its version), or by the \
                 fallback strategy",
            ),
            &["strategy", "role", "by", "version"],
        );
        let shadow = IntCounterVec::new(
            Opts::new(
                "routeiq_learned_shadow_decisions_total",
                "Shadow versions' decisions by strategy and outcome (scored; unscored: no \
                 model or features; failed: the model panicked; dropped: the shadow queue \
                 was full)",
            ),
            &["strategy", "outcome"],
        );
        // The names and labels are fixed and valid; `new` cannot fail on them.
        #[allow(clippy::unwrap_used)]
        let metrics = Metrics {
            reloads: reloads.unwrap(),
            loaded: loaded.unwrap(),
            decisions: decisions.unwrap(),
            shadow: shadow.unwrap(),
        };
        Self {
            slots: Mutex::default(),
            waiting: Mutex::default(),
            runtime: OnceLock::new(),
            metrics,
            s3: tokio::sync::OnceCell::new(),
            egress,
            shadow: OnceLock::new(),
        }
    }
    /// The collectors to register with the process's metrics.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.metrics.reloads.clone()),
            Box::new(self.metrics.loaded.clone()),
            Box::new(self.metrics.decisions.clone()),
            Box::new(self.metrics.shadow.clone()),
        ]
    }

    /// The shadow worker, started on first use (`None`: its thread could not start, and
    /// shadows are off).
    pub fn shadow_queue(&self) -> Option<Arc<super::experiment::ShadowQueue>> {
        self.shadow
            .get_or_init(|| {
                super::experiment::ShadowQueue::start(self.metrics.shadow.clone())
                    .inspect_err(|e| {
                        tracing::error!(error = %e, "the shadow worker did not start; shadow versions are off")
                    })
                    .ok()
            })
            .clone()
    }

    /// The slot for `spec`, shared by every group and state version that uses it; a new
    /// one starts loading (once [`Models::start`] has run).
    pub fn slot(self: &Arc<Self>, spec: Spec) -> Arc<Slot> {
        let Ok(mut slots) = self.slots.lock() else {
            return self.new_slot(spec);
        };
        slots.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = slots.get(&spec).and_then(Weak::upgrade) {
            return s;
        }
        // A new source for a strategy (a new version activated, a path changed): the model
        // serving now keeps serving until the new one has loaded, or, when a challenger is
        // promoted, the challenger's model (the same artifact) serves at once. A challenger
        // starts empty.
        let promoted = || {
            slots
                .iter()
                .filter(|(s, _)| {
                    s.challenger && s.source == spec.source && s.pin == spec.pin && s.pin.is_some()
                })
                .find_map(|(_, w)| w.upgrade()?.current())
        };
        let previous = || {
            slots
                .iter()
                .filter(|(s, _)| !s.challenger && s.strategy == spec.strategy)
                .find_map(|(_, w)| w.upgrade()?.current())
        };
        let serving = if spec.challenger {
            None
        } else {
            promoted().or_else(previous)
        };
        let slot = self.new_slot(spec.clone());
        slot.serve(serving);
        slots.insert(spec, Arc::downgrade(&slot));
        drop(slots);
        match self.runtime.get() {
            Some(rt) => self.spawn(rt, Arc::downgrade(&slot)),
            None => {
                if let Ok(mut w) = self.waiting.lock() {
                    w.push(Arc::downgrade(&slot));
                }
            }
        }
        slot
    }

    fn new_slot(&self, spec: Spec) -> Arc<Slot> {
        let m = &self.metrics;
        Arc::new(Slot {
            by_model: ArcSwapOption::empty(),
            by_fallback: m.decisions.with_label_values(&[
                &spec.strategy,
                spec.role(),
                "fallback",
                "",
            ]),
            metrics: m.clone(),
            spec,
            model: ArcSwapOption::empty(),
            status: Mutex::default(),
        })
    }

    /// Starts polling on `rt`: the slots made so far and every later one.
    pub fn start(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        if self.runtime.set(rt.clone()).is_err() {
            return;
        }
        let waiting = self.waiting.lock().map(|mut w| std::mem::take(&mut *w));
        for slot in waiting.unwrap_or_default() {
            self.spawn(rt, slot);
        }
    }

    fn spawn(self: &Arc<Self>, rt: &tokio::runtime::Handle, slot: Weak<Slot>) {
        rt.spawn(poll(Arc::clone(self), slot));
    }

    /// The sentence encoder of `strategy`'s loaded model, if it has one (benches, tools).
    pub fn encoder_of(&self, strategy: &str) -> Option<Arc<super::featurize::Encoder>> {
        let slots = self.slots.lock().ok()?;
        let slot = slots
            .iter()
            .find(|(spec, _)| spec.strategy == strategy && !spec.challenger)
            .and_then(|(_, w)| w.upgrade())?;
        slot.encoder()
    }

    /// `/hot-reload/status`: every live slot.
    pub fn status(&self) -> Value {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .map(|s| s.values().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        let mut list: Vec<Value> = slots.iter().map(|s| s.status()).collect();
        list.sort_by_key(|v| v["strategy"].as_str().map(str::to_owned));
        json!({ "routers": list })
    }

    async fn s3(&self) -> &aws_sdk_s3::Client {
        self.s3
            .get_or_init(|| routeiq_service::s3::client(Some(self.egress.aws_http_client())))
            .await
    }
}

/// Checks a slot's source now and then, for as long as some group uses the slot.
async fn poll(models: Arc<Models>, slot: Weak<Slot>) {
    loop {
        let Some(s) = slot.upgrade() else { return };
        if matches!(s.spec.source, Source::None(_)) {
            return;
        }
        check(&models, &s).await;
        let (wait, done) = (
            Duration::from_millis(s.spec.reload_ms),
            !s.spec.hot_reload && s.current().is_some(),
        );
        drop(s);
        if done {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// Loads the slot's artifact when its manifest changed since the last check.
async fn check(models: &Models, slot: &Slot) {
    let (seen, outcome) = match &slot.spec.source {
        Source::None(_) => return,
        Source::File(dir) => check_file(dir, slot).await,
        Source::S3 { bucket, prefix } => check_s3(models.s3().await, bucket, prefix, slot).await,
    };
    slot.checked(seen, outcome);
}

type Checked = (Option<String>, Result<Option<Model>, LoadError>);

async fn check_file(dir: &Path, slot: &Slot) -> Checked {
    let path = dir.join(MANIFEST);
    let fingerprint = match tokio::fs::metadata(&path).await {
        Ok(m) => format!(
            "{:?}:{}",
            m.modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()),
            m.len()
        ),
        Err(e) => {
            return (
                None,
                Err(LoadError::Source(format!("{}: {e}", path.display()))),
            );
        }
    };
    if slot.seen().as_deref() == Some(fingerprint.as_str()) {
        return (None, Ok(None));
    }
    let dir = dir.to_path_buf();
    let outcome = tokio::task::spawn_blocking(move || {
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| LoadError::Source(format!("{}: {e}", dir.join(name).display())))
        };
        let raw = read(MANIFEST)?;
        let manifest = artifact::manifest(&raw)?;
        let mut files = HashMap::new();
        for name in manifest.files.keys() {
            files.insert(name.clone(), read(name)?);
        }
        Ok::<_, LoadError>((raw, manifest, files))
    })
    .await;
    let built = match outcome {
        Ok(Ok((raw, manifest, files))) => build(slot, raw, manifest, files).await,
        Ok(Err(e)) => Err(e),
        Err(e) => Err(LoadError::Source(format!("reading the artifact: {e}"))),
    };
    (Some(fingerprint), built.map(Some))
}

async fn check_s3(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str, slot: &Slot) -> Checked {
    let key = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        }
    };
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key(MANIFEST))
        .send()
        .await;
    let etag = match head {
        Ok(h) => h.e_tag().unwrap_or_default().to_owned(),
        Err(e) => {
            let e = aws_sdk_s3::error::DisplayErrorContext(e);
            return (
                None,
                Err(LoadError::Source(format!(
                    "s3://{bucket}/{}: {e}",
                    key(MANIFEST)
                ))),
            );
        }
    };
    if slot.seen().as_deref() == Some(etag.as_str()) {
        return (None, Ok(None));
    }
    let get = |name: String| async move {
        let k = key(&name);
        let obj = client
            .get_object()
            .bucket(bucket)
            .key(&k)
            .send()
            .await
            .map_err(|e| {
                LoadError::Source(format!(
                    "s3://{bucket}/{k}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                ))
            })?;
        let bytes = obj
            .body
            .collect()
            .await
            .map_err(|e| LoadError::Source(format!("s3://{bucket}/{k}: {e}")))?;
        Ok::<_, LoadError>(bytes.into_bytes().to_vec())
    };
    let fetched = async {
        let raw = get(MANIFEST.to_owned()).await?;
        let manifest = artifact::manifest(&raw)?;
        let mut files = HashMap::new();
        for name in manifest.files.keys() {
            files.insert(name.clone(), get(name.clone()).await?);
        }
        Ok::<_, LoadError>((raw, manifest, files))
    }
    .await;
    let built = match fetched {
        Ok((raw, manifest, files)) => build(slot, raw, manifest, files).await,
        Err(e) => Err(e),
    };
    // A failed download is tried again at the next check; a bad artifact only once
    // it changes.
    let seen = match &built {
        Err(LoadError::Source(_)) => None,
        _ => Some(etag),
    };
    (seen, built.map(Some))
}

/// Checks that an artifact carries an encoder fit for the semantic cache: the minilm
/// featurizer, not cut short (a cut encoder scores different questions as paraphrases:
/// `semantic-eval` in docs/configuration.md).
fn semantic_encoder(manifest: &artifact::Manifest) -> Result<(), LoadError> {
    match manifest.featurizer {
        Some(artifact::FeaturizerSpec::Minilm { layers, .. })
            if layers.is_none_or(|l| l >= FULL_ENCODER_LAYERS) =>
        {
            Ok(())
        }
        Some(artifact::FeaturizerSpec::Minilm { layers, .. }) => Err(LoadError::Invalid(format!(
            "the semantic cache needs the whole encoder: this one is cut to {} layers, which scores different questions as paraphrases",
            layers.unwrap_or_default()
        ))),
        _ => Err(LoadError::Invalid(
            "the semantic cache needs an artifact with the minilm featurizer (a sentence encoder)"
                .into(),
        )),
    }
}

/// Verifies and builds a model on the blocking pool.
async fn build(
    slot: &Slot,
    raw: Vec<u8>,
    manifest: artifact::Manifest,
    files: HashMap<String, Vec<u8>>,
) -> Result<Model, LoadError> {
    let want = slot.spec.strategy.trim_start_matches("llmrouter-");
    let encoder_only = slot.spec.strategy == SEMANTIC_ENCODER;
    if encoder_only {
        semantic_encoder(&manifest)?;
    }
    if !encoder_only && manifest.strategy != want {
        return Err(LoadError::Invalid(format!(
            "the artifact is a `{}` model, the routing strategy is `{}`",
            manifest.strategy, slot.spec.strategy
        )));
    }
    let sha256 = artifact::sha256_hex(&raw);
    if let Some(pin) = slot.spec.pin.as_ref().filter(|p| **p != sha256) {
        return Err(LoadError::Invalid(format!(
            "{MANIFEST} has sha256 {sha256}, the activated version {pin}"
        )));
    }
    tokio::task::spawn_blocking(move || {
        let files = Files::verified(&manifest, files)?;
        Model::build(manifest, sha256, files)
    })
    .await
    .map_err(|e| LoadError::Invalid(format!("building the model: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(featurizer: Value) -> artifact::Manifest {
        let m = json!({
            "format": "routeiq-router/1", "strategy": "knn", "version": "v1",
            "candidates": [{"name": "a"}], "featurizer": featurizer, "files": {}
        });
        artifact::manifest(m.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn the_semantic_cache_takes_only_a_whole_sentence_encoder() {
        let minilm = |extra: Value| {
            let mut f = json!({"name": "minilm", "version": 1, "dim": 384, "max_tokens": 256});
            if let (Some(f), Value::Object(extra)) = (f.as_object_mut(), extra) {
                f.extend(extra);
            }
            semantic_encoder(&manifest(f))
        };
        assert!(minilm(json!({})).is_ok());
        assert!(minilm(json!({"layers": 6})).is_ok());
        let cut = minilm(json!({"layers": 2})).unwrap_err().to_string();
        assert!(cut.contains("cut to 2 layers"), "{cut}");
        let hashed = json!({"name": "hashed-ngram", "version": 1, "dim": 64});
        assert!(semantic_encoder(&manifest(hashed)).is_err());
        assert!(semantic_encoder(&manifest(Value::Null)).is_err());
    }
}
