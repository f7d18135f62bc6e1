//! The learned `llmrouter-*` strategies: a routing model (`artifact`) scores the group's
//! candidates from the query's features (`featurize`, ONNX Runtime through `onnx`), and
//! the best-scored available deployment wins. Models load and reload off the request
//! path (`models`); until one is loaded, or when it cannot score a request, the group
//! routes with `routing_strategy_args.fallback_strategy` (default simple-shuffle), so a
//! missing or broken artifact never fails a request. Versions under evaluation decide
//! beside the serving one (`experiment`: shadow, A/B).

pub mod artifact;
pub mod ask;
pub mod automix;
pub mod experiment;
pub mod featurize;
pub mod models;
pub mod multiround;
mod onnx;
pub mod operating;

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use routeiq_proto::{RouterSettings, RoutingStrategy};

use super::{RouteRequest, Router};
use crate::state::CompiledDeployment;
use artifact::{Featurizer, Model};
use experiment::{Ab, Arm, Shadow, ShadowCell};
pub use models::{Models, Slot, Spec};
use operating::{Knob, Policy};

#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Source(String),
}

/// What a learned router decided for a request (response headers, logs).
#[derive(Debug, Clone)]
pub struct Decision {
    pub strategy: String,
    /// The artifact version; `None` when the fallback strategy routed.
    pub version: Option<String>,
    /// The chosen candidate's name.
    pub candidate: Option<String>,
    /// The text routed on.
    pub query: Arc<str>,
    /// Each scored candidate's name and score, when the query asked for them (empty when
    /// the fallback routed).
    pub scores: Scores,
    /// The deciding artifact's manifest sha256 (`None`: no artifact decided).
    pub sha256: Option<String>,
    /// Which version decided: the serving one, or the A/B one.
    pub arm: Arm,
    /// The shadow version's decision, filled off the request path (`None`: no shadow, or
    /// its queue was full).
    pub shadow: Option<Arc<ShadowCell>>,
}

impl Decision {
    /// A decision by a strategy with no artifact (or its fallback): no sha256, no
    /// experiment.
    pub fn plain(
        strategy: String,
        version: Option<String>,
        candidate: Option<String>,
        query: Arc<str>,
    ) -> Self {
        Self {
            strategy,
            version,
            candidate,
            query,
            scores: Vec::new(),
            sha256: None,
            arm: Arm::Serving,
            shadow: None,
        }
    }
}

/// Scored candidates' names and scores, in the router's order.
pub type Scores = Vec<(String, f32)>;

/// A model's choice among a group's candidates.
struct Choice {
    /// The deployment's index in the group.
    index: usize,
    /// The candidate's label in the model.
    label: usize,
    /// Every scored candidate's score, when the query asked for them.
    scores: Scores,
}

/// The text a learned router routes on (the last user message), with its features once
/// computed, and the decision made.
#[derive(Debug)]
pub struct Query {
    pub text: Arc<str>,
    /// The request's end user (personalised strategies).
    pub user: Option<String>,
    /// Whether the decision carries the candidates' scores ([`Decision::scores`]).
    explain: bool,
    /// Features by featurizer, each computed once for the versions deciding on it.
    features: Mutex<Vec<(FeatureKey, Arc<[f32]>)>>,
    /// The candidate a router model named (`llmrouter-causallm`).
    choice: Mutex<Option<String>>,
    decision: Mutex<Option<Decision>>,
    /// The shadow version's decision (see [`experiment::Shadow`]).
    shadow: Arc<ShadowCell>,
    /// A uniform draw in [0, 1), fixed for the request: an A/B split's side for a client
    /// with neither an end user nor a key, the same on every pick.
    draw: f64,
}

impl Query {
    pub fn new(text: String) -> Self {
        Self::for_user(text, None)
    }

    /// A query made for `user` (the request's end user).
    pub fn for_user(text: String, user: Option<String>) -> Self {
        Self {
            text: text.into(),
            user,
            explain: false,
            features: Mutex::new(Vec::new()),
            choice: Mutex::new(None),
            decision: Mutex::new(None),
            shadow: Arc::default(),
            draw: fastrand::f64(),
        }
    }

