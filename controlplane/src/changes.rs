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
    let version = lock(tx).await? + 1;
    insert(tx, version, ops).await?;
    Ok(version)
}

/// Appends a [`DeltaOp::Resync`] past both the database's versions and `streamed`, a
/// version data planes may hold that the database does not know (it was restored from a
/// dump): data planes take the full snapshot of the returned version, and later changes get
/// versions they have not seen. Commits with `tx`.
pub async fn resync_past(
    tx: &mut Transaction<'_, Postgres>,
    streamed: u64,
) -> Result<u64, sqlx::Error> {
    let version = lock(tx).await?.max(streamed) + 1;
    insert(tx, version, vec![DeltaOp::Resync]).await?;
    Ok(version)
}

/// Takes the version lock for the rest of `tx`: a mutation that reads shared state (the
/// gateway settings) and writes it back holds it before reading, so concurrent ones do
/// not overwrite each other. (Taking it again in [`append`] is free.)
pub async fn hold(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    lock(tx).await.map(|_| ())
}

/// Takes the version lock for the transaction; returns the latest committed version.
async fn lock(tx: &mut Transaction<'_, Postgres>) -> Result<u64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(VERSION_LOCK)
        .execute(&mut **tx)
        .await?;
    current(&mut **tx).await
}

async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    version: u64,
    ops: Vec<DeltaOp>,
) -> Result<(), sqlx::Error> {
    let next = version as i64;
    // Provider, MCP and agent secrets stay encrypted at rest: the outbox row carries no API
    // key, no secret provider settings, no MCP credentials or headers and no agent headers;
    // the publisher fills them in from `model_deployments`, `mcp_servers` and `agents` when
    // it sends the delta (`with_secrets`).
    let ops = ops
        .into_iter()
        .map(|op| match op {
            DeltaOp::UpsertDeployment(mut d) => {
                d.api_key = None;
                d.settings.secrets.clear();
                DeltaOp::UpsertDeployment(d)
            }
            DeltaOp::UpsertMcpServer(mut m) => {
                m.auth = routeiq_proto::McpAuth::None;
                m.static_headers.clear();
                m.env.clear();
                DeltaOp::UpsertMcpServer(m)
            }
            DeltaOp::UpsertAgent(mut a) => {
                a.headers.clear();
                DeltaOp::UpsertAgent(a)
            }
            other => other,
        })
        .collect();
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
    Ok(())
}

/// The latest committed version (0 before the first change).
pub async fn current(conn: impl sqlx::PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let (v,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM snapshot_deltas")
        .fetch_one(conn)
        .await?;
    Ok(v as u64)
}

/// An outbox row's encoded delta with the current secrets of its deployments (provider
/// keys), MCP servers (credentials, static headers, a stdio server's environment) and
/// agents (headers) filled in, ready to publish. Rows without such upserts are returned as
/// they are.
pub async fn with_secrets(
    pool: &sqlx::PgPool,
    secrets: &crate::crypto::SecretBox,
    ops: Vec<u8>,
) -> Result<Vec<u8>, crate::error::StoreError> {
    use crate::error::StoreError;
    use pb::delta_op::Op;
    let mut decoded = pb::SnapshotDelta::decode(ops.as_slice())
        .map_err(|e| StoreError::Corrupt(format!("snapshot_deltas.ops: {e}")))?;
    let ids: Vec<String> = decoded
        .ops
        .iter()
        .filter_map(|op| match &op.op {
            Some(Op::UpsertDeployment(d)) => Some(d.id.clone()),
            _ => None,
        })
        .collect();
    let mcp = decoded
        .ops
        .iter()
        .any(|op| matches!(op.op, Some(Op::UpsertMcpServer(_))));
    let agents = decoded
        .ops
        .iter()
        .any(|op| matches!(op.op, Some(Op::UpsertAgent(_))));
    if ids.is_empty() && !mcp && !agents {
        return Ok(ops);
    }
    let mut stored = if ids.is_empty() {
        Default::default()
    } else {
        crate::deployments::secrets_of(pool, secrets, &ids).await?
    };
    let servers: std::collections::HashMap<String, pb::McpServer> = if mcp {
        crate::mcp_servers::load_all(pool, secrets)
            .await?
            .into_iter()
            .map(|(m, _)| (m.name.clone(), pb::McpServer::from(&m)))
            .collect()
    } else {
        Default::default()
    };
    let agents: std::collections::HashMap<String, routeiq_proto::A2aAgent> = if agents {
        crate::agents::load_all(pool, secrets)
            .await?
            .into_iter()
            .map(|s| (s.agent.id.clone(), s.agent))
            .collect()
    } else {
        Default::default()
    };
    for op in &mut decoded.ops {
        match &mut op.op {
            Some(Op::UpsertDeployment(d)) => {
                let s = stored.remove(&d.id).unwrap_or_default();
                d.api_key = s.api_key;
                d.secret_params = s.params.into_iter().collect();
            }
            // Deleted or moved since: a later delta removes or updates it, and this one's
            // URL gets no credential meant for another.
            Some(Op::UpsertMcpServer(m)) => {
                let same = |s: &&pb::McpServer| s.url == m.url && s.command == m.command;
                if let Some(s) = servers.get(&m.name).filter(same) {
                    m.auth_type = s.auth_type.clone();
                    m.auth_value = s.auth_value.clone();
                    m.static_headers = s.static_headers.clone();
                    m.env = s.env.clone();
                }
            }
            Some(Op::UpsertAgent(a)) => {
                if let Some(s) = agents.get(&a.id).filter(|s| s.url == a.url) {
                    a.headers = pb::A2aAgent::from(s).headers;
                }
            }
            _ => {}
        }
    }
    Ok(decoded.encode_to_vec())
}
