//! Choosing a deployment within a model group: the [`Router`] trait with one implementation
//! per LiteLLM strategy (`strategies`), the filters every strategy's candidates go through
//! (breaker, tags, pre-call checks: [`ModelGroup::pick`]), per-deployment health
//! (`health`), retries and fallbacks across attempts (`failover`), and health shared
//! across data planes through Redis (`shared`), and the learned `llmrouter-*` strategies
//! (`learned`).

pub mod failover;
pub mod health;
pub mod learned;
pub mod shared;
mod strategies;

use std::sync::Arc;

use routeiq_proto::{RouterSettings, RoutingStrategy};

use crate::error::ApiError;
use crate::state::CompiledDeployment;

pub use strategies::{CostBased, LatencyBased, LeastBusy, SimpleShuffle, UsageBased};

/// Indices of the deployments a request may go to.
pub type Candidates = smallvec::SmallVec<[usize; 16]>;

/// What routing needs to know of a request.
#[derive(Debug, Clone, Default)]
pub struct RouteRequest {
    pub stream: bool,
    /// Prompt tokens, estimated (for context-window checks).
    pub prompt_tokens: u64,
    /// Worst-case tokens of the request (for TPM headroom).
    pub tokens: u64,
    /// The request's `tags` (tag filtering).
    pub tags: Vec<String>,
    /// What learned strategies route on; `None` unless one is configured.
    pub query: Option<Arc<learned::Query>>,
    /// The one deployment (by id) that may serve the request in a group that has it: the
    /// provider holds state the request refers to (a stored response).
    pub pinned: Option<String>,
    /// The caller's key (for the key labels of the failure and fallback metrics); none for
    /// the gateway's own calls.
    pub key: Option<Arc<routeiq_proto::VirtualKey>>,
}

pub trait Router: Send + Sync {
    /// The chosen deployment among `candidates` (indices into `group`, never empty), as an
    /// index into `group`; `None` when no candidate can take the request.
    fn pick(
        &self,
        group: &[Arc<CompiledDeployment>],
        candidates: &[usize],
        req: &RouteRequest,
        now_ms: u64,
    ) -> Option<usize>;

    /// What must be computed from the query, asynchronously, before `pick` can use it.
    fn preparation(&self) -> Preparation {
        Preparation::None
    }

    /// Strategies that make several model calls per request (`llmrouter-automix`, the
    /// multi-round ones): what the chat handler runs around the picked deployment.
    fn compound(&self) -> Option<Compound> {
        None
    }
}

/// A request served by several model calls (see [`Router::compound`]).
#[derive(Clone)]
pub enum Compound {
    /// Draft with the small model, verify, escalate (`handlers::cascade`).
    AutoMix(Arc<learned::automix::Cascade>),
    /// Decompose, route and answer sub-queries, then aggregate (`handlers::multiround`).
    MultiRound(Arc<learned::multiround::MultiRound>),
}

/// Work a router needs done on the query before its first pick, off the pick itself (which
/// is synchronous): the handler runs it (`handlers::attempt::plan`) and stores the result
/// on the request's [`learned::Query`].
pub enum Preparation {
    None,
    /// A learned strategy's sentence embedding, on the blocking pool.
    Embed(Arc<learned::featurize::Encoder>),
    /// `llmrouter-causallm`: ask the router model which candidate should answer.
    Ask(Arc<learned::ask::Ask>),
}

/// The router for a model group. Unknown names route with simple-shuffle (the config
/// loader has warned); learned strategies get their model slot from `models`.
pub fn build(
    settings: &RouterSettings,
    deployments: &[Arc<CompiledDeployment>],
    models: &Arc<learned::Models>,
) -> Box<dyn Router> {
    if let RoutingStrategy::LlmRouter(name) = &settings.routing_strategy {
        let fallback = build(&learned::fallback_settings(settings), deployments, models);
        if name == learned::automix::STRATEGY {
            return Box::new(learned::automix::AutoMix::new(
                settings,
                deployments,
                fallback,
            ));
        }
        if let Some(mode) = learned::multiround::Mode::of(name) {
            return Box::new(learned::multiround::MultiRoundRouter::new(
                mode,
                settings,
                deployments,
                models,
                fallback,
            ));
        }
        if name == learned::ask::STRATEGY {
            return Box::new(learned::ask::LlmAsked::new(
                name,
                settings,
                deployments,
                fallback,
            ));
        }
        if let Some(spec) = learned::Spec::of(settings) {
            return Box::new(learned::LearnedRouter::new(
                models.slot(spec),
                settings,
                deployments,
                fallback,
                models,
            ));
        }
    }
    match &settings.routing_strategy {
        RoutingStrategy::SimpleShuffle
        | RoutingStrategy::LlmRouter(_)
        | RoutingStrategy::Unknown(_) => Box::new(SimpleShuffle::new(deployments)),
        RoutingStrategy::LeastBusy => Box::new(LeastBusy),
        RoutingStrategy::LatencyBased => Box::new(LatencyBased {
            buffer: settings.lowest_latency_buffer(),
            ttl_ms: settings.latency_ttl().as_millis() as u64,
        }),
        RoutingStrategy::CostBased => Box::new(CostBased),
        RoutingStrategy::UsageBasedV2 => Box::new(UsageBased),
    }
}

