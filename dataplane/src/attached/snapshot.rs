//! The snapshot over NATS: bootstrap from the object store, then apply deltas in order.
//!
//! The full snapshot (`ROUTEIQ_SNAPSHOTS/full`) carries its `version` V and `delta_seq` S,
//! the delta-stream sequence of V. The follower reads the delta stream from S + 1 with an
//! ordered consumer; for each delta of version D while serving version C:
//! - D <= C: already applied (a re-send), skipped;
//! - D = C + 1: applied, and the new state swapped in atomically;
//! - D > C + 1: a gap; the full snapshot is fetched again (once it is newer than C), and
//!   the stream is read again from its `delta_seq`.
//!
//! A delta that cannot be applied, or cannot be decoded while its message id names
//! version C + 1, is refused, logged and counted, and handled like a gap; any other message
//! that does not decode is refused, counted and skipped (it is no change this state needs
//! now). The last good state keeps serving throughout, also while NATS is down.
//!
//! The ordered consumer lives in the NATS server's memory: when the client reconnects (a
//! server restart), the follower creates a new one from its position at once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{self, object_store::ObjectStore};
use futures_util::StreamExt;
use prost::Message;
use routeiq_nats::{reconnected, Reconnects};
use routeiq_proto::wire::pb;
use routeiq_proto::{subjects, Delta};
use tokio::io::AsyncReadExt;

use crate::state::{App, InvalidSnapshot, Lasting, LiveState};

/// A full snapshot as stored, with the stream position to continue from.
pub struct Stored {
    pub state: LiveState,
    pub delta_seq: u64,
}

/// Longest wait for the next part of the snapshot object.
const STALL: Duration = Duration::from_secs(2);

