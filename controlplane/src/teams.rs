//! Teams and their members (`teams`, `team_memberships`). Deleting a team deletes its keys,
//! as LiteLLM does, and those deletions go out as snapshot deltas.

use routeiq_proto::{DeltaOp, ScopeKind};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::audit::{self, Actor};
use crate::budget::{self, Limits, LimitsRecord, LIMIT_COLUMNS};
use crate::error::StoreError;
use crate::{changes, keys, object_permission, scopes, Page};

#[derive(Debug, Clone, Default)]
pub struct TeamFields {
    pub alias: Option<String>,
    pub organization_id: Option<String>,
    pub models: Option<Vec<String>>,
    pub limits: Limits,
    pub metadata: Option<Value>,
    pub blocked: Option<bool>,
    /// LiteLLM's `object_permission` (its MCP fields); merged over the stored one.
    pub object_permission: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub user_id: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamRecord {
    pub team_id: String,
    pub alias: String,
    pub organization_id: Option<String>,
    pub models: Vec<String>,
    pub limits: LimitsRecord,
    pub spend: f64,
    pub blocked: bool,
    pub metadata: Value,
    /// The MCP part of LiteLLM's `object_permission` (null: none).
    pub object_permission: Value,
    pub members: Vec<Member>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn read(r: &PgRow, members: Vec<Member>) -> Result<TeamRecord, StoreError> {
    Ok(TeamRecord {
        team_id: r.try_get("team_id")?,
        alias: r.try_get("team_alias")?,
        organization_id: r.try_get("organization_id")?,
        models: r.try_get("models")?,
        limits: LimitsRecord::read(r)?,
        spend: r.try_get("spend")?,
        blocked: r.try_get("blocked")?,
        metadata: r.try_get("metadata")?,
        object_permission: r.try_get("object_permission")?,
        members,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn columns() -> String {
    format!(
        "team_id, team_alias, organization_id, models, spend, blocked, metadata, {LIMIT_COLUMNS},
         COALESCE(object_permission, 'null'::jsonb) AS object_permission,
         EXTRACT(EPOCH FROM created_at)::bigint AS created_at,
         EXTRACT(EPOCH FROM updated_at)::bigint AS updated_at"
    )
}

fn fk(e: sqlx::Error) -> StoreError {
    StoreError::on_constraint(
        e,
        [
            (
                "teams_organization_id_fkey",
                StoreError::NotFound("organization does not exist".into()),
            ),
            (
                "teams_pkey",
                StoreError::Conflict("team already exists".into()),
            ),
        ],
    )
}

async fn members(conn: &mut PgConnection, team_id: &str) -> Result<Vec<Member>, StoreError> {
    let rows = sqlx::query(
        "SELECT user_id, role FROM team_memberships WHERE team_id = $1 ORDER BY user_id",
    )
    .bind(team_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Member {
                user_id: r.try_get("user_id")?,
                role: r.try_get("role")?,
            })
        })
        .collect()
}

async fn load(
    conn: &mut PgConnection,
    team_id: &str,
    lock: bool,
) -> Result<TeamRecord, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM teams WHERE team_id = $1 {}",
        columns(),
        if lock { "FOR UPDATE" } else { "" }
    )))
    .bind(team_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("team `{team_id}` not found")))?;
    let m = members(conn, team_id).await?;
    read(&row, m)
}

async fn apply(conn: &mut PgConnection, team_id: &str, f: &TeamFields) -> Result<(), StoreError> {
    crate::keys::check_metadata(f.metadata.as_ref())?;
    let window = f.limits.check()?;
    let permission = f
        .object_permission
        .as_ref()
        .map(object_permission::patch)
        .transpose()?;
    let sql = format!(
        "UPDATE teams SET team_alias = COALESCE($2, team_alias),
             organization_id = CASE WHEN $3::text IS NULL THEN organization_id ELSE NULLIF($3, '') END,
             models = COALESCE($4, models), metadata = COALESCE($5, metadata),
             blocked = COALESCE($6, blocked), {}, {}, updated_at = now()
         WHERE team_id = $1",
        budget::set_clauses(7),
        object_permission::set_clause(14)
    );
    let q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(team_id)
        .bind(&f.alias)
        .bind(&f.organization_id)
        .bind(&f.models)
        .bind(&f.metadata)
        .bind(f.blocked);
    f.limits
        .bind(q, window.as_ref())
        .bind(permission)
        .execute(&mut *conn)
        .await
        .map_err(fk)?;
    Ok(())
}

