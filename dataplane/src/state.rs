//! The live state: everything a request needs, behind one atomically swapped pointer.
//!
//! A request loads the state once and sees one consistent version for its whole life.
//! Updates go through [`LiveState::prepare`] (fallible: builds and validates) and then
//! [`App::store`] (infallible swap).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use routeiq_proto::{
    Delta, DeltaOp, Deployment, GatewaySettings, KeyHash, ModelBudget, ProviderKind,
    RouterSettings, Scope, ScopeKind, Snapshot, SnapshotError, VirtualKey,
};

use crate::holder::ScopeEntry;

use crate::attached::report::Reporter;
use crate::cache::semantic::Embedder;
use crate::error::ApiError;
use crate::keymap::{Change, KeyMap};
use crate::providers::aws_auth::AwsSources;
use crate::providers::google_auth::GoogleTokens;
use crate::routing::health::{DeploymentHealth, Health};
use crate::routing::learned::Models;
use crate::routing::ModelGroup;
use crate::telemetry::Metrics;
use crate::translate::ChatFormat;
use crate::upstream::{Target, Upstream};

/// Upstream timeout when neither the deployment nor the router settings give one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A deployment with what the request path needs precomputed.
#[derive(Debug)]
pub struct CompiledDeployment {
    pub deployment: Deployment,
    /// `None` only for the mock provider.
    pub target: Option<Target>,
    pub timeout: Duration,
    /// Wait for a stream's first chunk and between chunks.
    pub stream_timeout: Duration,
    /// USD per token (see `cost`).
    pub prices: crate::cost::Prices,
    /// What this data plane has seen of the deployment (shared by every snapshot version).
    pub health: Arc<DeploymentHealth>,
    /// How client-facing errors name the deployment ([`CompiledDeployment::label_of`]),
    /// built once here rather than on each request.
    pub label: Arc<str>,
    /// The chat wire format the deployment speaks.
    pub format: ChatFormat,
    /// Whether it answers legacy `/completions` itself (else they go through chat).
    pub text_completions: bool,
    /// Whether it has the Responses API itself (else it goes through chat).
    pub responses_api: bool,
    /// What the provider needs besides `api_key` (Vertex AI, Bedrock), or why the
    /// deployment cannot be used (see `providers::credentials`).
    pub credentials: Option<Result<crate::providers::Credentials, Arc<str>>>,
    /// Which request parameters the deployment takes (`drop_params`, provider quirks).
    pub params: crate::params::ParamPolicy,
}

