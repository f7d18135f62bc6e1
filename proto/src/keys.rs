//! Virtual keys as the data plane sees them, found by the SHA-256 of the key.

use std::fmt;

use sha2::{Digest, Sha256};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends the lower-case hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Through a buffer, a block at a time: a table lookup per digit, one copy per block.
    let mut buf = [0u8; 128];
    for block in bytes.chunks(buf.len() / 2) {
        for (pair, b) in buf.chunks_exact_mut(2).zip(block) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        // Hex digits are ASCII, so this cannot fail.
        out.push_str(std::str::from_utf8(&buf[..block.len() * 2]).unwrap_or_default());
    }
}

/// SHA-256 of an API key. Keys are stored and distributed only in this form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(Self)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Equality in time independent of where the hashes differ.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({})", &self.to_hex()[..12])
    }
}

/// A virtual key's data-plane view: identity, access and limits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VirtualKey {
    pub hash: KeyHash,
    pub alias: String,
    pub team_id: String,
    /// Its team's `team_alias` (empty: none), for metric labels.
    pub team_alias: String,
    pub user_id: String,
    /// The key's organization, else its team's (empty: none).
    pub organization_id: String,
    /// That organization's `organization_alias` (empty: none), for metric labels.
    pub organization_alias: String,
    /// Models the key may call; empty means all.
    /// Shared: keys with the same list point at one copy (see `wire::decode_stored`).
    pub models: std::sync::Arc<[String]>,
    /// Models the key's team may call; empty means all (or no team). Shared like `models`.
    pub team_models: std::sync::Arc<[String]>,
    pub max_budget: Option<f64>,
    /// Past this spend requests pass but count as over the soft budget (alerting).
    pub soft_budget: Option<f64>,
    /// Spend as of the snapshot version (USD).
    pub spend: f64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    pub blocked: bool,
    pub rpm_limit: Option<u64>,
    pub tpm_limit: Option<u64>,
    pub max_parallel_requests: Option<u64>,
    /// Per-model budgets (`model_max_budget`), with the key's spend on each model in the
    /// current window.
    pub model_budgets: std::sync::Arc<[ModelBudget]>,
    /// The key's own `object_permission` (`None`: it has none, so its team's and
    /// organization's decide).
    pub permission: Option<std::sync::Arc<crate::ObjectPermission>>,
    /// Its use of the response cache (`metadata.cache`, the key's else its team's).
    pub cache: Option<crate::CachePolicy>,
}

/// A key's budget on one model (LiteLLM's `model_max_budget` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBudget {
    /// The model name clients send.
    pub model: String,
    pub max_budget: f64,
    /// Spend on the model in the current window (USD).
    pub spend: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_of_every_byte_and_of_more_than_a_block() {
        let all: Vec<u8> = (0..=255).collect();
        let mut expected = String::new();
        for b in &all {
            expected.push_str(&format!("{b:02x}"));
        }
        assert_eq!(hex(&all), expected);
        let mut out = String::from("x");
        push_hex(&mut out, &all[..65]);
        assert_eq!(out, format!("x{}", &expected[..130]));
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn hex_round_trip_and_known_digest() {
        let h = KeyHash::of("sk-1234");
        assert_eq!(KeyHash::from_hex(&h.to_hex()), Some(h));
        // sha256("abc")
        assert_eq!(
            KeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(KeyHash::from_hex("zz").is_none());
        assert!(h.ct_eq(&h) && !h.ct_eq(&KeyHash::of("sk-1235")));
    }
}
