//! Usage ingestion: data planes publish one `routeiq.v1.UsageEvent` per request to the
//! `ROUTEIQ_USAGE` stream; this durable consumer writes them to PostgreSQL in batches.
//!
//! A batch is one statement in one transaction: events go into `spend_logs` with `ON
//! CONFLICT DO NOTHING` (primary key: request id and start time), and only the rows actually
//! inserted add to key, team, user and organization spend (an event's organization is its
//! key's, else its team's) and to `daily_spend`. The messages are acked
//! after the commit. A redelivered event (crash before the ack, a data plane's retry) finds
//! its row and counts nothing: no loss, no double count.
//!
//! Every key with a `max_budget`, and every team, user and organization with a budget,
//! whose spend grew in a batch gets a `KeySpend` / `ScopeSpend` op in one delta of the
//! same transaction: data planes enforce budgets on spend that is one batch old at most
//! (plus what they spent themselves since, see the data plane's `budgets`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::AckKind;
use futures_util::StreamExt;
use opentelemetry::trace::{Span as _, Status as SpanStatus};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracer;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use prost::Message;
use routeiq_nats::{reconnected, Reconnects};
use routeiq_proto::wire::pb;
use routeiq_proto::{subjects, DeltaOp, ScopeKind, UsageEvent};
use sqlx::{PgPool, Row};

use crate::changes;
use crate::error::StoreError;
use crate::keys::stored_hash;
use crate::nats::Streams;

#[derive(Debug, Clone)]
pub struct Config {
    pub max_batch: usize,
    /// How long a batch waits to fill once its first event arrived.
    pub batch_wait: Duration,
    /// With spans exported: one `routeiq.usage.ingest` consumer span per event, a child of
    /// the request's span (the message's `traceparent`), from its delivery to its commit.
    pub tracer: Option<SdkTracer>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_batch: 5_000,
            batch_wait: Duration::from_millis(50),
            tracer: None,
        }
    }
}

/// How often an idle consumer reads its backlog.
const PENDING_CHECK: Duration = Duration::from_secs(5);
/// How soon a batch that could not be written is delivered again.
const REDELIVERY: Duration = Duration::from_secs(1);
/// The longest text an event's field is stored with, in bytes.
const MAX_TEXT: usize = 1024;

/// What ingestion has done, for metrics.
#[derive(Debug, Clone)]
pub struct Status {
    pub ingested: IntCounter,
    pub duplicates: IntCounter,
    pub rejected: IntCounter,
    /// From an event's arrival on the stream to its commit here (each delivery of it).
    pub lag: Histogram,
    /// Events on the stream not yet delivered to the consumer: as of the last delivery,
    /// and checked every few seconds while none arrive.
    pub pending: IntGauge,
}

impl Status {
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let s = Self {
            ingested: IntCounter::new(
                "routeiq_usage_events_ingested_total",
                "Usage events written to spend_logs",
            )?,
            duplicates: IntCounter::new(
                "routeiq_usage_events_duplicate_total",
                "Usage events delivered again and counted once",
            )?,
            rejected: IntCounter::new(
                "routeiq_usage_events_rejected_total",
                "Usage events that did not decode, dropped",
            )?,
            lag: Histogram::with_opts(
                HistogramOpts::new(
                    "routeiq_usage_ingest_lag_seconds",
                    "From a usage event's arrival on the stream to its commit in PostgreSQL",
                )
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                    900.0, 3600.0,
                ]),
            )?,
            pending: IntGauge::new(
                "routeiq_usage_ingest_pending",
                "Usage events on the stream not yet delivered to this consumer",
            )?,
        };
        r.register(Box::new(s.ingested.clone()))?;
        r.register(Box::new(s.duplicates.clone()))?;
        r.register(Box::new(s.rejected.clone()))?;
        r.register(Box::new(s.lag.clone()))?;
        r.register(Box::new(s.pending.clone()))?;
        Ok(s)
    }

    /// Counts a committed batch of `events`, `inserted` of them new, which the stream
    /// stored at `stored`.
    fn committed(&self, events: usize, inserted: u64, stored: &[async_nats::datetime::DateTime]) {
        self.ingested.inc_by(inserted);
        self.duplicates.inc_by(events as u64 - inserted);
        let now = async_nats::datetime::now();
        for at in stored {
            // The stream's clock against this host's: a time "after" now is no lag.
            self.lag.observe((now - *at).as_seconds_f64().max(0.0));
        }
    }
}

