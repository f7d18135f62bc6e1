//! The per-version report: what each routing-model version decided since a point in time
//! (from `spend_logs.router_*` and `shadow_*`), what it cost, and the feedback on it
//! (`routing_feedback`, by request id). The database aggregates; the 95 % intervals are
//! computed here.

use sqlx::Row;

use super::{read, Version};
use crate::error::StoreError;

/// The report's window when none is given: the last 7 days.
const DEFAULT_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.96;

/// One version's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub version: Version,
    pub served: Served,
    pub shadow: Shadowed,
}

/// The requests a version decided: as the serving version or as the A/B version.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub requests: i64,
    /// Of them, those it decided as the A/B version.
    pub ab_requests: i64,
    /// USD.
    pub cost: f64,
    /// `None` without requests.
    pub cost_per_request: Option<f64>,
    pub feedback: Feedback,
}

/// The requests a version decided in shadow, never acted on.
#[derive(Debug, Clone, PartialEq)]
pub struct Shadowed {
    pub requests: i64,
    /// Of them, those with both the shadow's and the acting router's choice.
    pub compared: i64,
    /// Of those, the ones where the two chose the same candidate.
    pub agreed: i64,
    /// `agreed / compared`; `None` when nothing was compared.
    pub agreement: Option<f64>,
    /// The agreement's 95 % Wilson interval.
    pub agreement_interval: Option<Interval>,
    /// Feedback on the compared requests where the shadow agreed ...
    pub feedback_agreed: Feedback,
    /// ... and where it did not: what the acting router's choice scored there.
    pub feedback_disagreed: Feedback,
}

/// Feedback scores on a set of requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub n: i64,
    /// `None` without scores.
    pub mean: Option<f64>,
    /// 95 %: Wilson when every score is 0 or 1, else mean ± t·sd/√n (Student), within
    /// [0, 1]; `None` below 2 scores.
    pub interval: Option<Interval>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The start of the default window: 7 days ago, in Unix milliseconds.
pub fn default_since_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    now - DEFAULT_WINDOW_MS
}

/// One row per version of `strategy` (every strategy when empty) that is serving, under
/// evaluation, or decided requests logged since `since_ms` (Unix milliseconds), oldest
/// version first.
pub async fn report(
    pool: &sqlx::PgPool,
    strategy: &str,
    since_ms: i64,
) -> Result<Vec<ReportRow>, StoreError> {
    let strategy = strategy.trim().trim_start_matches("llmrouter-");
    let rows = sqlx::query(concat!(
        "WITH logs AS (
             SELECT l.router_sha256, l.router_arm, l.router_candidate, l.shadow_sha256,
                    l.shadow_candidate, l.cost, f.score
               FROM spend_logs l LEFT JOIN routing_feedback f USING (request_id)
              WHERE l.started_at >= to_timestamp($2 / 1000.0)
                AND (l.router_sha256 IS NOT NULL OR l.shadow_sha256 IS NOT NULL)
         ),
         served AS (
             SELECT router_sha256 AS served_sha256, count(*) AS served_requests,
                    count(*) FILTER (WHERE router_arm = 'ab') AS served_ab_requests,
                    sum(cost) AS served_cost, count(score) AS served_n,
                    avg(score) AS served_mean, stddev_samp(score) AS served_sd,
                    bool_and(score IN (0, 1)) AS served_binary
               FROM logs WHERE router_sha256 IS NOT NULL GROUP BY 1
         ),
         shadowed AS (
             SELECT shadow_sha256 AS shadow_sha256, count(*) AS shadow_requests,
                    count(*) FILTER (WHERE shadow_candidate IS NOT NULL
                                       AND router_candidate IS NOT NULL) AS shadow_compared,
                    count(*) FILTER (WHERE shadow_candidate = router_candidate) AS shadow_agreed,
                    count(score) FILTER (WHERE shadow_candidate = router_candidate) AS agreed_n,
                    avg(score) FILTER (WHERE shadow_candidate = router_candidate) AS agreed_mean,
                    stddev_samp(score) FILTER (WHERE shadow_candidate = router_candidate)
                        AS agreed_sd,
                    bool_and(score IN (0, 1)) FILTER (WHERE shadow_candidate = router_candidate)
                        AS agreed_binary,
                    count(score) FILTER (WHERE shadow_candidate <> router_candidate)
                        AS disagreed_n,
                    avg(score) FILTER (WHERE shadow_candidate <> router_candidate)
                        AS disagreed_mean,
                    stddev_samp(score) FILTER (WHERE shadow_candidate <> router_candidate)
                        AS disagreed_sd,
                    bool_and(score IN (0, 1)) FILTER (WHERE shadow_candidate <> router_candidate)
                        AS disagreed_binary
               FROM logs WHERE shadow_sha256 IS NOT NULL GROUP BY 1
         )
         SELECT ",
        columns!(),
        ",
                COALESCE(served_requests, 0) AS served_requests,
                COALESCE(served_ab_requests, 0) AS served_ab_requests,
                COALESCE(served_cost, 0)::float8 AS served_cost,
                COALESCE(served_n, 0) AS served_n, served_mean, served_sd, served_binary,
                COALESCE(shadow_requests, 0) AS shadow_requests,
                COALESCE(shadow_compared, 0) AS shadow_compared,
                COALESCE(shadow_agreed, 0) AS shadow_agreed,
                COALESCE(agreed_n, 0) AS agreed_n, agreed_mean, agreed_sd, agreed_binary,
                COALESCE(disagreed_n, 0) AS disagreed_n, disagreed_mean, disagreed_sd,
                disagreed_binary
           FROM routing_model_versions
           LEFT JOIN served ON served_sha256 = sha256
           LEFT JOIN shadowed ON shadow_sha256 = sha256
          WHERE ($1 = '' OR strategy = $1)
            AND (active OR mode IS NOT NULL OR served_sha256 IS NOT NULL
                 OR shadow_sha256 IS NOT NULL)
          ORDER BY id"
    ))
    .bind(strategy)
    .bind(since_ms)
    .fetch_all(pool)
    .await?;
    rows.iter().map(row).collect()
}

