//! Bearer tokens: compact JWS (ES256, `typ` "JWT") naming the caller's agency
//! and role, with an issue time, an expiry and an ID (`jti`).
//!
//! Two kinds of key sign them, told apart by `kid`:
//! - the operator's token keys (`kid` "token-…", or "library" for a key made
//!   by an earlier version) sign the tokens of people and sync peers; the
//!   operator mints them (`zhengzhao token`), and a rotated-out key stays
//!   trusted until its `not_after`;
//! - each service's own credential key (`kid` "service:NAME") signs only
//!   that service's tokens, so no process can pose as another, and no
//!   service can mint a person's token.
//!
//! Services hold only public keys ([`TrustedKeys`]), allow [`LEEWAY`] of clock
//! skew, refuse lifetimes longer than the role's cap
//! ([`Role::max_token_lifetime`]) and tokens on the revocation denylist.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zhengzhao_crypto::{Es256KeyPair, Es256PublicKey, JwsHeader, jws};

use crate::{Denylist, Principal, Role, ServiceName};

const ISSUER: &str = "zhengzhao";
/// The `kid` of the token key a data directory made by an earlier version holds.
pub const LEGACY_KID: &str = "library";
/// The `kid` prefix of a service's credential key: `service:issuance`.
pub const SERVICE_KID_PREFIX: &str = "service:";
/// The `typ` of a bearer token; the library's other statements use other types.
pub const TYP: &str = "JWT";
/// Clock skew allowed between the minting and the verifying host, on `exp` and `iat`.
pub const LEEWAY: Duration = Duration::from_secs(60);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token header must have typ \"JWT\" and the kid of a trusted key")]
    Header,
    #[error("token key {0} is no longer trusted (rotated out)")]
    RetiredKey(String),
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
    /// The person acting (经办人), when the token names one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    opr: String,
    /// A holder token's holder and front end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hld: Option<crate::HolderIdentity>,
}

/// Longest operator name a token may carry.
pub const MAX_OPERATOR: usize = 64;

/// An operator name: at most [`MAX_OPERATOR`] characters, no control
/// characters, no surrounding blanks (empty: none named).
fn check_operator(s: &str) -> Result<(), String> {
    if s.chars().count() > MAX_OPERATOR || s.chars().any(char::is_control) || s.trim() != s {
        return Err(format!(
            "operator: at most {MAX_OPERATOR} characters, no control characters or surrounding blanks"
        ));
    }
    Ok(())
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// A public key that signs operator-minted tokens.
#[derive(Debug, Clone)]
pub struct TokenKey {
    pub kid: String,
    pub key: Es256PublicKey,
    /// After this (seconds since the epoch) the key is no longer trusted: a
    /// rotated-out key's grace period.
    pub not_after: Option<i64>,
}

/// The public keys a process trusts for tokens: the operator's token keys
/// and each service's credential key.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    pub tokens: Vec<TokenKey>,
    pub services: std::collections::HashMap<ServiceName, Es256PublicKey>,
}

/// How many verified tokens a process remembers (see [`TokenVerifier`]).
pub const TOKEN_CACHE_CAPACITY: usize = 16_384;

/// Longest token text cached; longer ones are verified on every call.
const MAX_CACHED_TOKEN: usize = 4096;

/// What a verified token established, kept so the next call with the same
/// token needs no signature check: everything that depends on the time or
/// on lists that change is checked again on every call.
#[derive(Debug)]
struct Verified {
    principal: Principal,
    iat: i64,
    exp: i64,
    /// The signing key's grace-period end and `kid`, when it has one.
    key_not_after: Option<(i64, String)>,
    /// The trusted-key set it was verified under ([`TokenVerifier::replace_keys`] moves it on).
    key_epoch: u64,
}

/// Checks tokens against the trusted public keys (and, when given, a denylist).
///
/// A token is verified once (signature, claims, roles) and what it
/// established is cached until it expires, bounded to
/// [`TOKEN_CACHE_CAPACITY`] tokens (least recently used go first); each
/// later call with the same token re-checks only the time (expiry, issue
/// time, the key's grace period) and the denylist, so a revocation or a
/// replaced key set takes effect on the very next call. Refused tokens are
/// never cached.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: Arc<std::sync::RwLock<(u64, TrustedKeys)>>,
    denylist: Option<Arc<Denylist>>,
    verified: Arc<quick_cache::sync::Cache<String, Arc<Verified>>>,
}