/// Runs forever, starting over after a failure of NATS (unacked events are redelivered),
/// and at once when NATS reconnects (a restarted server has forgotten the pending pull). A
/// batch PostgreSQL could not take is handed back and redelivered a second later, to the
/// same consumer.
pub async fn run(
    pool: PgPool,
    streams: Arc<Streams>,
    cfg: Config,
    status: Status,
    mut reconnects: Reconnects,
) {
    loop {
        reconnects.borrow_and_update();
        match consume(&pool, &streams, &cfg, &status, &mut reconnects).await {
            Ok(()) => tracing::info!("NATS reconnected; usage consumer started anew"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "usage ingestion stopped; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = reconnected(&mut reconnects) => {}
                }
            }
        }
    }
}

/// Consumes until a failure, or `Ok` when NATS reconnects.
async fn consume(
    pool: &PgPool,
    streams: &Streams,
    cfg: &Config,
    status: &Status,
    reconnects: &mut Reconnects,
) -> anyhow::Result<()> {
    // Recreates the streams if NATS lost them (idempotent otherwise).
    crate::nats::ensure(streams.js.clone(), streams.usage_max_bytes).await?;
    let consumer = streams
        .usage
        .get_or_create_consumer(
            subjects::USAGE_CONSUMER,
            pull::Config {
                durable_name: Some(subjects::USAGE_CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                // After a crash, events in flight are redelivered this long after delivery.
                ack_wait: Duration::from_secs(10),
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(cfg.max_batch)
        .messages()
        .await?;
    // While no event arrives, the backlog is read from the consumer now and then (another
    // replica may be taking the events).
    let mut idle = tokio::time::interval(PENDING_CHECK);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            first = messages.next() => first,
            () = reconnected(reconnects) => return Ok(()),
            _ = idle.tick() => {
                if let Ok(info) = consumer.get_info().await {
                    status.pending.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                }
                continue;
            }
        };
        let Some(first) = first else {
            anyhow::bail!("the usage consumer ended");
        };
        let mut batch = vec![first?];
        let deadline = tokio::time::Instant::now() + cfg.batch_wait;
        while batch.len() < cfg.max_batch {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(m)) => batch.push(m?),
                Ok(None) | Err(_) => break,
            }
        }
        if let Some(info) = batch.last().and_then(|m| m.info().ok()) {
            status
                .pending
                .set(i64::try_from(info.pending).unwrap_or(i64::MAX));
        }
        let mut events = Vec::with_capacity(batch.len());
        let mut valid = Vec::with_capacity(batch.len());
        let mut stored = Vec::with_capacity(batch.len());
        let mut spans = Vec::new();
        for m in batch {
            match pb::UsageEvent::decode(m.payload.as_ref())
                .map_err(|e| e.to_string())
                .and_then(|e| UsageEvent::try_from(e).map_err(|e| e.to_string()))
            {
                Ok(mut e) => {
                    storable(&mut e);
                    if let Some(span) = cfg.tracer.as_ref().and_then(|t| ingest_span(t, &m, &e)) {
                        spans.push(span);
                    }
                    if let Ok(info) = m.info() {
                        stored.push(info.published);
                    }
                    events.push(e);
                    valid.push(m);
                }
                Err(e) => {
                    tracing::warn!(subject = %m.subject, error = %e, "invalid usage event dropped");
                    status.rejected.inc();
                    m.ack_with(AckKind::Term)
                        .await
                        .map_err(|e| anyhow::anyhow!(e))?;
                }
            }
        }
        let written = write_retrying(pool, &events).await;
        for mut span in spans {
            match &written {
                Ok(_) => {
                    span.set_attribute(KeyValue::new("routeiq.usage.batch", events.len() as i64))
                }
                Err(e) => {
                    span.set_attribute(KeyValue::new("error.type", "storage"));
                    span.set_status(SpanStatus::error(e.to_string()));
                }
            }
            span.end();
        }
        match written {
            Ok(inserted) => {
                status.committed(events.len(), inserted, &stored);
                for m in valid {
                    m.ack().await.map_err(|e| anyhow::anyhow!(e))?;
                }
            }
            Err(e) if e.database_unavailable() => {
                tracing::warn!(error = %e, events = events.len(), "usage batch not written; redelivered in a second");
                redeliver(valid).await?;
                // Go on with this consumer: dropping it would leave the events it has
                // already pulled unacknowledged until the ack wait (10 s).
                tokio::select! {
                    () = tokio::time::sleep(REDELIVERY) => {}
                    () = reconnected(reconnects) => return Ok(()),
                }
            }
            Err(e) => {
                // PostgreSQL refused the batch: find the events it refuses, one by one.
                tracing::warn!(error = %e, events = events.len(), "usage batch refused; writing its events one by one");
                let mut rest = events.iter().zip(valid);
                while let Some((event, m)) = rest.next() {
                    match write_retrying(pool, std::slice::from_ref(event)).await {
                        Ok(inserted) => {
                            let stored: Vec<_> =
                                m.info().map(|i| i.published).into_iter().collect();
                            status.committed(1, inserted, &stored);
                            m.ack().await.map_err(|e| anyhow::anyhow!(e))?;
                        }
                        Err(e) if e.database_unavailable() => {
                            let mut back = vec![m];
                            back.extend(rest.by_ref().map(|(_, m)| m));
                            redeliver(back).await?;
                            break;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, request_id = %event.request_id, "usage event refused by PostgreSQL; dropped");
                            status.rejected.inc();
                            m.ack_with(AckKind::Term)
                                .await
                                .map_err(|e| anyhow::anyhow!(e))?;
                        }
                    }
                }
            }
        }
    }
}

