//! State kept per virtual key beside the snapshot (rate-limit counters, budget accounts):
//! it outlives snapshot swaps. A map sharded by key hash; a shard that grows large drops
//! its entries that are no longer in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use routeiq_proto::KeyHash;

const SHARDS: usize = 64;
/// A shard drops unused entries when it grows past this.
const SWEEP_AT: usize = 4096;

#[derive(Debug)]
pub struct PerKey<V> {
    shards: Vec<Mutex<HashMap<KeyHash, Arc<V>>>>,
}

impl<V> Default for PerKey<V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl<V: Default> PerKey<V> {
    /// The entry of `hash`, created when missing; `in_use` tells which entries a sweep
    /// keeps.
    pub fn get(&self, hash: &KeyHash, in_use: impl Fn(&V) -> bool) -> Arc<V> {
        let mut map = lock(&self.shards[usize::from(hash.0[0]) % SHARDS]);
        if let Some(v) = map.get(hash) {
            return Arc::clone(v);
        }
        if map.len() >= SWEEP_AT {
            map.retain(|_, v| in_use(v));
        }
        Arc::clone(map.entry(*hash).or_default())
    }
}

/// Locks a mutex that guards plain numbers: a panic while it was held cannot have left
/// them inconsistent, so poisoning is ignored.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
