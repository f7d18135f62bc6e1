//! Virtual keys in `virtual_keys`, as the data plane sees them.

use routeiq_proto::{KeyHash, VirtualKey};
use sqlx::{PgExecutor, Row};

use crate::error::StoreError;

pub async fn load_all(conn: impl PgExecutor<'_>) -> Result<Vec<VirtualKey>, StoreError> {
    let rows = sqlx::query(
        "SELECT key_hash, COALESCE(key_alias, '') AS key_alias, COALESCE(team_id, '') AS team_id,
                COALESCE(user_id, '') AS user_id, models, max_budget, spend,
                EXTRACT(EPOCH FROM expires_at)::bigint AS expires_at, blocked,
                rpm_limit, tpm_limit, max_parallel_requests
           FROM virtual_keys",
    )
    .fetch_all(conn)
    .await?;
    rows.iter().map(row_to_key).collect()
}

fn row_to_key(r: &sqlx::postgres::PgRow) -> Result<VirtualKey, StoreError> {
    let hash: Vec<u8> = r.try_get("key_hash")?;
    let limit = |name: &str| -> Result<Option<u64>, StoreError> {
        r.try_get::<Option<i64>, _>(name)?
            .map(|v| {
                u64::try_from(v)
                    .map_err(|_| StoreError::Corrupt(format!("virtual_keys.{name} is {v}")))
            })
            .transpose()
    };
    Ok(VirtualKey {
        hash: KeyHash::from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("virtual_keys.key_hash".into()))?,
        alias: r.try_get("key_alias")?,
        team_id: r.try_get("team_id")?,
        user_id: r.try_get("user_id")?,
        models: r.try_get("models")?,
        max_budget: r.try_get("max_budget")?,
        spend: r.try_get("spend")?,
        expires_at: r.try_get("expires_at")?,
        blocked: r.try_get("blocked")?,
        rpm_limit: limit("rpm_limit")?,
        tpm_limit: limit("tpm_limit")?,
        max_parallel_requests: limit("max_parallel_requests")?,
    })
}