/// Deployments sharing a public model name, and their router.
pub struct ModelGroup {
    pub name: String,
    pub deployments: Vec<Arc<CompiledDeployment>>,
    /// The `model_info.mode`s its deployments declare, sorted and deduplicated; `None`
    /// when one of them declares none, and so serves every endpoint.
    pub modes: Option<Vec<String>>,
    router: Box<dyn Router>,
}

/// A deployment picked for an attempt: its index in the group, and whether the attempt is
/// its breaker's half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    pub probe: bool,
}

/// Why no deployment of a group could take the request.
#[derive(Debug)]
pub enum NoDeployment {
    /// Every deployment's breaker is open; the soonest reopens in this many ms.
    CoolingDown(u64),
    /// The prompt is larger than every deployment's context window.
    ContextWindow { prompt_tokens: u64, largest: u64 },
    /// No deployment carries the request's tags (nor `default`).
    Tags,
    /// Every deployment's rpm/tpm is used up this minute.
    Capacity,
}

impl ModelGroup {
    pub fn new(
        name: String,
        deployments: Vec<Arc<CompiledDeployment>>,
        settings: &RouterSettings,
        models: &Arc<learned::Models>,
    ) -> Self {
        let router = build(settings, &deployments, models);
        let modes = deployments
            .iter()
            .map(|d| d.deployment.model_info.mode.clone())
            .collect::<Option<Vec<_>>>()
            .map(|mut modes| {
                modes.sort_unstable();
                modes.dedup();
                modes
            });
        Self {
            name,
            deployments,
            modes,
            router,
        }
    }

    /// What the group's router needs computed from the query before it picks.
    pub fn preparation(&self) -> Preparation {
        self.router.preparation()
    }

    /// What the group's router runs around the picked deployment, if anything.
    pub fn compound(&self) -> Option<Compound> {
        self.router.compound()
    }

    /// Picks a deployment for `req`, skipping `excluded` ones (already tried) unless
    /// nothing else is left, and claims it (a half-open breaker admits one probe).
    pub fn pick(
        &self,
        settings: &RouterSettings,
        req: &RouteRequest,
        excluded: &[usize],
        now_ms: u64,
    ) -> Result<Pick, NoDeployment> {
        let probe_ttl = settings.cooldown_time().as_millis() as u64;
        // On the stack for groups of up to 16 deployments: no allocation per request.
        let mut candidates: Candidates = Candidates::new();
        let mut soonest = u64::MAX;
        let mut largest_window = 0;
        let mut context_refused = 0;
        let mut tag_filter = settings
            .enable_tag_filtering
            .then(|| TagFilter::new(self, req));
        let pinned = req.pinned.as_deref().and_then(|id| {
            self.deployments
                .iter()
                .position(|d| d.deployment.id.0 == id)
        });
        for (i, d) in self.deployments.iter().enumerate() {
            if pinned.is_some_and(|p| p != i) {
                continue;
            }
            if let Some(f) = &mut tag_filter {
                if !f.admits(d) {
                    continue;
                }
            }
            if settings.enable_pre_call_checks {
                if let Some(window) = d.deployment.model_info.max_input_tokens {
                    if req.prompt_tokens > window {
                        largest_window = largest_window.max(window);
                        context_refused += 1;
                        continue;
                    }
                }
            }
            if !d.health.available(now_ms, probe_ttl) {
                soonest = soonest.min(d.health.open_until_ms());
                continue;
            }
            candidates.push(i);
        }
        if candidates.is_empty() {
            return Err(if tag_filter.is_some_and(|f| f.admitted == 0) {
                NoDeployment::Tags
            } else if context_refused > 0 && soonest == u64::MAX {
                NoDeployment::ContextWindow {
                    prompt_tokens: req.prompt_tokens,
                    largest: largest_window,
                }
            } else {
                NoDeployment::CoolingDown(soonest.saturating_sub(now_ms))
            });
        }
        if candidates.iter().any(|i| !excluded.contains(i)) {
            candidates.retain(|i| !excluded.contains(i));
        }
        if settings.enable_pre_call_checks {
            candidates.retain(|i| has_capacity(&self.deployments[*i], req, now_ms));
            if candidates.is_empty() {
                return Err(NoDeployment::Capacity);
            }
        }
        // A lost half-open race drops that candidate and picks again.
        while !candidates.is_empty() {
            let i = self
                .router
                .pick(&self.deployments, &candidates, req, now_ms)
                .ok_or(NoDeployment::Capacity)?;
            if let Some(probe) = self.deployments[i].health.claim(now_ms, probe_ttl) {
                return Ok(Pick { index: i, probe });
            }
            candidates.retain(|c| *c != i);
        }
        Err(NoDeployment::CoolingDown(0))
    }
}

