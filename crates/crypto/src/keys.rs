//! Issuer keys of either algorithm behind one type: ES256 (P-256 with
//! SHA-256) or SM2-with-SM3. Both sign the same JWS signing input and produce
//! 64-byte `r || s` signatures; the JWS `alg` and the JWK `crv` say which.

use std::fmt;
use std::str::FromStr;

use crate::es256::{Es256KeyPair, Es256PublicKey, KeyError};
use crate::sm2::{Sm2KeyPair, Sm2PublicKey};

/// A signature algorithm an issuer key is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256 (JWS `ES256`).
    Es256,
    /// SM2 with SM3 and the default user ID (JWS `SM2SM3`).
    Sm2Sm3,
}

impl Algorithm {
    /// The JWS `alg` value.
    pub fn jws_alg(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Sm2Sm3 => crate::sm2::JWS_ALG,
        }
    }

    /// From a JWS `alg` value.
    pub fn from_jws_alg(alg: &str) -> Option<Self> {
        match alg {
            "ES256" => Some(Algorithm::Es256),
            a if a == crate::sm2::JWS_ALG => Some(Algorithm::Sm2Sm3),
            _ => None,
        }
    }

    /// The short lower-case name used in key IDs and on the command line.
    pub fn short_name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "es256",
            Algorithm::Sm2Sm3 => "sm2",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.jws_alg())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    /// Accepts `es256`/`ES256` and `sm2`/`SM2SM3` (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "es256" => Ok(Algorithm::Es256),
            "sm2" | "sm2sm3" => Ok(Algorithm::Sm2Sm3),
            _ => Err(format!("unknown signature algorithm {s:?}: use es256 or sm2")),
        }
    }
}

/// A private issuer key.
#[derive(Debug)]
pub enum IssuerKeyPair {
    Es256(Es256KeyPair),
    Sm2(Sm2KeyPair),
}

impl IssuerKeyPair {
    /// A fresh key of `alg` from the operating system's random source.
    pub fn generate(alg: Algorithm) -> Self {
        match alg {
            Algorithm::Es256 => IssuerKeyPair::Es256(Es256KeyPair::generate()),
            Algorithm::Sm2Sm3 => IssuerKeyPair::Sm2(Sm2KeyPair::generate()),
        }
    }

    /// From the 32-byte private scalar of a key of `alg`.
    pub fn from_secret_bytes(alg: Algorithm, bytes: &[u8]) -> Result<Self, KeyError> {
        Ok(match alg {
            Algorithm::Es256 => IssuerKeyPair::Es256(Es256KeyPair::from_secret_bytes(bytes)?),
            Algorithm::Sm2Sm3 => IssuerKeyPair::Sm2(Sm2KeyPair::from_secret_bytes(bytes)?),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            IssuerKeyPair::Es256(_) => Algorithm::Es256,
            IssuerKeyPair::Sm2(_) => Algorithm::Sm2Sm3,
        }
    }

    /// The private scalar; only ever written to disk inside an envelope.
    pub fn secret_bytes(&self) -> Vec<u8> {
        match self {
            IssuerKeyPair::Es256(k) => k.secret_bytes(),
            IssuerKeyPair::Sm2(k) => k.secret_bytes(),
        }
    }

    pub fn public_key(&self) -> IssuerPublicKey {
        match self {
            IssuerKeyPair::Es256(k) => IssuerPublicKey::Es256(k.public_key()),
            IssuerKeyPair::Sm2(k) => IssuerPublicKey::Sm2(k.public_key()),
        }
    }

    /// Signs `message`: a 64-byte `r || s` signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        match self {
            IssuerKeyPair::Es256(k) => k.sign(message),
            IssuerKeyPair::Sm2(k) => k.sign(message),
        }
    }
}

/// A public issuer key.
#[derive(Debug, Clone)]
pub enum IssuerPublicKey {
    Es256(Es256PublicKey),
    Sm2(Sm2PublicKey),
}

impl IssuerPublicKey {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            IssuerPublicKey::Es256(_) => Algorithm::Es256,
            IssuerPublicKey::Sm2(_) => Algorithm::Sm2Sm3,
        }
    }

    /// The public JWK with `kid`, `alg` and `use`.
    pub fn to_jwk(&self, kid: &str) -> serde_json::Value {
        match self {
            IssuerPublicKey::Es256(k) => k.to_jwk(kid),
            IssuerPublicKey::Sm2(k) => k.to_jwk(kid),
        }
    }

    /// From a JWK: `crv` P-256 is ES256, `crv` SM2 is SM2-with-SM3.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        match jwk.get("crv").and_then(|v| v.as_str()) {
            Some("P-256") => Es256PublicKey::from_jwk(jwk).map(IssuerPublicKey::Es256),
            Some("SM2") => Sm2PublicKey::from_jwk(jwk).map(IssuerPublicKey::Sm2),
            other => Err(KeyError::Public(format!("unsupported curve {other:?}: P-256 or SM2"))),
        }
    }

    /// The uncompressed SEC1 point (65 bytes).
    pub fn sec1(&self) -> Vec<u8> {
        match self {
            IssuerPublicKey::Es256(k) => k.to_sec1(),
            IssuerPublicKey::Sm2(k) => k.to_sec1(),
        }
    }

    /// Whether `signature` is valid for `message` under this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            IssuerPublicKey::Es256(k) => k.verify(message, signature),
            IssuerPublicKey::Sm2(k) => k.verify(message, signature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_algorithms_sign_and_verify_through_their_jwks() {
        for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
            let key = IssuerKeyPair::generate(alg);
            assert_eq!(key.algorithm(), alg);
            let jwk = key.public_key().to_jwk("k");
            assert_eq!(jwk["alg"], alg.jws_alg());
            let public = IssuerPublicKey::from_jwk(&jwk).unwrap();
            assert_eq!(public.algorithm(), alg);
            let sig = key.sign(b"payload");
            assert!(public.verify(b"payload", &sig));
            assert!(!public.verify(b"payloaD", &sig));
            let again = IssuerKeyPair::from_secret_bytes(alg, &key.secret_bytes()).unwrap();
            assert!(again.public_key().verify(b"payload", &sig));
        }
        // An SM2 signature is not an ES256 one over the same input, nor back.
        let es = IssuerKeyPair::generate(Algorithm::Es256);
        let sm = IssuerKeyPair::generate(Algorithm::Sm2Sm3);
        assert!(!es.public_key().verify(b"m", &sm.sign(b"m")));
        assert!(!sm.public_key().verify(b"m", &es.sign(b"m")));
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("es256".parse::<Algorithm>(), Ok(Algorithm::Es256));
        assert_eq!("SM2".parse::<Algorithm>(), Ok(Algorithm::Sm2Sm3));
        assert_eq!("SM2SM3".parse::<Algorithm>(), Ok(Algorithm::Sm2Sm3));
        assert!("rs256".parse::<Algorithm>().is_err());
        assert_eq!(Algorithm::from_jws_alg("SM2SM3"), Some(Algorithm::Sm2Sm3));
        assert_eq!(Algorithm::from_jws_alg("none"), None);
        assert!(IssuerPublicKey::from_jwk(&serde_json::json!({"kty": "EC", "crv": "P-384"})).is_err());
    }
}