    /// The decision will carry every candidate's score (for the request's span).
    pub fn explained(mut self, explain: bool) -> Self {
        self.explain = explain;
        self
    }

    fn cached(&self, key: FeatureKey) -> Option<Arc<[f32]>> {
        let f = self.features.lock().ok()?;
        f.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| Arc::clone(v))
    }

    fn store(&self, key: FeatureKey, v: Arc<[f32]>) {
        if let Ok(mut f) = self.features.lock() {
            f.push((key, v));
        }
    }

    /// The features `featurizer` gives this query: computed now for the hashed and
    /// structure featurizers, `None` for an encoder whose embedding was not prepared (see [`ModelGroup::prepare`]).
    ///
    /// [`ModelGroup::prepare`]: super::ModelGroup::prepare
    fn features(&self, featurizer: &Featurizer) -> Option<Arc<[f32]>> {
        let Some(key) = FeatureKey::of(featurizer) else {
            return Some(Arc::from(Vec::new()));
        };
        if let Some(v) = self.cached(key) {
            return Some(v);
        }
        let v: Arc<[f32]> = match featurizer {
            Featurizer::Hashed(h) => h.features(&self.text).into(),
            Featurizer::Structure => Arc::from(featurize::structure(&self.text)),
            Featurizer::Concat(parts) => {
                let mut v = Vec::with_capacity(featurizer.dim());
                for part in parts {
                    v.extend_from_slice(&self.features(part)?);
                }
                featurize::normalise(&mut v);
                v.into()
            }
            // An encoder's embedding is made before the decision (`prepare`), or not at all.
            Featurizer::None | Featurizer::Encoder(_) => return None,
        };
        self.store(key, Arc::clone(&v));
        Some(v)
    }

    fn choice(&self) -> Option<String> {
        self.choice.lock().ok()?.clone()
    }

    fn set_choice(&self, c: Option<String>) {
        if let Ok(mut slot) = self.choice.lock() {
            *slot = c;
        }
    }

    pub fn decision(&self) -> Option<Decision> {
        self.decision.lock().ok()?.clone()
    }

    fn decide(&self, d: Decision) {
        if let Ok(mut slot) = self.decision.lock() {
            *slot = Some(d);
        }
    }

    /// Forgets the decision: the request falls back to another model group, whose router
    /// decides afresh (or not at all).
    pub fn forget_decision(&self) {
        if let Ok(mut slot) = self.decision.lock() {
            *slot = None;
        }
    }
}

/// What a query's features are cached under: the versions deciding on one request (serving,
/// A/B, shadow) compute each featurizer's vector once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FeatureKey {
    /// Hashed n-grams in this many buckets.
    Hashed(usize),
    /// An encoder's embedding, by a hash of its id (files and truncation): two loaded
    /// artifacts with the same encoder share one embedding.
    Encoder(u64),
    Structure,
    /// A concat's vector, by a hash of its parts' keys in order.
    Concat(u64),
}

impl FeatureKey {
    /// `None` for no featurizer (a query-independent strategy's empty features).
    fn of(featurizer: &Featurizer) -> Option<Self> {
        Some(match featurizer {
            Featurizer::None => return None,
            Featurizer::Hashed(h) => Self::Hashed(h.dim),
            Featurizer::Encoder(e) => Self::encoder(e),
            Featurizer::Structure => Self::Structure,
            Featurizer::Concat(parts) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                parts.iter().for_each(|p| Self::of(p).hash(&mut h));
                Self::Concat(h.finish())
            }
        })
    }

    fn encoder(e: &featurize::Encoder) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        e.id.hash(&mut h);
        Self::Encoder(h.finish())
    }
}

