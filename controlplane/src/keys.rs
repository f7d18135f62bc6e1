//! Virtual keys (`virtual_keys`): managed through gRPC, loaded into snapshots. Only the
//! SHA-256 of a key is stored; the key itself is returned once, by [`generate`].
//!
//! Every mutation runs in one transaction with its audit row and its snapshot delta.

use routeiq_proto::{DeltaOp, KeyHash, ModelBudget, VirtualKey};
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, PgPool, Row};

use crate::audit::{self, Actor};
use crate::budget::{self, Limits};
use crate::crypto;
use crate::error::StoreError;
use crate::{changes, object_permission, Page};

/// Settable key fields; `None` leaves a field as it is on update.
#[derive(Debug, Clone, Default)]
pub struct KeyFields {
    pub alias: Option<String>,
    /// `Some` replaces the key's models (empty: all models).
    pub models: Option<Vec<String>>,
    pub limits: Limits,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Expires this long from now (`30d`, ...); takes precedence over `expires_at`.
    pub duration: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub metadata: Option<Value>,
    pub tags: Option<Vec<String>>,
    /// LiteLLM's `model_max_budget`: `{model: {budget_limit, time_period}}`; replaces.
    pub model_max_budget: Option<Value>,
    /// LiteLLM's `object_permission` (its MCP fields); merged over the stored one.
    pub object_permission: Option<Value>,
}

/// A key as stored (never the key itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRecord {
    pub hash: String,
    /// `sk-...abcd`.
    pub key_name: String,
    pub alias: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub models: Vec<String>,
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub spend: f64,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
    pub expires_at: Option<i64>,
    pub blocked: bool,
    pub metadata: Value,
    pub tags: Vec<String>,
    /// `{model: {"budget_limit": USD, "time_period": "1d"}}`.
    pub model_max_budget: Value,
    /// The MCP part of LiteLLM's `object_permission` (null: none).
    pub object_permission: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "encode(key_hash, 'hex') AS hash, key_name, key_alias, team_id, user_id,
    models, max_budget, soft_budget, spend, budget_duration,
    EXTRACT(EPOCH FROM budget_reset_at)::bigint AS budget_reset_at,
    rpm_limit, tpm_limit, max_parallel_requests,
    EXTRACT(EPOCH FROM expires_at)::bigint AS expires_at, blocked, metadata, tags,
    model_max_budget, COALESCE(object_permission, 'null'::jsonb) AS object_permission,
    EXTRACT(EPOCH FROM created_at)::bigint AS created_at,
    EXTRACT(EPOCH FROM updated_at)::bigint AS updated_at";