/// A request's hold on the deployment serving it: counted in flight and in the minute's
/// usage from [`Lease::start`] until dropped; [`Lease::settle`] records its actual tokens
/// and latency.
/// A lease dropped unsettled (a failed attempt) used no tokens.
pub struct Lease {
    health: Arc<health::DeploymentHealth>,
    tokens: u64,
    settled: bool,
}

impl Lease {
    pub fn start(d: &CompiledDeployment, tokens: u64) -> Self {
        d.health.start(tokens, crate::clock::now_ms());
        Self {
            health: Arc::clone(&d.health),
            tokens,
            settled: false,
        }
    }

    /// The request was served: its actual tokens (when known; else the estimate stands)
    /// and latencies.
    pub fn settle(
        mut self,
        tokens: Option<u64>,
        latency: Option<std::time::Duration>,
        ttft: Option<std::time::Duration>,
    ) {
        self.settled = true;
        if let Some(t) = tokens {
            self.health
                .adjust_tokens(self.tokens, t, crate::clock::now_ms());
        }
        if let Some(l) = latency {
            self.health.record_latency(l, ttft);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled {
            self.health
                .adjust_tokens(self.tokens, 0, crate::clock::now_ms());
        }
        self.health.finish();
    }
}

/// Whether a deployment's `rpm`/`tpm` leave room for the request this minute.
pub fn has_capacity(d: &CompiledDeployment, req: &RouteRequest, now_ms: u64) -> bool {
    let (requests, tokens) = d.health.usage(now_ms);
    d.deployment.rpm.is_none_or(|rpm| requests < rpm)
        && d.deployment
            .tpm
            .is_none_or(|tpm| tokens + req.tokens <= tpm)
}

/// LiteLLM's tag routing: deployments carrying one of the request's tags; without a match
/// (or without request tags), the deployments tagged `default`; without those, untagged
/// requests may use every deployment.
struct TagFilter<'a> {
    req: &'a RouteRequest,
    any_match: bool,
    any_default: bool,
    admitted: usize,
}

impl<'a> TagFilter<'a> {
    fn new(group: &ModelGroup, req: &'a RouteRequest) -> Self {
        let has = |tag: &str| {
            group
                .deployments
                .iter()
                .any(|d| d.deployment.tags.iter().any(|t| t == tag))
        };
        Self {
            any_match: req.tags.iter().any(|t| has(t)),
            any_default: has("default"),
            req,
            admitted: 0,
        }
    }

    fn admits(&mut self, d: &CompiledDeployment) -> bool {
        let tags = &d.deployment.tags;
        let ok = if self.any_match {
            tags.iter().any(|t| self.req.tags.contains(t))
        } else if self.any_default {
            tags.iter().any(|t| t == "default")
        } else {
            self.req.tags.is_empty()
        };
        self.admitted += usize::from(ok);
        ok
    }
}

impl NoDeployment {
    /// The client error for a group that had no deployment to offer.
    pub fn into_error(self, group: &str, req: &RouteRequest) -> ApiError {
        match self {
            Self::CoolingDown(ms) => ApiError::rate_limited(format!(
                "no deployment of model `{group}` is available: every one is cooling down after failures (router_settings.cooldown_time); retry in {:.1}s",
                ms as f64 / 1000.0
            ))
            .with_code("no_deployments_available")
            .with_retry_after(Some(ms.div_ceil(1000).max(1))),
            Self::ContextWindow { prompt_tokens, largest } => ApiError::bad_request(format!(
                "the prompt (about {prompt_tokens} tokens) is longer than the context window of every deployment of model `{group}` (largest {largest}); configure context_window_fallbacks"
            ))
            .with_code("context_length_exceeded"),
            Self::Tags => ApiError::bad_request(format!(
                "no deployment of model `{group}` carries the request's tags {:?} (nor the `default` tag)",
                req.tags
            ))
            .with_param("tags")
            .with_code("no_deployments_with_tags"),
            Self::Capacity => ApiError::rate_limited(format!(
                "every deployment of model `{group}` has used its rpm/tpm for this minute"
            ))
            .with_code("no_deployments_available")
            .with_retry_after(Some(crate::clock::minute().1)),
        }
    }
}