/// Hands events back for redelivery in [`REDELIVERY`]: all of them, even if one hand-back
/// fails (the first failure is returned; an event not handed back waits for the ack wait).
async fn redeliver(messages: Vec<async_nats::jetstream::Message>) -> anyhow::Result<()> {
    let mut failed = None;
    for m in messages {
        if let Err(e) = m.ack_with(AckKind::Nak(Some(REDELIVERY))).await {
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), |e| Err(anyhow::anyhow!(e)))
}

/// What PostgreSQL can store of an event's text: no NUL characters (a `text` value cannot
/// hold one), and each field at most [`MAX_TEXT`] bytes (an index row must fit a page; the
/// end user and the model group come from the client).
fn storable(e: &mut UsageEvent) {
    for s in [
        &mut e.request_id,
        &mut e.team_id,
        &mut e.user_id,
        &mut e.model_group,
        &mut e.deployment_id,
        &mut e.provider,
        &mut e.dataplane_id,
        &mut e.end_user,
        &mut e.router_sha256,
        &mut e.router_arm,
        &mut e.router_candidate,
        &mut e.shadow_sha256,
        &mut e.shadow_candidate,
    ] {
        if s.contains('\0') {
            s.retain(|c| c != '\0');
        }
        if s.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
    }
}

/// The `routeiq.usage.ingest` span of one event, in the trace of the request it accounts
/// for; none when the message carries no `traceparent` (the request was in no trace: a
/// span of its own would start one trace per event).
fn ingest_span(
    tracer: &SdkTracer,
    m: &async_nats::jetstream::Message,
    e: &UsageEvent,
) -> Option<opentelemetry_sdk::trace::Span> {
    let traceparent = m.headers.as_ref()?.get("traceparent")?.as_str();
    Some(routeiq_service::telemetry::consumer_span(
        tracer,
        "routeiq.usage.ingest",
        traceparent,
        vec![
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", m.subject.to_string()),
            KeyValue::new("routeiq.request_id", e.request_id.clone()),
            KeyValue::new("routeiq.dataplane.id", e.dataplane_id.clone()),
        ],
    ))
}