/// How a learned router turns a model's scores into a choice: the routing policy of the
/// group's settings, shared by the serving version and the versions under evaluation.
pub struct Chooser {
    /// The serving strategy (`llmrouter-<name>`), for warnings.
    strategy: String,
    /// Per deployment of the group, the names it may have among the candidates.
    names: Vec<[String; 2]>,
    /// `routing_strategy_args.cost_weight`: USD per million tokens one score point is
    /// worth giving up.
    cost_weight: f64,
    /// `routing_strategy_args.conservative`: leave the model's best single candidate only
    /// for a query like the training ones, and a calibrated gain above its margin.
    conservative: bool,
    /// `max_price_per_m` or `quality_floor`: a mix of the model's operating points.
    knob: Option<Knob>,
    /// Whether the "no operating points" warning was logged (once per router: a snapshot
    /// with these settings).
    warned: AtomicBool,
}

impl Chooser {
    fn new(settings: &RouterSettings, deployments: &[Arc<CompiledDeployment>]) -> Self {
        let cost_weight = settings
            .arg_number("cost_weight")
            .filter(|w| *w >= 0.0)
            .unwrap_or(0.0);
        let conservative = settings
            .routing_strategy_args
            .get("conservative")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Self {
            strategy: settings.routing_strategy.name().to_owned(),
            names: candidate_names(deployments),
            cost_weight,
            conservative,
            knob: Knob::of(settings),
            warned: AtomicBool::new(false),
        }
    }

    /// The model's operating points when the settings use them (a knob, `conservative`);
    /// without them, a warning the first time.
    fn operating<'m>(&self, model: &'m Model) -> Option<&'m operating::Operating> {
        if self.knob.is_none() && !self.conservative {
            return None;
        }
        if model.operating.is_none() && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                strategy = %self.strategy,
                version = %model.manifest.version,
                "the routing model has no operating points (train it with \
                 --calibration-folds); max_price_per_m, quality_floor and conservative are \
                 ignored and cost_weight routes"
            );
        }
        model.operating.as_ref()
    }

    /// The policy for this request: the knob's mix of operating points, else the router
    /// at `cost_weight`.
    fn policy(&self, operating: Option<&operating::Operating>) -> Policy {
        match (self.knob, operating) {
            (Some(knob), Some(o)) => o.mix(knob).draw(fastrand::f64()),
            _ => Policy::Router(self.cost_weight),
        }
    }

    /// The chosen candidate, or `None` to leave the pick to the fallback (a failed score
    /// is reported on `slot`).
    fn choose(
        &self,
        slot: &Slot,
        model: &Model,
        candidates: &[usize],
        query: &Query,
    ) -> Option<Choice> {
        let labels: smallvec::SmallVec<[Option<usize>; 16]> = candidates
            .iter()
            .map(|i| self.names[*i].iter().find_map(|n| model.candidate(n)))
            .collect();
        if labels.iter().all(Option::is_none) {
            return None;
        }
        let position = |label: usize| labels.iter().position(|l| *l == Some(label));
        let operating = self.operating(model);
        let cost_weight = match self.policy(operating) {
            Policy::Candidate(label) => match position(label) {
                Some(p) => {
                    return Some(Choice {
                        index: candidates[p],
                        label,
                        scores: Vec::new(),
                    })
                }
                // Not available now: the router decides, at the configured weight.
                None => self.cost_weight,
            },
            Policy::Router(w) => w,
        };
        if let (true, Some(o)) = (self.conservative, operating) {
            // A query unlike the training ones: the router's gains there are guesses.
            if !o.familiar(&query.text) {
                if let Some(p) = position(o.best_single) {
                    return Some(Choice {
                        index: candidates[p],
                        label: o.best_single,
                        scores: Vec::new(),
                    });
                }
            }
        }
        let features = query.features(&model.featurizer)?;
        let scores = match model.scores(&features, query.user.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                slot.scoring_failed(&e);
                return None;
            }
        };
        let value = |label: usize| {
            scores[label].map(|s| f64::from(s) - cost_weight * model.unit_price[label])
        };
        // The highest value; ties go to the cheaper candidate, then the lower label (as the
        // pipeline decides them).
        let mut best: Option<(usize, usize, f64)> = None;
        let mut scored = Vec::with_capacity(if query.explain { candidates.len() } else { 0 });
        for (i, label) in candidates.iter().zip(&labels) {
            let Some(label) = *label else { continue };
            let Some(v) = value(label) else { continue };
            if query.explain {
                scored.push((
                    model.manifest.candidates[label].name.clone(),
                    scores[label].unwrap_or_default(),
                ));
            }
            let price = model.unit_price[label];
            let better = best.is_none_or(|(_, bl, bv)| {
                let bp = model.unit_price[bl];
                v > bv || (v == bv && (price < bp || (price == bp && label < bl)))
            });
            if better {
                best = Some((*i, label, v));
            }
        }
        if let (true, Some(o), Some((_, label, v))) = (self.conservative, operating, best) {
            let keep = o.best_single;
            if label != keep {
                if let (Some(p), Some(kv)) = (position(keep), value(keep)) {
                    if v - kv <= o.margin {
                        best = Some((candidates[p], keep, kv));
                    }
                }
            }
        }
        best.map(|(index, label, _)| Choice {
            index,
            label,
            scores: scored,
        })
    }
}

