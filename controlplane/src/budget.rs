//! Budget windows (`budget_duration`) as LiteLLM writes them: `30s`, `30m`, `24h`, `30d`,
//! `1mo`. The next reset is the current time plus the window, computed by PostgreSQL's
//! interval arithmetic (so `1mo` is a calendar month).

use crate::error::StoreError;

/// A validated `budget_duration`, as a PostgreSQL interval literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// What the user wrote, stored back unchanged.
    pub text: String,
    /// `"30 days"`, `"1 months"`, ...
    pub interval: String,
}

/// The grammar of [`parse`], for error messages; the admin API's spec states it as the
/// pattern `^[1-9][0-9]{0,5}(s|m|h|d|mo)$`.
pub const GRAMMAR: &str =
    "1 to 6 digits without a leading zero, then a unit: s, m, h, d or mo (e.g. 30d)";

/// Reads a window exactly as [`GRAMMAR`] says: nothing around it (no spaces), at most six
/// digits, so that `now()` plus the window stays far inside PostgreSQL's timestamps.
pub fn parse(text: &str) -> Result<Window, StoreError> {
    let bad = || StoreError::Invalid(format!("budget_duration `{text}`: expected {GRAMMAR}"));
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    if !(1..=6).contains(&n.len()) || n.starts_with('0') {
        return Err(bad());
    }
    let unit = match unit {
        "s" => "seconds",
        "m" => "minutes",
        "h" => "hours",
        "d" => "days",
        "mo" => "months",
        _ => return Err(bad()),
    };
    Ok(Window {
        text: text.to_owned(),
        interval: format!("{n} {unit}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litellm_units() {
        assert_eq!(parse("30d").unwrap().interval, "30 days");
        assert_eq!(parse("1mo").unwrap().interval, "1 months");
        assert_eq!(parse("90s").unwrap().interval, "90 seconds");
        assert_eq!(parse("999999mo").unwrap().interval, "999999 months");
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "0d",
            "-1d",
            "1.5h",
            " 90s ",
            "90s ",
            "030d",
            "1000000d",
            "4294967296mo",
            "٣d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}

/// Budget and rate limits shared by teams, users and budgets; `None` leaves a field as it
/// is on update.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
}

/// Limits as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LimitsRecord {
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub budget_duration: Option<String>,
    pub budget_reset_at: Option<i64>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
    pub max_parallel_requests: Option<i64>,
}

/// The columns [`LimitsRecord::read`] expects.
pub const LIMIT_COLUMNS: &str = "max_budget, soft_budget, budget_duration,
    EXTRACT(EPOCH FROM budget_reset_at)::bigint AS budget_reset_at,
    rpm_limit, tpm_limit, max_parallel_requests";

/// `SET` clauses for the limits, with parameters `$n..$n+6`.
pub fn set_clauses(n: usize) -> String {
    format!(
        "max_budget = COALESCE(${0}, max_budget), soft_budget = COALESCE(${1}, soft_budget),
         budget_duration = COALESCE(${2}, budget_duration),
         budget_reset_at = CASE WHEN ${3}::interval IS NULL THEN budget_reset_at
                                ELSE now() + ${3}::interval END,
         rpm_limit = COALESCE(${4}, rpm_limit), tpm_limit = COALESCE(${5}, tpm_limit),
         max_parallel_requests = COALESCE(${6}, max_parallel_requests)",
        n,
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        n + 5,
        n + 6
    )
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl Limits {
    /// Validates; returns the parsed window.
    pub fn check(&self) -> Result<Option<Window>, StoreError> {
        for (name, v) in [
            ("max_budget", self.max_budget),
            ("soft_budget", self.soft_budget),
        ] {
            if v.is_some_and(|b| !b.is_finite() || b < 0.0) {
                return Err(StoreError::Invalid(format!(
                    "{name} must be a non-negative number"
                )));
            }
        }
        for (name, v) in [
            ("rpm_limit", self.rpm_limit),
            ("tpm_limit", self.tpm_limit),
            ("max_parallel_requests", self.max_parallel_requests),
        ] {
            if v.is_some_and(|n| i64::try_from(n).is_err()) {
                return Err(StoreError::Invalid(format!("{name} is too large")));
            }
        }
        self.budget_duration.as_deref().map(parse).transpose()
    }

    /// Binds the seven parameters of [`set_clauses`] (after [`Self::check`]).
    pub fn bind<'q>(&self, q: PgQuery<'q>, window: Option<&Window>) -> PgQuery<'q> {
        let n = |v: Option<u64>| v.and_then(|n| i64::try_from(n).ok());
        q.bind(self.max_budget)
            .bind(self.soft_budget)
            .bind(window.map(|w| w.text.clone()))
            .bind(window.map(|w| w.interval.clone()))
            .bind(n(self.rpm_limit))
            .bind(n(self.tpm_limit))
            .bind(n(self.max_parallel_requests))
    }
}

impl LimitsRecord {
    pub fn read(r: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        use sqlx::Row;
        Ok(Self {
            max_budget: r.try_get("max_budget")?,
            soft_budget: r.try_get("soft_budget")?,
            budget_duration: r.try_get("budget_duration")?,
            budget_reset_at: r.try_get("budget_reset_at")?,
            rpm_limit: r.try_get("rpm_limit")?,
            tpm_limit: r.try_get("tpm_limit")?,
            max_parallel_requests: r.try_get("max_parallel_requests")?,
        })
    }
}

// ---- the `budgets` table: reusable limits ----

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BudgetRecord {
    pub budget_id: String,
    pub limits: LimitsRecord,
    pub created_at: i64,
    pub updated_at: i64,
}

fn budget_columns() -> String {
    format!(
        "budget_id, {LIMIT_COLUMNS}, EXTRACT(EPOCH FROM created_at)::bigint AS created_at,
         EXTRACT(EPOCH FROM updated_at)::bigint AS updated_at"
    )
}

fn read_budget(r: &sqlx::postgres::PgRow) -> Result<BudgetRecord, StoreError> {
    use sqlx::Row;
    Ok(BudgetRecord {
        budget_id: r.try_get("budget_id")?,
        limits: LimitsRecord::read(r)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

async fn load_budget(conn: &mut sqlx::PgConnection, id: &str) -> Result<BudgetRecord, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM budgets WHERE budget_id = $1",
        budget_columns()
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("budget `{id}` not found")))?;
    read_budget(&row)
}

/// Creates (`create`) or updates a budget.
pub async fn upsert(
    pool: &sqlx::PgPool,
    actor: &crate::audit::Actor,
    id: Option<String>,
    limits: &Limits,
    create: bool,
) -> Result<BudgetRecord, StoreError> {
    let window = limits.check()?;
    let id = match id.filter(|i| !i.is_empty()) {
        Some(i) => i,
        None if create => crate::crypto::new_id()?,
        None => return Err(StoreError::Invalid("budget_id is required".into())),
    };
    let mut tx = pool.begin().await?;
    let before = if create {
        sqlx::query("INSERT INTO budgets (budget_id) VALUES ($1)")
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::on_constraint(
                    e,
                    [(
                        "budgets_pkey",
                        StoreError::Conflict("budget already exists".into()),
                    )],
                )
            })?;
        None
    } else {
        Some(load_budget(&mut tx, &id).await?)
    };
    let q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE budgets SET {}, updated_at = now() WHERE budget_id = $1",
        set_clauses(2)
    )))
    .bind(&id);
    limits.bind(q, window.as_ref()).execute(&mut *tx).await?;
    let rec = load_budget(&mut tx, &id).await?;
    let version = send_orgs_of(&mut tx, std::slice::from_ref(&id)).await?;
    crate::audit::record(
        &mut *tx,
        actor,
        crate::audit::Entry {
            action: if create {
                "budget.create"
            } else {
                "budget.update"
            },
            object_type: "budget",
            object_id: &id,
            before: before.as_ref().and_then(crate::audit::json),
            after: crate::audit::json(&rec),
            snapshot_version: version,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(rec)
}

pub async fn delete(
    pool: &sqlx::PgPool,
    actor: &crate::audit::Actor,
    ids: &[String],
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Err(StoreError::Invalid("no budgets given".into()));
    }
    let mut tx = pool.begin().await?;
    for id in ids {
        let before = load_budget(&mut tx, id).await?;
        sqlx::query("DELETE FROM budgets WHERE budget_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        crate::audit::record(
            &mut *tx,
            actor,
            crate::audit::Entry {
                action: "budget.delete",
                object_type: "budget",
                object_id: id,
                before: crate::audit::json(&before),
                after: None,
                snapshot_version: None,
            },
        )
        .await?;
    }
    send_orgs_of(&mut tx, ids).await?;
    tx.commit().await?;
    Ok(())
}

