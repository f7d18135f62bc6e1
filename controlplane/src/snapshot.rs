//! Builds the full snapshot from PostgreSQL, consistent with one committed version.

use routeiq_proto::Snapshot;
use sqlx::PgPool;

use crate::crypto::SecretBox;
use crate::error::StoreError;
use crate::{agents, changes, deployments, keys, mcp_servers, scopes, settings, skills};

/// The snapshot as of the latest committed version, read in one repeatable-read
/// transaction so the version and the rows agree.
pub async fn build(pool: &PgPool, secrets: &SecretBox) -> Result<Snapshot, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let version = changes::current(&mut *tx).await?;
    let s = settings::load(&mut *tx).await?;
    let deployments = deployments::load_all(&mut *tx, secrets)
        .await?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let keys = keys::load_all(&mut *tx).await?;
    let scopes = scopes::load_all(&mut *tx).await?;
    let mcp_servers = mcp_servers::load_all(&mut *tx, secrets)
        .await?
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    let agents = agents::load_all(&mut *tx, secrets)
        .await?
        .into_iter()
        .map(|s| s.agent)
        .collect();
    let skills = skills::load_all(&mut tx).await?;
    tx.commit().await?;
    let snapshot = Snapshot {
        version,
        master_key_hash: s.master_key_hash,
        deployments,
        keys,
        router: s.router,
        max_request_body_bytes: s.max_request_body_bytes,
        user_header_name: s.user_header_name,
        allowed_egress: s.allowed_egress,
        mcp_servers,
        agents,
        agent_access_default_deny: s.agent_access_default_deny,
        cache: s.cache,
        turn_off_message_logging: s.turn_off_message_logging,
        scopes,
        skills,
    };
    snapshot
        .validate()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(snapshot)
}
