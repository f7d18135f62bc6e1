//! RouteIQ's contract crate.
//!
//! It holds the plain domain types every plane agrees on: the [`Snapshot`] a data plane
//! serves from, and the pieces it is made of. Wire schemas (`.proto`) convert into these
//! types at the boundary. This crate does no I/O.
#![forbid(unsafe_code)]

mod secret;
mod snapshot;

pub use secret::Secret;
pub use snapshot::{
    Deployment, DeploymentId, ModelInfo, ProviderKind, RouterSettings, RoutingStrategy, Snapshot,
    SnapshotError,
};
