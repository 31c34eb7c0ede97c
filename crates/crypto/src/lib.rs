//! Signers, verifiers and envelopes for Zhengzhao: ES256 keys and their JWKs,
//! JWS compact serialisation, AES-256-GCM key envelopes under a master key,
//! the Merkle log and its checks, public keys as published, and issuer
//! certificates (X.509) from a CA.
//! Pure: no I/O beyond the operating system's random source.

#![forbid(unsafe_code)]

pub mod envelope;
pub mod es256;
pub mod jws;
pub mod keys;
pub mod merkle;
pub mod published;
pub mod sdjwt;
pub mod sm2;
pub mod translog;
pub mod x509;

pub use envelope::{EnvelopeError, MasterKey};
pub use es256::{Es256KeyPair, Es256PublicKey, KeyError};
pub use jws::{JwsError, JwsHeader, ParsedJws};
pub use keys::{Algorithm, IssuerKeyPair, IssuerPublicKey};

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

/// The public JWK (RFC 7517) of an uncompressed EC point on curve `crv`.
pub(crate) fn ec_jwk(point: &[u8], crv: &str, kid: &str, alg: &str) -> serde_json::Value {
    serde_json::json!({
        "kty": "EC",
        "crv": crv,
        "x": b64url(point.get(1..33).unwrap_or_default()),
        "y": b64url(point.get(33..65).unwrap_or_default()),
        "kid": kid,
        "alg": alg,
        "use": "sig",
    })
}

/// The uncompressed point (65 bytes) of a JWK with `kty` EC on curve `crv`.
pub(crate) fn ec_point_from_jwk(jwk: &serde_json::Value, crv: &str) -> Result<Vec<u8>, es256::KeyError> {
    use es256::KeyError;
    let field =
        |name: &str| jwk.get(name).and_then(|v| v.as_str()).ok_or_else(|| KeyError::Public(format!("missing {name}")));
    if field("kty")? != "EC" || field("crv")? != crv {
        return Err(KeyError::Public(format!("kty must be EC and crv {crv}")));
    }
    let x = b64url_decode(field("x")?).map_err(|e| KeyError::Public(e.to_string()))?;
    let y = b64url_decode(field("y")?).map_err(|e| KeyError::Public(e.to_string()))?;
    if x.len() != 32 || y.len() != 32 {
        return Err(KeyError::Public("x and y must be 32 bytes".into()));
    }
    let mut point = Vec::with_capacity(65);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Ok(point)
}
