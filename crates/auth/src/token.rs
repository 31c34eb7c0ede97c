//! Bearer tokens: compact JWS (ES256, `typ` "JWT", `kid` "library") signed by
//! the library key, naming the caller's agency and role, with an issue time,
//! an expiry and an ID (`jti`). Services verify with the public half, allow
//! [`LEEWAY`] of clock skew, refuse lifetimes longer than the role's cap
//! ([`Role::max_token_lifetime`]) and tokens on the revocation denylist; only
//! holders of the library key can mint.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zhengzhao_crypto::{Es256KeyPair, Es256PublicKey, JwsHeader, jws};

use crate::{Denylist, Principal, Role};

const ISSUER: &str = "zhengzhao";
/// The `kid` of the library key in token headers.
pub const KID: &str = "library";
/// The `typ` of a bearer token; the library's other statements use other types.
pub const TYP: &str = "JWT";
/// Clock skew allowed between the minting and the verifying host, on `exp` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token header must have typ \"JWT\" and kid \"library\"")]
    Header,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token is issued in the future: check the clocks")]
    NotYetValid,
    #[error("a {role} token may live at most {}", human(*max))]
    Lifetime { role: Role, max: Duration },
    #[error("token has been revoked")]
    Revoked,
    #[error("token names an invalid agency or role: {0}")]
    Claims(String),
}

/// `12h`, `31d`, `10m` or seconds: how lifetimes are written on the command line.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s > 0 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
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

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Checks tokens against the library's public key (and, when given, a denylist).
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    key: Es256PublicKey,
    denylist: Option<Arc<Denylist>>,
}

impl TokenVerifier {
    pub fn new(key: Es256PublicKey) -> Self {
        TokenVerifier { key, denylist: None }
    }

    /// This verifier, also refusing tokens on `denylist`.
    pub fn with_denylist(mut self, denylist: Arc<Denylist>) -> Self {
        self.denylist = Some(denylist);
        self
    }

    /// The denylist this verifier consults, if any.
    pub fn denylist(&self) -> Option<&Arc<Denylist>> {
        self.denylist.as_ref()
    }

    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        self.verify_at(token, now_unix())
    }

    /// Verifies `token` as of `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Principal, TokenError> {
        let parsed = jws::parse(token).map_err(|_| TokenError::Malformed)?;
        if parsed.header.alg != "ES256" {
            return Err(TokenError::Malformed);
        }
        if parsed.header.typ.as_deref() != Some(TYP) || parsed.header.kid.as_deref() != Some(KID) {
            return Err(TokenError::Header);
        }
        if !self.key.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
            return Err(TokenError::Signature);
        }
        let claims: Claims = serde_json::from_slice(&parsed.payload).map_err(|_| TokenError::Malformed)?;
        if claims.iss != ISSUER {
            return Err(TokenError::Claims("issuer".into()));
        }
        if claims.exp <= claims.iat {
            return Err(TokenError::Malformed);
        }
        let leeway = secs(LEEWAY);
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        let role: Role = claims.role.parse().map_err(TokenError::Claims)?;
        let max = role.max_token_lifetime();
        if claims.exp.saturating_sub(claims.iat) > secs(max) {
            return Err(TokenError::Lifetime { role, max });
        }
        zhengzhao_core::Uscc::parse(&claims.sub).map_err(|e| TokenError::Claims(format!("agency: {e}")))?;
        if let Some(d) = &self.denylist
            && d.is_revoked(&claims.jti, now)
        {
            return Err(TokenError::Revoked);
        }
        Ok(Principal { agency: claims.sub, role, token_id: claims.jti })
    }
}

