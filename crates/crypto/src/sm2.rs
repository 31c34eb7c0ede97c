//! SM2 signatures with SM3 (GB/T 32918, `sm2sign-with-sm3`, OID
//! 1.2.156.10197.1.501), with the default user ID `1234567812345678`.
//! Signatures are 64-byte `r || s`, like ES256's.
//!
//! Two backends. RustCrypto `sm2` (constant-time) makes every signature and
//! checks every key and signature encoding: a public key must be a point on
//! the curve in canonical form, `r` and `s` must lie in [1, n−1]. What then
//! passed those checks is verified by `efficient-sm2` (about twice as fast
//! here: `cargo bench -p zhengzhao-crypto`) over `SM3(Z || message)` with `Z`
//! computed once per key. `efficient-sm2` never signs: its scalar
//! multiplication branches on the secret nonce, a timing leak a signing
//! service must not have, and it panics on some inputs the checks above
//! keep from it. [`Sm2PublicKey::verify_sm2`] is the same check on `sm2`
//! alone; tests hold the two to the same answers.
//!
//! In JWS the algorithm is named `SM2SM3` (no IANA name exists); a public key
//! is published as a JWK `{"kty": "EC", "crv": "SM2", "x", "y", "kid", "alg":
//! "SM2SM3", "use": "sig"}` with base64url 32-byte coordinates.

use std::sync::Arc;

use sm2::dsa::signature::{Signer, Verifier};
use sm2::dsa::{Signature, SigningKey, VerifyingKey};
use sm3::{Digest, Sm3};

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
        Sm2PublicKey::new(self.signing.verifying_key().clone())
    }

    /// Signs `message` (SM3 over Z || message).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let sig: Signature = self.signing.sign(message);
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        out
    }
}

/// The curve's `a`, `b` and base point, as `Z` hashes them (GB/T 32918.2).
const CURVE_FOR_Z: [&str; 4] = [
    "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC",
    "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93",
    "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7",
    "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0",
];

/// `Z = SM3(ENTL || ID || a || b || Gx || Gy || x || y)` of an uncompressed point.
fn z_of(uncompressed: &[u8; 65]) -> [u8; 32] {
    let mut h = Sm3::new();
    let id = DEFAULT_USER_ID.as_bytes();
    h.update(u16::try_from(id.len() * 8).unwrap_or(u16::MAX).to_be_bytes());
    h.update(id);
    for c in CURVE_FOR_Z {
        h.update(hex::decode(c).unwrap_or_default());
    }
    h.update(&uncompressed[1..]);
    h.finalize().into()
}

/// The fast verifier of one key.
struct Fast {
    key: efficient_sm2::PublicKey,
    z: [u8; 32],
}

/// An SM2 public key.
#[derive(Clone)]
pub struct Sm2PublicKey {
    verifying: VerifyingKey,
    fast: Arc<Fast>,
}

impl std::fmt::Debug for Sm2PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sm2PublicKey").field("sec1", &hex::encode(self.to_sec1())).finish()
    }
}

