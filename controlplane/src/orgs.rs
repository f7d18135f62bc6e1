//! Organizations (`organizations`).

use routeiq_proto::ScopeKind;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::audit::{self, Actor};
use crate::error::StoreError;
use crate::Page;

#[derive(Debug, Clone, Default)]
pub struct OrgFields {
    pub alias: Option<String>,
    pub budget_id: Option<String>,
    pub models: Option<Vec<String>>,
    pub metadata: Option<Value>,
    /// LiteLLM's `object_permission` (its MCP fields); merged over the stored one.
    pub object_permission: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrgRecord {
    pub organization_id: String,
    pub alias: String,
    pub budget_id: Option<String>,
    pub models: Vec<String>,
    pub spend: f64,
    pub metadata: Value,
    /// The MCP part of LiteLLM's `object_permission` (null: none).
    pub object_permission: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "organization_id, organization_alias, budget_id, models, spend, metadata,
    COALESCE(object_permission, 'null'::jsonb) AS object_permission,
    EXTRACT(EPOCH FROM created_at)::bigint AS created_at,
    EXTRACT(EPOCH FROM updated_at)::bigint AS updated_at";

fn read(r: &PgRow) -> Result<OrgRecord, StoreError> {
    Ok(OrgRecord {
        organization_id: r.try_get("organization_id")?,
        alias: r.try_get("organization_alias")?,
        budget_id: r.try_get("budget_id")?,
        models: r.try_get("models")?,
        spend: r.try_get("spend")?,
        metadata: r.try_get("metadata")?,
        object_permission: r.try_get("object_permission")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

async fn load(conn: &mut PgConnection, id: &str) -> Result<OrgRecord, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM organizations WHERE organization_id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("organization `{id}` not found")))?;
    read(&row)
}

/// Creates (`create`) or updates an organization.
pub async fn upsert(
    pool: &PgPool,
    actor: &Actor,
    id: Option<String>,
    f: &OrgFields,
    create: bool,
) -> Result<OrgRecord, StoreError> {
    if f.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(StoreError::Invalid("metadata must be a JSON object".into()));
    }
    let permission = f
        .object_permission
        .as_ref()
        .map(crate::object_permission::patch)
        .transpose()?;
    let id = match id.filter(|i| !i.is_empty()) {
        Some(i) => i,
        None if create => crate::crypto::new_id()?,
        None => return Err(StoreError::Invalid("organization_id is required".into())),
    };
    let mut tx = pool.begin().await?;
    let before = if create {
        sqlx::query("INSERT INTO organizations (organization_id) VALUES ($1)")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::on_constraint(
                    e,
                    [(
                        "organizations_pkey",
                        StoreError::Conflict("organization already exists".into()),
                    )],
                )
            })?;
        None
    } else {
        Some(load(&mut tx, &id).await?)
    };
    if let Some(b) = f.budget_id.as_deref().filter(|b| !b.is_empty()) {
        if sqlx::query("SELECT 1 FROM budgets WHERE budget_id = $1")
            .bind(b)
            .fetch_optional(&mut *tx)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound(format!("budget `{b}` does not exist")));
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE organizations SET organization_alias = COALESCE($2, organization_alias),
             budget_id = CASE WHEN $3::text IS NULL THEN budget_id ELSE NULLIF($3, '') END,
             models = COALESCE($4, models), metadata = COALESCE($5, metadata), {},
             updated_at = now()
         WHERE organization_id = $1",
        crate::object_permission::set_clause(6)
    )))
    .bind(&id)
    .bind(&f.alias)
    .bind(&f.budget_id)
    .bind(&f.models)
    .bind(&f.metadata)
    .bind(permission)
    .execute(&mut *tx)
    .await?;
    let rec = load(&mut tx, &id).await?;
    let mut version =
        crate::scopes::send(&mut tx, &[(ScopeKind::Organization, &id)], create).await?;
    // Keys carry their organization's alias (a metric label): re-send them when it changes.
    if before.as_ref().is_some_and(|b| b.alias != rec.alias) {
        let keys = crate::keys::hashes_in_organization(&mut *tx, &id).await?;
        version = crate::keys::resend(&mut tx, &keys).await?.or(version);
    }
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: if create {
                "organization.create"
            } else {
                "organization.update"
            },
            object_type: "organization",
            object_id: &id,
            before: before.as_ref().and_then(audit::json),
            after: audit::json(&rec),
            snapshot_version: version,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rec)
}

pub async fn delete(pool: &PgPool, actor: &Actor, ids: &[String]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Err(StoreError::Invalid("no organizations given".into()));
    }
    let mut tx = pool.begin().await?;
    let gone: Vec<(ScopeKind, &str)> = ids
        .iter()
        .map(|id| (ScopeKind::Organization, id.as_str()))
        .collect();
    let mut keys = Vec::new();
    for id in ids {
        let before = load(&mut tx, id).await?;
        keys.extend(crate::keys::hashes_in_organization(&mut *tx, id).await?);
        sqlx::query("DELETE FROM organizations WHERE organization_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit::record(
            &mut *tx,
            actor,
            audit::Entry {
                action: "organization.delete",
                object_type: "organization",
                object_id: id,
                before: audit::json(&before),
                after: None,
                snapshot_version: None,
            },
        )
        .await?;
    }
    crate::scopes::send(&mut tx, &gone, false).await?;
    // Their keys (and teams' keys) lost the organization, its id and alias with it.
    crate::keys::resend(&mut tx, &keys).await?;
    tx.commit().await?;
    Ok(())
}

/// Organizations, all or those with the given ids.
pub async fn list(
    pool: &PgPool,
    ids: &[String],
    page: Page,
) -> Result<(Vec<OrgRecord>, u64), StoreError> {
    const FILTER: &str = "cardinality($1::text[]) = 0 OR organization_id = ANY($1)";
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM organizations WHERE {FILTER}
          ORDER BY created_at, organization_id LIMIT $2 OFFSET $3"
    )))
    .bind(ids)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM organizations WHERE {FILTER}"
    )))
    .bind(ids)
    .fetch_one(pool)
    .await?;
    Ok((
        rows.iter().map(read).collect::<Result<_, _>>()?,
        total as u64,
    ))
}