impl TokenVerifier {
    pub fn new(keys: TrustedKeys) -> Self {
        TokenVerifier {
            keys: Arc::new(std::sync::RwLock::new((0, keys))),
            denylist: None,
            verified: Arc::new(quick_cache::sync::Cache::new(TOKEN_CACHE_CAPACITY)),
        }
    }

    /// Replaces the trusted keys (after a rotation); every clone of this
    /// verifier sees the new set, and no token verified under the old set
    /// is taken from the cache again.
    pub fn replace_keys(&self, keys: TrustedKeys) {
        let mut held = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *held = (held.0 + 1, keys);
        drop(held);
        self.verified.clear();
    }

    fn key_epoch(&self) -> u64 {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).0
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
        if let Some(v) = self.verified.get(token)
            && v.key_epoch == self.key_epoch()
        {
            return self.recheck(&v, now);
        }
        let epoch = self.key_epoch();
        let verified = self.verify_signed(token, now, epoch)?;
        let principal = verified.principal.clone();
        if token.len() <= MAX_CACHED_TOKEN {
            self.verified.insert(token.to_owned(), Arc::new(verified));
        }
        Ok(principal)
    }

    /// The checks that can change between two calls with the same token.
    fn recheck(&self, v: &Verified, now: i64) -> Result<Principal, TokenError> {
        if let Some((t, kid)) = &v.key_not_after
            && now > *t
        {
            return Err(TokenError::RetiredKey(kid.clone()));
        }
        Self::check_times(v.iat, v.exp, now)?;
        self.check_denylist(&v.principal.token_id, now)?;
        Ok(v.principal.clone())
    }

    fn check_times(iat: i64, exp: i64, now: i64) -> Result<(), TokenError> {
        let leeway = secs(LEEWAY);
        if now >= exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }

    fn check_denylist(&self, token_id: &str, now: i64) -> Result<(), TokenError> {
        match &self.denylist {
            Some(d) if d.is_revoked(token_id, now) => Err(TokenError::Revoked),
            _ => Ok(()),
        }
    }

    /// Verifies `token` in full: signature, claims and roles.
    fn verify_signed(&self, token: &str, now: i64, key_epoch: u64) -> Result<Verified, TokenError> {
        let parsed = jws::parse(token).map_err(|_| TokenError::Malformed)?;
        if parsed.header.alg != "ES256" {
            return Err(TokenError::Malformed);
        }
        let (Some(TYP), Some(kid)) = (parsed.header.typ.as_deref(), parsed.header.kid.as_deref()) else {
            return Err(TokenError::Header);
        };
        // Which key, and which roles it may vouch for.
        let (key, signer, key_not_after) = {
            let held = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let keys = &held.1;
            match kid.strip_prefix(SERVICE_KID_PREFIX) {
                Some(name) => {
                    let name = ServiceName::from_name(name).ok_or(TokenError::Header)?;
                    (keys.services.get(&name).cloned().ok_or(TokenError::Header)?, Some(name), None)
                }
                None => {
                    let k = keys.tokens.iter().find(|k| k.kid == kid).ok_or(TokenError::Header)?;
                    if k.not_after.is_some_and(|t| now > t) {
                        return Err(TokenError::RetiredKey(kid.to_owned()));
                    }
                    (k.key.clone(), None, k.not_after.map(|t| (t, kid.to_owned())))
                }
            }
        };
        if !key.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
            return Err(TokenError::Signature);
        }
        let claims: Claims = serde_json::from_slice(&parsed.payload).map_err(|_| TokenError::Malformed)?;
        if claims.iss != ISSUER {
            return Err(TokenError::Claims("issuer".into()));
        }
        if claims.exp <= claims.iat {
            return Err(TokenError::Malformed);
        }
        Self::check_times(claims.iat, claims.exp, now)?;
        let role: Role = claims.role.parse().map_err(TokenError::Claims)?;
        // A service key vouches for its own service only; a token key for
        // people and peers, never for a service.
        // Holder tokens are the exchange's alone (it mints them for front
        // ends it has registered); the operator mints none.
        match (signer, role) {
            (Some(s), Role::Service(r)) if s == r => {}
            (Some(ServiceName::Exchange), Role::Holder) => {}
            (None, r) if !matches!(r, Role::Service(_) | Role::Holder) => {}
            _ => return Err(TokenError::Claims(format!("key {kid} may not sign a {role} token"))),
        }
        let max = role.max_token_lifetime();
        if claims.exp.saturating_sub(claims.iat) > secs(max) {
            return Err(TokenError::Lifetime { role, max });
        }
        zhengzhao_core::Uscc::parse(&claims.sub).map_err(|e| TokenError::Claims(format!("agency: {e}")))?;
        self.check_denylist(&claims.jti, now)?;
        check_operator(&claims.opr).map_err(TokenError::Claims)?;
        if (role == Role::Holder) != claims.hld.is_some() {
            return Err(TokenError::Claims("a holder token, and only one, names its holder".into()));
        }
        if let Some(h) = &claims.hld {
            match zhengzhao_core::parse_holder_id("id_type", "id_number", &h.id_type, &h.id_number) {
                Ok(n) if n == h.id_number => {}
                _ => return Err(TokenError::Claims("holder: not a holder ID".into())),
            }
        }
        let principal =
            Principal { agency: claims.sub, role, token_id: claims.jti, operator: claims.opr, holder: claims.hld };
        Ok(Verified { principal, iat: claims.iat, exp: claims.exp, key_not_after, key_epoch })
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