/// Organizations take their limits from their budget: after budgets change, their
/// organizations' views go to data planes.
async fn send_orgs_of(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    budget_ids: &[String],
) -> Result<Option<u64>, StoreError> {
    let orgs: Vec<String> =
        sqlx::query_scalar("SELECT organization_id FROM organizations WHERE budget_id = ANY($1)")
            .bind(budget_ids)
            .fetch_all(&mut **tx)
            .await?;
    let which: Vec<(routeiq_proto::ScopeKind, &str)> = orgs
        .iter()
        .map(|o| (routeiq_proto::ScopeKind::Organization, o.as_str()))
        .collect();
    crate::scopes::send(tx, &which, false).await
}

/// Budgets, all or those with the given ids.
pub async fn list(
    pool: &sqlx::PgPool,
    ids: &[String],
    page: crate::Page,
) -> Result<(Vec<BudgetRecord>, u64), StoreError> {
    const FILTER: &str = "cardinality($1::text[]) = 0 OR budget_id = ANY($1)";
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM budgets WHERE {FILTER}
          ORDER BY created_at, budget_id LIMIT $2 OFFSET $3",
        budget_columns()
    )))
    .bind(ids)
    .bind(page.limit())
    .bind(page.offset())
    .fetch_all(pool)
    .await?;
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM budgets WHERE {FILTER}"
    )))
    .bind(ids)
    .fetch_one(pool)
    .await?;
    Ok((
        rows.iter().map(read_budget).collect::<Result<_, _>>()?,
        total as u64,
    ))
}
