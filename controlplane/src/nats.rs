//! The JetStream streams and bucket the control plane owns (names in
//! `routeiq_proto::subjects`, described in docs/architecture.md). The connection itself is
//! `routeiq_nats`'s.

use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};
use routeiq_proto::subjects;

/// The streams and bucket, created if missing.
pub struct Streams {
    pub js: jetstream::Context,
    pub deltas: stream::Stream,
    pub usage: stream::Stream,
    pub snapshots: object_store::ObjectStore,
}

pub async fn ensure(js: jetstream::Context) -> anyhow::Result<Streams> {
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
            max_bytes: 8 * 1024 * 1024 * 1024,
            discard: stream::DiscardPolicy::New,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        })
        .await?;
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
        deltas,
        usage,
        snapshots,
    })
}
