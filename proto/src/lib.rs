//! RouteIQ's contract crate.
//!
//! It holds the plain domain types every plane agrees on (the [`Snapshot`] a data plane
//! serves from, the [`Delta`]s that update it, the [`UsageEvent`]s that flow back), the
//! protobuf schemas and their conversions ([`wire`]), and the compiler from a LiteLLM
//! `config.yaml` to a snapshot ([`litellm`]). No network or database I/O.
#![forbid(unsafe_code)]

mod a2a;
mod cache;
mod delta;
mod egress;
mod keys;
pub mod litellm;
mod mcp;
mod permission;
mod router;
mod scopes;
mod secret;
mod skills;
mod snapshot;
pub mod subjects;
pub mod time;
pub mod wire;

pub use a2a::A2aAgent;
pub use cache::{
    CacheKind, CacheMode, CachePolicy, CacheScope, CacheSettings, CallTypes, EncoderSource,
    SemanticEntry, SemanticSettings,
};
pub use delta::{Delta, DeltaOp, ForgetCached, UsageEvent};
pub use egress::{AllowedEgress, Verdict as EgressVerdict};
pub use keys::{hex, push_hex, KeyHash, ModelBudget, VirtualKey};
pub use mcp::{McpAuth, McpServer, McpToolCost, McpTransport, OAuth2Client};
pub use permission::ObjectPermission;
pub use router::{
    is_ab_share, ErrorClass, Fallback, PerClass, RouterSettings, RoutingStrategy,
    LEARNED_STRATEGIES,
};
pub use scopes::{Scope, ScopeKind};
pub use secret::Secret;
pub use skills::{Skill, SkillCopy, SkillRefError};
pub use snapshot::{
    ApiBase, Deployment, DeploymentId, GatewaySettings, ModelInfo, ProviderKind, ProviderSettings,
    Snapshot, SnapshotError,
};