/// [`write`], retried when PostgreSQL aborts it for a deadlock or a serialization failure
/// (two replicas' batches touching the same keys in another order): nothing of an aborted
/// attempt was committed, so a retry counts each event once.
async fn write_retrying(pool: &PgPool, events: &[UsageEvent]) -> Result<u64, StoreError> {
    let mut attempt = 0;
    loop {
        match write(pool, events).await {
            Err(StoreError::Db(sqlx::Error::Database(d)))
                if attempt < 5 && matches!(d.code().as_deref(), Some("40P01" | "40001")) =>
            {
                attempt += 1;
                tracing::info!(attempt, code = ?d.code(), "usage batch aborted; retrying");
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            other => return other,
        }
    }
}

/// Writes one batch; returns how many events were new.
pub async fn write(pool: &PgPool, events: &[UsageEvent]) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let n = events.len();
    let mut request_id = Vec::with_capacity(n);
    let mut started_ms = Vec::with_capacity(n);
    let mut key_hash = Vec::with_capacity(n);
    let mut team_id = Vec::with_capacity(n);
    let mut user_id = Vec::with_capacity(n);
    let mut model_group = Vec::with_capacity(n);
    let mut deployment_id = Vec::with_capacity(n);
    let mut provider = Vec::with_capacity(n);
    let mut prompt = Vec::with_capacity(n);
    let mut completion = Vec::with_capacity(n);
    let mut cost = Vec::with_capacity(n);
    let mut latency = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut dataplane = Vec::with_capacity(n);
    let mut end_user = Vec::with_capacity(n);
    let mut cache_hit = Vec::with_capacity(n);
    let mut saved_cost = Vec::with_capacity(n);
    let mut router_sha256 = Vec::with_capacity(n);
    let mut router_arm = Vec::with_capacity(n);
    let mut router_candidate = Vec::with_capacity(n);
    let mut shadow_sha256 = Vec::with_capacity(n);
    let mut shadow_candidate = Vec::with_capacity(n);
    for e in events {
        request_id.push(e.request_id.as_str());
        started_ms.push(e.started_at_ms);
        key_hash.push(e.key_hash.map(|h| h.0.to_vec()).unwrap_or_default());
        team_id.push(e.team_id.as_str());
        user_id.push(e.user_id.as_str());
        model_group.push(e.model_group.as_str());
        deployment_id.push(e.deployment_id.as_str());
        provider.push(e.provider.as_str());
        prompt.push(i64::try_from(e.prompt_tokens).unwrap_or(i64::MAX));
        completion.push(i64::try_from(e.completion_tokens).unwrap_or(i64::MAX));
        cost.push(if e.cost.is_finite() { e.cost } else { 0.0 });
        latency.push(i64::try_from(e.latency_ms).unwrap_or(i64::MAX));
        status.push(i32::from(e.status));
        dataplane.push(e.dataplane_id.as_str());
        end_user.push(e.end_user.as_str());
        cache_hit.push(e.cache_hit);
        saved_cost.push(if e.saved_cost.is_finite() {
            e.saved_cost
        } else {
            0.0
        });
        router_sha256.push(e.router_sha256.as_str());
        router_arm.push(e.router_arm.as_str());
        router_candidate.push(e.router_candidate.as_str());
        shadow_sha256.push(e.shadow_sha256.as_str());
        shadow_candidate.push(e.shadow_candidate.as_str());
    }
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        r"WITH ins AS (
            INSERT INTO spend_logs (request_id, started_at, key_hash, team_id, user_id,
                   model_group, deployment_id, provider, prompt_tokens, completion_tokens, cost,
                   latency_ms, status, dataplane_id, end_user, cache_hit, saved_cost,
                   router_sha256, router_arm, router_candidate, shadow_sha256,
                   shadow_candidate)
            SELECT u.rid, to_timestamp(u.ms / 1000.0), NULLIF(u.kh, '\x'::bytea),
                   NULLIF(u.team, ''), NULLIF(u.usr, ''), u.mg, u.dep, u.prov, u.pt, u.ct,
                   u.cost, u.lat, u.st, u.dp, NULLIF(u.eu, ''), u.hit, u.saved,
                   NULLIF(u.rsha, ''), NULLIF(u.rarm, ''), NULLIF(u.rcand, ''),
                   NULLIF(u.ssha, ''), NULLIF(u.scand, '')
              FROM UNNEST($1::text[], $2::bigint[], $3::bytea[], $4::text[], $5::text[],
                          $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[],
                          $11::float8[], $12::bigint[], $13::int[], $14::text[], $15::text[],
                          $16::bool[], $17::float8[], $18::text[], $19::text[], $20::text[],
                          $21::text[], $22::text[])
                AS u(rid, ms, kh, team, usr, mg, dep, prov, pt, ct, cost, lat, st, dp, eu,
                     hit, saved, rsha, rarm, rcand, ssha, scand)
            ON CONFLICT DO NOTHING
            RETURNING key_hash, team_id, user_id, model_group, cost, prompt_tokens,
                      completion_tokens, started_at
        ),
        k AS (
            UPDATE virtual_keys v SET spend = v.spend + s.cost
              FROM (SELECT key_hash, sum(cost) AS cost FROM ins
                     WHERE key_hash IS NOT NULL GROUP BY key_hash) s
             WHERE v.key_hash = s.key_hash
            RETURNING v.key_hash, v.spend, v.max_budget, s.cost
        ),
        t AS (
            UPDATE teams x SET spend = x.spend + s.cost
              FROM (SELECT team_id, sum(cost) AS cost FROM ins
                     WHERE team_id IS NOT NULL GROUP BY team_id) s
             WHERE x.team_id = s.team_id
            RETURNING x.team_id, x.spend, (x.max_budget IS NOT NULL OR x.soft_budget IS NOT NULL) AS budgeted
        ),
        usr AS (
            UPDATE users x SET spend = x.spend + s.cost
              FROM (SELECT user_id, sum(cost) AS cost FROM ins
                     WHERE user_id IS NOT NULL GROUP BY user_id) s
             WHERE x.user_id = s.user_id
            RETURNING x.user_id, x.spend, (x.max_budget IS NOT NULL OR x.soft_budget IS NOT NULL) AS budgeted
        ),
        o AS (
            UPDATE organizations x SET spend = x.spend + s.cost
              FROM (SELECT COALESCE(vk.organization_id, tm.organization_id) AS org,
                           sum(i.cost) AS cost
                      FROM ins i
                      LEFT JOIN virtual_keys vk ON vk.key_hash = i.key_hash
                      LEFT JOIN teams tm ON tm.team_id = i.team_id
                     GROUP BY 1) s
             WHERE s.org IS NOT NULL AND x.organization_id = s.org
            RETURNING x.organization_id, x.spend, x.budget_id
        ),
        km AS (
            SELECT i.key_hash, i.model_group, sum(i.cost) AS cost,
                   vk.model_max_budget -> i.model_group ->> 'time_period' AS period
              FROM ins i JOIN virtual_keys vk ON vk.key_hash = i.key_hash
             WHERE vk.model_max_budget ? i.model_group
             GROUP BY 1, 2, 4
        ),
        scoped AS (
            SELECT 'team' AS kind, team_id AS id, spend FROM t WHERE budgeted
            UNION ALL
            SELECT 'user', user_id, spend FROM usr WHERE budgeted
            UNION ALL
            SELECT 'organization', o.organization_id, o.spend
              FROM o JOIN budgets b ON b.budget_id = o.budget_id
             WHERE b.max_budget IS NOT NULL OR b.soft_budget IS NOT NULL
        ),
        d AS (
            INSERT INTO daily_spend AS ds (day, key_hash, team_id, user_id, model_group,
                   requests, prompt_tokens, completion_tokens, spend)
            SELECT (started_at AT TIME ZONE 'UTC')::date, COALESCE(key_hash, '\x'::bytea),
                   COALESCE(team_id, ''), COALESCE(user_id, ''), model_group, count(*),
                   sum(prompt_tokens), sum(completion_tokens), sum(cost)
              FROM ins GROUP BY 1, 2, 3, 4, 5
            ON CONFLICT (day, key_hash, team_id, user_id, model_group) DO UPDATE SET
                   requests = ds.requests + EXCLUDED.requests,
                   prompt_tokens = ds.prompt_tokens + EXCLUDED.prompt_tokens,
                   completion_tokens = ds.completion_tokens + EXCLUDED.completion_tokens,
                   spend = ds.spend + EXCLUDED.spend
            RETURNING 1
        ),
        budgeted AS (
            SELECT key_hash, spend FROM k WHERE max_budget IS NOT NULL
        )
        SELECT (SELECT count(*) FROM ins) AS inserted,
               (SELECT count(*) FROM t) + (SELECT count(*) FROM usr) + (SELECT count(*) FROM d)
                   AS touched,
               COALESCE((SELECT array_agg(key_hash) FROM budgeted), '{}') AS budgeted_keys,
               COALESCE((SELECT array_agg(spend) FROM budgeted), '{}') AS budgeted_spend,
               COALESCE((SELECT array_agg(kind) FROM scoped), '{}') AS scope_kinds,
               COALESCE((SELECT array_agg(id) FROM scoped), '{}') AS scope_ids,
               COALESCE((SELECT array_agg(spend) FROM scoped), '{}') AS scope_spend,
               COALESCE((SELECT array_agg(key_hash) FROM km), '{}') AS km_keys,
               COALESCE((SELECT array_agg(model_group) FROM km), '{}') AS km_models,
               COALESCE((SELECT array_agg(cost) FROM km), '{}') AS km_costs,
               COALESCE((SELECT array_agg(period) FROM km), '{}') AS km_periods",
    )
    .bind(&request_id)
    .bind(&started_ms)
    .bind(&key_hash)
    .bind(&team_id)
    .bind(&user_id)
    .bind(&model_group)
    .bind(&deployment_id)
    .bind(&provider)
    .bind(&prompt)
    .bind(&completion)
    .bind(&cost)
    .bind(&latency)
    .bind(&status)
    .bind(&dataplane)
    .bind(&end_user)
    .bind(&cache_hit)
    .bind(&saved_cost)
    .bind(&router_sha256)
    .bind(&router_arm)
    .bind(&router_candidate)
    .bind(&shadow_sha256)
    .bind(&shadow_candidate)
    .fetch_one(&mut *tx)
    .await?;
    let inserted: i64 = row.try_get("inserted")?;
    let budgeted_keys: Vec<Vec<u8>> = row.try_get("budgeted_keys")?;
    let budgeted_spend: Vec<f64> = row.try_get("budgeted_spend")?;
    let scope_kinds: Vec<String> = row.try_get("scope_kinds")?;
    let scope_ids: Vec<String> = row.try_get("scope_ids")?;
    let scope_spend: Vec<f64> = row.try_get("scope_spend")?;
    let mut ops = budgeted_keys
        .iter()
        .zip(budgeted_spend)
        .map(|(h, spend)| {
            Ok(DeltaOp::KeySpend {
                hash: stored_hash(h, "virtual_keys.key_hash")?,
                spend,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    for ((kind, id), spend) in scope_kinds.iter().zip(scope_ids).zip(scope_spend) {
        ops.push(DeltaOp::ScopeSpend {
            kind: ScopeKind::parse(kind)
                .ok_or_else(|| StoreError::Corrupt(format!("scope kind {kind}")))?,
            id,
            spend,
        });
    }
    ops.extend(
        model_spend(
            &mut tx,
            row.try_get("km_keys")?,
            row.try_get("km_models")?,
            row.try_get("km_costs")?,
            row.try_get("km_periods")?,
        )
        .await?,
    );
    if !ops.is_empty() {
        let count = ops.len();
        let version = changes::append(&mut tx, ops).await?;
        tracing::debug!(
            count,
            version,
            "spend of keys, teams, users and organizations with a budget sent"
        );
    }
    tx.commit().await?;
    Ok(inserted as u64)
}

/// Adds a batch's cost to the per-model spend of keys with `model_max_budget`, each in
/// the window of its entry's `time_period` (a window that has ended starts over), and
/// returns the new spends for data planes.
async fn model_spend(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    keys: Vec<Vec<u8>>,
    models: Vec<String>,
    costs: Vec<f64>,
    periods: Vec<Option<String>>,
) -> Result<Vec<DeltaOp>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let intervals: Vec<Option<String>> = periods
        .iter()
        .map(|p| {
            p.as_deref()
                .and_then(|p| crate::budget::parse(p).ok())
                .map(|w| w.interval)
        })
        .collect();
    let rows = sqlx::query(
        "INSERT INTO key_model_spend AS s (key_hash, model, spend, reset_at)
         SELECT h, m, c, now() + iv::interval
           FROM UNNEST($1::bytea[], $2::text[], $3::float8[], $4::text[]) AS u(h, m, c, iv)
         ON CONFLICT (key_hash, model) DO UPDATE SET
             spend = CASE WHEN s.reset_at IS NOT NULL AND s.reset_at <= now()
                          THEN EXCLUDED.spend ELSE s.spend + EXCLUDED.spend END,
             reset_at = CASE WHEN s.reset_at IS NULL OR s.reset_at <= now()
                             THEN EXCLUDED.reset_at ELSE s.reset_at END
         RETURNING key_hash, model, spend",
    )
    .bind(&keys)
    .bind(&models)
    .bind(&costs)
    .bind(&intervals)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|r| {
            let h: Vec<u8> = r.try_get("key_hash")?;
            Ok(DeltaOp::KeyModelSpend {
                hash: stored_hash(&h, "key_model_spend.key_hash")?,
                model: r.try_get("model")?,
                spend: r.try_get("spend")?,
            })
        })
        .collect()
}
