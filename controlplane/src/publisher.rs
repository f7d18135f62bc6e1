//! Snapshot distribution: sends the change log to JetStream and keeps the full snapshot in
//! the object store, where data planes find it even while the control plane is down.
//!
//! One replica publishes at a time: the leader holds a session-level PostgreSQL advisory
//! lock on a dedicated connection (others wait on it). The leader
//! 1. writes the full snapshot (version V) at start, after publishing every delta up to V,
//!    with metadata `version = V` and `delta_seq` = the stream sequence of delta V;
//! 2. publishes unpublished `snapshot_deltas` rows in version order (`Nats-Msg-Id:
//!    delta-<version>`, so a re-send after a crash is dropped by JetStream), woken by
//!    `NOTIFY` or a short tick, and records each stream sequence;
//! 3. rewrites the full snapshot when it is behind and `snapshot_interval` has passed or
//!    `snapshot_every` deltas went out since.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::object_store::ObjectMetadata;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use prometheus::{Histogram, HistogramOpts, IntGauge, Registry};
use routeiq_nats::{reconnected, Reconnects};
use routeiq_proto::subjects;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgPool, Row};

use crate::changes::NOTIFY_CHANNEL;
use crate::crypto::SecretBox;
use crate::nats::Streams;
use crate::snapshot;

/// Advisory lock id of the publisher leader ("RIQP").
const LEADER_LOCK: i64 = 0x5249_5150;
/// Longest wait for the tick's stream check.
const STREAM_CHECK: Duration = Duration::from_millis(250);
/// Largest object-store chunk: below NATS's default 1 MiB max payload.
const CHUNK_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub snapshot_interval: Duration,
    pub snapshot_every: u64,
    /// How often to look for unpublished deltas without a `NOTIFY`.
    pub tick: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            snapshot_interval: Duration::from_secs(60),
            snapshot_every: 10_000,
            tick: Duration::from_millis(500),
        }
    }
}

/// What the publisher has done, for readiness and metrics.
#[derive(Debug, Clone)]
pub struct Status {
    /// 1 while this replica holds the publisher lock.
    pub leader: IntGauge,
    pub published_version: IntGauge,
    /// The version of the full snapshot in the object store.
    pub snapshot_version: IntGauge,
    /// The delta stream's sequence of the last delta published (or found on it).
    pub delta_sequence: IntGauge,
    /// From a change's commit to JetStream's ack of its delta.
    pub publish_lag: Histogram,
}

impl Status {
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let s = Self {
            leader: IntGauge::new(
                "routeiq_controlplane_publisher_leader",
                "1 while this replica is the snapshot publisher",
            )?,
            published_version: IntGauge::new(
                "routeiq_controlplane_published_version",
                "Snapshot version of the last delta published",
            )?,
            snapshot_version: IntGauge::new(
                "routeiq_controlplane_snapshot_version",
                "Version of the full snapshot in the object store",
            )?,
            delta_sequence: IntGauge::new(
                "routeiq_controlplane_delta_sequence",
                "Delta stream sequence of the last delta published",
            )?,
            publish_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "routeiq_controlplane_publish_lag_seconds",
                    "From a change's commit to JetStream's ack of its delta",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ]),
            )?,
        };
        r.register(Box::new(s.leader.clone()))?;
        r.register(Box::new(s.published_version.clone()))?;
        r.register(Box::new(s.snapshot_version.clone()))?;
        r.register(Box::new(s.delta_sequence.clone()))?;
        r.register(Box::new(s.publish_lag.clone()))?;
        Ok(s)
    }
}

/// Runs forever: waits for leadership and publishes. A leader stays leader across failures
/// as long as its lock's connection lives, and checks the streams after a NATS reconnect (a
/// loss of storage is repaired at once); losing that connection starts over, after a second
/// or at once when NATS reconnects.
pub async fn run(
    pool: PgPool,
    secrets: Arc<SecretBox>,
    streams: Arc<Streams>,
    cfg: Config,
    status: Status,
    mut reconnects: Reconnects,
) {
    loop {
        let mut p = Publisher {
            pool: pool.clone(),
            secrets: Arc::clone(&secrets),
            streams: Arc::clone(&streams),
            cfg: cfg.clone(),
            status: status.clone(),
            snapshot_version: None,
            snapshot_at: Instant::now(),
            since_snapshot: 0,
        };
        if let Err(e) = p.lead(&mut reconnects).await {
            tracing::warn!(error = %format!("{e:#}"), "snapshot publisher stopped; retrying");
        }
        status.leader.set(0);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = reconnected(&mut reconnects) => {}
        }
    }
}

