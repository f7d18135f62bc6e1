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

/// The `Nats-Msg-Id` of delta `version` (JetStream drops a re-send with the same id).
pub fn delta_message_id(version: u64) -> String {
    format!("delta-{version}")
}

/// The version a delta's `Nats-Msg-Id` names, if it is one [`delta_message_id`] made: how a
/// data plane tells a delta it cannot read from a message that is not a delta, and how the
/// publisher finds the last delta on the stream when it takes over.
pub fn delta_message_version(id: &str) -> Option<u64> {
    let digits = id.strip_prefix("delta-")?;
    let canonical = digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    if canonical {
        digits.parse().ok()
    } else {
        None
    }
}

/// Core NATS subject (no stream: best effort) on which data planes share the entries of
/// their semantic-cache indexes (`routeiq.v1.SemanticEntry`).
pub const CACHE_SEMANTIC_SUBJECT: &str = "routeiq.cache.semantic";

/// Stream of usage events (`routeiq.v1.UsageEvent`), one subject per data plane.
pub const USAGE_STREAM: &str = "ROUTEIQ_USAGE";
pub const USAGE_SUBJECTS: &str = "routeiq.usage.>";
pub const USAGE_SUBJECT_PREFIX: &str = "routeiq.usage.";
/// The control plane's durable consumer of [`USAGE_STREAM`].
pub const USAGE_CONSUMER: &str = "routeiq-controlplane-usage";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_message_ids_name_their_version() {
        assert_eq!(delta_message_id(42), "delta-42");
        assert_eq!(delta_message_version(&delta_message_id(42)), Some(42));
        assert_eq!(delta_message_version(&delta_message_id(0)), Some(0));
        for other in [
            "",
            "delta-",
            "delta-x",
            "42",
            "request-42",
            "delta--1",
            "delta-+5",
            "delta-007",
        ] {
            assert_eq!(delta_message_version(other), None, "{other}");
        }
    }
}