fn row(r: &sqlx::postgres::PgRow) -> Result<ReportRow, StoreError> {
    let feedback = |prefix: &str| -> Result<Feedback, StoreError> {
        Ok(summary(
            r.try_get(format!("{prefix}_n").as_str())?,
            r.try_get(format!("{prefix}_mean").as_str())?,
            r.try_get(format!("{prefix}_sd").as_str())?,
            r.try_get::<Option<bool>, _>(format!("{prefix}_binary").as_str())?
                .unwrap_or(false),
        ))
    };
    let requests: i64 = r.try_get("served_requests")?;
    let cost: f64 = r.try_get("served_cost")?;
    let compared: i64 = r.try_get("shadow_compared")?;
    let agreed: i64 = r.try_get("shadow_agreed")?;
    Ok(ReportRow {
        version: read(r)?,
        served: Served {
            requests,
            ab_requests: r.try_get("served_ab_requests")?,
            cost,
            cost_per_request: (requests > 0).then(|| cost / requests as f64),
            feedback: feedback("served")?,
        },
        shadow: Shadowed {
            requests: r.try_get("shadow_requests")?,
            compared,
            agreed,
            agreement: (compared > 0).then(|| agreed as f64 / compared as f64),
            agreement_interval: wilson(agreed, compared),
            feedback_agreed: feedback("agreed")?,
            feedback_disagreed: feedback("disagreed")?,
        },
    })
}

/// Feedback of `n` scores with their mean and sample standard deviation; `binary`: every
/// score is 0 or 1 (thumbs), whose mean gets a Wilson interval.
fn summary(n: i64, mean: Option<f64>, sd: Option<f64>, binary: bool) -> Feedback {
    let interval = match (mean, sd) {
        (Some(mean), _) if binary && n >= 2 => wilson((mean * n as f64).round() as i64, n),
        (Some(mean), Some(sd)) => mean_interval(n, mean, sd),
        _ => None,
    };
    Feedback { n, mean, interval }
}

/// The 95 % interval of a mean of `n` scores in [0, 1]: mean ± t·sd/√n with Student's t
/// for n − 1 degrees of freedom, clamped to [0, 1]; `None` below 2 scores.
fn mean_interval(n: i64, mean: f64, sd: f64) -> Option<Interval> {
    if n < 2 {
        return None;
    }
    let half = t975(n - 1) * sd / (n as f64).sqrt();
    Some(Interval {
        low: (mean - half).clamp(0.0, 1.0),
        high: (mean + half).clamp(0.0, 1.0),
    })
}

/// Student's t 0.975 quantile for `df` degrees of freedom: the table to 30, then
/// 1.96 + 2.4/df (within 0.002 of the exact value past 30).
fn t975(df: i64) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match usize::try_from(df) {
        Ok(d @ 1..=30) => TABLE[d - 1],
        _ => Z95 + 2.4 / df.max(1) as f64,
    }
}

/// The 95 % Wilson score interval of `k` successes in `n` trials; `None` when `n` is 0.
fn wilson(k: i64, n: i64) -> Option<Interval> {
    if n <= 0 {
        return None;
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    Some(Interval {
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(i: Option<Interval>, low: f64, high: f64) -> bool {
        i.is_some_and(|i| (i.low - low).abs() < 5e-4 && (i.high - high).abs() < 5e-4)
    }

    #[test]
    fn wilson_intervals_match_known_values() {
        assert!(close(wilson(8, 10), 0.490, 0.943), "{:?}", wilson(8, 10));
        assert!(close(wilson(0, 10), 0.0, 0.2775), "{:?}", wilson(0, 10));
        assert!(close(wilson(10, 10), 0.7225, 1.0), "{:?}", wilson(10, 10));
        assert!(
            close(wilson(50, 100), 0.404, 0.596),
            "{:?}",
            wilson(50, 100)
        );
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn mean_intervals_are_clamped_and_need_two_scores() {
        // sd 0.5 over 25 scores: ± t(24) · 0.1.
        assert!(close(mean_interval(25, 0.5, 0.5), 0.2936, 0.7064));
        // 4 scores: t(3) = 3.182.
        assert!(close(mean_interval(4, 0.7, 0.2), 0.3818, 1.0));
        assert!(close(mean_interval(3, 0.5, 0.5), 0.0, 1.0));
        assert_eq!(mean_interval(1, 0.5, 0.0), None);
        assert!((t975(60) - 2.000).abs() < 0.002 && (t975(120) - 1.980).abs() < 0.002);
        assert_eq!(summary(1, Some(1.0), None, true).interval, None);
        // Thumbs: 3 up of 3 is not certainty.
        assert!(close(
            summary(3, Some(1.0), Some(0.0), true).interval,
            0.4385,
            1.0
        ));
        assert!(close(
            summary(10, Some(0.8), Some(0.42), true).interval,
            0.490,
            0.943
        ));
        assert_eq!(
            summary(0, None, None, false),
            Feedback {
                n: 0,
                mean: None,
                interval: None
            }
        );
    }
}