fn record(r: &PgRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        hash: r.try_get("hash")?,
        key_name: r.try_get("key_name")?,
        alias: r.try_get("key_alias")?,
        team_id: r.try_get("team_id")?,
        user_id: r.try_get("user_id")?,
        models: r.try_get("models")?,
        max_budget: r.try_get("max_budget")?,
        soft_budget: r.try_get("soft_budget")?,
        spend: r.try_get("spend")?,
        budget_duration: r.try_get("budget_duration")?,
        budget_reset_at: r.try_get("budget_reset_at")?,
        rpm_limit: r.try_get("rpm_limit")?,
        tpm_limit: r.try_get("tpm_limit")?,
        max_parallel_requests: r.try_get("max_parallel_requests")?,
        expires_at: r.try_get("expires_at")?,
        blocked: r.try_get("blocked")?,
        metadata: r.try_get("metadata")?,
        tags: r.try_get("tags")?,
        model_max_budget: r.try_get("model_max_budget")?,
        object_permission: r.try_get("object_permission")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// A new key: `sk-` and 48 hex digits (192 random bits).
pub fn new_key() -> Result<String, StoreError> {
    Ok(format!("sk-{}", crypto::random_hex(24)?))
}

/// A caller-chosen key (checked) or a new one.
fn chosen(key: Option<String>) -> Result<String, StoreError> {
    match key {
        Some(k) if !k.starts_with("sk-") || k.chars().count() < 11 => Err(StoreError::Invalid(
            "a custom key must start with `sk-` and have at least 8 more characters".into(),
        )),
        Some(k) if k.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(
            StoreError::Invalid("a custom key must not contain whitespace".into()),
        ),
        Some(k) => Ok(k),
        None => new_key(),
    }
}

/// `sk-...abcd`: recognisable, not usable.
fn display_name(key: &str) -> String {
    let tail: String = key
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("sk-...{tail}")
}

/// Checked key fields: the parsed budget window and lifetime, `model_max_budget` in its
/// stored form.
struct Checked {
    budget: Option<budget::Window>,
    lifetime: Option<budget::Window>,
    model_max_budget: Option<Value>,
    object_permission: Option<Value>,
}

/// `model_max_budget` checked and normalised: each model maps to `{"budget_limit": USD}`
/// (a number, or as LiteLLM also takes it a numeric string: see [`decimal`]) and an
/// optional `"time_period"` (`1d`, `30d`, `1mo`, ...: the window the spend is counted in;
/// absent: for the key's life).
fn model_max_budget(v: &Value) -> Result<Value, StoreError> {
    let bad = |m: &str, why: &str| StoreError::Invalid(format!("model_max_budget.{m}: {why}"));
    let Value::Object(models) = v else {
        return Err(StoreError::Invalid(
            "model_max_budget must be an object of models".into(),
        ));
    };
    let mut out = serde_json::Map::new();
    for (model, entry) in models {
        let limit = match entry.get("budget_limit") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => decimal(s),
            _ => None,
        }
        .filter(|l| l.is_finite() && *l >= 0.0)
        .ok_or_else(|| bad(model, "budget_limit must be a non-negative number"))?;
        let mut e = serde_json::Map::new();
        e.insert("budget_limit".into(), limit.into());
        if let Some(p) = entry.get("time_period").filter(|p| !p.is_null()) {
            let text = p
                .as_str()
                .ok_or_else(|| bad(model, "time_period must be a string like 1d"))?;
            budget::parse(text)
                .map_err(|_| bad(model, &format!("time_period: expected {}", budget::GRAMMAR)))?;
            e.insert("time_period".into(), text.into());
        }
        out.insert(model.clone(), Value::Object(e));
    }
    Ok(Value::Object(out))
}

/// A budget given as text: 1 to 15 digits, optionally a `.` and 1 to 15 more (`"10"`,
/// `"0.5"`): the admin API's spec states this grammar as the pattern
/// `^[0-9]{1,15}(\.[0-9]{1,15})?$`.
fn decimal(s: &str) -> Option<f64> {
    let digits = |p: &str| (1..=15).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
    let plain = match s.split_once('.') {
        Some((whole, fraction)) => digits(whole) && digits(fraction),
        None => digits(s),
    };
    plain.then(|| s.parse().ok()).flatten()
}

fn check(f: &KeyFields) -> Result<Checked, StoreError> {
    check_metadata(f.metadata.as_ref())?;
    let lifetime = f
        .duration
        .as_deref()
        .map(|d| {
            budget::parse(d).map_err(|_| {
                StoreError::Invalid(format!("duration `{d}`: expected {}", budget::GRAMMAR))
            })
        })
        .transpose()?;
    Ok(Checked {
        budget: f.limits.check()?,
        lifetime,
        model_max_budget: f
            .model_max_budget
            .as_ref()
            .map(model_max_budget)
            .transpose()?,
        object_permission: f
            .object_permission
            .as_ref()
            .map(object_permission::patch)
            .transpose()?,
    })
}

/// Users are created on first reference, as LiteLLM does; teams must exist.
async fn ensure_owner(conn: &mut PgConnection, f: &KeyFields) -> Result<(), StoreError> {
    if let Some(user) = f.user_id.as_deref().filter(|u| !u.is_empty()) {
        sqlx::query("INSERT INTO users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(user)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(team) = f.team_id.as_deref().filter(|t| !t.is_empty()) {
        let found = sqlx::query("SELECT 1 FROM teams WHERE team_id = $1")
            .bind(team)
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!(
                "team `{team}` does not exist"
            )));
        }
    }
    Ok(())
}

