//! Credentials that expire (a service account's access token, AWS session credentials):
//! cached, refreshed in the background once they have less than [`REFRESH_AHEAD`] left,
//! and fetched on a request's path only when nothing usable is cached (the first fetch
//! has not finished, or failed). One fetch runs at a time per credential.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::ApiError;
use crate::upstream::Upstream;

/// A value with less than this left is refreshed in the background.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// A value with less than this left is not used at all.
const MIN_LEFT: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// How to get a fresh value.
#[async_trait]
pub trait Fetch: Send + Sync + 'static {
    type Value: Clone + Send + Sync + 'static;

    /// A fresh value and when it expires (`None`: never).
    async fn fetch(
        &self,
        upstream: &Arc<Upstream>,
    ) -> Result<(Self::Value, Option<Instant>), ApiError>;

    /// Names the credential in logs and errors (never its secret).
    fn describe(&self) -> String;
}

struct Cached<V> {
    value: V,
    expires: Option<Instant>,
}

impl<V> Cached<V> {
    fn left(&self) -> Duration {
        self.expires.map_or(Duration::MAX, |e| {
            e.saturating_duration_since(Instant::now())
        })
    }
}

pub struct Refreshing<F: Fetch> {
    fetcher: F,
    current: Mutex<Option<Cached<F::Value>>>,
    fetching: tokio::sync::Mutex<()>,
}

impl<F: Fetch> Refreshing<F> {
    /// A new cache; its first fetch starts now when a runtime is there.
    pub fn start(fetcher: F, upstream: &Arc<Upstream>) -> Arc<Self> {
        let me = Arc::new(Self {
            fetcher,
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            me.refresh_in_background(upstream);
        }
        me
    }

    pub fn fetcher(&self) -> &F {
        &self.fetcher
    }

    fn cached(&self, min_left: Duration) -> Option<(F::Value, Duration)> {
        let current = self.current.lock().ok()?;
        let c = current.as_ref()?;
        let left = c.left();
        (left > min_left).then(|| (c.value.clone(), left))
    }

    /// The value for a request: the cached one (refreshed in the background when near its
    /// end), or a fresh one when there is none.
    pub async fn get(self: &Arc<Self>, upstream: &Arc<Upstream>) -> Result<F::Value, ApiError> {
        if let Some((value, left)) = self.cached(MIN_LEFT) {
            if left < REFRESH_AHEAD {
                self.refresh_in_background(upstream);
            }
            return Ok(value);
        }
        self.fetch(upstream, MIN_LEFT).await
    }

    /// Starts a refresh unless one is running.
    pub fn refresh_in_background(self: &Arc<Self>, upstream: &Arc<Upstream>) {
        if self.fetching.try_lock().is_err() {
            return;
        }
        let (me, upstream) = (Arc::clone(self), Arc::clone(upstream));
        tokio::spawn(async move {
            if let Err(e) = me.fetch(&upstream, REFRESH_AHEAD).await {
                tracing::warn!(credential = %me.fetcher.describe(), error = %e.message, "cannot refresh a credential");
            }
        });
    }

    /// Fetches unless another caller did while this one waited, or the cached value still
    /// has `min_left`.
    async fn fetch(
        &self,
        upstream: &Arc<Upstream>,
        min_left: Duration,
    ) -> Result<F::Value, ApiError> {
        let _one = self.fetching.lock().await;
        if let Some((value, _)) = self.cached(min_left) {
            return Ok(value);
        }
        let (value, expires) = tokio::time::timeout(FETCH_TIMEOUT, self.fetcher.fetch(upstream))
            .await
            .map_err(|_| {
                ApiError::timeout(format!(
                    "{} was not fetched within {}s",
                    self.fetcher.describe(),
                    FETCH_TIMEOUT.as_secs()
                ))
            })??;
        if let Ok(mut current) = self.current.lock() {
            *current = Some(Cached {
                value: value.clone(),
                expires,
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Counter {
        fetches: AtomicU64,
        lifetime: Duration,
    }

    #[async_trait]
    impl Fetch for Counter {
        type Value = u64;
        async fn fetch(&self, _: &Arc<Upstream>) -> Result<(u64, Option<Instant>), ApiError> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok((n, Some(Instant::now() + self.lifetime)))
        }
        fn describe(&self) -> String {
            "counter".into()
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch_and_a_long_lived_value_is_reused() {
        let up = Arc::new(Upstream::default());
        let c = Refreshing::start(
            Counter {
                fetches: AtomicU64::new(0),
                lifetime: Duration::from_secs(3600),
            },
            &up,
        );
        let all = futures_util::future::join_all((0..50).map(|_| c.get(&up))).await;
        assert!(all.iter().all(|v| *v.as_ref().unwrap() == 1));
        for _ in 0..10 {
            assert_eq!(c.get(&up).await.unwrap(), 1);
        }
        assert_eq!(c.fetcher().fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_value_near_its_end_is_refreshed_in_the_background_and_an_expired_one_never_used() {
        let up = Arc::new(Upstream::default());
        // 11 s: usable (over MIN_LEFT), but under REFRESH_AHEAD, so each use refreshes.
        let c = Refreshing::start(
            Counter {
                fetches: AtomicU64::new(0),
                lifetime: Duration::from_secs(11),
            },
            &up,
        );
        let first = c.get(&up).await.unwrap();
        assert_eq!(first, 1);
        // This get returns the cached value at once and starts a refresh.
        assert_eq!(c.get(&up).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(c.fetcher().fetches.load(Ordering::SeqCst) >= 2);
        assert!(c.get(&up).await.unwrap() >= 2);

        // A value with less than MIN_LEFT is fetched again on the request's path.
        let c = Refreshing::start(
            Counter {
                fetches: AtomicU64::new(0),
                lifetime: Duration::from_secs(5),
            },
            &up,
        );
        let a = c.get(&up).await.unwrap();
        let b = c.get(&up).await.unwrap();
        assert!(b > a, "a value with 5 s left is never handed out");
    }
}
