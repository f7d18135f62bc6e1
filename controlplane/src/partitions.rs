//! `spend_logs` partitions: one per month (UTC), created ahead of time so no row lands in
//! the default partition, and, with a retention, old months detached (kept as plain
//! tables for the operator to archive or drop). One replica works at a time, under a
//! transaction-scoped advisory lock; the pass runs at start and every hour.

use std::time::Duration;

use sqlx::PgPool;

use crate::error::StoreError;

/// Advisory lock id of the partition pass ("RIQM").
const PARTITION_LOCK: i64 = 0x5249_514D;
const EVERY: Duration = Duration::from_secs(3600);

/// A calendar month, counted from year 0 (so months compare and step as integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month(i32);

impl Month {
    pub fn new(year: i32, month: u32) -> Self {
        Self(year * 12 + month as i32 - 1)
    }
    fn year(self) -> i32 {
        self.0.div_euclid(12)
    }
    fn month(self) -> i32 {
        self.0.rem_euclid(12) + 1
    }
    fn plus(self, n: i32) -> Self {
        Self(self.0 + n)
    }
    /// The partition's name: `spend_logs_y2026m12`.
    pub fn table(self) -> String {
        format!("spend_logs_y{:04}m{:02}", self.year(), self.month())
    }
    fn from_table(name: &str) -> Option<Self> {
        let rest = name.strip_prefix("spend_logs_y")?;
        let (y, m) = rest.split_once('m')?;
        let (y, m) = (y.parse().ok()?, m.parse().ok()?);
        (1..=12).contains(&m).then(|| Self::new(y, m))
    }
    /// Its first instant, UTC, as PostgreSQL reads it.
    fn start(self) -> String {
        format!("{:04}-{:02}-01 00:00:00+00", self.year(), self.month())
    }
}

/// What a pass does.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Months created after the current one.
    pub ahead: u32,
    /// Months kept attached, the current one included; `None` keeps every month.
    pub retention: Option<u32>,
}

/// What a pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub created: Vec<String>,
    pub detached: Vec<String>,
}

/// Runs a pass now and every hour, forever.
pub async fn run(pool: PgPool, policy: Policy) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        match maintain(&pool, policy).await {
            Ok(p) if p == Pass::default() => {}
            Ok(p) => {
                tracing::info!(created = ?p.created, detached = ?p.detached, "spend_logs partitions")
            }
            Err(e) => tracing::warn!(error = %e, "spend_logs partition pass failed"),
        }
    }
}

/// One pass for the current month (UTC, by the database's clock).
pub async fn maintain(pool: &PgPool, policy: Policy) -> Result<Pass, StoreError> {
    let (year, month): (i32, i32) = sqlx::query_as(
        "SELECT extract(year FROM now() AT TIME ZONE 'UTC')::int,
                extract(month FROM now() AT TIME ZONE 'UTC')::int",
    )
    .fetch_one(pool)
    .await?;
    maintain_at(pool, Month::new(year, month as u32), policy).await
}

/// One pass as if the current month were `now`. The current month is created too when
/// the default partition holds none of its rows (a fresh install); otherwise its rows stay
/// in the default partition and the next month is the first of its own.
pub async fn maintain_at(pool: &PgPool, now: Month, policy: Policy) -> Result<Pass, StoreError> {
    let mut tx = pool.begin().await?;
    let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    let mut pass = Pass::default();
    if !got {
        return Ok(pass);
    }
    let existing: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
          WHERE p.relname = 'spend_logs'",
    )
    .fetch_all(&mut *tx)
    .await?;
    let attached: Vec<Month> = existing
        .iter()
        .filter_map(|(n,)| Month::from_table(n))
        .collect();

    for m in (0..=policy.ahead as i32).map(|i| now.plus(i)) {
        if attached.contains(&m) {
            continue;
        }
        let (lo, hi) = (m.start(), m.plus(1).start());
        if m == now {
            let (in_default,): (bool,) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM spend_logs_default
                                 WHERE started_at >= $1::timestamptz AND started_at < $2::timestamptz)",
            )
            .bind(&lo)
            .bind(&hi)
            .fetch_one(&mut *tx)
            .await?;
            if in_default {
                continue;
            }
        }
        // Names and bounds are computed here from integers, not input.
        let table = m.table();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} PARTITION OF spend_logs FOR VALUES FROM ('{lo}') TO ('{hi}')"
        )))
        .execute(&mut *tx)
        .await?;
        pass.created.push(table);
    }

    if let Some(keep) = policy.retention {
        let oldest_kept = now.plus(1 - keep.max(1) as i32);
        for m in attached.iter().filter(|m| **m < oldest_kept) {
            let table = m.table();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE spend_logs DETACH PARTITION {table}"
            )))
            .execute(&mut *tx)
            .await?;
            pass.detached.push(table);
        }
    }
    tx.commit().await?;
    Ok(pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_step_across_years_and_name_their_tables() {
        let dec = Month::new(2026, 12);
        assert_eq!(dec.table(), "spend_logs_y2026m12");
        assert_eq!(dec.plus(1).table(), "spend_logs_y2027m01");
        assert_eq!(dec.plus(-12).table(), "spend_logs_y2025m12");
        assert_eq!(dec.plus(1).start(), "2027-01-01 00:00:00+00");
        assert_eq!(Month::from_table("spend_logs_y2027m01"), Some(dec.plus(1)));
        assert_eq!(Month::from_table("spend_logs_default"), None);
        assert_eq!(Month::from_table("spend_logs_y2027m13"), None);
    }
}
