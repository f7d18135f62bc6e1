//! Attached mode (`--nats`): the snapshot comes from the control plane over NATS JetStream
//! and usage goes back the same way.
//!
//! - [`snapshot`]: bootstrap from the stored full snapshot, then follow the delta stream;
//!   a version gap or a refused update re-fetches the full snapshot.
//! - [`report`]: one usage event per routed request, published from a bounded buffer.
//! - [`semantic`]: the semantic cache's new index entries, shared with the other data
//!   planes on core NATS (best effort).
//!
//! Both run on a small tokio runtime of their own, beside pingora's. Nothing here is on
//! the request path except [`report::Reporter::record`], a non-blocking channel send.

pub mod report;
pub mod semantic;
pub mod snapshot;
