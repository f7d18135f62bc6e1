//! Budget resets: when a key's, team's or user's `budget_reset_at` passes, its spend goes
//! back to 0 and the next reset is one `budget_duration` later. Runs once per due row even
//! with several control-plane replicas: each pass holds a transaction-scoped advisory lock
//! (a replica that cannot take it skips the pass). Resets go out as `KeySpend` and
//! `ScopeSpend` ops.

use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use routeiq_proto::{DeltaOp, ScopeKind};
use sqlx::{PgPool, Row};

use crate::audit::{self, Actor};
use crate::error::StoreError;
use crate::keys::stored_hash;
use crate::{budget, changes};

/// Advisory lock id of the reset pass ("RIQR").
const RESET_LOCK: i64 = 0x5249_5152;

/// What the passes did, for metrics.
#[derive(Debug, Clone)]
pub struct Status {
    /// Budgets reset, by scope: `key`, `team`, `user`, `key_model`.
    pub resets: IntCounterVec,
    pub failed_passes: IntCounter,
}

impl Status {
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let s = Self {
            resets: IntCounterVec::new(
                Opts::new(
                    "routeiq_controlplane_budget_resets_total",
                    "Budgets whose window ended and whose spend went back to 0",
                ),
                &["scope"],
            )?,
            failed_passes: IntCounter::new(
                "routeiq_controlplane_budget_reset_failures_total",
                "Budget reset passes that failed (retried at the next one)",
            )?,
        };
        r.register(Box::new(s.resets.clone()))?;
        r.register(Box::new(s.failed_passes.clone()))?;
        Ok(s)
    }
}

/// How many budgets one pass reset, by scope.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resets {
    pub keys: u64,
    pub teams: u64,
    pub users: u64,
    /// Per-model key budgets.
    pub key_models: u64,
}

impl Resets {
    pub fn total(&self) -> u64 {
        self.keys + self.teams + self.users + self.key_models
    }
}

/// Runs a pass every `every`, forever.
pub async fn run(pool: PgPool, every: Duration, status: Status) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match reset_due(&pool).await {
            Ok(r) => {
                for (scope, n) in [
                    ("key", r.keys),
                    ("team", r.teams),
                    ("user", r.users),
                    ("key_model", r.key_models),
                ] {
                    status.resets.with_label_values(&[scope]).inc_by(n);
                }
                if r.total() > 0 {
                    tracing::info!(reset = r.total(), "budgets reset");
                }
            }
            Err(e) => {
                status.failed_passes.inc();
                tracing::warn!(error = %e, "budget reset pass failed");
            }
        }
    }
}

/// One pass; returns how many budgets were reset.
pub async fn reset_due(pool: &PgPool) -> Result<Resets, StoreError> {
    let mut tx = pool.begin().await?;
    let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RESET_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !got {
        return Ok(Resets::default());
    }
    let mut done = Resets::default();
    let mut key_ops = Vec::new();
    for (table, id) in [
        ("virtual_keys", "key_hash"),
        ("teams", "team_id"),
        ("users", "user_id"),
    ] {
        // Table and column names are constants above, not input.
        let due = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {id}::text AS id, budget_duration FROM {table}
              WHERE budget_reset_at <= now() AND budget_duration IS NOT NULL
              ORDER BY {id} LIMIT 10000 FOR UPDATE"
        )))
        .fetch_all(&mut *tx)
        .await?;
        let mut ids = Vec::with_capacity(due.len());
        let mut intervals = Vec::with_capacity(due.len());
        for r in &due {
            let text: String = r.try_get("budget_duration")?;
            match budget::parse(&text) {
                Ok(w) => {
                    ids.push(r.try_get::<String, _>("id")?);
                    intervals.push(w.interval);
                }
                Err(e) => tracing::warn!(table, error = %e, "unreadable budget_duration skipped"),
            }
        }
        if ids.is_empty() {
            continue;
        }
        let cast = if table == "virtual_keys" {
            "u.id::bytea"
        } else {
            "u.id"
        };
        let reset = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} x SET spend = 0, budget_reset_at = now() + u.iv::interval,
                    updated_at = now()
               FROM UNNEST($1::text[], $2::text[]) AS u(id, iv)
              WHERE x.{id} = {cast}
             RETURNING x.{id}"
        )))
        .bind(&ids)
        .bind(&intervals)
        .fetch_all(&mut *tx)
        .await?;
        let n = reset.len() as u64;
        match table {
            "virtual_keys" => done.keys = n,
            "teams" => done.teams = n,
            _ => done.users = n,
        }
        for r in &reset {
            key_ops.push(match table {
                "virtual_keys" => {
                    let h: Vec<u8> = r.try_get(id)?;
                    DeltaOp::KeySpend {
                        hash: stored_hash(&h, "virtual_keys.key_hash")?,
                        spend: 0.0,
                    }
                }
                // A scope without a budget is not on data planes: the op is ignored there.
                _ => DeltaOp::ScopeSpend {
                    kind: if table == "teams" {
                        ScopeKind::Team
                    } else {
                        ScopeKind::User
                    },
                    id: r.try_get(id)?,
                    spend: 0.0,
                },
            });
        }
    }
    // Per-model key budgets whose window ended: back to zero; the next spend starts a
    // new window.
    let ended = sqlx::query(
        "UPDATE key_model_spend SET spend = 0, reset_at = NULL
          WHERE reset_at <= now() RETURNING key_hash, model",
    )
    .fetch_all(&mut *tx)
    .await?;
    done.key_models = ended.len() as u64;
    for r in &ended {
        let h: Vec<u8> = r.try_get("key_hash")?;
        key_ops.push(DeltaOp::KeyModelSpend {
            hash: stored_hash(&h, "key_model_spend.key_hash")?,
            model: r.try_get("model")?,
            spend: 0.0,
        });
    }
    if done.total() == 0 {
        return Ok(done);
    }
    let version = if key_ops.is_empty() {
        None
    } else {
        Some(changes::append(&mut tx, key_ops).await?)
    };
    audit::record(
        &mut *tx,
        &Actor::system("budget-reset"),
        audit::Entry {
            action: "budget.reset",
            object_type: "budget",
            object_id: "",
            before: None,
            after: Some(serde_json::json!({ "reset": done.total() })),
            snapshot_version: version,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(done)
}
