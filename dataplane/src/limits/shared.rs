//! Rate limits shared by every data plane through Redis (`--redis-url` / `REDIS_URL`).
//!
//! Each key's minute has one Redis hash (`routeiq:rl:<key hash>:<minute>`) counting the
//! requests and tokens *granted* to data planes. A data plane takes grants in chunks (an
//! eighth of what is left, at least what the request needs) with one Lua script that never
//! grants past the limit, and serves requests from its grant without calling Redis: a
//! request is admitted while the data plane's tokens (used plus reserved) are below its
//! grant, and what a request leaves unused of its reservation is again below it. So the
//! data planes together admit at most the limit plus one request's tokens per data plane
//! (plus what requests use beyond their reservation), and Redis sees one call per chunk,
//! not per request. Grants left unused when the minute ends are lost, which can only refuse
//! early, never admit more.
//!
//! When Redis fails (or answers slower than [`TIMEOUT`]) the data plane falls back to its
//! local window for [`BACKOFF`], limiting each key to its share: the limit divided by the
//! number of data planes seen alive through Redis (a heartbeat every few seconds). Each
//! fallback is counted in `routeiq_redis_fallbacks_total` and logged on the transition.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::now_ms;

use redis::aio::ConnectionManager;
use routeiq_proto::KeyHash;

/// Longest wait for Redis on the request path.
pub const TIMEOUT: Duration = Duration::from_millis(50);
/// How long after a failure requests use local limits without trying Redis.
pub const BACKOFF: Duration = Duration::from_secs(1);
const HEARTBEAT: Duration = Duration::from_secs(3);
const ALIVE_FOR_MS: u64 = 10_000;
const DATAPLANES: &str = "routeiq:dataplanes";

/// Grants requests and tokens up to the limits. Returns the grants and the minute's totals.
const LEASE: &str = r"
local function take(field, want, limit)
  if limit < 0 or want <= 0 then return 0 end
  local used = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  local grant = math.min(want, math.max(0, limit - used))
  if grant > 0 then redis.call('HINCRBY', KEYS[1], field, grant) end
  return grant
end
local r = take('req', tonumber(ARGV[1]), tonumber(ARGV[3]))
local t = take('tok', tonumber(ARGV[2]), tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[1], 120)
return {r, t, tonumber(redis.call('HGET', KEYS[1], 'req') or '0'),
        tonumber(redis.call('HGET', KEYS[1], 'tok') or '0')}
";

/// What one lease call granted, and the minute's totals across data planes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grant {
    pub requests: u64,
    pub tokens: u64,
    pub total_requests: u64,
    pub total_tokens: u64,
}

/// What to ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    pub requests: u64,
    pub tokens: u64,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

pub struct Shared {
    conn: ConnectionManager,
    script: redis::Script,
    id: String,
    down_until_ms: AtomicU64,
    down: AtomicBool,
    dataplanes: AtomicU64,
    pub fallbacks: prometheus::IntCounter,
    pub up: prometheus::IntGauge,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("id", &self.id).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}: {1}")]
    Ca(String, std::io::Error),
}

impl Shared {
    /// Connects (on the current tokio runtime, which drives the connection) and starts the
    /// heartbeat that counts live data planes.
    /// A `rediss://` URL is TLS, verified against `tls_ca` (PEM) when given, else the
    /// system's roots.
    pub async fn connect(
        url: &str,
        tls_ca: Option<&std::path::Path>,
        id: &str,
    ) -> Result<std::sync::Arc<Self>, SharedError> {
        let fallbacks = prometheus::IntCounter::new(
            "routeiq_redis_fallbacks_total",
            "Rate-limit decisions made with local shares because Redis failed",
        )?;
        let up = prometheus::IntGauge::new(
            "routeiq_redis_up",
            "1 while rate limits are shared through Redis, 0 while they fall back",
        )?;
        let client = match tls_ca {
            Some(ca) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(
                        std::fs::read(ca)
                            .map_err(|e| SharedError::Ca(ca.display().to_string(), e))?,
                    ),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let shared = std::sync::Arc::new(Self {
            conn,
            script: redis::Script::new(LEASE),
            id: id.to_owned(),
            down_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            dataplanes: AtomicU64::new(1),
            fallbacks,
            up,
        });
        shared.up.set(1);
        tokio::spawn(heartbeat(std::sync::Arc::clone(&shared)));
        Ok(shared)
    }

    /// The connection, for other state shared through the same Redis.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Whether to try Redis now (not within the backoff after a failure).
    pub fn usable(&self) -> bool {
        now_ms() >= self.down_until_ms.load(Ordering::Relaxed)
    }

    /// Data planes seen alive (at least 1): the divisor of a key's limits in fallback.
    pub fn dataplanes(&self) -> u64 {
        self.dataplanes.load(Ordering::Relaxed).max(1)
    }

    /// Notes a failure: local limits for [`BACKOFF`].
    pub fn failed(&self, e: &SharedError) {
        self.down_until_ms
            .store(now_ms() + BACKOFF.as_millis() as u64, Ordering::Relaxed);
        self.fallbacks.inc();
        if !self.down.swap(true, Ordering::Relaxed) {
            self.up.set(0);
            tracing::warn!(error = %e, dataplanes = self.dataplanes(), "Redis unavailable: rate limits fall back to this data plane's share");
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            self.up.set(1);
            tracing::info!("Redis reachable again: rate limits are shared");
        }
    }

    /// Takes a grant for `key`'s `minute`.
    pub async fn lease(&self, key: &KeyHash, minute: u64, ask: Ask) -> Result<Grant, SharedError> {
        let limit = |l: Option<u64>| l.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let mut conn = self.conn.clone();
        let mut call = self.script.prepare_invoke();
        call.key(format!("routeiq:rl:{}:{minute}", key.to_hex()))
            .arg(ask.requests)
            .arg(ask.tokens)
            .arg(limit(ask.rpm))
            .arg(limit(ask.tpm));
        let out: Vec<u64> = tokio::time::timeout(TIMEOUT, call.invoke_async(&mut conn))
            .await
            .map_err(|_| SharedError::Timeout(TIMEOUT))??;
        self.recovered();
        Ok(Grant {
            requests: out.first().copied().unwrap_or(0),
            tokens: out.get(1).copied().unwrap_or(0),
            total_requests: out.get(2).copied().unwrap_or(0),
            total_tokens: out.get(3).copied().unwrap_or(0),
        })
    }
}

/// Announces this data plane and counts the live ones, forever.
async fn heartbeat(shared: std::sync::Arc<Shared>) {
    loop {
        let now = now_ms();
        let mut conn = shared.conn.clone();
        let counted: Result<u64, redis::RedisError> = redis::pipe()
            .zadd(DATAPLANES, &shared.id, now)
            .ignore()
            .zrembyscore(DATAPLANES, 0, now.saturating_sub(ALIVE_FOR_MS))
            .ignore()
            .zcard(DATAPLANES)
            .query_async::<(u64,)>(&mut conn)
            .await
            .map(|(n,)| n);
        match counted {
            Ok(n) => {
                shared.dataplanes.store(n.max(1), Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, "Redis heartbeat failed"),
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}
