//! Committed changes to a snapshot, and usage events flowing back.

use crate::{Deployment, DeploymentId, GatewaySettings, KeyHash, Scope, ScopeKind, VirtualKey};

/// One committed change: applies to the snapshot of version `version - 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub version: u64,
    pub ops: Vec<DeltaOp>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeltaOp {
    UpsertKey(VirtualKey),
    DeleteKey(KeyHash),
    /// A key's spend moved (from usage ingestion); budgets are checked against it.
    KeySpend {
        hash: KeyHash,
        spend: f64,
    },
    UpsertDeployment(Deployment),
    DeleteDeployment(DeploymentId),
    /// The gateway-wide settings were replaced.
    Settings(GatewaySettings),
    /// A key's spend on a model with a per-model budget moved.
    KeyModelSpend {
        hash: KeyHash,
        model: String,
        spend: f64,
    },
    /// A team, user or organization with a budget or limits, created or changed.
    UpsertScope(Scope),
    /// A team, user or organization deleted, or left with nothing to enforce.
    DeleteScope {
        kind: ScopeKind,
        id: String,
    },
    /// Its spend moved (from usage ingestion or a budget reset).
    ScopeSpend {
        kind: ScopeKind,
        id: String,
        spend: f64,
    },
    /// The control plane's database went back (restored from a dump) behind versions the
    /// data planes may hold: replace the state with the full snapshot of this version.
    Resync,
    /// An MCP server created or changed (by name).
    UpsertMcpServer(crate::McpServer),
    /// An MCP server removed, by name.
    DeleteMcpServer(String),
    /// An A2A agent created or changed (by id).
    UpsertAgent(crate::A2aAgent),
    /// An A2A agent removed, by id.
    DeleteAgent(String),
    /// A skill created or changed (a version or a copy added or removed), by id.
    UpsertSkill(crate::Skill),
    /// A skill removed, by id.
    DeleteSkill(String),
    /// Answers removed from the response cache: data planes drop them from memory.
    ForgetCached(ForgetCached),
}

/// See [`DeltaOp::ForgetCached`].
#[derive(Debug, Clone, PartialEq)]
pub enum ForgetCached {
    All,
    /// Cache keys (64 hex digits).
    Keys(Vec<String>),
}

/// One request's usage, as a data plane reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageEvent {
    pub request_id: String,
    /// `None` for requests made with the master key.
    pub key_hash: Option<KeyHash>,
    pub team_id: String,
    pub user_id: String,
    pub model_group: String,
    pub deployment_id: String,
    pub provider: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
    pub latency_ms: u64,
    pub status: u16,
    pub started_at_ms: i64,
    pub dataplane_id: String,
    /// The end user the request was made for (empty: none given).
    pub end_user: String,
    /// Answered from the response cache (its cost is 0).
    pub cache_hit: bool,
    /// A cache hit's: what the cached answer cost when it was made (USD).
    pub saved_cost: f64,
    /// The learned router that decided: its artifact's manifest sha256, its arm
    /// (`serving` or `ab`) and the candidate it chose (empty: no learned model decided).
    pub router_sha256: String,
    pub router_arm: String,
    pub router_candidate: String,
    /// The shadow version's choice, never acted on (empty: none, or not ready in time).
    pub shadow_sha256: String,
    pub shadow_candidate: String,
}
