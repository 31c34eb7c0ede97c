//! What the signing service refuses, typed; each kind maps to its gRPC code
//! in the one table (`zhengzhao_proto::ServiceError`).

use zhengzhao_proto::ServiceError;

/// A signing refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("key {0}")]
    NoKey(String),
    #[error("issuer {issuer} already has the active key {key_id}: rotate it instead")]
    HasActiveKey { issuer: String, key_id: String },
    #[error("issuer {0} got an active key concurrently; try again")]
    ActiveKeyRace(String),
    #[error("key {key_id} is already compromised since {since}: the time can only move earlier")]
    CompromisedEarlier { key_id: String, since: String },
    #[error("issuer {0} has no active key (its keys were retired or compromised): an administrator must create one")]
    NoActiveKey(String),
    #[error("issuer {issuer} has no active key to {verb}")]
    NothingToReplace { issuer: String, verb: String },
    #[error(
        "key {key_id} is {status}: a certificate request needs an active key, and a compromised key cannot be certified"
    )]
    NotActive { key_id: String, status: String },
    #[error(
        "keys in the PKCS#11 token are ES256 only (PKCS#11 defines no SM2 mechanism): create or rotate with --alg es256, or unset signing.pkcs11"
    )]
    NoSm2InToken,
    #[error("signing was cancelled: the service is shutting down")]
    ShuttingDown,
}

impl From<SigningError> for ServiceError {
    fn from(e: SigningError) -> Self {
        use SigningError as E;
        let message = e.to_string();
        match e {
            E::NoKey(_) => ServiceError::NotFound(message),
            E::HasActiveKey { .. } | E::ActiveKeyRace(_) => ServiceError::AlreadyExists(message),
            E::CompromisedEarlier { .. }
            | E::NoActiveKey(_)
            | E::NothingToReplace { .. }
            | E::NotActive { .. }
            | E::NoSm2InToken => ServiceError::FailedPrecondition(message),
            E::ShuttingDown => ServiceError::Unavailable(message),
        }
    }
}