/// The `kid` of an operator token key: `token-` and the first 8 hex digits of
/// the SHA-256 of its public JWK's coordinates.
pub fn token_kid(key: &Es256PublicKey) -> String {
    use sha2::Digest;
    let jwk = key.to_jwk("");
    let coords = format!("{}.{}", jwk["x"].as_str().unwrap_or_default(), jwk["y"].as_str().unwrap_or_default());
    let digest = hex::encode(sha2::Sha256::digest(coords.as_bytes()));
    format!("token-{}", &digest[..8])
}

/// Mints tokens with one private key: the operator's token key, or a
/// service's own credential key (which mints only that service's tokens).
#[derive(Debug)]
pub struct TokenAuthority {
    key: Es256KeyPair,
    kid: String,
    service: Option<ServiceName>,
}

impl TokenAuthority {
    /// The operator's token key, named `kid`.
    pub fn operator(key: Es256KeyPair, kid: &str) -> Self {
        TokenAuthority { key, kid: kid.to_owned(), service: None }
    }

    /// A service's own credential key.
    pub fn service(key: Es256KeyPair, name: ServiceName) -> Self {
        TokenAuthority { key, kid: format!("{SERVICE_KID_PREFIX}{}", name.as_str()), service: Some(name) }
    }

    /// The key's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn public_key(&self) -> Es256PublicKey {
        self.key.public_key()
    }

    /// A verifier that trusts this key alone (tests and single-key tools).
    pub fn verifier(&self) -> TokenVerifier {
        let mut keys = TrustedKeys::default();
        match self.service {
            Some(name) => {
                keys.services.insert(name, self.key.public_key());
            }
            None => keys.tokens.push(TokenKey { kid: self.kid.clone(), key: self.key.public_key(), not_after: None }),
        }
        TokenVerifier::new(keys)
    }

    /// Mints a token for `agency` (a unified social credit code) in `role`,
    /// valid for `ttl` (at most the role's [`Role::max_token_lifetime`]).
    pub fn mint(&self, agency: &str, role: Role, ttl: Duration) -> Result<String, TokenError> {
        self.issue(agency, role, ttl).map(|m| m.token)
    }

    /// As [`TokenAuthority::mint`], also returning the token's ID and expiry.
    pub fn issue(&self, agency: &str, role: Role, ttl: Duration) -> Result<MintedToken, TokenError> {
        self.issue_at(agency, role, ttl, "", None, now_unix())
    }

    /// As [`TokenAuthority::issue`], naming the person acting (经办人),
    /// whom usage and change logs record.
    pub fn issue_for(
        &self,
        agency: &str,
        role: Role,
        ttl: Duration,
        operator: &str,
    ) -> Result<MintedToken, TokenError> {
        self.issue_at(agency, role, ttl, operator, None, now_unix())
    }

    /// A holder token (the exchange's credential key only): `holder`, as
    /// the front end of `agency` vouched for them, for `ttl` (at most
    /// [`crate::HOLDER_TOKEN_LIFETIME`]).
    pub fn issue_holder(
        &self,
        agency: &str,
        holder: &crate::HolderIdentity,
        ttl: Duration,
    ) -> Result<MintedToken, TokenError> {
        match zhengzhao_core::parse_holder_id("id_type", "id_number", &holder.id_type, &holder.id_number) {
            Ok(n) if n == holder.id_number => {}
            _ => return Err(TokenError::Claims("holder: not a holder ID in its stored form".into())),
        }
        self.issue_at(agency, Role::Holder, ttl, "", Some(holder.clone()), now_unix())
    }

    fn issue_at(
        &self,
        agency: &str,
        role: Role,
        ttl: Duration,
        operator: &str,
        holder: Option<crate::HolderIdentity>,
        now: i64,
    ) -> Result<MintedToken, TokenError> {
        zhengzhao_core::Uscc::parse(agency).map_err(|e| TokenError::Claims(format!("agency: {e}")))?;
        check_operator(operator).map_err(TokenError::Claims)?;
        if (role == Role::Holder) != holder.is_some() {
            return Err(TokenError::Claims("a holder token, and only one, names its holder".into()));
        }
        match (self.service, role) {
            (Some(s), Role::Service(r)) if s == r => {}
            (Some(ServiceName::Exchange), Role::Holder) => {}
            (None, r) if !matches!(r, Role::Service(_) | Role::Holder) => {}
            _ => return Err(TokenError::Claims(format!("key {} may not sign a {role} token", self.kid))),
        }
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
            opr: operator.to_owned(),
            hld: holder,
        };
        let expires_at = OffsetDateTime::from_unix_timestamp(exp).map_err(|_| TokenError::Malformed)?;
        let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Malformed)?;
        let header =
            JwsHeader { alg: "ES256".into(), kid: Some(self.kid.clone()), typ: Some(TYP.into()), iat: None, x5c: None };
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
        serde_json::json!({"alg": "ES256", "kid": "token-test", "typ": "JWT"})
    }

    fn operator() -> TokenAuthority {
        TokenAuthority::operator(Es256KeyPair::generate(), "token-test")
    }

    #[test]
    fn mint_and_verify() {
        let a = operator();
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
        let a = operator();
        let b = operator();
        let t = a.mint(AGENCY, Role::Admin, Duration::from_secs(60)).unwrap();
        assert_eq!(b.verifier().verify(&t), Err(TokenError::Signature));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged_payload = zhengzhao_crypto::b64url(
            br#"{"iss":"zhengzhao","sub":"91350100M000100Y43","role":"admin","iat":0,"exp":99999999999,"jti":"x"}"#,
        );
        parts[1] = &forged_payload;
        assert_eq!(a.verifier().verify(&parts.join(".")), Err(TokenError::Signature));
        let now = now_unix();
        let expired = a.issue_at(AGENCY, Role::Admin, Duration::from_secs(10), "", None, now - 100).unwrap();
        assert_eq!(a.verifier().verify(&expired.token), Err(TokenError::Expired));
        assert_eq!(a.verifier().verify("junk"), Err(TokenError::Malformed));
        assert!(a.mint("not-a-code", Role::Admin, Duration::from_secs(60)).is_err());
    }

    #[test]
    fn header_must_say_jwt_and_name_the_library_key() {
        let a = operator();
        let now = now_unix();
        let c = claims("admin", now, now + 60);
        assert!(a.verifier().verify(&signed(&a, good_header(), c.clone())).is_ok());
        for header in [
            serde_json::json!({"alg": "ES256", "kid": "token-test"}),
            serde_json::json!({"alg": "ES256", "kid": "token-test", "typ": "zhengzhao-checkpoint"}),
            serde_json::json!({"alg": "ES256", "kid": "token-test", "typ": "jwt+other"}),
            serde_json::json!({"alg": "ES256", "typ": "JWT"}),
            serde_json::json!({"alg": "ES256", "kid": "library", "typ": "JWT"}),
            serde_json::json!({"alg": "ES256", "kid": "service:nobody", "typ": "JWT"}),
        ] {
            assert_eq!(
                a.verifier().verify(&signed(&a, header.clone(), c.clone())),
                Err(TokenError::Header),
                "{header}"
            );
        }
    }

    #[test]
    fn a_service_key_vouches_for_its_own_service_only() {
        let gateway = TokenAuthority::service(Es256KeyPair::generate(), ServiceName::Gateway);
        let issuance = TokenAuthority::service(Es256KeyPair::generate(), ServiceName::Issuance);
        let op = operator();
        let mut keys = TrustedKeys::default();
        keys.tokens.push(TokenKey { kid: op.kid().into(), key: op.public_key(), not_after: None });
        keys.services.insert(ServiceName::Gateway, gateway.public_key());
        keys.services.insert(ServiceName::Issuance, issuance.public_key());
        let v = TokenVerifier::new(keys);
        let own = gateway.mint(AGENCY, Role::Service(ServiceName::Gateway), Duration::from_secs(60)).unwrap();
        assert_eq!(v.verify(&own).unwrap().role, Role::Service(ServiceName::Gateway));
        // The gateway's key mints neither another service's token nor a person's.
        assert!(gateway.mint(AGENCY, Role::Service(ServiceName::Issuance), Duration::from_secs(60)).is_err());
        assert!(gateway.mint(AGENCY, Role::Admin, Duration::from_secs(60)).is_err());
        let now = now_unix();
        let as_issuance = signed(
            &gateway,
            serde_json::json!({"alg": "ES256", "kid": "service:issuance", "typ": "JWT"}),
            claims("service:issuance", now, now + 60),
        );
        assert_eq!(v.verify(&as_issuance), Err(TokenError::Signature), "the gateway's key is not issuance's");
        let as_admin = signed(
            &gateway,
            serde_json::json!({"alg": "ES256", "kid": "service:gateway", "typ": "JWT"}),
            claims("admin", now, now + 60),
        );
        assert!(matches!(v.verify(&as_admin), Err(TokenError::Claims(_))), "a service key vouches for no person");
        // The operator's key never vouches for a service.
        assert!(op.mint(AGENCY, Role::Service(ServiceName::Issuance), Duration::from_secs(60)).is_err());
        let forged = signed(&op, good_header_for(op.kid()), claims("service:issuance", now, now + 60));
        assert!(matches!(v.verify(&forged), Err(TokenError::Claims(_))));
    }

    fn good_header_for(kid: &str) -> serde_json::Value {
        serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"})
    }

    #[test]
    fn a_rotated_out_token_key_is_trusted_until_its_grace_ends() {
        let old = operator();
        let new = TokenAuthority::operator(Es256KeyPair::generate(), "token-new");
        let now = 1_800_000_000;
        let mut keys = TrustedKeys::default();
        keys.tokens.push(TokenKey { kid: "token-new".into(), key: new.public_key(), not_after: None });
        keys.tokens.push(TokenKey { kid: old.kid().into(), key: old.public_key(), not_after: Some(now + 600) });
        let v = TokenVerifier::new(keys);
        let t_old = old.issue_at(AGENCY, Role::Issuer, HOUR, "", None, now).unwrap().token;
        let t_new = new.issue_at(AGENCY, Role::Issuer, HOUR, "", None, now).unwrap().token;
        assert!(v.verify_at(&t_old, now + 600).is_ok(), "within the grace period");
        assert_eq!(v.verify_at(&t_old, now + 601), Err(TokenError::RetiredKey("token-test".into())));
        assert!(v.verify_at(&t_new, now + 601).is_ok());
        // Replacing the keys reaches every clone.
        let clone = v.clone();
        v.replace_keys(TrustedKeys::default());
        assert_eq!(clone.verify_at(&t_new, now), Err(TokenError::Header));
    }

    #[test]
    fn clock_leeway_on_expiry_and_issue_time() {
        let a = operator();
        let v = a.verifier();
        let now = 1_800_000_000;
        let t = a.issue_at(AGENCY, Role::Consumer, HOUR, "", None, now).unwrap().token;
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
        let a = operator();
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
        let s = TokenAuthority::service(Es256KeyPair::generate(), ServiceName::Issuance);
        assert!(s.mint(AGENCY, svc, Duration::from_secs(300)).is_ok());
        assert!(s.mint(AGENCY, svc, HOUR).is_err());
        let long = signed(&s, good_header_for(s.kid()), claims("service:issuance", now, now + 3600));
        assert!(matches!(s.verifier().verify(&long), Err(TokenError::Lifetime { .. })));
        assert_eq!(crate::LONGEST_TOKEN_LIFETIME, Role::Sync.max_token_lifetime());
    }

    #[test]
    fn revoked_tokens_are_refused_until_they_would_have_expired() {
        let a = operator();
        let denylist = Arc::new(Denylist::default());
        let v = a.verifier().clone().with_denylist(denylist.clone());
        let now = now_unix();
        let m = a.issue_at(AGENCY, Role::Consumer, HOUR, "", None, now).unwrap();
        let other = a.issue_at(AGENCY, Role::Consumer, HOUR, "", None, now).unwrap();
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
            let v = operator().verifier();
            proptest::prop_assert!(v.verify(&s).is_err());
            let shaped = format!("{a}.{b}.{a}");
            proptest::prop_assert!(v.verify(&shaped).is_err());
        }
    }
}