impl CompiledDeployment {
    /// The deployment's id and model group, never its address.
    pub fn label_of(d: &Deployment) -> Arc<str> {
        Arc::from(format!(
            "deployment `{}` of model group `{}`",
            d.id, d.model_name
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidSnapshot {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("delta version {got} does not follow snapshot version {current}")]
    VersionGap { current: u64, got: u64 },
    #[error(
        "the control plane's database went back in time: its full snapshot replaces this state"
    )]
    Resync,
}

pub struct LiveState {
    pub version: u64,
    pub master_key_hash: Option<KeyHash>,
    pub max_request_body_bytes: usize,
    /// The request header naming the end user (lowercase), if configured.
    pub user_header_name: Option<Arc<str>>,
    /// `general_settings.allowed_egress`; `None`: every destination may be reached.
    pub egress: Option<Arc<routeiq_proto::AllowedEgress>>,
    /// `mcp_servers`, compiled.
    pub mcp: Arc<crate::mcp::Registry>,
    /// `agents`, compiled.
    pub agents: Arc<crate::a2a::Registry>,
    /// `general_settings.agent_access_default_deny`.
    pub agent_access_default_deny: bool,
    /// `litellm_settings.turn_off_message_logging`: spans carry no message content.
    pub turn_off_message_logging: bool,
    /// The response cache's settings, when it is on.
    pub cache: Option<Arc<routeiq_proto::CacheSettings>>,
    /// What embeds for the semantic cache, when the cache is a semantic one.
    pub semantic: Option<SemanticEmbedder>,
    /// The registry's skills by id, with their copies on Anthropic deployments.
    pub skills: Arc<HashMap<String, routeiq_proto::Skill>>,
    /// Virtual keys by hash; a delta copies only the recent changes (see `keymap`).
    pub keys: KeyMap,
    /// The deployments and router settings the groups were compiled from (deltas that
    /// change a deployment recompile them; key deltas share them).
    deployments: Arc<Vec<Deployment>>,
    router: Arc<RouterSettings>,
    groups: Arc<HashMap<String, ModelGroup>>,
    /// Public model names, sorted, for `/v1/models` and error messages.
    pub model_names: Arc<Vec<String>>,
    /// Access group → the model names whose deployments are in it.
    access_groups: Arc<HashMap<String, HashSet<String>>>,
    /// What outlives state versions: deployment health and routing models.
    lasting: Lasting,
    /// Teams, users and organizations with a budget or limits, by kind and id.
    scopes: Arc<Scopes>,
}

/// Teams, users and organizations by id, one map per kind, indexed by `ScopeKind` (only
/// those with something to enforce, so the maps stay small; a change copies them).
#[derive(Debug, Default, Clone)]
pub struct Scopes([HashMap<String, Arc<ScopeEntry>>; ScopeKind::ALL.len()]);

impl Scopes {
    fn new(scopes: Vec<Scope>) -> Self {
        let mut s = Self::default();
        for scope in scopes {
            s.upsert(scope);
        }
        s
    }

    fn of_kind(&mut self, kind: ScopeKind) -> &mut HashMap<String, Arc<ScopeEntry>> {
        &mut self.0[kind as usize]
    }

    fn upsert(&mut self, scope: Scope) {
        self.of_kind(scope.kind)
            .insert(scope.id.clone(), Arc::new(ScopeEntry::new(scope)));
    }

    pub fn get(&self, kind: ScopeKind, id: &str) -> Option<&ScopeEntry> {
        if id.is_empty() {
            return None;
        }
        self.0[kind as usize].get(id).map(Arc::as_ref)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(HashMap::is_empty)
    }
}

/// What every state version shares with the ones before and after it: deployment health
/// by id, and the routing models of the learned strategies (loaded and reloaded in the
/// background).
#[derive(Clone)]
pub struct Lasting {
    pub health: Arc<Health>,
    pub models: Arc<Models>,
    /// The pooled upstream client.
    pub upstream: Arc<Upstream>,
    /// Service accounts' access tokens (Vertex AI).
    pub google: Arc<GoogleTokens>,
    /// AWS credentials (Bedrock).
    pub aws: Arc<AwsSources>,
    /// The operator's price file (`--model-prices`), if any.
    pub prices: Arc<crate::cost::PriceFile>,
    /// Sessions with the MCP servers.
    pub mcp_sessions: Arc<crate::mcp::client::Sessions>,
    /// OAuth tokens for the MCP servers.
    pub mcp_tokens: Arc<crate::mcp::oauth::Tokens>,
    /// Whether `stdio` MCP servers are spawned.
    pub mcp_stdio: bool,
    /// A2A agents' own cards, as fetched.
    pub a2a_cards: Arc<crate::a2a::Cards>,
}

/// The MCP servers compiled; sessions with servers no longer served are dropped.
fn mcp_registry(servers: &[routeiq_proto::McpServer], lasting: &Lasting) -> crate::mcp::Registry {
    let registry = crate::mcp::Registry::compile(servers, lasting.mcp_stdio);
    lasting.mcp_sessions.retain(&registry.session_keys());
    registry
}

impl Default for Lasting {
    fn default() -> Self {
        let upstream = Arc::new(Upstream::default());
        Self {
            health: Arc::default(),
            models: Arc::new(Models::new(Arc::clone(&upstream.egress))),
            upstream,
            google: Arc::default(),
            aws: Arc::default(),
            prices: Arc::default(),
            mcp_sessions: Arc::default(),
            mcp_tokens: Arc::default(),
            mcp_stdio: false,
            a2a_cards: Arc::default(),
        }
    }
}

impl LiveState {
    /// Builds and validates a state from a snapshot; its deployments' health and routing
    /// models come from (and stay in) `lasting`. Fails without side effects.
    pub fn prepare(snapshot: Snapshot, lasting: &Lasting) -> Result<Self, InvalidSnapshot> {
        snapshot.validate()?;
        let (groups, model_names) =
            compile_groups(&snapshot.deployments, &snapshot.router, lasting)?;
        let access_groups = Arc::new(access_groups(&snapshot.deployments));
        Ok(Self {
            version: snapshot.version,
            master_key_hash: snapshot.master_key_hash,
            max_request_body_bytes: snapshot.max_request_body_bytes,
            user_header_name: snapshot.user_header_name.as_deref().map(Arc::from),
            egress: snapshot.allowed_egress.map(Arc::new),
            mcp: Arc::new(mcp_registry(&snapshot.mcp_servers, lasting)),
            agents: Arc::new(crate::a2a::Registry::compile(&snapshot.agents)),
            agent_access_default_deny: snapshot.agent_access_default_deny,
            turn_off_message_logging: snapshot.turn_off_message_logging,
            semantic: SemanticEmbedder::of(snapshot.cache.as_ref(), lasting, &groups),
            cache: snapshot.cache.map(Arc::new),
            skills: Arc::new(
                snapshot
                    .skills
                    .into_iter()
                    .map(|s| (s.id.clone(), s))
                    .collect(),
            ),
            keys: KeyMap::new(snapshot.keys),
            deployments: Arc::new(snapshot.deployments),
            router: Arc::new(snapshot.router),
            groups: Arc::new(groups),
            model_names: Arc::new(model_names),
            access_groups,
            lasting: lasting.clone(),
            scopes: Arc::new(Scopes::new(snapshot.scopes)),
        })
    }

