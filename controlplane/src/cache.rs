//! The response cache's management (`/cache/*` of the admin API): the control plane removes
//! answers from Redis (`--redis-url`, the Redis the data planes share) and tells every data
//! plane to drop them from its memory tier with a `forget_cached` delta, so that a data
//! plane that was away gets it in order with the rest (one that re-fetches the full
//! snapshot after a gap empties its memory tier).

use std::collections::BTreeMap;
use std::time::Duration;

use routeiq_proto::{CacheKind, CacheSettings, DeltaOp, ForgetCached};
use sqlx::PgPool;

use crate::audit::{self, Actor};
use crate::error::StoreError;
use crate::{changes, settings};

/// Where data planes keep answers in Redis (see `dataplane::cache`).
const REDIS_PREFIX: &str = "routeiq:cache:";
/// Longest wait for a Redis call.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// The Redis the data planes share, when the control plane is given it.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
}

impl Redis {
    /// `url`: `redis://[:password@]host:port[/db]` (or `rediss://`). Nothing connects
    /// until a cache operation needs it.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
        })
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        tokio::time::timeout(
            REDIS_TIMEOUT,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| unavailable("timed out"))?
        .map_err(|e| unavailable(&e.to_string()))
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(&mut conn))
            .await
            .map_err(|_| unavailable("timed out"))?
            .map_err(|e| unavailable(&e.to_string()))
    }

    /// Deletes every answer (SCAN over the cache's prefix; rate limits and other state
    /// the data planes keep in Redis stay).
    async fn delete_all(&self) -> Result<u64, StoreError> {
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{REDIS_PREFIX}*"))
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            if !keys.is_empty() {
                deleted += self.run::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

fn unavailable(e: &str) -> StoreError {
    StoreError::Unavailable(format!("the response cache's Redis: {e}"))
}

/// The cache's settings; an error when it is off.
async fn on(pool: &PgPool) -> Result<CacheSettings, StoreError> {
    settings::load(pool).await?.cache.ok_or_else(|| {
        StoreError::Precondition(
            "the response cache is off: set litellm_settings.cache: true in the config".into(),
        )
    })
}

/// Redis, which a `type: redis` cache needs here.
fn redis_of<'a>(
    s: &CacheSettings,
    redis: Option<&'a Redis>,
) -> Result<Option<&'a Redis>, StoreError> {
    match (s.kind, redis) {
        (CacheKind::Local, _) => Ok(None),
        (CacheKind::Redis, Some(r)) => Ok(Some(r)),
        (CacheKind::Redis, None) => Err(StoreError::Precondition(
            "the response cache is in Redis, and the control plane has none: start it with --redis-url".into(),
        )),
    }
}

pub struct Ping {
    pub settings: CacheSettings,
    /// Whether Redis answered (`None`: a memory-only cache).
    pub redis_ok: Option<bool>,
}

pub async fn ping(pool: &PgPool, redis: Option<&Redis>) -> Result<Ping, StoreError> {
    let settings = on(pool).await?;
    let redis_ok = match redis_of(&settings, redis)? {
        None => None,
        Some(r) => {
            let pong: String = r.run(&redis::cmd("PING")).await?;
            Some(pong == "PONG")
        }
    };
    Ok(Ping { settings, redis_ok })
}

/// Removes answers (by key, or all): from Redis, then from every data plane's memory.
/// Returns the snapshot version that carries the change, and how many Redis held.
pub async fn forget(
    pool: &PgPool,
    redis: Option<&Redis>,
    actor: &Actor,
    what: ForgetCached,
) -> Result<(u64, u64), StoreError> {
    // Keys as data planes name them: lower-case hex.
    let what = match what {
        ForgetCached::Keys(keys) => ForgetCached::Keys(checked_keys(keys)?),
        all => all,
    };
    let settings = on(pool).await?;
    let deleted = match (redis_of(&settings, redis)?, &what) {
        (None, _) => 0,
        (Some(r), ForgetCached::All) => r.delete_all().await?,
        (Some(r), ForgetCached::Keys(keys)) => {
            let names: Vec<String> = keys.iter().map(|k| format!("{REDIS_PREFIX}{k}")).collect();
            r.run(redis::cmd("UNLINK").arg(&names)).await?
        }
    };
    let (action, id, keys) = match &what {
        ForgetCached::All => ("cache.flush", "all", None),
        ForgetCached::Keys(keys) => ("cache.delete", "keys", Some(keys.clone())),
    };
    let mut tx = pool.begin().await?;
    let version = changes::append(&mut tx, vec![DeltaOp::ForgetCached(what)]).await?;
    audit::record(
        &mut *tx,
        actor,
        audit::Entry {
            action,
            object_type: "cache",
            object_id: id,
            before: None,
            after: Some(serde_json::json!({"keys": keys, "redis_deleted": deleted})),
            snapshot_version: Some(version),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((version, deleted))
}

/// `keys`, each a cache key (64 hex digits), in lower case; at least one.
fn checked_keys(keys: Vec<String>) -> Result<Vec<String>, StoreError> {
    if keys.is_empty() {
        return Err(StoreError::Invalid(
            "`keys` must name at least one key".into(),
        ));
    }
    keys.into_iter()
        .map(|k| {
            if k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(k.to_ascii_lowercase())
            } else {
                Err(StoreError::Invalid(format!(
                    "`{k}` is not a cache key (x-litellm-cache-key: 64 hex digits)"
                )))
            }
        })
        .collect()
}

/// Redis `INFO`, field by field.
pub async fn redis_info(
    pool: &PgPool,
    redis: Option<&Redis>,
) -> Result<BTreeMap<String, String>, StoreError> {
    let settings = on(pool).await?;
    let Some(r) = redis_of(&settings, redis)? else {
        return Err(StoreError::Precondition(
            "the response cache is in each data plane's memory (cache_params.type: local), not in Redis".into(),
        ));
    };
    let text: String = r.run(&redis::cmd("INFO")).await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}