impl Sm2PublicKey {
    /// From a SEC1 encoded point (on the curve, canonical; compressed or not).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, KeyError> {
        let verifying =
            VerifyingKey::from_sec1_bytes(DEFAULT_USER_ID, bytes).map_err(|e| KeyError::Public(e.to_string()))?;
        Ok(Sm2PublicKey::new(verifying))
    }

    /// A key `sm2` has checked, with its fast verifier.
    fn new(verifying: VerifyingKey) -> Self {
        // Always 65 bytes (04 || x || y): the identity is not a valid key.
        let sec1 = verifying.to_sec1_bytes();
        let mut point = [0u8; 65];
        let n = sec1.len().min(65);
        point[..n].copy_from_slice(&sec1[..n]);
        let fast = Fast { key: efficient_sm2::PublicKey::from_slice(&point[1..]), z: z_of(&point) };
        Sm2PublicKey { verifying, fast: Arc::new(fast) }
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
        // `r` and `s` in [1, n−1], exactly 64 bytes: checked by `sm2`
        // before `efficient-sm2` (which accepts r + n) sees them.
        if signature.len() != 64 {
            return false;
        }
        let Ok(checked) = Signature::from_slice(signature) else { return false };
        // t = (r + s) mod n must not be 0 (GB/T 32918.2, B5).
        let t = *checked.r() + *checked.s();
        if bool::from(sm2::elliptic_curve::ff::Field::is_zero(&t)) {
            return false;
        }
        let Ok(sig) = efficient_sm2::Signature::from_slice(signature) else { return false };
        let mut h = Sm3::new();
        h.update(self.fast.z);
        h.update(message);
        let e: [u8; 32] = h.finalize().into();
        sig.verify_digest(&self.fast.key, &e).is_ok()
    }

    /// `Z`, the hash of the user ID, the curve and this key that every
    /// signature's digest starts from.
    pub fn z(&self) -> [u8; 32] {
        self.fast.z
    }

    /// The same check on the `sm2` backend alone.
    pub fn verify_sm2(&self, message: &[u8], signature: &[u8]) -> bool {
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

    /// `r + n` verifies the same equation in `efficient-sm2`; both backends refuse it.
    #[test]
    fn out_of_range_signatures_are_refused_by_both_backends() {
        const N: &str = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123";
        let key = Sm2KeyPair::generate();
        let public = key.public_key();
        let n = hex::decode(N).unwrap();
        for _ in 0..64 {
            let sig = key.sign(b"m");
            // s + n, when it still fits in 32 bytes.
            let (mut s, mut carry) = ([0u8; 32], 0u16);
            for i in (0..32).rev() {
                let v = u16::from(sig[32 + i]) + u16::from(n[i]) + carry;
                s[i] = (v & 0xff) as u8;
                carry = v >> 8;
            }
            if carry == 0 {
                let mut forged = sig;
                forged[32..].copy_from_slice(&s);
                assert!(!public.verify(b"m", &forged));
                assert!(!public.verify_sm2(b"m", &forged));
            }
            for bad in [[0u8; 64].to_vec(), sig[..63].to_vec(), [sig.as_slice(), &[0]].concat(), vec![0xff; 64]] {
                assert!(!public.verify(b"m", &bad));
                assert!(!public.verify_sm2(b"m", &bad));
            }
        }
    }

    #[test]
    fn both_backends_agree() {
        for i in 0..200u32 {
            let key = Sm2KeyPair::generate();
            let public = Sm2PublicKey::from_sec1(&key.public_key().to_sec1()).unwrap();
            let msg = format!("licence {i}").repeat(i as usize % 7);
            let sig = key.sign(msg.as_bytes());
            assert!(public.verify(msg.as_bytes(), &sig) && public.verify_sm2(msg.as_bytes(), &sig));
            let mut tampered = sig;
            tampered[(i as usize) % 64] ^= 1 << (i % 8);
            assert!(!public.verify(msg.as_bytes(), &tampered) && !public.verify_sm2(msg.as_bytes(), &tampered));
            assert!(!public.verify(b"other", &sig) && !public.verify_sm2(b"other", &sig));
        }
    }

    proptest! {
        #[test]
        fn malformed_inputs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Sm2PublicKey::from_sec1(&bytes);
            let _ = Sm2KeyPair::from_secret_bytes(&bytes);
            let key = Sm2KeyPair::generate().public_key();
            prop_assert!(!key.verify(b"m", &bytes));
            prop_assert!(!key.verify_sm2(b"m", &bytes));
        }

        #[test]
        fn the_backends_agree_on_arbitrary_signatures(sig in proptest::collection::vec(any::<u8>(), 64)) {
            let key = Sm2KeyPair::generate().public_key();
            prop_assert_eq!(key.verify(b"m", &sig), key.verify_sm2(b"m", &sig));
        }
    }
}
