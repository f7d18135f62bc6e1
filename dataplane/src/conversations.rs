//! The responses the gateway itself answered for the Responses API (deployments reached
//! through chat, `translate::responses_via_chat`), kept so that `previous_response_id`
//! can continue a conversation and `GET`/`DELETE /v1/responses/{id}` can find them.
//!
//! Each is kept as its JSON text: in this data plane's memory (the most recently used, up
//! to [`LOCAL_BYTES`], for [`TTL`]) and, with `--redis-url`, in Redis under
//! `routeiq:resp:<id>` for [`TTL`], so that any data plane can continue the conversation.
//! A Redis failure is logged and the local copy serves. Responses that providers store
//! themselves (OpenAI, Azure) are not kept here.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a response can be continued or read.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// The JSON text of responses kept in one data plane's memory; past it, the least
/// recently used go first.
pub const LOCAL_BYTES: usize = 64 * 1024 * 1024;
/// A Redis call's longest wait before the local copy answers alone.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// A stored response, as read back.
#[derive(Debug, Clone, Deserialize)]
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

/// A response to store, borrowed (see [`Stored`]).
#[derive(Serialize)]
pub struct ToStore<'a> {
    pub owner: &'a str,
    pub response: &'a Value,
    pub messages: &'a [Value],
    pub input_items: &'a [Value],
}

impl ToStore<'_> {
    /// Its JSON text, as kept.
    pub fn encode(&self) -> Arc<str> {
        Arc::from(serde_json::to_string(self).unwrap_or_default())
    }
}

impl Stored {
    /// Whether `owner` (see [`owner`]) may read it.
    pub fn readable_by(&self, owner: &str) -> bool {
        owner.is_empty() || self.owner == owner
    }
}

/// The local copies: JSON text by id, most recently used last, within [`LOCAL_BYTES`].
struct Local {
    entries: lru::LruCache<String, (Instant, Arc<str>)>,
    bytes: usize,
}

impl Local {
    fn pop(&mut self, id: &str) -> bool {
        match self.entries.pop(id) {
            Some((_, json)) => {
                self.bytes -= json.len();
                true
            }
            None => false,
        }
    }
}

pub struct Conversations {
    local: Mutex<Local>,
    redis: Option<ConnectionManager>,
}

impl Conversations {
    pub fn new(redis: Option<ConnectionManager>) -> Self {
        Self {
            local: Mutex::new(Local {
                entries: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            redis,
        }
    }

    fn redis_key(id: &str) -> String {
        format!("routeiq:resp:{id}")
    }

    /// Keeps a response (its JSON text, [`ToStore::encode`]) here and in Redis.
    pub async fn put(&self, id: &str, json: Arc<str>) {
        self.put_local(id, Arc::clone(&json));
        self.put_shared(id, &json).await;
    }

    /// Keeps a response in this data plane's memory.
    pub fn put_local(&self, id: &str, json: Arc<str>) {
        let Ok(mut local) = self.local.lock() else {
            return;
        };
        local.pop(id);
        local.bytes += json.len();
        local.entries.put(id.to_owned(), (Instant::now(), json));
        while local.bytes > LOCAL_BYTES {
            match local.entries.pop_lru() {
                Some((_, (_, old))) => local.bytes -= old.len(),
                None => break,
            }
        }
    }

    /// Keeps a response in Redis, where configured.
    pub async fn put_shared(&self, id: &str, json: &str) {
        let Some(conn) = &self.redis else {
            return;
        };
        let mut conn = conn.clone();
        let set = conn.set_ex::<_, _, ()>(Self::redis_key(id), json, TTL.as_secs());
        match tokio::time::timeout(REDIS_TIMEOUT, set).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "storing a response in Redis failed; kept locally")
            }
            Err(_) => tracing::warn!("storing a response in Redis timed out; kept locally"),
        }
    }

    pub async fn get(&self, id: &str) -> Option<Stored> {
        let local = self.local.lock().ok().and_then(|mut local| {
            match local.entries.get(id) {
                Some((at, json)) if at.elapsed() < TTL => return Some(Arc::clone(json)),
                Some(_) => {
                    local.pop(id);
                }
                None => {}
            }
            None
        });
        let json: String = match local {
            Some(json) => json.to_string(),
            None => {
                let mut conn = self.redis.clone()?;
                let got = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    conn.get::<_, Option<String>>(Self::redis_key(id)),
                )
                .await;
                match got {
                    Ok(Ok(json)) => json?,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reading a response from Redis failed");
                        return None;
                    }
                    Err(_) => {
                        tracing::warn!("reading a response from Redis timed out");
                        return None;
                    }
                }
            }
        };
        match serde_json::from_str::<Stored>(&json) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "a stored response does not decode");
                None
            }
        }
    }

    /// Removes a response; whether it was there.
    pub async fn delete(&self, id: &str) -> bool {
        let local = self.local.lock().map(|mut l| l.pop(id)).unwrap_or(false);
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
        let response = serde_json::json!({"id": "resp_1"});
        let stored = ToStore {
            owner: "team:t",
            response: &response,
            messages: &[],
            input_items: &[],
        };
        c.put("resp_1", stored.encode()).await;
        let got = c.get("resp_1").await.unwrap();
        assert!(got.readable_by("team:t") && got.readable_by(""));
        assert!(!got.readable_by("team:other"));
        assert!(c.delete("resp_1").await);
        assert!(c.get("resp_1").await.is_none());
        assert!(!c.delete("resp_1").await);
        assert_eq!(c.local.lock().unwrap().bytes, 0);
    }

    #[tokio::test]
    async fn local_store_is_bounded_by_bytes() {
        let c = Conversations::new(None);
        let big: Arc<str> = Arc::from("x".repeat(LOCAL_BYTES / 4 + 1));
        for i in 0..5 {
            c.put_local(&format!("resp_{i}"), Arc::clone(&big));
        }
        let local = c.local.lock().unwrap();
        assert_eq!(local.entries.len(), 3);
        assert!(local.bytes <= LOCAL_BYTES);
        assert!(!local.entries.contains("resp_0") && local.entries.contains("resp_4"));
    }
}
