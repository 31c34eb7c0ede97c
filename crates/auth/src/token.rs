//! Bearer tokens: compact JWS (ES256) signed by the library key, naming the
//! caller's agency and role, with an expiry. Services verify with the public
//! half; only holders of the library key can mint.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zhengzhao_crypto::{Es256KeyPair, Es256PublicKey, JwsHeader, jws};

use crate::{Principal, Role};

const ISSUER: &str = "zhengzhao";
const KID: &str = "library";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token names an invalid agency or role: {0}")]
    Claims(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    role: String,
    iat: i64,
    exp: i64,
    jti: String,
}

/// Checks tokens against the library's public key.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    key: Es256PublicKey,
}

impl TokenVerifier {
    pub fn new(key: Es256PublicKey) -> Self {
        TokenVerifier { key }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let parsed = jws::parse(token).map_err(|_| TokenError::Malformed)?;
        if parsed.header.alg != "ES256" {
            return Err(TokenError::Malformed);
        }
        if !self.key.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
            return Err(TokenError::Signature);
        }
        let claims: Claims = serde_json::from_slice(&parsed.payload).map_err(|_| TokenError::Malformed)?;
        if claims.iss != ISSUER {
            return Err(TokenError::Claims("issuer".into()));
        }
        if OffsetDateTime::now_utc().unix_timestamp() >= claims.exp {
            return Err(TokenError::Expired);
        }
        let role: Role = claims.role.parse().map_err(TokenError::Claims)?;
        zhengzhao_core::Uscc::parse(&claims.sub).map_err(|e| TokenError::Claims(format!("agency: {e}")))?;
        Ok(Principal { agency: claims.sub, role, token_id: claims.jti })
    }
}

/// Mints tokens with the library key (and verifies them).
#[derive(Debug)]
pub struct TokenAuthority {
    key: Es256KeyPair,
    verifier: TokenVerifier,
}

impl TokenAuthority {
    pub fn new(key: Es256KeyPair) -> Self {
        let verifier = TokenVerifier::new(key.public_key());
        TokenAuthority { key, verifier }
    }

    pub fn verifier(&self) -> &TokenVerifier {
        &self.verifier
    }

    /// Signs `payload` as a JWS of type `typ` with the library key (`kid`
    /// "library"): statements the library makes, such as transparency-log
    /// checkpoints. Never a token: the type must not be "JWT".
    pub fn sign_statement(&self, typ: &str, payload: &[u8]) -> String {
        debug_assert_ne!(typ, "JWT");
        let header = JwsHeader { alg: "ES256".into(), kid: Some(KID.into()), typ: Some(typ.into()), iat: None };
        let input = jws::signing_input(&header, payload);
        jws::assemble(&input, &self.key.sign(input.as_bytes()))
    }

    /// The library's public key as a JWK (`kid` "library").
    pub fn public_jwk(&self) -> serde_json::Value {
        self.key.public_key().to_jwk(KID)
    }

    /// Mints a token for `agency` (a unified social credit code) in `role`, valid for `ttl`.
    pub fn mint(&self, agency: &str, role: Role, ttl: Duration) -> Result<String, TokenError> {
        zhengzhao_core::Uscc::parse(agency).map_err(|e| TokenError::Claims(format!("agency: {e}")))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let ttl = i64::try_from(ttl.as_secs()).map_err(|_| TokenError::Claims("ttl too long".into()))?;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: agency.into(),
            role: role.to_string(),
            iat: now,
            exp: now.saturating_add(ttl),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?;
        let header = JwsHeader { alg: "ES256".into(), kid: Some(KID.into()), typ: Some("JWT".into()), iat: None };
        let input = jws::signing_input(&header, &payload);
        Ok(jws::assemble(&input, &self.key.sign(input.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENCY: &str = "91350100M000100Y43";

    #[test]
    fn mint_and_verify() {
        let a = TokenAuthority::new(Es256KeyPair::generate());
        let t = a.mint(AGENCY, Role::Issuer, Duration::from_secs(60)).unwrap();
        let p = a.verifier().verify(&t).unwrap();
        assert_eq!(p.agency, AGENCY);
        assert_eq!(p.role, Role::Issuer);
    }

    #[test]
    fn refuses_other_keys_tampering_and_expiry() {
        let a = TokenAuthority::new(Es256KeyPair::generate());
        let b = TokenAuthority::new(Es256KeyPair::generate());
        let t = a.mint(AGENCY, Role::Admin, Duration::from_secs(60)).unwrap();
        assert_eq!(b.verifier().verify(&t), Err(TokenError::Signature));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged_payload = zhengzhao_crypto::b64url(
            br#"{"iss":"zhengzhao","sub":"91350100M000100Y43","role":"admin","iat":0,"exp":99999999999,"jti":"x"}"#,
        );
        parts[1] = &forged_payload;
        assert_eq!(a.verifier().verify(&parts.join(".")), Err(TokenError::Signature));
        let expired = a.mint(AGENCY, Role::Admin, Duration::from_secs(0)).unwrap();
        assert_eq!(a.verifier().verify(&expired), Err(TokenError::Expired));
        assert_eq!(a.verifier().verify("junk"), Err(TokenError::Malformed));
        assert!(a.mint("not-a-code", Role::Admin, Duration::from_secs(60)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn verify_never_panics_on_any_input(s in ".*", a in "[A-Za-z0-9_-]{0,60}", b in "[A-Za-z0-9_-]{0,200}") {
            let v = TokenVerifier::new(Es256KeyPair::generate().public_key());
            proptest::prop_assert!(v.verify(&s).is_err());
            let shaped = format!("{a}.{b}.{a}");
            proptest::prop_assert!(v.verify(&shaped).is_err());
        }
    }
}
