//! Secrets at rest: AES-256-GCM under a key derived (SHA-256) from the salt key
//! (`ROUTEIQ_SALT_KEY`, or LiteLLM's `LITELLM_SALT_KEY`). Stored as `nonce || ciphertext`.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot draw random bytes: {0}")]
    Random(String),
    #[error("a stored secret could not be decrypted: wrong salt key, or corrupted data")]
    Decrypt,
}

/// `bytes` random bytes from the OS, as hex: ids and generated keys.
pub fn random_hex(bytes: usize) -> Result<String, CryptoError> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(routeiq_proto::hex(&b))
}

/// A random id for objects created without one (128 bits).
pub fn new_id() -> Result<String, CryptoError> {
    random_hex(16)
}

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl SecretBox {
    pub fn new(salt_key: &str) -> Self {
        let key: [u8; 32] = Sha256::digest(salt_key.as_bytes()).into();
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    pub fn seal(&self, plaintext: &str) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| CryptoError::Random(e.to_string()))?;
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .map_err(|_| CryptoError::Decrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, CryptoError> {
        if sealed.len() < 12 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ct) = sealed.split_at(12);
        let pt = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(pt).map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_refuses_another_key() {
        let b = SecretBox::new("salt-1");
        let sealed = b.seal("sk-upstream-secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"sk-ups"));
        assert_eq!(b.open(&sealed).unwrap(), "sk-upstream-secret");
        assert!(SecretBox::new("salt-2").open(&sealed).is_err());
        assert!(b.open(&sealed[..5]).is_err());
    }
}