/// Duplicate aliases and keys are conflicts.
fn constraint(e: sqlx::Error) -> StoreError {
    StoreError::on_constraint(
        e,
        [
            (
                "virtual_keys_alias",
                StoreError::Conflict("a key with this key_alias already exists".into()),
            ),
            (
                "virtual_keys_pkey",
                StoreError::Conflict("this key already exists".into()),
            ),
        ],
    )
}

/// Creates a key (`key` given, or generated); returns the key, its record and the version.
pub async fn generate(
    pool: &PgPool,
    actor: &Actor,
    key: Option<String>,
    f: &KeyFields,
) -> Result<(String, KeyRecord, u64), StoreError> {
    let checked = check(f)?;
    let key = chosen(key)?;
    let hash = KeyHash::of(&key);
    let mut tx = pool.begin().await?;
    ensure_owner(&mut tx, f).await?;
    sqlx::query("INSERT INTO virtual_keys (key_hash, key_name, created_by) VALUES ($1, $2, $3)")
        .bind(hash.0.to_vec())
        .bind(display_name(&key))
        .bind(&actor.id)
        .execute(&mut *tx)
        .await
        .map_err(constraint)?;
    let row = apply(&mut tx, &hash, f, &checked).await?;
    let rec = record(&row)?;
    let version = finish(&mut tx, actor, "key.generate", None, &rec, &hash, None).await?;
    tx.commit().await?;
    Ok((key, rec, version))
}

/// Sets the given fields of a key; returns its row.
async fn apply(
    conn: &mut PgConnection,
    hash: &KeyHash,
    f: &KeyFields,
    checked: &Checked,
) -> Result<PgRow, StoreError> {
    let sql = format!(
        "UPDATE virtual_keys SET
             key_alias = COALESCE($2, key_alias),
             team_id = CASE WHEN $3::text IS NULL THEN team_id ELSE NULLIF($3, '') END,
             user_id = CASE WHEN $4::text IS NULL THEN user_id ELSE NULLIF($4, '') END,
             models = COALESCE($5, models),
             expires_at = CASE WHEN $9::interval IS NOT NULL THEN now() + $9::interval
                               ELSE COALESCE(to_timestamp($6), expires_at) END,
             metadata = COALESCE($7, metadata),
             tags = COALESCE($8, tags),
             model_max_budget = COALESCE($17, model_max_budget),
             {}, {}, updated_at = now()
         WHERE key_hash = $1
         RETURNING {COLUMNS}",
        budget::set_clauses(10),
        object_permission::set_clause(18)
    );
    let q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(hash.0.to_vec())
        .bind(&f.alias)
        .bind(&f.team_id)
        .bind(&f.user_id)
        .bind(&f.models)
        .bind(f.expires_at)
        .bind(&f.metadata)
        .bind(&f.tags)
        .bind(checked.lifetime.as_ref().map(|w| w.interval.clone()));
    f.limits
        .bind(q, checked.budget.as_ref())
        .bind(&checked.model_max_budget)
        .bind(&checked.object_permission)
        .fetch_one(&mut *conn)
        .await
        .map_err(constraint)
}

async fn locked(conn: &mut PgConnection, hash: &KeyHash) -> Result<KeyRecord, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM virtual_keys WHERE key_hash = $1 FOR UPDATE"
    )))
    .bind(hash.0.to_vec())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound("key not found".into()))?;
    record(&row)
}