    /// The state after `delta`, which must be the next version. Fails without side
    /// effects; `self` keeps serving until the result is stored.
    pub fn apply(&self, delta: &Delta) -> Result<Self, InvalidSnapshot> {
        if delta.version != self.version + 1 {
            return Err(InvalidSnapshot::VersionGap {
                current: self.version,
                got: delta.version,
            });
        }
        let mut changes = Vec::new();
        let mut deployments: Option<Vec<Deployment>> = None;
        let mut settings: Option<GatewaySettings> = None;
        let mut scopes: Option<Scopes> = None;
        let mut mcp: Option<Vec<routeiq_proto::McpServer>> = None;
        let mut agents: Option<Vec<routeiq_proto::A2aAgent>> = None;
        let mut skills: Option<HashMap<String, routeiq_proto::Skill>> = None;
        for op in &delta.ops {
            match op {
                DeltaOp::UpsertKey(k) => changes.push(Change::Upsert(Arc::new(k.clone()))),
                DeltaOp::DeleteKey(h) => changes.push(Change::Delete(*h)),
                DeltaOp::KeySpend { hash, spend } => {
                    if let Some(mut k) = current_key(&changes, &self.keys, hash) {
                        k.spend = *spend;
                        changes.push(Change::Upsert(Arc::new(k)));
                    }
                }
                DeltaOp::KeyModelSpend { hash, model, spend } => {
                    if let Some(mut k) = current_key(&changes, &self.keys, hash) {
                        k.model_budgets = k
                            .model_budgets
                            .iter()
                            .map(|b| ModelBudget {
                                spend: if &b.model == model { *spend } else { b.spend },
                                ..b.clone()
                            })
                            .collect();
                        changes.push(Change::Upsert(Arc::new(k)));
                    }
                }
                DeltaOp::UpsertDeployment(d) => {
                    let list = deployments.get_or_insert_with(|| self.deployments.to_vec());
                    match list.iter_mut().find(|x| x.id == d.id) {
                        Some(x) => *x = d.clone(),
                        None => list.push(d.clone()),
                    }
                }
                DeltaOp::DeleteDeployment(id) => {
                    deployments
                        .get_or_insert_with(|| self.deployments.to_vec())
                        .retain(|x| &x.id != id);
                }
                DeltaOp::Settings(s) => settings = Some(s.clone()),
                DeltaOp::UpsertScope(s) => scopes
                    .get_or_insert_with(|| Scopes::clone(&self.scopes))
                    .upsert(s.clone()),
                DeltaOp::DeleteScope { kind, id } => {
                    scopes
                        .get_or_insert_with(|| Scopes::clone(&self.scopes))
                        .of_kind(*kind)
                        .remove(id);
                }
                DeltaOp::ScopeSpend { kind, id, spend } => {
                    let all = scopes.get_or_insert_with(|| Scopes::clone(&self.scopes));
                    if let Some(e) = all.get(*kind, id) {
                        let mut s = e.scope.clone();
                        s.spend = *spend;
                        all.upsert(s);
                    }
                }
                DeltaOp::Resync => return Err(InvalidSnapshot::Resync),
                // Not state: `attached::snapshot` drops the answers from the cache.
                DeltaOp::ForgetCached(_) => {}
                DeltaOp::UpsertMcpServer(m) => {
                    let list = mcp.get_or_insert_with(|| self.mcp.configs());
                    list.retain(|x| x.name != m.name);
                    list.push(m.clone());
                }
                DeltaOp::DeleteMcpServer(name) => mcp
                    .get_or_insert_with(|| self.mcp.configs())
                    .retain(|x| &x.name != name),
                DeltaOp::UpsertAgent(a) => {
                    let list = agents.get_or_insert_with(|| self.agents.configs().to_vec());
                    list.retain(|x| x.id != a.id);
                    list.push(a.clone());
                }
                DeltaOp::DeleteAgent(id) => agents
                    .get_or_insert_with(|| self.agents.configs().to_vec())
                    .retain(|x| &x.id != id),
                DeltaOp::UpsertSkill(skill) => {
                    skills
                        .get_or_insert_with(|| HashMap::clone(&self.skills))
                        .insert(skill.id.clone(), skill.clone());
                }
                DeltaOp::DeleteSkill(id) => {
                    skills
                        .get_or_insert_with(|| HashMap::clone(&self.skills))
                        .remove(id);
                }
            }
        }
        let router = match &settings {
            Some(s) => Arc::new(s.router.clone()),
            None => Arc::clone(&self.router),
        };
        let regrouped = deployments.is_some() || settings.is_some();
        let (deployments, groups, model_names, access) = match (deployments, &settings) {
            (None, None) => (
                Arc::clone(&self.deployments),
                Arc::clone(&self.groups),
                Arc::clone(&self.model_names),
                Arc::clone(&self.access_groups),
            ),
            (list, _) => {
                let list = list.map_or_else(|| Arc::clone(&self.deployments), Arc::new);
                Snapshot::validate_deployments(&list)?;
                let (groups, names) = compile_groups(&list, &router, &self.lasting)?;
                let access = Arc::new(access_groups(&list));
                (list, Arc::new(groups), Arc::new(names), access)
            }
        };
        Ok(Self {
            version: delta.version,
            master_key_hash: settings
                .as_ref()
                .map_or(self.master_key_hash, |s| s.master_key_hash),
            max_request_body_bytes: settings
                .as_ref()
                .map_or(self.max_request_body_bytes, |s| s.max_request_body_bytes),
            user_header_name: match &settings {
                Some(s) => s.user_header_name.as_deref().map(Arc::from),
                None => self.user_header_name.clone(),
            },
            egress: match &settings {
                Some(s) => s.allowed_egress.clone().map(Arc::new),
                None => self.egress.clone(),
            },
            mcp: match mcp {
                Some(list) => Arc::new(mcp_registry(&list, &self.lasting)),
                None => Arc::clone(&self.mcp),
            },
            agents: match agents {
                Some(list) => Arc::new(crate::a2a::Registry::compile(&list)),
                None => Arc::clone(&self.agents),
            },
            agent_access_default_deny: settings
                .as_ref()
                .map_or(self.agent_access_default_deny, |s| {
                    s.agent_access_default_deny
                }),
            turn_off_message_logging: settings
                .as_ref()
                .map_or(self.turn_off_message_logging, |s| {
                    s.turn_off_message_logging
                }),
            semantic: if regrouped {
                let cache = settings
                    .as_ref()
                    .map_or(self.cache.as_deref(), |s| s.cache.as_ref());
                SemanticEmbedder::of(cache, &self.lasting, &groups)
            } else {
                self.semantic.clone()
            },
            cache: match &settings {
                Some(s) => s.cache.clone().map(Arc::new),
                None => self.cache.clone(),
            },
            skills: skills.map_or_else(|| Arc::clone(&self.skills), Arc::new),
            keys: if changes.is_empty() {
                self.keys.clone()
            } else {
                self.keys.with(changes)
            },
            deployments,
            router,
            groups,
            model_names,
            access_groups: access,
            lasting: self.lasting.clone(),
            scopes: scopes.map_or_else(|| Arc::clone(&self.scopes), Arc::new),
        })
    }

