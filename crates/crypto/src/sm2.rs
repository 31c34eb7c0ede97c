//! SM2 signatures with SM3 (GB/T 32918, `sm2sign-with-sm3`, OID
//! 1.2.156.10197.1.501), with the default user ID `1234567812345678`, via
//! RustCrypto `sm2`. Signatures are 64-byte `r || s`, like ES256's.
//!
//! In JWS the algorithm is named `SM2SM3` (no IANA name exists); a public key
//! is published as a JWK `{"kty": "EC", "crv": "SM2", "x", "y", "kid", "alg":
//! "SM2SM3", "use": "sig"}` with base64url 32-byte coordinates.

use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};

use crate::es256::KeyError;

/// The SM2 default distinguishing (user) ID.
pub const DEFAULT_USER_ID: &str = "1234567812345678";
/// The JWS `alg` value for SM2 with SM3.
pub const JWS_ALG: &str = "SM2SM3";

/// An SM2 private key.
pub struct Sm2KeyPair {
    signing: SigningKey,
}

impl std::fmt::Debug for Sm2KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sm2KeyPair(..)")
    }
}

impl Sm2KeyPair {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        loop {
            if let Ok(k) = Self::from_secret_bytes(&crate::random_bytes::<32>()) {
                return k;
            }
        }
    }

    /// From the 32-byte big-endian private scalar.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        SigningKey::from_slice(DEFAULT_USER_ID, bytes)
            .map(|signing| Sm2KeyPair { signing })
            .map_err(|_| KeyError::Private)
    }

    /// The 32-byte private scalar; only ever written to disk inside an envelope.
    pub fn secret_bytes(&self) -> Vec<u8> {
        self.signing.to_bytes().to_vec()
    }

    pub fn public_key(&self) -> Sm2PublicKey {
        Sm2PublicKey { verifying: self.signing.verifying_key().clone() }
    }

    /// Signs `message` (SM3 over Z || message).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig: Signature = self.signing.sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        out
    }
}

/// An SM2 public key.
#[derive(Debug, Clone)]
pub struct Sm2PublicKey {
    verifying: VerifyingKey,
}

impl Sm2PublicKey {
    /// From a SEC1 encoded point.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, KeyError> {
        VerifyingKey::from_sec1_bytes(DEFAULT_USER_ID, bytes)
            .map(|verifying| Sm2PublicKey { verifying })
            .map_err(|e| KeyError::Public(e.to_string()))
    }

    /// The uncompressed SEC1 point (65 bytes).
    pub fn to_sec1(&self) -> Vec<u8> {
        self.verifying.to_sec1_bytes().to_vec()
    }

    /// The public key as a JWK (see the module docs).
    pub fn to_jwk(&self, kid: &str) -> serde_json::Value {
        crate::ec_jwk(&self.to_sec1(), "SM2", kid, JWS_ALG)
    }

    /// From a JWK with `kty` EC and `crv` SM2.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        Self::from_sec1(&crate::ec_point_from_jwk(jwk, "SM2")?)
    }

    /// Whether `signature` (64-byte `r || s`) is valid for `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match Signature::from_slice(signature) {
            Ok(sig) => self.verifying.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sign_verify_and_jwk_round_trip() {
        let key = Sm2KeyPair::generate();
        let sig = key.sign(b"licence");
        let public = key.public_key();
        assert!(public.verify(b"licence", &sig));
        assert!(!public.verify(b"licencf", &sig));
        let back = Sm2PublicKey::from_jwk(&public.to_jwk("k")).unwrap();
        assert_eq!(back.to_sec1(), public.to_sec1());
        assert!(back.verify(b"licence", &sig));
        let again = Sm2KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap();
        assert_eq!(again.public_key().to_sec1(), public.to_sec1());
        // An ES256 JWK is not an SM2 one.
        let es = crate::Es256KeyPair::generate().public_key().to_jwk("e");
        assert!(Sm2PublicKey::from_jwk(&es).is_err());
    }

    proptest! {
        #[test]
        fn malformed_inputs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Sm2PublicKey::from_sec1(&bytes);
            let _ = Sm2KeyPair::from_secret_bytes(&bytes);
            let key = Sm2KeyPair::generate().public_key();
            prop_assert!(!key.verify(b"m", &bytes));
        }
    }
}
