//! Signers, verifiers and envelopes for Zhengzhao: ES256 keys and their JWKs,
//! JWS compact serialisation, and AES-256-GCM key envelopes under a master key.
//! Pure: no I/O beyond the operating system's random source.

#![forbid(unsafe_code)]

pub mod envelope;
pub mod es256;
pub mod jws;
pub mod merkle;
pub mod sm2;

pub use envelope::{EnvelopeError, MasterKey};
pub use es256::{Es256KeyPair, Es256PublicKey, KeyError};
pub use jws::{JwsError, JwsHeader, ParsedJws};

/// `n` bytes from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS random source failing is not recoverable for a signing service.
    getrandom::fill(&mut buf).expect("operating system random source failed");
    buf
}

/// Base64url without padding, as JOSE uses it.
pub fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn b64url_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s)
}
