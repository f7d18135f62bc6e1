//! RouteIQ control plane: the only writer to PostgreSQL.
//!
//! - `migrations/` and [`db`]: the schema; [`changes`]: the snapshot change log (outbox);
//! - [`keys`], [`teams`], [`users`], [`orgs`], [`budget`], [`deployments`] (and
//!   credentials), [`mcp_servers`], [`agents`], [`skills`], [`settings`]: state as stored; [`spend`]: spend queries; [`audit`]: who
//!   did what;
//! - [`routing_models`]: the routing-model registry, its shadow and A/B experiments and the
//!   per-version report; [`feedback`]: scores of answers, by request id;
//! - [`principal`]: who a presented key is (admin API access);
//! - [`import`]: the LiteLLM `config.yaml` import; [`snapshot`]: the full snapshot;
//! - [`grpc`]: the `ControlPlane` service; [`publisher`]: snapshots and deltas to NATS;
//!   [`ingest`]: usage events from NATS into spend; [`resets`]: budget windows;
//!   [`health`]: liveness and readiness over HTTP; [`nats`]: streams and buckets.
#![forbid(unsafe_code)]

pub mod agents;
pub mod audit;
pub mod budget;
pub mod cache;
pub mod changes;
pub mod crypto;
pub mod db;
pub mod deployments;
pub mod error;
pub mod feedback;
pub mod grpc;
pub mod health;
pub mod import;
pub mod ingest;
pub mod keys;
pub mod mcp_servers;
pub mod nats;
pub mod object_permission;
pub mod orgs;
pub mod partitions;
pub mod principal;
pub mod publisher;
pub mod resets;
pub mod routing_models;
pub mod scopes;
pub mod settings;
pub mod skills;
pub mod snapshot;
pub mod spend;
pub mod teams;
pub mod users;

/// A page of a listing: 1-based page number and page size (at most 1,000).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub page: u32,
    pub size: u32,
}

impl Page {
    pub const DEFAULT_SIZE: u32 = 50;

    /// From request fields, where 0 means "default".
    pub fn new(page: u32, size: u32) -> Self {
        Self {
            page: page.max(1),
            size: if size == 0 {
                Self::DEFAULT_SIZE
            } else {
                size.min(1000)
            },
        }
    }

    pub fn limit(&self) -> i64 {
        i64::from(self.size)
    }

    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.size)
    }
}
