//! Snapshot versions: every committed change appends a delta to `snapshot_deltas` (the
//! transactional outbox) inside the mutation's own transaction.
//!
//! Versions are assigned under a transaction-scoped advisory lock, so they are gap-free and
//! commit in version order even with several control-plane replicas: the publisher can send
//! them to JetStream strictly in order.

use prost::Message;
use routeiq_proto::wire::pb;
use routeiq_proto::{Delta, DeltaOp};
use sqlx::{Postgres, Transaction};

/// Advisory lock id serialising version assignment ("RIQV").
const VERSION_LOCK: i64 = 0x5249_5156;
/// Channel the publisher listens on.
pub const NOTIFY_CHANNEL: &str = "routeiq_snapshot_delta";

/// Appends `ops` as the next snapshot version; returns that version. Commits with `tx`.
pub async fn append(
    tx: &mut Transaction<'_, Postgres>,
    ops: Vec<DeltaOp>,
) -> Result<u64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(VERSION_LOCK)
        .execute(&mut **tx)
        .await?;
    let (next,): (i64,) =
        sqlx::query_as("SELECT COALESCE(MAX(version), 0) + 1 FROM snapshot_deltas")
            .fetch_one(&mut **tx)
            .await?;
    let version = next as u64;
    let bytes = pb::SnapshotDelta::from(&Delta { version, ops }).encode_to_vec();
    sqlx::query("INSERT INTO snapshot_deltas (version, ops) VALUES ($1, $2)")
        .bind(next)
        .bind(bytes)
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(next.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(version)
}

/// The latest committed version (0 before the first change).
pub async fn current(conn: impl sqlx::PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let (v,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM snapshot_deltas")
        .fetch_one(conn)
        .await?;
    Ok(v as u64)
}
