//! The JetStream streams and bucket the control plane owns (names in
//! `routeiq_proto::subjects`, described in docs/architecture.md). The connection itself is
//! `routeiq_nats`'s.

use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};
use routeiq_proto::subjects;

/// The streams and bucket, created if missing.
pub struct Streams {
    pub js: jetstream::Context,
    /// The most bytes `ROUTEIQ_USAGE` holds (data planes' events not yet ingested).
    pub usage_max_bytes: i64,
    pub deltas: stream::Stream,
    pub usage: stream::Stream,
    pub snapshots: object_store::ObjectStore,
}

/// The usage stream's size by default: events of data planes buffered while the control
/// plane is away.
pub const USAGE_MAX_BYTES: i64 = 8 * 1024 * 1024 * 1024;

/// Creates the streams and the snapshot bucket if NATS lacks them (idempotent otherwise).
/// The usage stream reserves `usage_max_bytes` of the server's file store.
pub async fn ensure(js: jetstream::Context, usage_max_bytes: i64) -> anyhow::Result<Streams> {
    let deltas = js
        .get_or_create_stream(stream::Config {
            name: subjects::DELTA_STREAM.into(),
            subjects: vec![subjects::DELTA_SUBJECT.into()],
            storage: stream::StorageType::File,
            // A data plane further behind than this re-fetches the full snapshot.
            max_messages: 1_000_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await?;
    let usage = js
        .get_or_create_stream(stream::Config {
            name: subjects::USAGE_STREAM.into(),
            subjects: vec![subjects::USAGE_SUBJECTS.into()],
            storage: stream::StorageType::File,
            // Events leave the stream once ingested and acked.
            retention: stream::RetentionPolicy::WorkQueue,
            max_bytes: usage_max_bytes,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            // JetStream's "insufficient storage resources" (10047): the reservation does not
            // fit the server's file store (by default 75 % of its free disk).
            if e.to_string().contains("10047") {
                anyhow::anyhow!(
                    "{e}: the usage stream reserves {usage_max_bytes} bytes of the NATS server's \
                     file store; give the server more (max_file_store) or the stream less \
                     (--usage-stream-bytes, ROUTEIQ_USAGE_STREAM_BYTES)"
                )
            } else {
                e.into()
            }
        })?;
    let snapshots = match js.get_object_store(subjects::SNAPSHOT_BUCKET).await {
        Ok(s) => s,
        Err(_) => {
            js.create_object_store(object_store::Config {
                bucket: subjects::SNAPSHOT_BUCKET.into(),
                description: Some("RouteIQ full snapshots".into()),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await?
        }
    };
    Ok(Streams {
        js,
        usage_max_bytes,
        deltas,
        usage,
        snapshots,
    })
}