/// `llmrouter-<name>` over a model slot, with the fallback strategy's router, and the
/// versions under evaluation beside it (`experiment`).
pub struct LearnedRouter {
    slot: Arc<Slot>,
    chooser: Arc<Chooser>,
    fallback: Box<dyn Router>,
    /// `routing_strategy_args.ab`: the version deciding a share of the clients.
    ab: Option<Ab>,
    /// `routing_strategy_args.shadow`: the version deciding beside, never acted on.
    shadow: Option<Shadow>,
}

impl LearnedRouter {
    pub fn new(
        slot: Arc<Slot>,
        settings: &RouterSettings,
        deployments: &[Arc<CompiledDeployment>],
        fallback: Box<dyn Router>,
        models: &Arc<Models>,
    ) -> Self {
        let ab =
            experiment::spec(settings, "ab").and_then(|spec| Ab::new(models.slot(spec), settings));
        let shadow = experiment::spec(settings, "shadow").and_then(|spec| {
            let queue = models.shadow_queue()?;
            Some(Shadow::new(models.slot(spec), queue))
        });
        Self {
            slot,
            chooser: Arc::new(Chooser::new(settings, deployments)),
            fallback,
            ab,
            shadow,
        }
    }

    /// The A/B version's choice when the request's client is on its side and it can
    /// decide, else the serving version's.
    fn decide(
        &self,
        candidates: &[usize],
        req: &RouteRequest,
        query: &Query,
    ) -> Option<(Arc<Model>, Arm, Choice)> {
        let key = req.key.as_ref().map(|k| &k.hash.0[..]);
        if let Some(ab) = self
            .ab
            .as_ref()
            .filter(|ab| ab.takes(query.user.as_deref(), key, query.draw))
        {
            if let Some(model) = ab.slot.current() {
                if let Some(c) = self.chooser.choose(&ab.slot, &model, candidates, query) {
                    ab.slot.decided(true);
                    return Some((model, Arm::Ab, c));
                }
            }
        }
        let model = self.slot.current()?;
        let c = self.chooser.choose(&self.slot, &model, candidates, query)?;
        self.slot.decided(true);
        Some((model, Arm::Serving, c))
    }
}

impl Router for LearnedRouter {
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        req: &RouteRequest,
        now_ms: u64,
    ) -> Option<usize> {
        let Some(query) = &req.query else {
            self.slot.decided(false);
            return self.fallback.pick(group, candidates, req, now_ms);
        };
        let shadow = self
            .shadow
            .as_ref()
            .and_then(|s| s.submit(&self.chooser, candidates, query));
        if let Some((model, arm, c)) = self.decide(candidates, req, query) {
            query.decide(Decision {
                strategy: self.slot.spec.strategy.clone(),
                version: Some(model.manifest.version.clone()),
                candidate: Some(model.manifest.candidates[c.label].name.clone()),
                query: Arc::clone(&query.text),
                scores: c.scores,
                sha256: Some(model.sha256.clone()),
                arm,
                shadow,
            });
            return Some(c.index);
        }
        self.slot.decided(false);
        query.decide(Decision {
            shadow,
            ..Decision::plain(
                self.slot.spec.strategy.clone(),
                None,
                None,
                Arc::clone(&query.text),
            )
        });
        self.fallback.pick(group, candidates, req, now_ms)
    }

    fn preparation(&self) -> super::Preparation {
        // The serving version's encoder, else the A/B version's (a shadow embeds on its own
        // thread).
        let encoder = self
            .slot
            .encoder()
            .or_else(|| self.ab.as_ref().and_then(|ab| ab.slot.encoder()));
        match encoder {
            Some(e) => super::Preparation::Embed(e),
            None => super::Preparation::None,
        }
    }
}