/// A freshly minted token and what an operator needs to revoke it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The compact JWS to send as `authorization: Bearer ...`.
    pub token: String,
    /// The token ID (`jti`), by which an administrator revokes it.
    pub token_id: String,
    /// When it expires.
    pub expires_at: OffsetDateTime,
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
        debug_assert_ne!(typ, TYP);
        let header = JwsHeader { alg: "ES256".into(), kid: Some(KID.into()), typ: Some(typ.into()), iat: None };
        let input = jws::signing_input(&header, payload);
        jws::assemble(&input, &self.key.sign(input.as_bytes()))
    }

    /// The library's public key as a JWK (`kid` "library").
    pub fn public_jwk(&self) -> serde_json::Value {
        self.key.public_key().to_jwk(KID)
    }

    /// Mints a token for `agency` (a unified social credit code) in `role`,
    /// valid for `ttl` (at most the role's [`Role::max_token_lifetime`]).
    pub fn mint(&self, agency: &str, role: Role, ttl: Duration) -> Result<String, TokenError> {
        self.issue(agency, role, ttl).map(|m| m.token)
    }

    /// As [`TokenAuthority::mint`], also returning the token's ID and expiry.
    pub fn issue(&self, agency: &str, role: Role, ttl: Duration) -> Result<MintedToken, TokenError> {
        self.issue_at(agency, role, ttl, now_unix())
    }

    fn issue_at(&self, agency: &str, role: Role, ttl: Duration, now: i64) -> Result<MintedToken, TokenError> {
        zhengzhao_core::Uscc::parse(agency).map_err(|e| TokenError::Claims(format!("agency: {e}")))?;
        let max = role.max_token_lifetime();
        if ttl > max {
            return Err(TokenError::Lifetime { role, max });
        }
        let exp = now.saturating_add(secs(ttl));
        let claims = Claims {
            iss: ISSUER.into(),
            sub: agency.into(),
            role: role.to_string(),
            iat: now,
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let expires_at = OffsetDateTime::from_unix_timestamp(exp).map_err(|_| TokenError::Malformed)?;
        let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?;
        let header = JwsHeader { alg: "ES256".into(), kid: Some(KID.into()), typ: Some(TYP.into()), iat: None };
        Ok(MintedToken { token: self.sign(&header, &payload), token_id: claims.jti, expires_at })
    }

    fn sign(&self, header: &JwsHeader, payload: &[u8]) -> String {
        let input = jws::signing_input(header, payload);
        jws::assemble(&input, &self.key.sign(input.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceName;

    const AGENCY: &str = "91350100M000100Y43";
    const HOUR: Duration = Duration::from_secs(3600);

    /// A token signed by `a` with any header and claims (what a forger with the key could make).
    fn signed(a: &TokenAuthority, header: serde_json::Value, claims: serde_json::Value) -> String {
        let h = zhengzhao_crypto::b64url(header.to_string().as_bytes());
        let p = zhengzhao_crypto::b64url(claims.to_string().as_bytes());
        let input = format!("{h}.{p}");
        jws::assemble(&input, &a.key.sign(input.as_bytes()))
    }

    fn claims(role: &str, iat: i64, exp: i64) -> serde_json::Value {
        serde_json::json!({"iss": "zhengzhao", "sub": AGENCY, "role": role, "iat": iat, "exp": exp, "jti": "j"})
    }

    fn good_header() -> serde_json::Value {
        serde_json::json!({"alg": "ES256", "kid": "library", "typ": "JWT"})
    }

    #[test]
    fn mint_and_verify() {
        let a = TokenAuthority::new(Es256KeyPair::generate());
        let m = a.issue(AGENCY, Role::Issuer, Duration::from_secs(60)).unwrap();
        let p = a.verifier().verify(&m.token).unwrap();
        assert_eq!(p.agency, AGENCY);
        assert_eq!(p.role, Role::Issuer);
        assert_eq!(p.token_id, m.token_id);
        let left = m.expires_at - OffsetDateTime::now_utc();
        assert!(left > time::Duration::seconds(50) && left <= time::Duration::seconds(60), "{left}");
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
        let now = now_unix();
        let expired = a.issue_at(AGENCY, Role::Admin, Duration::from_secs(10), now - 100).unwrap();
        assert_eq!(a.verifier().verify(&expired.token), Err(TokenError::Expired));
        assert_eq!(a.verifier().verify("junk"), Err(TokenError::Malformed));
        assert!(a.mint("not-a-code", Role::Admin, Duration::from_secs(60)).is_err());
    }

    #[test]
    fn header_must_say_jwt_and_name_the_library_key() {
        let a = TokenAuthority::new(Es256KeyPair::generate());
        let now = now_unix();
        let c = claims("admin", now, now + 60);
        assert!(a.verifier().verify(&signed(&a, good_header(), c.clone())).is_ok());
        for header in [
            serde_json::json!({"alg": "ES256", "kid": "library"}),
            serde_json::json!({"alg": "ES256", "kid": "library", "typ": "zhengzhao-checkpoint"}),
            serde_json::json!({"alg": "ES256", "kid": "library", "typ": "jwt+other"}),
            serde_json::json!({"alg": "ES256", "typ": "JWT"}),
            serde_json::json!({"alg": "ES256", "kid": "91350100M000100Y43.es256.1", "typ": "JWT"}),
        ] {
            assert_eq!(
                a.verifier().verify(&signed(&a, header.clone(), c.clone())),
                Err(TokenError::Header),
                "{header}"
            );
        }
        // A statement the library signs (a checkpoint) is never a token, whatever its payload.
        let statement = a.sign_statement("zhengzhao-checkpoint", c.to_string().as_bytes());
        assert_eq!(a.verifier().verify(&statement), Err(TokenError::Header));
    }

    #[test]
    fn clock_leeway_on_expiry_and_issue_time() {
        let a = TokenAuthority::new(Es256KeyPair::generate());
        let v = a.verifier();
        let now = 1_800_000_000;
        let t = a.issue_at(AGENCY, Role::Consumer, HOUR, now).unwrap().token;
        assert!(v.verify_at(&t, now + 3600 - 1).is_ok());
        assert!(v.verify_at(&t, now + 3600 + 59).is_ok(), "within the leeway after exp");
        assert_eq!(v.verify_at(&t, now + 3600 + 60), Err(TokenError::Expired));
        assert!(v.verify_at(&t, now - 60).is_ok(), "the minting host's clock may run a minute ahead");
        assert_eq!(v.verify_at(&t, now - 61), Err(TokenError::NotYetValid));
        assert_eq!(v.verify_at(&t, now - 86400), Err(TokenError::NotYetValid));
        // exp not after iat: malformed.
        assert_eq!(v.verify_at(&signed(&a, good_header(), claims("admin", now, now)), now), Err(TokenError::Malformed));
    }

    #[test]
    fn lifetimes_are_capped_by_role_at_mint_and_at_verification() {
        let a = TokenAuthority::new(Es256KeyPair::generate());
        let v = a.verifier();
        let now = now_unix();
        for role in [Role::Admin, Role::Issuer, Role::Consumer, Role::Portal, Role::Auditor] {
            assert_eq!(role.max_token_lifetime(), Duration::from_secs(12 * 3600));
            assert!(a.mint(AGENCY, role, 12 * HOUR).is_ok());
            let e = a.mint(AGENCY, role, 12 * HOUR + Duration::from_secs(1)).unwrap_err();
            assert_eq!(e, TokenError::Lifetime { role, max: 12 * HOUR });
            assert_eq!(e.to_string(), format!("a {role} token may live at most 12h"));
            // A token someone signed with a longer life is refused too.
            let long = signed(&a, good_header(), claims(&role.to_string(), now, now + 12 * 3600 + 1));
            assert_eq!(v.verify(&long), Err(TokenError::Lifetime { role, max: 12 * HOUR }));
            let year = signed(&a, good_header(), claims(&role.to_string(), now, now + 366 * 86400));
            assert!(matches!(v.verify(&year), Err(TokenError::Lifetime { .. })));
        }
        assert_eq!(Role::Sync.max_token_lifetime(), Duration::from_secs(31 * 86400));
        assert!(a.mint(AGENCY, Role::Sync, 31 * 24 * HOUR).is_ok());
        assert!(a.mint(AGENCY, Role::Sync, 32 * 24 * HOUR).is_err());
        let svc = Role::Service(ServiceName::Issuance);
        assert!(a.mint(AGENCY, svc, Duration::from_secs(300)).is_ok());
        assert!(a.mint(AGENCY, svc, HOUR).is_err());
        let long = signed(&a, good_header(), claims("service:issuance", now, now + 3600));
        assert!(matches!(v.verify(&long), Err(TokenError::Lifetime { .. })));
        assert_eq!(crate::LONGEST_TOKEN_LIFETIME, Role::Sync.max_token_lifetime());
    }

    #[test]
    fn revoked_tokens_are_refused_until_they_would_have_expired() {
        let a = TokenAuthority::new(Es256KeyPair::generate());
        let denylist = Arc::new(Denylist::default());
        let v = a.verifier().clone().with_denylist(denylist.clone());
        let now = now_unix();
        let m = a.issue_at(AGENCY, Role::Consumer, HOUR, now).unwrap();
        let other = a.issue_at(AGENCY, Role::Consumer, HOUR, now).unwrap();
        assert!(v.verify_at(&m.token, now).is_ok());
        denylist.revoke(&m.token_id, m.expires_at.unix_timestamp());
        assert_eq!(v.verify_at(&m.token, now), Err(TokenError::Revoked));
        assert_eq!(v.verify_at(&m.token, now + 3600 + 59), Err(TokenError::Revoked));
        assert!(v.verify_at(&other.token, now).is_ok(), "only the revoked token is refused");
        // The verifier without the list still accepts it: the list is what refuses.
        assert!(a.verifier().verify_at(&m.token, now).is_ok());
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