/// Fetches the stored full snapshot, retrying until there is one.
pub async fn bootstrap(js: &jetstream::Context, lasting: &Lasting) -> Stored {
    let mut wait = Duration::from_millis(200);
    loop {
        match fetch(js, lasting).await {
            Ok(s) => return s,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no snapshot yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn bucket(js: &jetstream::Context) -> anyhow::Result<ObjectStore> {
    Ok(js.get_object_store(subjects::SNAPSHOT_BUCKET).await?)
}

/// Fetches and prepares the stored full snapshot.
pub async fn fetch(js: &jetstream::Context, lasting: &Lasting) -> anyhow::Result<Stored> {
    let started = std::time::Instant::now();
    let mut object = bucket(js).await?.get(subjects::SNAPSHOT_OBJECT).await?;
    let meta = object.info().metadata.clone();
    let number = |k: &str| -> anyhow::Result<u64> {
        meta.get(k)
            .ok_or_else(|| anyhow::anyhow!("snapshot object has no `{k}`"))?
            .parse()
            .map_err(|e| anyhow::anyhow!("snapshot object `{k}`: {e}"))
    };
    let version = number(subjects::META_VERSION)?;
    let delta_seq = number(subjects::META_DELTA_SEQ)?;
    let mut bytes = Vec::with_capacity(object.info().size);
    // A read that began just before the control plane replaced the object waits forever
    // for chunks that were purged: give up when it stops moving (the caller retries).
    while tokio::time::timeout(STALL, object.read_buf(&mut bytes))
        .await
        .map_err(|_| {
            anyhow::anyhow!("the snapshot object stopped arriving (replaced while read?)")
        })??
        > 0
    {}
    let fetched = started.elapsed();
    let size = bytes.len();
    let snapshot = routeiq_proto::wire::decode_stored(&bytes)?;
    drop(bytes);
    anyhow::ensure!(
        snapshot.version == version,
        "snapshot object says version {version}, its content {}",
        snapshot.version
    );
    let keys = snapshot.keys.len();
    let state = LiveState::prepare(snapshot, lasting)?;
    tracing::info!(
        version,
        delta_seq,
        keys,
        bytes = size,
        fetch_ms = fetched.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "full snapshot loaded"
    );
    Ok(Stored { state, delta_seq })
}

/// Where the follower is on the delta stream.
struct Position {
    /// The last sequence applied (or covered by the loaded full snapshot).
    seq: u64,
    /// When the stream was created, as first seen: a different time means the stream was
    /// deleted and created again (NATS lost its storage), and `seq` means nothing there.
    created: Option<async_nats::datetime::DateTime>,
}

/// How long the delta consumer may be silent before the stream's end is checked.
const STALL_CHECK: Duration = Duration::from_secs(2);
/// How long to wait before following again after a failure (NATS or JetStream not ready).
const RETRY: Duration = Duration::from_millis(200);

/// Follows the delta stream forever from `delta_seq + 1`.
pub async fn follow(
    js: jetstream::Context,
    app: Arc<App>,
    delta_seq: u64,
    mut reconnects: Reconnects,
) {
    let mut pos = Position {
        seq: delta_seq,
        created: None,
    };
    loop {
        if let Err(e) = follow_from(&js, &app, &mut pos, &mut reconnects).await {
            tracing::warn!(error = %format!("{e:#}"), delta_seq = pos.seq, "delta stream interrupted; resuming");
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Follows until a failure, a refetch, or a reconnect (`Ok`: follow again at once).
async fn follow_from(
    js: &jetstream::Context,
    app: &Arc<App>,
    pos: &mut Position,
    reconnects: &mut Reconnects,
) -> anyhow::Result<()> {
    // A reconnect from here on means the consumer made below may be gone.
    reconnects.borrow_and_update();
    let stream = js.get_stream(subjects::DELTA_STREAM).await?;
    let info = stream.get_info().await?;
    let end = info.state.last_sequence;
    let recreated = pos.created.is_some_and(|c| c != info.created);
    if !recreated && info.state.first_sequence > pos.seq + 1 && end > pos.seq {
        // Deltas we need have aged out of the stream (limits): only a full snapshot has them.
        tracing::warn!(
            first = info.state.first_sequence,
            delta_seq = pos.seq,
            "deltas needed are no longer on the stream; re-fetching the full snapshot"
        );
        refetch(js, app, Wanted::Newer, &mut pos.seq).await;
        pos.created = Some(info.created);
        return Ok(());
    }
    if recreated || end < pos.seq {
        // NATS lost its storage and the stream started over: our position means nothing
        // there. The control plane writes a full snapshot positioned on the new stream.
        tracing::warn!(
            stream_end = end,
            delta_seq = pos.seq,
            "the delta stream was reset; re-fetching the full snapshot"
        );
        refetch(js, app, Wanted::OnStream, &mut pos.seq).await;
        pos.created = Some(info.created);
        return Ok(());
    }
    pos.created = Some(info.created);
    let delta_seq = &mut pos.seq;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subjects::DELTA_SUBJECT.into(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: *delta_seq + 1,
            },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    // A consumer can go silent while the client's own connection stays up: an edge data
    // plane's leaf node loses its link to the hub and gets it back. While nothing arrives,
    // the stream's end is checked now and then; past what was applied, follow anew.
    let mut check = tokio::time::interval(STALL_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.reset();
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            () = reconnected(reconnects) => {
                tracing::info!(delta_seq = *delta_seq, "NATS reconnected; following the delta stream anew");
                return Ok(());
            }
            _ = check.tick() => {
                if let Ok(Ok(end)) = tokio::time::timeout(STALL_CHECK, stream_end(js)).await {
                    if end > *delta_seq {
                        tracing::warn!(delta_seq = *delta_seq, stream_end = end, "the delta consumer went silent behind the stream; following anew");
                        return Ok(());
                    }
                }
                continue;
            }
        };
        check.reset();
        let Some(m) = next else {
            anyhow::bail!("the delta consumer ended");
        };
        let m = m?;
        let seq = m.info().map_err(|e| anyhow::anyhow!(e))?.stream_sequence;
        let named = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .and_then(|id| subjects::delta_message_version(id.as_str()));
        match handle(app, &m.payload, named) {
            Ok(()) => *delta_seq = seq,
            Err(needed) => {
                tracing::debug!(
                    needed,
                    "waiting for a full snapshot past the served version"
                );
                // Start over from the re-fetched snapshot's position.
                refetch(js, app, Wanted::Newer, delta_seq).await;
                return Ok(());
            }
        }
    }
}

/// Applies one delta; `named` is the version its message id names. `Err(v)`: the state
/// must be replaced by a full snapshot newer than the current one (`v` is the version that
/// could not be reached).
///
/// A message that does not decode is refused and counted. If its id names the next
/// version, that change cannot be read here: re-fetch. Otherwise it is skipped: a message
/// without a delta's id is not one of the publisher's, one naming a version already
/// applied changes nothing, and one naming a later version would leave a gap that the next
/// readable delta shows (so a forged id cannot hold the data plane in a re-fetch).
fn handle(app: &App, payload: &[u8], named: Option<u64>) -> Result<(), u64> {
    let current = app.load();
    let delta = match pb::SnapshotDelta::decode(payload)
        .map_err(|e| e.to_string())
        .and_then(|d| Delta::try_from(d).map_err(|e| e.to_string()))
    {
        Ok(d) => d,
        Err(e) => {
            app.metrics.snapshot_rejected.inc();
            return match named {
                Some(v) if v == current.version + 1 => {
                    tracing::error!(error = %e, version = v, have = current.version, "undecodable delta refused; re-fetching the full snapshot");
                    Err(v)
                }
                _ => {
                    tracing::error!(error = %e, named, have = current.version, "a message on the delta stream that is not the next delta: skipped");
                    Ok(())
                }
            };
        }
    };
    if delta.version <= current.version {
        return Ok(());
    }
    if delta.version > current.version + 1 {
        tracing::warn!(
            have = current.version,
            got = delta.version,
            "snapshot version gap; re-fetching the full snapshot"
        );
        return Err(delta.version);
    }
    match current.apply(&delta) {
        Ok(next) => {
            // Before the version shows: once it does, the answers are gone.
            for op in &delta.ops {
                if let routeiq_proto::DeltaOp::ForgetCached(what) = op {
                    app.cache.forget(what);
                }
            }
            app.store(next);
            tracing::debug!(
                version = delta.version,
                ops = delta.ops.len(),
                "delta applied"
            );
            Ok(())
        }
        Err(InvalidSnapshot::Resync) => {
            tracing::warn!(
                have = current.version,
                version = delta.version,
                "the control plane's database was restored; re-fetching its full snapshot"
            );
            Err(delta.version)
        }
        Err(e) => {
            app.metrics.snapshot_rejected.inc();
            tracing::error!(error = %e, version = delta.version, "delta refused; the last good state keeps serving");
            Err(delta.version)
        }
    }
}

/// Which stored snapshot a re-fetch waits for.
#[derive(Debug, Clone, Copy)]
enum Wanted {
    /// Newer than the served state (after a gap or a refused delta).
    Newer,
    /// Positioned on the current stream (at or before its end, read at each try: the
    /// control plane publishes on the new stream before it stores the snapshot), not older
    /// than the served state (after a stream reset).
    OnStream,
}

/// The delta stream's last sequence.
async fn stream_end(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(subjects::DELTA_STREAM).await?;
    Ok(stream.info().await?.state.last_sequence)
}

/// Replaces the state with the stored full snapshot once it is the one `wanted`, and moves
/// `delta_seq` to its position.
async fn refetch(js: &jetstream::Context, app: &App, wanted: Wanted, delta_seq: &mut u64) {
    let mut wait = Duration::from_millis(100);
    loop {
        app.metrics.snapshot_refetches.inc();
        let current = app.load().version;
        let end = match wanted {
            Wanted::Newer => u64::MAX,
            Wanted::OnStream => match stream_end(js).await {
                Ok(end) => end,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the delta stream");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            },
        };
        match fetch(js, app.load().lasting()).await {
            Ok(s)
                if match wanted {
                    Wanted::Newer => s.state.version > current,
                    Wanted::OnStream => s.state.version >= current && s.delta_seq <= end,
                } =>
            {
                tracing::info!(
                    version = s.state.version,
                    ?wanted,
                    "state replaced by the full snapshot"
                );
                *delta_seq = s.delta_seq;
                // Cache deletions may be among the deltas skipped.
                app.cache.flush_memory();
                app.store(s.state);
                return;
            }
            Ok(s) => tracing::info!(
                stored = s.state.version,
                ?wanted,
                "stored snapshot not the one needed yet; waiting for the next one"
            ),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot fetch the full snapshot"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}
