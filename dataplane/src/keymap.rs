//! The virtual keys of a live state: a shared base map plus a small overlay of changes.
//!
//! A delta touches a few keys of maybe a million. Copying the whole map per delta would
//! cost tens of milliseconds, and a persistent hash trie (one node of 32 slots per branch)
//! costs about 400 bytes per key. Instead a state holds an `Arc` of a plain hash map (the
//! base, shared by every state derived from it) and an overlay of the keys changed since;
//! a delta copies only the overlay, and when the overlay passes 1/64 of the base (at least
//! 1,024 entries) the two are merged into a new base. Lookups check the overlay first.
//!
//! Keys are SHA-256 digests, so the map hashes them by their first eight bytes: callers
//! cannot choose digests, and only the control plane inserts.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use routeiq_proto::{KeyHash, VirtualKey};

/// Hashes a [`KeyHash`] by its first eight bytes (it is uniformly distributed already).
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Whatever is written (the derived Hash may add a length): the digest's bytes,
        // uniformly distributed, dominate the result.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

type Map<V> = HashMap<KeyHash, V, BuildHasherDefault<DigestHasher>>;

#[derive(Clone, Default)]
pub struct KeyMap {
    base: Arc<Map<Arc<VirtualKey>>>,
    /// Changes since `base`: `Some` upserted, `None` deleted.
    overlay: Arc<Map<Option<Arc<VirtualKey>>>>,
    len: usize,
}

/// One change to apply.
pub enum Change {
    Upsert(Arc<VirtualKey>),
    Delete(KeyHash),
}

impl KeyMap {
    pub fn new(keys: Vec<Arc<VirtualKey>>) -> Self {
        let mut base = Map::with_capacity_and_hasher(keys.len(), Default::default());
        for k in keys {
            base.insert(k.hash, k);
        }
        let len = base.len();
        Self {
            base: Arc::new(base),
            overlay: Arc::default(),
            len,
        }
    }

    pub fn get(&self, hash: &KeyHash) -> Option<&Arc<VirtualKey>> {
        match self.overlay.get(hash) {
            Some(v) => v.as_ref(),
            None => self.base.get(hash),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The map after `changes`; `self` is unchanged.
    pub fn with(&self, changes: impl IntoIterator<Item = Change>) -> Self {
        let mut overlay = Map::clone(&self.overlay);
        let mut len = self.len;
        for c in changes {
            let (hash, value) = match c {
                Change::Upsert(k) => (k.hash, Some(k)),
                Change::Delete(h) => (h, None),
            };
            let existed = match overlay.get(&hash) {
                Some(v) => v.is_some(),
                None => self.base.contains_key(&hash),
            };
            match (existed, value.is_some()) {
                (false, true) => len += 1,
                (true, false) => len -= 1,
                _ => {}
            }
            overlay.insert(hash, value);
        }
        if overlay.len() <= (self.base.len() / 64).max(1024) {
            return Self {
                base: Arc::clone(&self.base),
                overlay: Arc::new(overlay),
                len,
            };
        }
        let mut base = Map::clone(&self.base);
        for (hash, value) in overlay {
            match value {
                Some(k) => base.insert(hash, k),
                None => base.remove(&hash),
            };
        }
        Self {
            base: Arc::new(base),
            overlay: Arc::default(),
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> Arc<VirtualKey> {
        Arc::new(VirtualKey {
            hash: KeyHash::of(&format!("sk-{i}")),
            spend: f64::from(i),
            ..VirtualKey::default()
        })
    }

    #[test]
    fn overlay_and_compaction_agree_with_a_plain_map() {
        let mut model: std::collections::HashMap<KeyHash, f64> = Default::default();
        let mut m = KeyMap::new((0..100).map(key).collect());
        for i in 0..100 {
            model.insert(key(i).hash, f64::from(i));
        }
        let first = m.clone();
        // Enough rounds to compact several times.
        for round in 0..3000u32 {
            let up = key(100 + round);
            let del = KeyHash::of(&format!("sk-{}", round * 7 % (100 + round)));
            model.insert(up.hash, up.spend);
            model.remove(&del);
            m = m.with([Change::Upsert(up), Change::Delete(del)]);
        }
        assert_eq!(m.len(), model.len());
        for i in 0..3100 {
            let h = KeyHash::of(&format!("sk-{i}"));
            assert_eq!(
                m.get(&h).map(|k| k.spend),
                model.get(&h).copied(),
                "key {i}"
            );
        }
        // Earlier versions are untouched.
        assert_eq!(first.len(), 100);
        assert!(first.get(&key(5).hash).is_some());
    }
}
