//! NATS JetStream names shared by the planes (documented in docs/architecture.md).

/// Object store bucket holding the latest full snapshot.
pub const SNAPSHOT_BUCKET: &str = "ROUTEIQ_SNAPSHOTS";
/// The object in [`SNAPSHOT_BUCKET`]: an encoded `routeiq.v1.Snapshot`.
pub const SNAPSHOT_OBJECT: &str = "full";
/// Object metadata key: the snapshot's version.
pub const META_VERSION: &str = "version";
/// Object metadata key: the last delta-stream sequence the snapshot includes; a data plane
/// consumes deltas from the next one.
pub const META_DELTA_SEQ: &str = "delta_seq";

/// Stream of ordered snapshot deltas (`routeiq.v1.SnapshotDelta`).
pub const DELTA_STREAM: &str = "ROUTEIQ_DELTAS";
pub const DELTA_SUBJECT: &str = "routeiq.snapshot.delta";

/// Core NATS subject (no stream: best effort) on which data planes share the entries of
/// their semantic-cache indexes (`routeiq.v1.SemanticEntry`).
pub const CACHE_SEMANTIC_SUBJECT: &str = "routeiq.cache.semantic";

/// Stream of usage events (`routeiq.v1.UsageEvent`), one subject per data plane.
pub const USAGE_STREAM: &str = "ROUTEIQ_USAGE";
pub const USAGE_SUBJECTS: &str = "routeiq.usage.>";
pub const USAGE_SUBJECT_PREFIX: &str = "routeiq.usage.";
/// The control plane's durable consumer of [`USAGE_STREAM`].
pub const USAGE_CONSUMER: &str = "routeiq-controlplane-usage";
