//! Key envelopes: private keys encrypted at rest with AES-256-GCM under a
//! master key that never enters the database. The key id is bound as
//! associated data, so an envelope cannot be swapped onto another key row.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

const VERSION: u8 = 1;

/// An envelope that cannot be opened or a master key that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("master key must be 32 bytes, given as 64 hex characters")]
    MasterKeyFormat,
    #[error("envelope is malformed")]
    Malformed,
    #[error("envelope does not open under this master key (wrong key, or tampered)")]
    Open,
}

/// The 256-bit master key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        MasterKey(crate::random_bytes::<32>())
    }

    /// From 64 hex characters (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Self, EnvelopeError> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(EnvelopeError::MasterKeyFormat);
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).map_err(|_| EnvelopeError::MasterKeyFormat)?;
            out[i] = u8::from_str_radix(pair, 16).map_err(|_| EnvelopeError::MasterKeyFormat)?;
        }
        Ok(MasterKey(out))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }

    /// Encrypts `secret`, bound to `key_id`: `version || nonce || ciphertext`.
    pub fn seal(&self, key_id: &str, secret: &[u8]) -> Vec<u8> {
        let nonce_bytes = crate::random_bytes::<12>();
        let nonce = Nonce::from(nonce_bytes);
        // Encryption with a valid key and in-memory buffers cannot fail.
        let ct = self
            .cipher()
            .encrypt(&nonce, Payload { msg: secret, aad: key_id.as_bytes() })
            .expect("AES-GCM encryption failed");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&ct);
        out
    }

    /// Decrypts an envelope sealed for `key_id`.
    pub fn open(&self, key_id: &str, envelope: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        if envelope.len() < 1 + 12 + 16 || envelope[0] != VERSION {
            return Err(EnvelopeError::Malformed);
        }
        let mut nonce_bytes = [0u8; 12];
        nonce_bytes.copy_from_slice(&envelope[1..13]);
        let nonce = Nonce::from(nonce_bytes);
        self.cipher()
            .decrypt(&nonce, Payload { msg: &envelope[13..], aad: key_id.as_bytes() })
            .map_err(|_| EnvelopeError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_for_the_same_key_and_id() {
        let mk = MasterKey::generate();
        let env = mk.seal("kid-1", b"secret");
        assert_eq!(mk.open("kid-1", &env).unwrap(), b"secret");
        assert_eq!(mk.open("kid-2", &env), Err(EnvelopeError::Open));
        assert_eq!(MasterKey::generate().open("kid-1", &env), Err(EnvelopeError::Open));
        let mut tampered = env.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(mk.open("kid-1", &tampered), Err(EnvelopeError::Open));
        assert_eq!(mk.open("kid-1", &env[..10]), Err(EnvelopeError::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn open_never_panics_and_never_accepts_junk(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100), s in ".*") {
            let mk = MasterKey::generate();
            proptest::prop_assert!(mk.open("kid", &bytes).is_err());
            let _ = MasterKey::from_hex(&s);
        }
    }

    #[test]
    fn hex_round_trips() {
        let mk = MasterKey::generate();
        assert_eq!(MasterKey::from_hex(&mk.to_hex()).unwrap().0, mk.0);
        assert!(MasterKey::from_hex("zz").is_err());
        assert!(MasterKey::from_hex(&"g".repeat(64)).is_err());
    }
}
