//! The responses the gateway itself answered for the Responses API (deployments reached
//! through chat, `translate::responses_via_chat`), kept so that `previous_response_id`
//! can continue a conversation and `GET`/`DELETE /v1/responses/{id}` can find them.
//!
//! Each is kept in this data plane's memory (at most [`LOCAL_ENTRIES`], for [`TTL`]) and,
//! with `--redis-url`, in Redis under `routeiq:resp:<id>` for [`TTL`], so that any data
//! plane can continue the conversation. A Redis failure is logged and the local copy
//! serves. Responses that providers store themselves (OpenAI, Azure) are not kept here.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a response can be continued or read.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// Responses kept in one data plane's memory; the least recently used go first.
pub const LOCAL_ENTRIES: usize = 10_000;
/// A Redis call's longest wait before the local copy answers alone.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// A stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// Who may read it: see [`owner`].
    pub owner: String,
    /// The `response` object as the client got it.
    pub response: Value,
    /// The conversation up to and including this response, as chat messages
    /// (`instructions` are not carried over, as OpenAI does not).
    pub messages: Vec<Value>,
    /// This turn's input items (`/input_items`).
    pub input_items: Vec<Value>,
}

/// The owner of a key's responses: its team (a team shares its conversations, as an
/// OpenAI project does), else the key itself; the master key owns none and reads all.
pub fn owner(key: Option<&routeiq_proto::VirtualKey>) -> String {
    match key {
        None => String::new(),
        Some(k) if !k.team_id.is_empty() => format!("team:{}", k.team_id),
        Some(k) => format!("key:{}", k.hash.to_hex()),
    }
}

impl Stored {
    /// Whether `owner` (see [`owner`]) may read it.
    pub fn readable_by(&self, owner: &str) -> bool {
        owner.is_empty() || self.owner == owner
    }
}

pub struct Conversations {
    local: Mutex<lru::LruCache<String, (Instant, std::sync::Arc<Stored>)>>,
    redis: Option<ConnectionManager>,
}

impl Conversations {
    pub fn new(redis: Option<ConnectionManager>) -> Self {
        Self {
            local: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(LOCAL_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
            redis,
        }
    }

    fn redis_key(id: &str) -> String {
        format!("routeiq:resp:{id}")
    }

    /// Keeps a response here and in Redis.
    pub async fn put(&self, id: &str, stored: Stored) {
        let stored = std::sync::Arc::new(stored);
        self.put_local(id, std::sync::Arc::clone(&stored));
        self.put_shared(id, &stored).await;
    }

    /// Keeps a response in this data plane's memory.
    pub fn put_local(&self, id: &str, stored: std::sync::Arc<Stored>) {
        if let Ok(mut local) = self.local.lock() {
            local.put(id.to_owned(), (Instant::now(), stored));
        }
    }

    /// Keeps a response in Redis, where configured.
    pub async fn put_shared(&self, id: &str, stored: &Stored) {
        if let Some(conn) = &self.redis {
            match serde_json::to_string(&stored) {
                Ok(json) => {
                    let mut conn = conn.clone();
                    let set = conn.set_ex::<_, _, ()>(Self::redis_key(id), json, TTL.as_secs());
                    match tokio::time::timeout(REDIS_TIMEOUT, set).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "storing a response in Redis failed; kept locally")
                        }
                        Err(_) => {
                            tracing::warn!("storing a response in Redis timed out; kept locally")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a response could not be encoded for Redis"),
            }
        }
    }

    pub async fn get(&self, id: &str) -> Option<std::sync::Arc<Stored>> {
        if let Ok(mut local) = self.local.lock() {
            match local.get(id) {
                Some((at, s)) if at.elapsed() < TTL => return Some(std::sync::Arc::clone(s)),
                Some(_) => {
                    local.pop(id);
                }
                None => {}
            }
        }
        let mut conn = self.redis.clone()?;
        let got = tokio::time::timeout(
            REDIS_TIMEOUT,
            conn.get::<_, Option<String>>(Self::redis_key(id)),
        )
        .await;
        match got {
            Ok(Ok(Some(json))) => match serde_json::from_str::<Stored>(&json) {
                Ok(s) => Some(std::sync::Arc::new(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "a stored response in Redis does not decode");
                    None
                }
            },
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading a response from Redis failed");
                None
            }
            Err(_) => {
                tracing::warn!("reading a response from Redis timed out");
                None
            }
        }
    }

    /// Removes a response; whether it was there.
    pub async fn delete(&self, id: &str) -> bool {
        let local = self
            .local
            .lock()
            .map(|mut l| l.pop(id).is_some())
            .unwrap_or(false);
        let Some(conn) = &self.redis else {
            return local;
        };
        let mut conn = conn.clone();
        match tokio::time::timeout(REDIS_TIMEOUT, conn.del::<_, u64>(Self::redis_key(id))).await {
            Ok(Ok(n)) => local || n > 0,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "deleting a response from Redis failed");
                local
            }
            Err(_) => {
                tracing::warn!("deleting a response from Redis timed out");
                local
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_store_keeps_reads_and_deletes() {
        let c = Conversations::new(None);
        let stored = Stored {
            owner: "team:t".into(),
            response: serde_json::json!({"id": "resp_1"}),
            messages: vec![],
            input_items: vec![],
        };
        c.put("resp_1", stored).await;
        let got = c.get("resp_1").await.unwrap();
        assert!(got.readable_by("team:t") && got.readable_by(""));
        assert!(!got.readable_by("team:other"));
        assert!(c.delete("resp_1").await);
        assert!(c.get("resp_1").await.is_none());
        assert!(!c.delete("resp_1").await);
    }
}