    /// Teams, users and organizations with a budget or limits.
    pub fn scopes(&self) -> &Scopes {
        &self.scopes
    }

    /// How many deployments the snapshot has.
    pub fn deployment_count(&self) -> usize {
        self.deployments.len()
    }

    pub fn router_settings(&self) -> &RouterSettings {
        &self.router
    }

    /// Whether groups route with a learned strategy (requests then carry their query).
    pub fn learned_routing(&self) -> bool {
        matches!(
            self.router.routing_strategy,
            routeiq_proto::RoutingStrategy::LlmRouter(_)
        )
    }

    pub fn lasting(&self) -> &Lasting {
        &self.lasting
    }

    /// 404 naming the models there are.
    pub fn unknown_model(&self, model: &str) -> ApiError {
        let names: Vec<&str> = self.model_names.iter().map(String::as_str).collect();
        ApiError::unknown_model(model, &names)
    }

    /// Every deployment, compiled (pass-through routes look deployments up by provider).
    pub fn compiled(&self) -> impl Iterator<Item = &Arc<CompiledDeployment>> {
        self.groups.values().flat_map(|g| g.deployments.iter())
    }

    pub fn group(&self, model: &str) -> Option<&ModelGroup> {
        self.groups.get(model)
    }

    /// Whether `group` is an access group of one of `model`'s deployments.
    pub fn in_access_group(&self, group: &str, model: &str) -> bool {
        self.access_groups
            .get(group)
            .is_some_and(|models| models.contains(model))
    }
}

/// A copy of key `hash` as of the earlier changes of a delta, else as served.
fn current_key(changes: &[Change], keys: &KeyMap, hash: &KeyHash) -> Option<VirtualKey> {
    let latest = changes.iter().rev().find_map(|c| match c {
        Change::Upsert(k) if k.hash == *hash => Some(Some(Arc::clone(k))),
        Change::Delete(h) if h == hash => Some(None),
        _ => None,
    });
    latest
        .unwrap_or_else(|| keys.get(hash).cloned())
        .map(|k| VirtualKey::clone(&k))
}

fn access_groups(deployments: &[Deployment]) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for d in deployments {
        for g in &d.model_info.access_groups {
            out.entry(g.clone())
                .or_default()
                .insert(d.model_name.clone());
        }
    }
    out
}

