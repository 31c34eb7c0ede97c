//! What the signing service hands out: signatures, and public keys with
//! their history (active, retired, compromised as of a time), as every
//! verifier reads them.

use time::OffsetDateTime;
use zhengzhao_core::date::format_time;

use crate::Algorithm;

/// A signature over a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub jws: String,
    pub key_id: String,
    pub algorithm: Algorithm,
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Signs the issuer's new documents.
    Active,
    /// No longer signs; what it signed still verifies.
    Retired,
    /// Distrusted for signatures made at or after `compromised_since`.
    Compromised,
}

impl KeyStatus {
    pub fn name(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Retired => "retired",
            KeyStatus::Compromised => "compromised",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "active" => Some(KeyStatus::Active),
            "retired" => Some(KeyStatus::Retired),
            "compromised" => Some(KeyStatus::Compromised),
            _ => None,
        }
    }
}

/// A public key and its history.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicKeyRecord {
    pub key_id: String,
    pub issuer_code: String,
    pub algorithm: Algorithm,
    pub status: KeyStatus,
    pub jwk: serde_json::Value,
    pub created_at: OffsetDateTime,
    /// When it stopped signing (rotation, retirement or compromise).
    pub retired_at: Option<OffsetDateTime>,
    /// Signatures made at or after this time are not trusted.
    pub compromised_since: Option<OffsetDateTime>,
}

impl PublicKeyRecord {
    /// Whether a signature this key made at `signed_at` (None: unknown) is
    /// distrusted because the key was compromised by then.
    pub fn distrusts(&self, signed_at: Option<OffsetDateTime>) -> bool {
        match (self.compromised_since, signed_at) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(since), Some(at)) => at >= since,
        }
    }

    /// Reads a key as [`PublicKeyRecord::published_jwk`] wrote it (a JWKS
    /// entry of the signing service's `/jwks`, or `keys list --format jwks`).
    pub fn from_published_jwk(jwk: &serde_json::Value) -> Result<Self, String> {
        let s = |k: &str| jwk.get(k).and_then(|v| v.as_str());
        let time = |k: &str| -> Result<Option<OffsetDateTime>, String> {
            s(k).map(|t| zhengzhao_core::date::parse_time(t).ok_or_else(|| format!("{k}: not an RFC 3339 time")))
                .transpose()
        };
        let key_id = s("kid").ok_or("a published key has a kid")?.to_owned();
        let algorithm =
            s("alg").and_then(crate::Algorithm::from_jws_alg).ok_or_else(|| format!("key {key_id}: unknown alg"))?;
        crate::IssuerPublicKey::from_jwk(jwk).map_err(|e| format!("key {key_id}: {e}"))?;
        Ok(PublicKeyRecord {
            issuer_code: s("issuer").ok_or_else(|| format!("key {key_id}: no issuer"))?.to_owned(),
            status: s("status").and_then(KeyStatus::from_name).ok_or_else(|| format!("key {key_id}: no status"))?,
            created_at: time("created_at")?.ok_or_else(|| format!("key {key_id}: no created_at"))?,
            retired_at: time("retired_at")?,
            compromised_since: time("compromised_since")?,
            jwk: jwk.clone(),
            algorithm,
            key_id,
        })
    }

    /// The JWK as published: the key plus its status and dates (extra JWK
    /// members, RFC 7517 §4), so web clients see the whole history.
    pub fn published_jwk(&self) -> serde_json::Value {
        let mut jwk = self.jwk.clone();
        if let Some(o) = jwk.as_object_mut() {
            o.insert("status".into(), self.status.name().into());
            o.insert("issuer".into(), self.issuer_code.clone().into());
            o.insert("created_at".into(), format_time(self.created_at).into());
            if let Some(t) = self.retired_at {
                o.insert("retired_at".into(), format_time(t).into());
            }
            if let Some(t) = self.compromised_since {
                o.insert("compromised_since".into(), format_time(t).into());
            }
        }
        jwk
    }
}
