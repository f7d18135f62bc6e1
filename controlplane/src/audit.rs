//! The audit log: every mutation records who did what, when, from where, and the snapshot
//! version it produced, in the mutation's own transaction.

use serde_json::Value;
use sqlx::{PgExecutor, Row};

use crate::error::StoreError;

/// Who asked for a mutation.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub id: String,
    pub source_ip: String,
}

impl Actor {
    pub fn system(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            source_ip: String::new(),
        }
    }
}

/// An object as it goes into `before` / `after`.
pub fn json<T: serde::Serialize>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

/// One mutation to record.
pub struct Entry<'a> {
    pub action: &'a str,
    pub object_type: &'a str,
    pub object_id: &'a str,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub snapshot_version: Option<u64>,
}

/// One `<object_type>.delete` entry per deleted object (`ids` with their `befores`), all
/// under the delta's snapshot version.
pub async fn deletions(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    actor: &Actor,
    object_type: &str,
    ids: &[String],
    befores: Vec<Value>,
    version: u64,
) -> Result<(), StoreError> {
    let action = format!("{object_type}.delete");
    for (id, before) in ids.iter().zip(befores) {
        record(
            &mut **tx,
            actor,
            Entry {
                action: &action,
                object_type,
                object_id: id,
                before: Some(before),
                after: None,
                snapshot_version: Some(version),
            },
        )
        .await?;
    }
    Ok(())
}

pub async fn record(
    conn: impl PgExecutor<'_>,
    actor: &Actor,
    e: Entry<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (actor, source_ip, action, object_type, object_id, before, after, snapshot_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&actor.id)
    .bind(&actor.source_ip)
    .bind(e.action)
    .bind(e.object_type)
    .bind(e.object_id)
    .bind(e.before)
    .bind(e.after)
    .bind(e.snapshot_version.map(|v| v as i64))
    .execute(conn)
    .await?;
    Ok(())
}

/// One audit-log row, newest first in listings.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub source_ip: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub snapshot_version: Option<i64>,
}

/// Filters for [`list`]; `None` matches everything.
#[derive(Debug, Default)]
pub struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

pub async fn list(
    conn: impl PgExecutor<'_>,
    f: &Filter,
    page: crate::Page,
) -> Result<Vec<Record>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, (EXTRACT(EPOCH FROM at) * 1000)::bigint AS at_ms, actor, source_ip, action,
                object_type, object_id, before, after, snapshot_version
           FROM audit_log
          WHERE ($1::text IS NULL OR actor = $1)
            AND ($2::text IS NULL OR action = $2)
            AND ($3::text IS NULL OR object_type = $3)
            AND ($4::text IS NULL OR object_id = $4)
            AND ($5::bigint IS NULL OR at >= to_timestamp($5 / 1000.0))
            AND ($6::bigint IS NULL OR at < to_timestamp($6 / 1000.0))
          ORDER BY id DESC
          LIMIT $7 OFFSET $8",
    )
    .bind(&f.actor)
    .bind(&f.action)
    .bind(&f.object_type)
    .bind(&f.object_id)
    .bind(f.since_ms)
    .bind(f.until_ms)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Record {
                id: r.try_get("id")?,
                at_ms: r.try_get("at_ms")?,
                actor: r.try_get("actor")?,
                source_ip: r.try_get("source_ip")?,
                action: r.try_get("action")?,
                object_type: r.try_get("object_type")?,
                object_id: r.try_get("object_id")?,
                before: r.try_get("before")?,
                after: r.try_get("after")?,
                snapshot_version: r.try_get("snapshot_version")?,
            })
        })
        .collect()
}
