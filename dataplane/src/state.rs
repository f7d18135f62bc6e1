//! The live state: everything a request needs, behind one atomically swapped pointer.
//!
//! A request loads the state once and sees one consistent version for its whole life.
//! Updates go through [`LiveState::prepare`] (fallible: builds and validates) and then
//! [`App::store`] (infallible swap).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use routeiq_proto::{Deployment, ProviderKind, Secret, Snapshot, SnapshotError};

use crate::error::ApiError;
use crate::routing::{self, Router};
use crate::telemetry::Metrics;
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
}

pub struct ModelGroup {
    pub deployments: Vec<Arc<CompiledDeployment>>,
    router: Box<dyn Router>,
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidSnapshot {
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("deployment `{id}`: api_base {message}")]
    ApiBase { id: String, message: String },
}

pub struct LiveState {
    pub version: u64,
    pub master_key: Option<Secret>,
    pub max_request_body_bytes: usize,
    groups: HashMap<String, ModelGroup>,
    /// Public model names, sorted, for `/v1/models` and error messages.
    pub model_names: Vec<String>,
}

impl LiveState {
    /// Builds and validates a state from a snapshot. Fails without side effects.
    pub fn prepare(snapshot: Snapshot) -> Result<Self, InvalidSnapshot> {
        snapshot.validate()?;
        let mut by_name: HashMap<String, Vec<Arc<CompiledDeployment>>> = HashMap::new();
        for d in snapshot.deployments {
            let target = match d.provider {
                ProviderKind::Mock => None,
                _ => Some(Target::parse(&d.api_base).map_err(|message| {
                    InvalidSnapshot::ApiBase {
                        id: d.id.0.clone(),
                        message,
                    }
                })?),
            };
            let timeout = d
                .timeout
                .or(snapshot.router.request_timeout)
                .unwrap_or(DEFAULT_TIMEOUT);
            by_name
                .entry(d.model_name.clone())
                .or_default()
                .push(Arc::new(CompiledDeployment {
                    deployment: d,
                    target,
                    timeout,
                }));
        }
        let mut model_names: Vec<String> = by_name.keys().cloned().collect();
        model_names.sort();
        let groups = by_name
            .into_iter()
            .map(|(name, deployments)| {
                let router = routing::build(&snapshot.router.routing_strategy, &deployments);
                (
                    name,
                    ModelGroup {
                        deployments,
                        router,
                    },
                )
            })
            .collect();
        Ok(Self {
            version: snapshot.version,
            master_key: snapshot.master_key,
            max_request_body_bytes: snapshot.max_request_body_bytes,
            groups,
            model_names,
        })
    }

    /// Picks the deployment that serves `model`.
    pub fn route(&self, model: &str) -> Result<Arc<CompiledDeployment>, ApiError> {
        let group = self
            .groups
            .get(model)
            .ok_or_else(|| self.unknown_model(model))?;
        let i = group.router.pick(&group.deployments).unwrap_or(0);
        group
            .deployments
            .get(i)
            .cloned()
            .ok_or_else(|| self.unknown_model(model))
    }

    fn unknown_model(&self, model: &str) -> ApiError {
        let names: Vec<&str> = self.model_names.iter().map(String::as_str).collect();
        ApiError::unknown_model(model, &names)
    }

    pub fn group(&self, model: &str) -> Option<&ModelGroup> {
        self.groups.get(model)
    }
}

/// The process-wide application: live state, upstream client, metrics.
pub struct App {
    live: ArcSwap<LiveState>,
    pub upstream: Arc<Upstream>,
    pub metrics: Metrics,
    pub started: Instant,
}

impl App {
    pub fn new(state: LiveState) -> prometheus::Result<Self> {
        let metrics = Metrics::new()?;
        metrics.set_snapshot_version(state.version);
        Ok(Self {
            live: ArcSwap::from_pointee(state),
            upstream: Arc::new(Upstream::default()),
            metrics,
            started: Instant::now(),
        })
    }

    /// The current state; hold it for the whole request.
    pub fn load(&self) -> Arc<LiveState> {
        self.live.load_full()
    }

    /// Swaps in a prepared state.
    pub fn store(&self, state: LiveState) {
        self.metrics.set_snapshot_version(state.version);
        self.live.store(Arc::new(state));
    }
}