/// Changes the given fields of a key.
pub async fn update(
    pool: &PgPool,
    actor: &Actor,
    hash: &KeyHash,
    f: &KeyFields,
) -> Result<(KeyRecord, u64), StoreError> {
    let checked = check(f)?;
    let mut tx = pool.begin().await?;
    let before = locked(&mut tx, hash).await?;
    ensure_owner(&mut tx, f).await?;
    let row = apply(&mut tx, hash, f, &checked).await?;
    let rec = record(&row)?;
    let version = finish(
        &mut tx,
        actor,
        "key.update",
        Some(&before),
        &rec,
        hash,
        None,
    )
    .await?;
    tx.commit().await?;
    Ok((rec, version))
}

/// Replaces a key by a new one (`new_key`, or generated), keeping its settings and spend,
/// and applies `f`. The old key is deleted from data planes in the same delta.
pub async fn regenerate(
    pool: &PgPool,
    actor: &Actor,
    old: &KeyHash,
    new_key: Option<String>,
    f: &KeyFields,
) -> Result<(String, KeyRecord, u64), StoreError> {
    let checked = check(f)?;
    let key = chosen(new_key)?;
    let hash = KeyHash::of(&key);
    let mut tx = pool.begin().await?;
    let before = locked(&mut tx, old).await?;
    ensure_owner(&mut tx, f).await?;
    sqlx::query("UPDATE virtual_keys SET key_hash = $2, key_name = $3 WHERE key_hash = $1")
        .bind(old.0.to_vec())
        .bind(hash.0.to_vec())
        .bind(display_name(&key))
        .execute(&mut *tx)
        .await
        .map_err(constraint)?;
    let row = apply(&mut tx, &hash, f, &checked).await?;
    let rec = record(&row)?;
    let version = finish(
        &mut tx,
        actor,
        "key.regenerate",
        Some(&before),
        &rec,
        &hash,
        Some(old),
    )
    .await?;
    tx.commit().await?;
    Ok((key, rec, version))
}

/// Blocks or unblocks a key.
pub async fn set_blocked(
    pool: &PgPool,
    actor: &Actor,
    hash: &KeyHash,
    blocked: bool,
) -> Result<(KeyRecord, u64), StoreError> {
    let mut tx = pool.begin().await?;
    let before = locked(&mut tx, hash).await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE virtual_keys SET blocked = $2, updated_at = now() WHERE key_hash = $1
         RETURNING {COLUMNS}"
    )))
    .bind(hash.0.to_vec())
    .bind(blocked)
    .fetch_one(&mut *tx)
    .await?;
    let rec = record(&row)?;
    let action = if blocked { "key.block" } else { "key.unblock" };
    let version = finish(&mut tx, actor, action, Some(&before), &rec, hash, None).await?;
    tx.commit().await?;
    Ok((rec, version))
}

/// Appends the delta (the upsert of the changed key, after the delete of the key it
/// `replaces`, if any) and the audit row of a changed key.
async fn finish(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    actor: &Actor,
    action: &str,
    before: Option<&KeyRecord>,
    after: &KeyRecord,
    hash: &KeyHash,
    replaces: Option<&KeyHash>,
) -> Result<u64, StoreError> {
    hold_scopes(tx, hash, before.and_then(|b| b.team_id.as_deref())).await?;
    let key = view_of(&mut **tx, hash).await?;
    let mut ops: Vec<DeltaOp> = replaces
        .map(|old| DeltaOp::DeleteKey(*old))
        .into_iter()
        .collect();
    ops.push(DeltaOp::UpsertKey(key));
    let version = changes::append(tx, ops).await?;
    audit::record(
        &mut **tx,
        actor,
        audit::Entry {
            action,
            object_type: "key",
            object_id: &after.hash,
            before: before.and_then(audit::json),
            after: audit::json(after),
            snapshot_version: Some(version),
        },
    )
    .await?;
    Ok(version)
}

