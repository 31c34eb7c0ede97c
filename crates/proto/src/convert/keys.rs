//! Signatures and issuer public keys on the wire (`signing.v1`).

use time::OffsetDateTime;
use zhengzhao_crypto::Algorithm;
use zhengzhao_crypto::published::{KeyStatus, PublicKeyRecord};

use super::{stored_timestamp, timestamp};
use crate::ServiceError;
use crate::signing::v1 as pb;

impl From<Algorithm> for pb::SignatureAlgorithm {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::Es256 => pb::SignatureAlgorithm::Es256,
            Algorithm::Sm2Sm3 => pb::SignatureAlgorithm::Sm2Sm3,
        }
    }
}

/// The algorithm a message names in `field`; `None` when unspecified.
pub fn algorithm_from_wire(field: &str, a: i32) -> Result<Option<Algorithm>, ServiceError> {
    match pb::SignatureAlgorithm::try_from(a) {
        Ok(pb::SignatureAlgorithm::Unspecified) => Ok(None),
        Ok(pb::SignatureAlgorithm::Es256) => Ok(Some(Algorithm::Es256)),
        Ok(pb::SignatureAlgorithm::Sm2Sm3) => Ok(Some(Algorithm::Sm2Sm3)),
        Err(_) => Err(ServiceError::invalid(field, format!("unknown algorithm {a}"))),
    }
}

impl From<KeyStatus> for pb::KeyStatus {
    fn from(s: KeyStatus) -> Self {
        match s {
            KeyStatus::Active => pb::KeyStatus::Active,
            KeyStatus::Retired => pb::KeyStatus::Retired,
            KeyStatus::Compromised => pb::KeyStatus::Compromised,
        }
    }
}

impl From<&PublicKeyRecord> for pb::PublicKey {
    fn from(k: &PublicKeyRecord) -> Self {
        pb::PublicKey {
            key_id: k.key_id.clone(),
            issuer_code: k.issuer_code.clone(),
            algorithm: pb::SignatureAlgorithm::from(k.algorithm) as i32,
            status: pb::KeyStatus::from(k.status) as i32,
            jwk_json: k.jwk.to_string(),
            created_at: Some(timestamp(k.created_at)),
            retired_at: k.retired_at.map(timestamp),
            compromised_since: k.compromised_since.map(timestamp),
        }
    }
}

/// A key the signing service returned.
impl TryFrom<pb::PublicKey> for PublicKeyRecord {
    type Error = ServiceError;

    fn try_from(k: pb::PublicKey) -> Result<Self, ServiceError> {
        let status = match pb::KeyStatus::try_from(k.status) {
            Ok(pb::KeyStatus::Active) => KeyStatus::Active,
            Ok(pb::KeyStatus::Retired) => KeyStatus::Retired,
            Ok(pb::KeyStatus::Compromised) => KeyStatus::Compromised,
            _ => return Err(ServiceError::internal("signing returned a key without status")),
        };
        let algorithm = algorithm_from_wire("algorithm", k.algorithm)?
            .ok_or_else(|| ServiceError::internal("signing returned a key without algorithm"))?;
        let time = |t: &Option<prost_types::Timestamp>, f: &str| t.as_ref().map(|t| stored_timestamp(f, t)).transpose();
        Ok(PublicKeyRecord {
            key_id: k.key_id,
            issuer_code: k.issuer_code,
            algorithm,
            status,
            jwk: serde_json::from_str(&k.jwk_json).map_err(ServiceError::internal)?,
            created_at: time(&k.created_at, "created_at")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            retired_at: time(&k.retired_at, "retired_at")?,
            compromised_since: time(&k.compromised_since, "compromised_since")?,
        })
    }
}