async fn add_members(
    conn: &mut PgConnection,
    team_id: &str,
    members: &[Member],
) -> Result<(), StoreError> {
    for m in members {
        if m.user_id.is_empty() {
            return Err(StoreError::Invalid("member user_id is empty".into()));
        }
        let role = if m.role.is_empty() { "user" } else { &m.role };
        if role != "user" && role != "admin" {
            return Err(StoreError::Invalid(format!(
                "member role `{role}`: expected admin or user"
            )));
        }
        sqlx::query("INSERT INTO users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&m.user_id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO team_memberships (team_id, user_id, role) VALUES ($1, $2, $3)
             ON CONFLICT (team_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        )
        .bind(team_id)
        .bind(&m.user_id)
        .bind(role)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn create(
    pool: &PgPool,
    actor: &Actor,
    team_id: Option<String>,
    f: &TeamFields,
    initial: &[Member],
) -> Result<TeamRecord, StoreError> {
    let id = match team_id.filter(|t| !t.is_empty()) {
        Some(t) => t,
        None => crate::crypto::new_id()?,
    };
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO teams (team_id) VALUES ($1)")
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(fk)?;
    apply(&mut tx, &id, f).await?;
    add_members(&mut tx, &id, initial).await?;
    let rec = load(&mut tx, &id, false).await?;
    let version = scopes::send(&mut tx, &[(ScopeKind::Team, &id)], true).await?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action: "team.create",
            object_type: "team",
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

/// Updates fields, or membership (`add` / `remove`), in one audited transaction.
pub async fn update(
    pool: &PgPool,
    actor: &Actor,
    team_id: &str,
    f: &TeamFields,
    add: &[Member],
    remove: &[String],
) -> Result<TeamRecord, StoreError> {
    let mut tx = pool.begin().await?;
    let before = load(&mut tx, team_id, true).await?;
    apply(&mut tx, team_id, f).await?;
    add_members(&mut tx, team_id, add).await?;
    if !remove.is_empty() {
        sqlx::query("DELETE FROM team_memberships WHERE team_id = $1 AND user_id = ANY($2)")
            .bind(team_id)
            .bind(remove)
            .execute(&mut *tx)
            .await?;
    }
    let rec = load(&mut tx, team_id, false).await?;
    let scope_version = scopes::send(&mut tx, &[(ScopeKind::Team, team_id)], false).await?;
    // Keys carry their team's `blocked`, alias, `models`, organization and cache policy:
    // re-send them when one changes.
    let version = if rec.blocked == before.blocked
        && rec.alias == before.alias
        && rec.models == before.models
        && rec.organization_id == before.organization_id
        && rec.metadata.get("cache") == before.metadata.get("cache")
    {
        scope_version
    } else {
        keys::resend_team(&mut tx, team_id).await?.or(scope_version)
    };
    let action = match (add.is_empty(), remove.is_empty()) {
        (false, _) => "team.member_add",
        (_, false) => "team.member_delete",
        _ => "team.update",
    };
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action,
            object_type: "team",
            object_id: team_id,
            before: audit::json(&before),
            after: audit::json(&rec),
            snapshot_version: version,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rec)
}

/// Deletes teams and their keys; returns the snapshot version when keys went away.
pub async fn delete(
    pool: &PgPool,
    actor: &Actor,
    ids: &[String],
) -> Result<Option<u64>, StoreError> {
    if ids.is_empty() {
        return Err(StoreError::Invalid("no teams given".into()));
    }
    let mut tx = pool.begin().await?;
    let mut befores = Vec::with_capacity(ids.len());
    for id in ids {
        befores.push(load(&mut tx, id, true).await?);
    }
    let befores: Vec<_> = befores
        .iter()
        .map(|b| (b.team_id.as_str(), audit::json(b)))
        .collect();
    let version = delete_owners(&mut tx, actor, Owner::Team, &befores).await?;
    tx.commit().await?;
    Ok(version)
}

/// What owns keys: deleting one deletes its keys.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Owner {
    Team,
    User,
}

impl Owner {
    /// (table, id column, audit object type)
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Owner::Team => ("teams", "team_id", "team"),
            Owner::User => ("users", "user_id", "user"),
        }
    }
}