/// The names a deployment may have among a router's candidates: its upstream model id,
/// and that id's last `/` segment.
fn names_of(d: &CompiledDeployment) -> [&str; 2] {
    let m = d.deployment.upstream_model.as_str();
    [m, m.rsplit('/').next().unwrap_or(m)]
}

/// Per deployment, its names among a router's candidates ([`names_of`]), precomputed for
/// the routers' picks.
pub(crate) fn candidate_names(deployments: &[Arc<CompiledDeployment>]) -> Vec<[String; 2]> {
    deployments
        .iter()
        .map(|d| names_of(d).map(str::to_owned))
        .collect()
}

/// Whether `d` is the candidate called `name`.
pub fn is_candidate(d: &CompiledDeployment, name: &str) -> bool {
    !name.is_empty() && names_of(d).contains(&name)
}

/// At most the first `max` bytes of `s`, cut on a character boundary (texts passed to
/// router and verifier models).
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Computes the query's embedding for `encoder` (on the blocking pool) unless it has it.
pub async fn prepare(encoder: &Arc<featurize::Encoder>, query: &Query) {
    let key = FeatureKey::encoder(encoder);
    if query.cached(key).is_some() {
        return;
    }
    match encoder.embed(&query.text).await {
        Ok(v) => query.store(key, v),
        Err(e) => {
            tracing::warn!(error = %e, "query embedding failed; routing with the fallback strategy")
        }
    }
}

/// The fallback strategy's settings: `routing_strategy_args.fallback_strategy`, default
/// simple-shuffle (never a learned one).
pub fn fallback_settings(settings: &RouterSettings) -> RouterSettings {
    let name = settings
        .routing_strategy_args
        .get("fallback_strategy")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("simple-shuffle");
    let strategy = match RoutingStrategy::from_name(name) {
        RoutingStrategy::LlmRouter(_) | RoutingStrategy::Unknown(_) => {
            RoutingStrategy::SimpleShuffle
        }
        s => s,
    };
    RouterSettings {
        routing_strategy: strategy,
        ..settings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_computes_each_featurizers_vector_once() {
        let hashed = || Featurizer::Hashed(featurize::HashedNgram { dim: 32 });
        let concat = Featurizer::Concat(vec![hashed(), Featurizer::Structure]);
        let query = Query::new("What is 2 + 2? Answer with a number.".into());
        let first = query.features(&concat).unwrap();
        let dim = 32 + Featurizer::Structure.dim();
        assert_eq!(first.len(), dim);
        let norm: f32 = first.iter().map(|x| x * x).sum();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "the whole is L2-normalised: {norm}"
        );
        // A second decision on the same concat (an A/B or shadow version) reuses it.
        assert!(Arc::ptr_eq(&first, &query.features(&concat).unwrap()));
        // Its parts were cached on the way, and two concats of other parts are apart.
        assert!(Arc::ptr_eq(
            &query.features(&hashed()).unwrap(),
            &query.features(&hashed()).unwrap()
        ));
        let reversed = Featurizer::Concat(vec![Featurizer::Structure, hashed()]);
        assert_ne!(FeatureKey::of(&concat), FeatureKey::of(&reversed));
        let other = query.features(&reversed).unwrap();
        assert_eq!(other.len(), dim);
        assert_ne!(&other[..], &first[..]);
    }
}