/// What embeds for the semantic cache.
#[derive(Clone)]
pub enum SemanticEmbedder {
    /// The sentence encoder's slot (loading or loaded), shared with every state that names
    /// it.
    Encoder(Arc<crate::routing::learned::Slot>),
    /// A model group of embedding deployments.
    Deployment {
        group: String,
        /// The group and its deployments' models (see [`Embedder::Deployment`]).
        id: Arc<str>,
    },
}

impl SemanticEmbedder {
    fn of(
        cache: Option<&routeiq_proto::CacheSettings>,
        lasting: &Lasting,
        groups: &HashMap<String, ModelGroup>,
    ) -> Option<Self> {
        let semantic = cache?.semantic.as_ref()?;
        Some(match &semantic.encoder {
            routeiq_proto::EncoderSource::Deployment(group) => {
                let mut models: Vec<String> = groups
                    .get(group)
                    .map(|g| {
                        g.deployments
                            .iter()
                            .map(|d| {
                                let d = &d.deployment;
                                format!("{}/{}", d.provider.as_str(), d.upstream_model)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                models.sort_unstable();
                models.dedup();
                Self::Deployment {
                    group: group.clone(),
                    id: format!("deployments:{group}:{}", models.join(",")).into(),
                }
            }
            source => {
                let spec = crate::routing::learned::Spec::encoder(source)?;
                Self::Encoder(lasting.models.slot(spec))
            }
        })
    }

    /// The embedder a lookup uses now (`None`: the encoder has not loaded).
    pub fn embedder(&self) -> Option<Embedder> {
        match self {
            Self::Encoder(slot) => slot.encoder().map(Embedder::Encoder),
            Self::Deployment { id, .. } => Some(Embedder::Deployment { id: Arc::clone(id) }),
        }
    }
}

fn compile_groups(
    deployments: &[Deployment],
    router: &RouterSettings,
    lasting: &Lasting,
) -> Result<(HashMap<String, ModelGroup>, Vec<String>), InvalidSnapshot> {
    let mut by_name: HashMap<String, Vec<Arc<CompiledDeployment>>> = HashMap::new();
    for d in deployments {
        let target = match d.provider {
            ProviderKind::Mock => None,
            _ => Some(
                // Validated already (`Snapshot::validate_deployments`); parsed here for use.
                Target::parse(&d.api_base).map_err(|message| SnapshotError::ApiBase {
                    id: d.id.0.clone(),
                    message,
                })?,
            ),
        };
        let timeout = d
            .timeout
            .or(router.request_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let stream_timeout = d
            .stream_timeout
            .or(router.stream_timeout)
            .unwrap_or(timeout);
        by_name
            .entry(d.model_name.clone())
            .or_default()
            .push(Arc::new(CompiledDeployment {
                deployment: d.clone(),
                target,
                timeout,
                stream_timeout,
                prices: crate::cost::prices(d, &lasting.prices),
                health: lasting.health.of(&d.id),
                label: CompiledDeployment::label_of(d),
                format: crate::providers::get(d.provider).chat_format(d),
                text_completions: crate::providers::get(d.provider).text_completions(d),
                responses_api: crate::providers::get(d.provider).responses_api(d),
                credentials: crate::providers::credentials(d, lasting),
                params: crate::params::ParamPolicy::of(d),
            }));
    }
    let mut model_names: Vec<String> = by_name.keys().cloned().collect();
    model_names.sort();
    let groups = by_name
        .into_iter()
        .map(|(name, deployments)| {
            let group = ModelGroup::new(name.clone(), deployments, router, &lasting.models);
            (name, group)
        })
        .collect();
    Ok((groups, model_names))
}

/// What attached mode adds: the NATS connection and the usage reporter.
pub struct Attached {
    pub nats: async_nats::Client,
    pub reporter: Reporter,
}

/// How long a stopping data plane waits for its queued usage events ([`App::finish`]).
pub const USAGE_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide application: live state, upstream client, metrics.
pub struct App {
    live: ArcSwap<LiveState>,
    pub upstream: Arc<Upstream>,
    pub metrics: Metrics,
    pub started: Instant,
    /// `None` in standalone mode.
    pub attached: Option<Attached>,
    /// Per-key rate-limit counters (they outlive snapshot swaps).
    pub limiter: crate::limits::Limiter,
    /// Per-key budget accounts (they outlive snapshot swaps).
    pub budgets: crate::budgets::Budgets,
    /// With Redis: cooldowns to share with the other data planes.
    pub cooldowns: Option<crate::routing::shared::CooldownSender>,
    /// With an OTLP endpoint in the environment: the routing spans' exporter.
    pub spans: Option<crate::otel::Spans>,
    /// With an OTLP metrics endpoint in the environment: the GenAI metrics.
    pub genai_metrics: Option<crate::otel_metrics::GenAiMetrics>,
    /// Responses answered through chat, for `previous_response_id` (in Redis too, where
    /// rate limits are shared).
    pub conversations: Arc<crate::conversations::Conversations>,
    /// The response cache (its memory tier, and Redis where rate limits are shared).
    pub cache: Arc<crate::cache::Cache>,
    /// Batches whose cost this data plane has charged (see `handlers::objects`).
    pub charged_batches: std::sync::Mutex<lru::LruCache<String, ()>>,
}

impl App {
    /// `shared`: rate limits shared through Redis (its metrics are registered here).
    pub fn new(
        state: LiveState,
        attached: Option<Attached>,
        shared: Option<Arc<crate::limits::shared::Shared>>,
    ) -> prometheus::Result<Self> {
        let metrics = Metrics::new()?;
        metrics.snapshot_served(&state);
        if let Some(s) = &shared {
            metrics.register(Box::new(s.fallbacks.clone()))?;
            metrics.register(Box::new(s.up.clone()))?;
        }
        for c in state.lasting().models.collectors() {
            metrics.register(c)?;
        }
        let cooldowns = shared.as_ref().map(|s| {
            crate::routing::shared::start(s.connection(), Arc::clone(&state.lasting().health))
        });
        let upstream = Arc::clone(&state.lasting().upstream);
        metrics.register(Box::new(upstream.egress.refused.clone()))?;
        upstream.egress.set(state.egress.clone());
        let conversations = Arc::new(crate::conversations::Conversations::new(
            shared.as_ref().map(|s| s.connection()),
        ));
        let cache = Arc::new(crate::cache::Cache::new(
            shared.as_ref().map(|s| s.connection()),
        )?);
        for c in cache.metrics.collectors() {
            metrics.register(c)?;
        }
        cache.configure(state.cache.as_deref());
        Ok(Self {
            conversations,
            cache,
            charged_batches: std::sync::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(100_000).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            live: ArcSwap::from_pointee(state),
            upstream,
            limiter: crate::limits::Limiter::new(shared),
            budgets: crate::budgets::Budgets::default(),
            cooldowns,
            metrics,
            spans: crate::otel::Spans::from_env(),
            genai_metrics: crate::otel_metrics::GenAiMetrics::from_env(),
            started: Instant::now(),
            attached,
        })
    }

    /// After the server stopped serving (SIGTERM; its in-flight requests finished or cut):
    /// waits up to [`USAGE_DRAIN`] for the usage events still queued to be acknowledged,
    /// then sends the spans, OTLP metrics and log records still queued (at most 5 s).
    pub fn finish(&self) {
        if let Some(a) = &self.attached {
            let left = a.reporter.drain(USAGE_DRAIN);
            if left > 0 {
                tracing::warn!(
                    left,
                    "usage events not acknowledged by JetStream before exit: their spend is lost"
                );
            }
        }
        routeiq_service::telemetry::flush_all(
            self.spans.as_ref().map(crate::otel::Spans::tracing),
            self.genai_metrics
                .as_ref()
                .map(crate::otel_metrics::GenAiMetrics::exporter),
        );
    }

    /// The current state; hold it for the whole request.
    pub fn load(&self) -> Arc<LiveState> {
        self.live.load_full()
    }

    /// Swaps in a prepared state.
    pub fn store(&self, state: LiveState) {
        self.metrics.snapshot_served(&state);
        self.cache.configure(state.cache.as_deref());
        self.upstream.egress.set(state.egress.clone());
        self.live.store(Arc::new(state));
    }
}