/// Deletes teams or users (`(id, audit before)` pairs) and their keys; the keys go out as
/// one delta. Returns its version, if any key went.
pub(crate) async fn delete_owners(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    actor: &Actor,
    owner: Owner,
    befores: &[(&str, Option<Value>)],
) -> Result<Option<u64>, StoreError> {
    let (table, column, object_type) = owner.names();
    let ids: Vec<&str> = befores.iter().map(|(id, _)| *id).collect();
    // Table and column names come from `Owner`, not input.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM virtual_keys WHERE {column} = ANY($1) RETURNING key_hash"
    )))
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE {column} = ANY($1)"
    )))
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    let version = deleted_keys_delta(tx, &rows).await?;
    let kind = match owner {
        Owner::Team => ScopeKind::Team,
        Owner::User => ScopeKind::User,
    };
    let gone: Vec<(ScopeKind, &str)> = ids.iter().map(|id| (kind, *id)).collect();
    let version = scopes::send(tx, &gone, false).await?.or(version);
    let action = format!("{object_type}.delete");
    for (id, before) in befores {
        audit::record(
            &mut **tx,
            actor,
            audit::Entry {
                action: &action,
                object_type,
                object_id: id,
                before: before.clone(),
                after: None,
                snapshot_version: version,
            },
        )
        .await?;
    }
    Ok(version)
}

/// One delta deleting the keys in `rows` (`key_hash` column), if any.
async fn deleted_keys_delta(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[PgRow],
) -> Result<Option<u64>, StoreError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let ops = rows
        .iter()
        .map(|r| {
            let h: Vec<u8> = r.try_get("key_hash")?;
            keys::stored_hash(&h, "virtual_keys.key_hash").map(DeltaOp::DeleteKey)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(changes::append(tx, ops).await?))
}

pub async fn get(pool: &PgPool, team_id: &str) -> Result<TeamRecord, StoreError> {
    let mut conn = pool.acquire().await?;
    load(&mut conn, team_id, false).await
}

/// Teams, optionally of one organization, with the given ids, or with a given member.
pub async fn list(
    pool: &PgPool,
    organization_id: Option<&str>,
    ids: &[String],
    member_user_id: Option<&str>,
    page: Page,
) -> Result<(Vec<TeamRecord>, u64), StoreError> {
    const FILTER: &str = "($1::text IS NULL OR organization_id = $1)
        AND (cardinality($2::text[]) = 0 OR team_id = ANY($2))
        AND ($3::text IS NULL OR team_id IN
             (SELECT team_id FROM team_memberships WHERE user_id = $3))";
    let mut conn = pool.acquire().await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM teams WHERE {FILTER}
          ORDER BY created_at, team_id LIMIT $4 OFFSET $5",
        columns()
    )))
    .bind(organization_id)
    .bind(ids)
    .bind(member_user_id)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: String = r.try_get("team_id")?;
        let m = members(&mut conn, &id).await?;
        out.push(read(r, m)?);
    }
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM teams WHERE {FILTER}"
    )))
    .bind(organization_id)
    .bind(ids)
    .bind(member_user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok((out, total as u64))
}
