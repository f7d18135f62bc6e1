//! Deployment health shared across data planes through Redis (with `--redis-url`).
//!
//! Nothing here is on the request path. A task syncs every [`PERIOD`]:
//! - cooldowns this data plane started go into one sorted set (`routeiq:cooldowns`, member
//!   the deployment id, score the Unix millisecond it ends), and the entries still running
//!   come back and open the same breakers here;
//! - each deployment's requests and tokens since the last sync are added to the minute's
//!   hash (`routeiq:dusage:<minute>`, fields `<id>:r` / `<id>:t`), and the totals come back
//!   for `usage-based-routing-v2` and the rpm/tpm pre-call checks.
//!
//! When Redis fails, each data plane keeps its own view (local cooldowns and usage) and the
//! next sync tries again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use routeiq_proto::DeploymentId;
use tokio::sync::mpsc;

use super::health::Health;
use crate::clock::now_ms;

/// `(deployment id, until Unix ms)` as Redis returns the sorted set.
type Cooldowns = Vec<(String, f64)>;

pub const PERIOD: Duration = Duration::from_millis(250);
const COOLDOWNS: &str = "routeiq:cooldowns";

/// Where the request path reports a cooldown it started: (deployment, until Unix ms).
pub type CooldownSender = mpsc::Sender<(DeploymentId, u64)>;

/// Starts the sync task on the current runtime.
pub fn start(conn: ConnectionManager, health: Arc<Health>) -> CooldownSender {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(run(conn, health, rx));
    tx
}

async fn run(
    mut conn: ConnectionManager,
    health: Arc<Health>,
    mut rx: mpsc::Receiver<(DeploymentId, u64)>,
) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let mut started = Vec::new();
        while let Ok(c) = rx.try_recv() {
            started.push(c);
        }
        match sync(&mut conn, &health, &started).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("deployment health shared through Redis again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot share deployment health through Redis; using local health");
            }
            Err(_) => {}
        }
    }
}

async fn sync(
    conn: &mut ConnectionManager,
    health: &Health,
    started: &[(DeploymentId, u64)],
) -> redis::RedisResult<()> {
    let now = now_ms();
    let minute = now / 60_000;
    let usage_key = format!("routeiq:dusage:{minute}");
    let all = health.all();

    let mut pipe = redis::pipe();
    for (id, until) in started {
        pipe.zadd(COOLDOWNS, &id.0, *until).ignore();
    }
    pipe.zrembyscore(COOLDOWNS, "-inf", now).ignore();
    let mut unflushed = Vec::new();
    for (id, h) in &all {
        let (r, t) = h.take_unflushed();
        if r > 0 || t != 0 {
            pipe.hincr(&usage_key, format!("{}:r", id.0), r).ignore();
            pipe.hincr(&usage_key, format!("{}:t", id.0), t).ignore();
            unflushed.push((h, r, t));
        }
    }
    pipe.expire(&usage_key, 120).ignore();
    pipe.zrangebyscore_withscores(COOLDOWNS, now, "+inf");
    pipe.hgetall(&usage_key);
    let result: redis::RedisResult<(Cooldowns, HashMap<String, i64>)> =
        pipe.query_async(conn).await;
    let (cooldowns, usage) = match result {
        Ok(r) => r,
        Err(e) => {
            // Not counted in Redis: keep it for the next sync.
            for (h, r, t) in unflushed {
                h.unflush(r, t);
            }
            return Err(e);
        }
    };
    let by_id: HashMap<&str, _> = all.iter().map(|(id, h)| (id.0.as_str(), h)).collect();
    for (id, until) in cooldowns {
        if let Some(h) = by_id.get(id.as_str()) {
            h.open_until(until as u64);
        }
    }
    for (id, h) in &all {
        // Corrections to actual usage are negative: a count can dip below zero briefly.
        let get = |suffix: &str| {
            usage
                .get(&format!("{}:{suffix}", id.0))
                .map_or(0, |v| u64::try_from(*v).unwrap_or(0))
        };
        h.set_shared(minute, get("r"), get("t"));
    }
    Ok(())
}
