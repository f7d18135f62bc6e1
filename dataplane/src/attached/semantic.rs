//! Sharing the semantic cache's index between data planes (`redis-semantic`, attached):
//! each entry a data plane indexes is published on core NATS
//! (`routeiq.cache.semantic`), and every other data plane indexes it too, so a paraphrase
//! hits on any of them (the answer itself is read from Redis).
//!
//! Best effort, by design: core NATS delivers at most once and keeps nothing, so a data
//! plane that is away (or starts later) lacks the entries shared meanwhile, and a full
//! buffer drops new entries. Either costs a miss, never a wrong answer: an entry only
//! points at an exact key, whose answer must still be in Redis.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use prost::Message;
use routeiq_proto::wire::pb;
use routeiq_proto::{subjects, SemanticEntry};
use tokio::sync::mpsc;

use crate::state::App;

/// Publishes the entries this data plane indexes.
pub async fn share(client: async_nats::Client, mut entries: mpsc::Receiver<SemanticEntry>) {
    while let Some(e) = entries.recv().await {
        let payload = pb::SemanticEntry::from(&e).encode_to_vec();
        if let Err(err) = client
            .publish(subjects::CACHE_SEMANTIC_SUBJECT, payload.into())
            .await
        {
            tracing::debug!(error = %err, "semantic cache: entry not shared");
        }
    }
}

/// Indexes the entries other data planes share, while this data plane's cache is a shared
/// semantic one.
pub async fn receive(client: async_nats::Client, app: Arc<App>) {
    loop {
        let mut sub = match client.subscribe(subjects::CACHE_SEMANTIC_SUBJECT).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "semantic cache: cannot subscribe; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(msg) = sub.next().await {
            let entry = pb::SemanticEntry::decode(msg.payload)
                .map_err(|e| e.to_string())
                .and_then(|m| SemanticEntry::try_from(m).map_err(|e| e.to_string()));
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(error = %e, "semantic cache: a shared entry is not one");
                    continue;
                }
            };
            let live = app.load();
            let shared_semantic = live
                .cache
                .as_ref()
                .is_some_and(|c| c.semantic.is_some() && c.kind == routeiq_proto::CacheKind::Redis);
            // Entries are comparable only with this data plane's own (loaded) embedder's.
            let embedder = live.semantic.as_ref().and_then(|s| s.embedder());
            if let Some(embedder) = embedder.filter(|_| shared_semantic) {
                app.cache.index_shared(entry, embedder.id());
            }
        }
    }
}
