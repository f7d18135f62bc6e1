//! Teams, users and organizations as data planes enforce them (`Scope`): their budgets
//! and rate limits apply on top of their keys', their MCP grants bound their keys'. Only those with something to enforce are
//! in the snapshot. A change to one sends `UpsertScope` (or `DeleteScope` once it has
//! nothing left to enforce, or is deleted); ingestion and budget resets send `ScopeSpend`.

use routeiq_proto::{DeltaOp, Scope, ScopeKind};
use sqlx::postgres::PgRow;
use sqlx::{PgExecutor, Postgres, Row, Transaction};

use crate::changes;
use crate::error::StoreError;

/// Every scope row, as `kind, id, max_budget, soft_budget, spend, rpm_limit, tpm_limit,
/// max_parallel_requests, object_permission` (an organization's limits are its budget's).
const ALL: &str = "
    SELECT 'team' AS kind, team_id AS id, max_budget, soft_budget, spend, rpm_limit,
           tpm_limit, max_parallel_requests, object_permission FROM teams
    UNION ALL
    SELECT 'user', user_id, max_budget, soft_budget, spend, rpm_limit, tpm_limit,
           max_parallel_requests, NULL::jsonb FROM users
    UNION ALL
    SELECT 'organization', o.organization_id, b.max_budget, b.soft_budget, o.spend,
           b.rpm_limit, b.tpm_limit, b.max_parallel_requests, o.object_permission
      FROM organizations o LEFT JOIN budgets b ON b.budget_id = o.budget_id";

fn scope(r: &PgRow) -> Result<Scope, StoreError> {
    let limit = |name: &str| -> Result<Option<u64>, StoreError> {
        r.try_get::<Option<i64>, _>(name)?
            .map(|v| u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{name} is {v}"))))
            .transpose()
    };
    let kind: String = r.try_get("kind")?;
    Ok(Scope {
        kind: ScopeKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("scope kind {kind}")))?,
        id: r.try_get("id")?,
        max_budget: r.try_get("max_budget")?,
        soft_budget: r.try_get("soft_budget")?,
        spend: r.try_get("spend")?,
        rpm_limit: limit("rpm_limit")?,
        tpm_limit: limit("tpm_limit")?,
        max_parallel_requests: limit("max_parallel_requests")?,
        permission: crate::object_permission::grant(
            r.try_get("object_permission")?,
            &format!("{kind}s.object_permission"),
        )?,
    })
}

/// Every scope with something to enforce, for the full snapshot.
pub async fn load_all(conn: impl PgExecutor<'_>) -> Result<Vec<Scope>, StoreError> {
    let rows = sqlx::query(ALL).fetch_all(conn).await?;
    let mut out = Vec::new();
    for r in &rows {
        let s = scope(r)?;
        if s.enforces() {
            out.push(s);
        }
    }
    Ok(out)
}

/// Sends the current view of these scopes as one delta: `UpsertScope` for those with
/// something to enforce, `DeleteScope` for the others (gone, or without limits). `new`:
/// just created, so data planes have none of them and those without limits are left out.
pub async fn send(
    tx: &mut Transaction<'_, Postgres>,
    which: &[(ScopeKind, &str)],
    new: bool,
) -> Result<Option<u64>, StoreError> {
    if which.is_empty() {
        return Ok(None);
    }
    let mut ops = Vec::with_capacity(which.len());
    for (kind, id) in which {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM ({ALL}) s WHERE kind = $1 AND id = $2"
        )))
        .bind(kind.as_str())
        .bind(*id)
        .fetch_optional(&mut **tx)
        .await?;
        match row.map(|r| scope(&r)).transpose()? {
            Some(s) if s.enforces() => ops.push(DeltaOp::UpsertScope(s)),
            _ if new => {}
            _ => ops.push(DeltaOp::DeleteScope {
                kind: *kind,
                id: (*id).to_owned(),
            }),
        }
    }
    if ops.is_empty() {
        return Ok(None);
    }
    Ok(Some(changes::append(tx, ops).await?))
}