struct Publisher {
    pool: PgPool,
    secrets: Arc<SecretBox>,
    streams: Arc<Streams>,
    cfg: Config,
    status: Status,
    snapshot_version: Option<u64>,
    snapshot_at: Instant,
    since_snapshot: u64,
}

impl Publisher {
    /// Waits for the lock, then leads until it loses the lock's connection. A failure of
    /// anything else (NATS away, a query) is retried as leader, after a second or at once
    /// when NATS reconnects: dropping the lock there would hand leadership to a standby for
    /// no reason, and this replica's own next wait would queue behind its old session.
    async fn lead(&mut self, reconnects: &mut Reconnects) -> anyhow::Result<()> {
        // A connection of its own: the lock lives as long as it does. A standby waits in
        // PostgreSQL's lock queue, so it leads as soon as the leader's session ends.
        let mut lock = self.pool.acquire().await?.detach();
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LEADER_LOCK)
            .execute(&mut lock)
            .await?;
        tracing::info!("snapshot publisher: leader");
        self.status.leader.set(1);
        loop {
            let Err(e) = self.publish(&mut lock, reconnects).await;
            // Still holding the lock? (A broken connection has lost it.)
            lock.ping().await?;
            tracing::warn!(error = %format!("{e:#}"), "snapshot publishing failed; retrying as leader");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = reconnected(reconnects) => {}
            }
        }
    }

    /// Publishes as leader until a failure.
    async fn publish(
        &mut self,
        lock: &mut sqlx::PgConnection,
        reconnects: &mut Reconnects,
    ) -> anyhow::Result<std::convert::Infallible> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        reconnects.borrow_and_update();
        self.take_over().await?;
        // Created once: a steady stream of NOTIFYs must not starve the health checks.
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.publish_pending(None).await?;
            if self.snapshot_due() {
                self.write_snapshot().await?;
            }
            tokio::select! {
                () = reconnected(reconnects) => {
                    tracing::info!("NATS reconnected; checking the streams");
                    self.take_over().await?;
                }
                n = listener.recv() => { n?; }
                _ = tick.tick() => {
                    // Still holding the lock? (A broken connection has lost it.)
                    lock.ping().await?;
                    // Is the stream still there? If NATS lost it (the tick may see that
                    // before the reconnect does), recreate the streams and position a new
                    // full snapshot on them. While NATS is away the request waits for its
                    // timeout: not for that long here (the reconnect branch checks the
                    // streams when NATS is back).
                    if let Ok(Err(e)) = tokio::time::timeout(STREAM_CHECK, self.streams.deltas.get_info()).await {
                        tracing::warn!(error = %format!("{e:#}"), "cannot read the delta stream; making the streams right");
                        self.take_over().await?;
                    }
                }
            }
        }
    }

    /// Makes the streams right and writes a full snapshot on them: on taking over, and
    /// after NATS reconnects (it may have lost its storage).
    async fn take_over(&mut self) -> anyhow::Result<()> {
        // Recreates the streams and bucket if NATS lost them (idempotent otherwise).
        crate::nats::ensure(self.streams.js.clone(), self.streams.usage_max_bytes).await?;
        self.forget_lost_sequences().await?;
        self.catch_up_with_stream().await?;
        self.write_snapshot().await
    }

    /// If the delta stream holds deltas (messages with a `delta-<version>` id) past the last
    /// one the database recorded publishing, the database may not have the changes data
    /// planes applied from them: it was restored from a dump taken before them. (Unless
    /// they are its own deltas whose publishing was not recorded: [`Self::own_unrecorded`].)
    /// Then a resync past
    /// the stream's last version (`changes::resync_past`) is right: data planes replace
    /// their state with the full snapshot written next, and no later change reuses a
    /// version, or a message id, that is on the stream already.
    async fn catch_up_with_stream(&self) -> anyhow::Result<()> {
        let on_stream = self.streams.deltas.get_info().await?.state.last_sequence;
        self.status.delta_sequence.set(on_stream as i64);
        let (recorded,): (Option<i64>,) =
            sqlx::query_as("SELECT max(stream_seq) FROM snapshot_deltas")
                .fetch_one(&self.pool)
                .await?;
        let recorded = recorded.unwrap_or(0) as u64;
        // The last delta past the recorded ones, by its message id: a message on the
        // subject that is not a delta (no `delta-<version>` id) is not a change of ours, and
        // data planes skip it too.
        let mut last = None;
        let mut seq = on_stream;
        while seq > recorded {
            match self.streams.deltas.get_raw_message(seq).await {
                Ok(m) => {
                    let version = m
                        .headers
                        .get(async_nats::header::NATS_MESSAGE_ID)
                        .and_then(|id| subjects::delta_message_version(id.as_str()));
                    if let Some(v) = version {
                        last = Some((v, m.payload));
                        break;
                    }
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(e.into()),
            }
            seq -= 1;
        }
        let Some((streamed, payload)) = last else {
            return Ok(());
        };
        if self.own_unrecorded(streamed, &payload).await? {
            tracing::info!(
                version = streamed,
                "the delta stream holds this database's deltas whose publishing was not recorded (an acknowledgement lost); publishing them again, deduplicated"
            );
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let version = crate::changes::resync_past(&mut tx, streamed).await?;
        tx.commit().await?;
        tracing::warn!(
            on_stream,
            recorded,
            streamed,
            version,
            "the delta stream holds changes this database did not record publishing (restored \
             from a dump?); data planes will take the full snapshot of version {version}"
        );
        Ok(())
    }

    /// Whether `payload`, delta `version` on the stream past the recorded ones, is this
    /// database's own delta whose publishing was not recorded (NATS stored it but its
    /// acknowledgement was lost: NATS hung past the publish's timeout, or the replica
    /// stopped first). Then the database has the change, and the publish loop sends the
    /// unrecorded deltas again (JetStream drops copies within its duplicate window, data
    /// planes skip versions they have) and records them: no resync.
    async fn own_unrecorded(&self, version: u64, payload: &[u8]) -> anyhow::Result<bool> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT ops FROM snapshot_deltas WHERE version = $1 AND stream_seq IS NULL",
        )
        .bind(i64::try_from(version)?)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some((ops,)) => {
                crate::changes::with_secrets(&self.pool, &self.secrets, ops).await? == payload
            }
            None => false,
        })
    }

    /// If the delta stream holds fewer messages than were recorded (it was deleted or NATS
    /// lost its storage), recorded sequences are meaningless: forget them.
    async fn forget_lost_sequences(&self) -> anyhow::Result<()> {
        let last = self.streams.deltas.get_info().await?.state.last_sequence;
        let n = sqlx::query("UPDATE snapshot_deltas SET stream_seq = NULL WHERE stream_seq > $1")
            .bind(last as i64)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n > 0 {
            tracing::warn!(
                forgotten = n,
                "the delta stream was reset; a full snapshot follows"
            );
        }
        Ok(())
    }

    fn snapshot_due(&self) -> bool {
        let published = self.status.published_version.get() as u64;
        let behind = self.snapshot_version.is_none_or(|v| v < published);
        behind
            && (self.snapshot_at.elapsed() >= self.cfg.snapshot_interval
                || self.since_snapshot >= self.cfg.snapshot_every)
    }

    /// Publishes unpublished deltas in version order, up to `upto` if given.
    async fn publish_pending(&mut self, upto: Option<u64>) -> anyhow::Result<()> {
        loop {
            let rows = sqlx::query(
                "SELECT version, ops,
                        EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8 AS age
                   FROM snapshot_deltas
                  WHERE published_at IS NULL AND ($1::bigint IS NULL OR version <= $1)
                  ORDER BY version LIMIT 1000",
            )
            .bind(upto.map(|v| v as i64))
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(());
            }
            let selected = Instant::now();
            // Pipelined: send them all, then collect the acks in order.
            let mut pending = Vec::with_capacity(rows.len());
            for r in &rows {
                let version: i64 = r.try_get("version")?;
                let ops: Vec<u8> = r.try_get("ops")?;
                let ops = crate::changes::with_secrets(&self.pool, &self.secrets, ops).await?;
                let mut headers = async_nats::HeaderMap::new();
                let id = u64::try_from(version).map(subjects::delta_message_id)?;
                headers.insert("Nats-Msg-Id", id.as_str());
                let ack = self
                    .streams
                    .js
                    .publish_with_headers(subjects::DELTA_SUBJECT, headers, ops.into())
                    .await?;
                pending.push((version, ack));
            }
            let mut versions = Vec::with_capacity(pending.len());
            let mut seqs = Vec::with_capacity(pending.len());
            for (version, ack) in pending {
                let ack = ack.await?;
                versions.push(version);
                seqs.push(ack.sequence as i64);
            }
            let acked = selected.elapsed().as_secs_f64();
            sqlx::query(
                "UPDATE snapshot_deltas d SET published_at = now(), stream_seq = u.seq
                   FROM UNNEST($1::bigint[], $2::bigint[]) AS u(version, seq)
                  WHERE d.version = u.version",
            )
            .bind(&versions)
            .bind(&seqs)
            .execute(&self.pool)
            .await?;
            // Observed once recorded: a batch whose record failed is sent again.
            for r in &rows {
                let age: f64 = r.try_get("age")?;
                self.status.publish_lag.observe(age.max(0.0) + acked);
            }
            if let (Some(&v), Some(&seq)) = (versions.last(), seqs.last()) {
                self.status.published_version.set(v);
                self.status.delta_sequence.set(seq);
            }
            self.since_snapshot += versions.len() as u64;
            tracing::debug!(count = versions.len(), "deltas published");
        }
    }

    /// Builds the full snapshot, makes sure every delta it includes is on the stream, and
    /// stores it with the stream position to continue from.
    async fn write_snapshot(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let snap = snapshot::build(&self.pool, &self.secrets).await?;
        let built = started.elapsed();
        let version = snap.version;
        self.publish_pending(Some(version)).await?;
        let recorded: Option<i64> = if version == 0 {
            None
        } else {
            sqlx::query("SELECT stream_seq FROM snapshot_deltas WHERE version = $1")
                .bind(version as i64)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get::<Option<i64>, _>("stream_seq"))
                .transpose()?
                .flatten()
        };
        // Unknown (version 0, or the stream was reset): nothing past V is on the stream yet,
        // so its current end is V's position.
        let delta_seq = match recorded {
            Some(s) => s as u64,
            None => self.streams.deltas.get_info().await?.state.last_sequence,
        };
        let bytes = routeiq_proto::wire::encode_stored(&snap);
        let size = bytes.len();
        let meta = ObjectMetadata {
            name: subjects::SNAPSHOT_OBJECT.into(),
            description: Some("routeiq.v1.Snapshot header + KeyChunks, length-delimited".into()),
            chunk_size: Some(CHUNK_BYTES),
            metadata: HashMap::from([
                (subjects::META_VERSION.to_owned(), version.to_string()),
                (subjects::META_DELTA_SEQ.to_owned(), delta_seq.to_string()),
            ]),
            headers: None,
        };
        self.streams
            .snapshots
            .put(meta, &mut bytes.as_slice())
            .await?;
        // Published deltas older than the stream keeps are of no further use; the newest row
        // stays, as it carries the version counter.
        sqlx::query(
            "DELETE FROM snapshot_deltas
              WHERE published_at < now() - interval '7 days'
                AND version < (SELECT max(version) FROM snapshot_deltas)",
        )
        .execute(&self.pool)
        .await?;
        self.snapshot_version = Some(version);
        self.snapshot_at = Instant::now();
        self.since_snapshot = 0;
        self.status.snapshot_version.set(version as i64);
        tracing::info!(
            version,
            delta_seq,
            keys = snap.keys.len(),
            deployments = snap.deployments.len(),
            bytes = size,
            build_ms = built.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "full snapshot stored"
        );
        Ok(())
    }
}
