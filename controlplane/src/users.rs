//! Internal users (`users`). Deleting a user deletes their keys, as LiteLLM does.

use routeiq_proto::ScopeKind;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::audit::{self, Actor};
use crate::budget::{self, Limits, LimitsRecord, LIMIT_COLUMNS};
use crate::error::StoreError;
use crate::{teams, Page};

pub const ROLES: [&str; 4] = [
    "proxy_admin",
    "proxy_admin_viewer",
    "internal_user",
    "internal_user_viewer",
];

#[derive(Debug, Clone, Default)]
pub struct UserFields {
    pub email: Option<String>,
    pub role: Option<String>,
    pub organization_id: Option<String>,
    pub models: Option<Vec<String>>,
    pub limits: Limits,
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserRecord {
    pub user_id: String,
    pub email: Option<String>,
    pub role: String,
    pub organization_id: Option<String>,
    pub models: Vec<String>,
    pub limits: LimitsRecord,
    pub spend: f64,
    pub metadata: Value,
    pub teams: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn columns() -> String {
    format!(
        "user_id, user_email, user_role, organization_id, models, spend, metadata,
         {LIMIT_COLUMNS},
         ARRAY(SELECT team_id FROM team_memberships m WHERE m.user_id = users.user_id
               ORDER BY team_id) AS teams,
         EXTRACT(EPOCH FROM created_at)::bigint AS created_at,
         EXTRACT(EPOCH FROM updated_at)::bigint AS updated_at"
    )
}

fn read(r: &PgRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        user_id: r.try_get("user_id")?,
        email: r.try_get("user_email")?,
        role: r.try_get("user_role")?,
        organization_id: r.try_get("organization_id")?,
        models: r.try_get("models")?,
        limits: LimitsRecord::read(r)?,
        spend: r.try_get("spend")?,
        metadata: r.try_get("metadata")?,
        teams: r.try_get("teams")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn constraint(e: sqlx::Error) -> StoreError {
    StoreError::on_constraint(
        e,
        [
            (
                "users_pkey",
                StoreError::Conflict("user already exists".into()),
            ),
            (
                "users_email",
                StoreError::Conflict("a user with this email already exists".into()),
            ),
            (
                "users_organization_id_fkey",
                StoreError::NotFound("organization does not exist".into()),
            ),
        ],
    )
}

async fn load(conn: &mut PgConnection, id: &str, lock: bool) -> Result<UserRecord, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM users WHERE user_id = $1 {}",
        columns(),
        if lock { "FOR UPDATE" } else { "" }
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("user `{id}` not found")))?;
    read(&row)
}

async fn apply(conn: &mut PgConnection, id: &str, f: &UserFields) -> Result<(), StoreError> {
    if f.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(StoreError::Invalid("metadata must be a JSON object".into()));
    }
    if let Some(role) = f.role.as_deref().filter(|r| !ROLES.contains(r)) {
        return Err(StoreError::Invalid(format!(
            "user_role `{role}`: expected one of {}",
            ROLES.join(", ")
        )));
    }
    let window = f.limits.check()?;
    let sql = format!(
        "UPDATE users SET user_email = COALESCE($2, user_email), user_role = COALESCE($3, user_role),
             organization_id = CASE WHEN $4::text IS NULL THEN organization_id ELSE NULLIF($4, '') END,
             models = COALESCE($5, models), metadata = COALESCE($6, metadata), {},
             updated_at = now()
         WHERE user_id = $1",
        budget::set_clauses(7)
    );
    let q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(&f.email)
        .bind(&f.role)
        .bind(&f.organization_id)
        .bind(&f.models)
        .bind(&f.metadata);
    f.limits
        .bind(q, window.as_ref())
        .execute(&mut *conn)
        .await
        .map_err(constraint)?;
    Ok(())
}

pub async fn create(
    pool: &PgPool,
    actor: &Actor,
    user_id: Option<String>,
    f: &UserFields,
) -> Result<UserRecord, StoreError> {
    let id = match user_id.filter(|u| !u.is_empty()) {
        Some(u) => u,
        None => crate::crypto::new_id()?,
    };
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO users (user_id) VALUES ($1)")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(constraint)?;
    apply(&mut tx, &id, f).await?;
    let rec = load(&mut tx, &id, false).await?;
    let version = crate::scopes::send(&mut tx, &[(ScopeKind::User, &id)], true).await?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: "user.create",
            object_type: "user",
            object_id: &id,
            before: None,
            after: audit::json(&rec),
            snapshot_version: version,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rec)
}

pub async fn update(
    pool: &PgPool,
    actor: &Actor,
    id: &str,
    f: &UserFields,
) -> Result<UserRecord, StoreError> {
    let mut tx = pool.begin().await?;
    let before = load(&mut tx, id, true).await?;
    apply(&mut tx, id, f).await?;
    let rec = load(&mut tx, id, false).await?;
    let version = crate::scopes::send(&mut tx, &[(ScopeKind::User, id)], false).await?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: "user.update",
            object_type: "user",
            object_id: id,
            before: audit::json(&before),
            after: audit::json(&rec),
            snapshot_version: version,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rec)
}

/// Deletes users and their keys; returns the snapshot version when keys went away.
pub async fn delete(
    pool: &PgPool,
    actor: &Actor,
    ids: &[String],
) -> Result<Option<u64>, StoreError> {
    if ids.is_empty() {
        return Err(StoreError::Invalid("no users given".into()));
    }
    let mut tx = pool.begin().await?;
    let mut befores = Vec::with_capacity(ids.len());
    for id in ids {
        befores.push(load(&mut tx, id, true).await?);
    }
    let befores: Vec<_> = befores
        .iter()
        .map(|b| (b.user_id.as_str(), audit::json(b)))
        .collect();
    let version = teams::delete_owners(&mut tx, actor, teams::Owner::User, &befores).await?;
    tx.commit().await?;
    Ok(version)
}

pub async fn get(pool: &PgPool, id: &str) -> Result<UserRecord, StoreError> {
    let mut conn = pool.acquire().await?;
    load(&mut conn, id, false).await
}

/// Users, optionally of one organization, with the given ids, or with a given role.
pub async fn list(
    pool: &PgPool,
    organization_id: Option<&str>,
    ids: &[String],
    role: Option<&str>,
    page: Page,
) -> Result<(Vec<UserRecord>, u64), StoreError> {
    const FILTER: &str = "($1::text IS NULL OR organization_id = $1)
        AND (cardinality($2::text[]) = 0 OR user_id = ANY($2))
        AND ($3::text IS NULL OR user_role = $3)";
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM users WHERE {FILTER}
          ORDER BY created_at, user_id LIMIT $4 OFFSET $5",
        columns()
    )))
    .bind(organization_id)
    .bind(ids)
    .bind(role)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM users WHERE {FILTER}"
    )))
    .bind(organization_id)
    .bind(ids)
    .bind(role)
    .fetch_one(pool)
    .await?;
    Ok((
        rows.iter().map(read).collect::<Result<_, _>>()?,
        total as u64,
    ))
}