/// Holds the key's team and organization rows (`FOR SHARE`) until the transaction ends, so
/// that its view and a concurrent change of either (alias, `blocked`, `models`, ...) are
/// ordered. A team or organization update in progress is waited for, and the view then
/// reads what it committed; one that starts later waits for this transaction, and its
/// re-send of the team's or organization's keys includes this key. Without it, a key
/// created while its team was being blocked could reach the data planes unblocked, after
/// the team's re-send. `left`, the team the key was in before this change, is held too
/// (with its organization): a key moved out of a team while that team changes would
/// otherwise be read in the team's re-send before the move commits, and sent as still in
/// it after the move's delta. Teams are taken before organizations, as an update of a
/// team takes them, each kind in the order of its ids.
async fn hold_scopes(
    conn: &mut PgConnection,
    hash: &KeyHash,
    left: Option<&str>,
) -> Result<(), StoreError> {
    let (team, own_org): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT team_id, organization_id FROM virtual_keys WHERE key_hash = $1")
            .bind(hash.0.to_vec())
            .fetch_one(&mut *conn)
            .await?;
    let teams: Vec<String> = team.into_iter().chain(left.map(str::to_owned)).collect();
    let mut orgs: Vec<String> = own_org.into_iter().collect();
    if !teams.is_empty() {
        let team_orgs: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT organization_id FROM teams WHERE team_id = ANY($1)
              ORDER BY team_id FOR SHARE",
        )
        .bind(&teams)
        .fetch_all(&mut *conn)
        .await?;
        orgs.extend(team_orgs.into_iter().flatten());
    }
    if !orgs.is_empty() {
        sqlx::query(
            "SELECT 1 FROM organizations WHERE organization_id = ANY($1)
              ORDER BY organization_id FOR SHARE",
        )
        .bind(&orgs)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Deletes keys; unknown ones are an error and nothing is deleted.
pub async fn delete(
    pool: &PgPool,
    actor: &Actor,
    hashes: &[KeyHash],
) -> Result<(Vec<KeyHash>, u64), StoreError> {
    if hashes.is_empty() {
        return Err(StoreError::Invalid("no keys given".into()));
    }
    let mut tx = pool.begin().await?;
    let mut ops = Vec::with_capacity(hashes.len());
    let mut befores = Vec::with_capacity(hashes.len());
    for h in hashes {
        befores.push(locked(&mut tx, h).await?);
        ops.push(DeltaOp::DeleteKey(*h));
    }
    let raw: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
    sqlx::query("DELETE FROM virtual_keys WHERE key_hash = ANY($1)")
        .bind(&raw)
        .execute(&mut *tx)
        .await?;
    let version = changes::append(&mut tx, ops).await?;
    for b in &befores {
        audit::record(
            &mut *tx,
            actor,
            audit::Entry {
                action: "key.delete",
                object_type: "key",
                object_id: &b.hash,
                before: audit::json(b),
                after: None,
                snapshot_version: Some(version),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok((hashes.to_vec(), version))
}

pub async fn get(conn: impl PgExecutor<'_>, hash: &KeyHash) -> Result<KeyRecord, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM virtual_keys WHERE key_hash = $1"
    )))
    .bind(hash.0.to_vec())
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::NotFound("key not found".into()))?;
    record(&row)
}

/// Which keys a listing returns; `None` does not narrow.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListFilter<'a> {
    pub team_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub alias: Option<&'a str>,
}

/// Keys, newest first, narrowed by `f`; with the total count.
pub async fn list(
    pool: &PgPool,
    f: ListFilter<'_>,
    page: Page,
) -> Result<(Vec<KeyRecord>, u64), StoreError> {
    let filter = "($1::text IS NULL OR team_id = $1) AND ($2::text IS NULL OR user_id = $2)
        AND ($3::text IS NULL OR key_alias = $3)";
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM virtual_keys WHERE {filter}
          ORDER BY created_at DESC, key_hash LIMIT $4 OFFSET $5"
    )))
    .bind(f.team_id)
    .bind(f.user_id)
    .bind(f.alias)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM virtual_keys WHERE {filter}"
    )))
    .bind(f.team_id)
    .bind(f.user_id)
    .bind(f.alias)
    .fetch_one(pool)
    .await?;
    let keys = rows.iter().map(record).collect::<Result<_, _>>()?;
    Ok((keys, total as u64))
}

/// A key's or team's `metadata`: a JSON object, whose `cache` (if any) is a cache policy.
pub fn check_metadata(metadata: Option<&Value>) -> Result<(), StoreError> {
    let Some(m) = metadata else {
        return Ok(());
    };
    if !m.is_object() {
        return Err(StoreError::Invalid("metadata must be a JSON object".into()));
    }
    routeiq_proto::CachePolicy::from_metadata(m).map_err(StoreError::Invalid)?;
    Ok(())
}

/// The data plane's view: a key of a blocked team is blocked; a key without a cache
/// policy has its team's.
const VIEW_COLUMNS: &str = "k.key_hash, COALESCE(k.key_alias, '') AS key_alias,
    COALESCE(k.team_id, '') AS team_id, COALESCE(t.team_alias, '') AS team_alias,
    COALESCE(k.user_id, '') AS user_id,
    COALESCE(k.organization_id, t.organization_id, '') AS organization_id,
    COALESCE(o.organization_alias, '') AS organization_alias, k.models,
    COALESCE(t.models, '{}') AS team_models,
    k.max_budget, k.soft_budget, k.spend, EXTRACT(EPOCH FROM k.expires_at)::bigint AS expires_at,
    (k.blocked OR COALESCE(t.blocked, false)) AS blocked, k.rpm_limit, k.tpm_limit,
    k.max_parallel_requests, k.model_max_budget, k.object_permission,
    jsonb_build_object('cache', COALESCE(NULLIF(k.metadata->'cache', 'null'::jsonb),
        t.metadata->'cache')) AS cache_policy,
    (SELECT COALESCE(jsonb_object_agg(s.model, s.spend), '{}') FROM key_model_spend s
      WHERE s.key_hash = k.key_hash AND (s.reset_at IS NULL OR s.reset_at > now())) AS model_spend";
const VIEW_FROM: &str = "virtual_keys k LEFT JOIN teams t ON t.team_id = k.team_id
    LEFT JOIN organizations o ON o.organization_id = COALESCE(k.organization_id, t.organization_id)";

/// A key hash as stored; `what` (`table.column`) names it in the error when it is not 32
/// bytes.
pub fn stored_hash(bytes: &[u8], what: &str) -> Result<KeyHash, StoreError> {
    KeyHash::from_slice(bytes).ok_or_else(|| StoreError::Corrupt(what.to_owned()))
}

fn view(r: &PgRow) -> Result<VirtualKey, StoreError> {
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
        hash: stored_hash(&hash, "virtual_keys.key_hash")?,
        alias: r.try_get("key_alias")?,
        team_id: r.try_get("team_id")?,
        team_alias: r.try_get("team_alias")?,
        user_id: r.try_get("user_id")?,
        organization_id: r.try_get("organization_id")?,
        organization_alias: r.try_get("organization_alias")?,
        models: r.try_get::<Vec<String>, _>("models")?.into(),
        team_models: r.try_get::<Vec<String>, _>("team_models")?.into(),
        max_budget: r.try_get("max_budget")?,
        soft_budget: r.try_get("soft_budget")?,
        spend: r.try_get("spend")?,
        expires_at: r.try_get("expires_at")?,
        blocked: r.try_get("blocked")?,
        rpm_limit: limit("rpm_limit")?,
        tpm_limit: limit("tpm_limit")?,
        max_parallel_requests: limit("max_parallel_requests")?,
        model_budgets: model_budgets(
            &r.try_get::<Value, _>("model_max_budget")?,
            &r.try_get::<Value, _>("model_spend")?,
        ),
        permission: object_permission::grant(
            r.try_get("object_permission")?,
            "virtual_keys.object_permission",
        )?,
        cache: routeiq_proto::CachePolicy::from_metadata(&r.try_get::<Value, _>("cache_policy")?)
            .map_err(|e| StoreError::Corrupt(format!("virtual_keys/teams.{e}")))?,
    })
}

/// The data plane's per-model budgets: each `model_max_budget` entry with the key's spend
/// on that model in the current window.
fn model_budgets(config: &Value, spend: &Value) -> std::sync::Arc<[ModelBudget]> {
    let Value::Object(models) = config else {
        return std::sync::Arc::from([]);
    };
    models
        .iter()
        .filter_map(|(model, e)| {
            Some(ModelBudget {
                model: model.clone(),
                max_budget: e.get("budget_limit")?.as_f64()?,
                spend: spend.get(model).and_then(Value::as_f64).unwrap_or(0.0),
            })
        })
        .collect()
}

/// One key's data-plane view, for its delta.
pub async fn view_of(conn: impl PgExecutor<'_>, hash: &KeyHash) -> Result<VirtualKey, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE k.key_hash = $1"
    )))
    .bind(hash.0.to_vec())
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::NotFound("key not found".into()))?;
    view(&row)
}

/// Every key's data-plane view, for the full snapshot.
pub async fn load_all(
    conn: impl PgExecutor<'_>,
) -> Result<Vec<std::sync::Arc<VirtualKey>>, StoreError> {
    use futures_util::TryStreamExt;
    // Streamed: a million keys never sit in memory as rows and keys at once.
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM}"
    )))
    .fetch(conn);
    let mut keys = Vec::new();
    while let Some(r) = rows.try_next().await? {
        keys.push(std::sync::Arc::new(view(&r)?));
    }
    Ok(keys)
}

/// The keys in an organization: their own, or their team's.
pub async fn hashes_in_organization(
    conn: impl PgExecutor<'_>,
    organization_id: &str,
) -> Result<Vec<KeyHash>, StoreError> {
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "SELECT k.key_hash FROM virtual_keys k LEFT JOIN teams t ON t.team_id = k.team_id
          WHERE COALESCE(k.organization_id, t.organization_id) = $1",
    )
    .bind(organization_id)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|(h,)| stored_hash(h, "virtual_keys.key_hash"))
        .collect()
}

/// Sends the current views of `keys` to the data planes (after something they carry
/// changed), read in one query (a key deleted meanwhile is left out); the delta's
/// version, `None` for no keys.
pub async fn resend(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    keys: &[KeyHash],
) -> Result<Option<u64>, StoreError> {
    if keys.is_empty() {
        return Ok(None);
    }
    let hashes: Vec<Vec<u8>> = keys.iter().map(|k| k.0.to_vec()).collect();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE k.key_hash = ANY($1)"
    )))
    .bind(hashes)
    .fetch_all(&mut **tx)
    .await?;
    send_views(tx, &rows).await
}

/// Sends the current views of a team's keys to the data planes (after the team changed);
/// the delta's version, `None` for no keys.
pub async fn resend_team(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    team_id: &str,
) -> Result<Option<u64>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {VIEW_COLUMNS} FROM {VIEW_FROM} WHERE k.team_id = $1"
    )))
    .bind(team_id)
    .fetch_all(&mut **tx)
    .await?;
    send_views(tx, &rows).await
}

/// One delta upserting the keys of `rows` (read with `VIEW_COLUMNS`); `None` for none.
async fn send_views(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[sqlx::postgres::PgRow],
) -> Result<Option<u64>, StoreError> {
    let ops = rows
        .iter()
        .map(|r| view(r).map(DeltaOp::UpsertKey))
        .collect::<Result<Vec<_>, _>>()?;
    if ops.is_empty() {
        return Ok(None);
    }
    Ok(Some(changes::append(tx, ops).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_in_text_are_plain_decimals() {
        assert_eq!(decimal("10"), Some(10.0));
        assert_eq!(decimal("0.5"), Some(0.5));
        for bad in [
            "",
            " 1",
            "1 ",
            "1.",
            ".5",
            "-1",
            "+1",
            "1e3",
            "inf",
            "1.2.3",
            "1234567890123456",
        ] {
            assert_eq!(decimal(bad), None, "{bad}");
        }
    }
}
