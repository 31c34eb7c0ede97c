//! What issuance refuses, typed; each kind maps to its gRPC code in the one
//! table (`zhengzhao_proto::ServiceError`).

use zhengzhao_core::TransitionError;
use zhengzhao_proto::ServiceError;

/// An issuance refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuanceError {
    #[error("no licence {0}")]
    NoLicence(String),
    #[error("no outage {0}")]
    NoOutage(i64),
    #[error("no outage {0} that you may manage")]
    NoManageableOutage(i64),
    /// The lifecycle table refuses the event in the licence's state.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("licence {identifier} is superseded by {next}: record events on the current version")]
    Superseded { identifier: String, next: String },
    #[error("licence {0} changed concurrently; read it again and retry")]
    ChangedConcurrently(String),
    #[error("licence {0} is long-term: there is no period to renew")]
    LongTerm(String),
    #[error(
        "licence {identifier} expired on {ended}; renewal closed on {closed} ({window} days after, as its type says): issue a new licence"
    )]
    RenewalClosed { identifier: String, ended: String, closed: String, window: u32 },
    #[error("the validity ends on the last representable day")]
    EndOfTime,
    #[error("licence {0} is at version 999 and cannot get another")]
    LastVersion(String),
    #[error("the change to {0} changes nothing: no new version made")]
    NothingChanged(String),
    #[error("the last event of {0} has an unreadable business time; an administrator must repair it first")]
    UnreadableHistory(String),
    #[error("licence number {number} version {version:03} of type {type_code} was already issued by {issuer}")]
    AlreadyIssued { number: String, version: u16, type_code: String, issuer: String },
    #[error("idempotency key {0:?} was already used for a different request")]
    KeyReused(String),
    #[error("idempotency key {0:?} is being used by a concurrent request; retry")]
    KeyInUse(String),
    #[error("licence type {code} is {status}, not published")]
    TypeNotPublished { code: String, status: &'static str },
    #[error("{issuer} is not an issuing agency of licence type {code}")]
    NotAnIssuer { issuer: String, code: String },
    #[error("outage {0} has already ended")]
    OutageEnded(i64),
    #[error("outage {0} has not ended; end it first")]
    OutageOpen(i64),
}

impl From<IssuanceError> for ServiceError {
    fn from(e: IssuanceError) -> Self {
        use IssuanceError as E;
        let message = e.to_string();
        match e {
            E::NoLicence(_) | E::NoOutage(_) | E::NoManageableOutage(_) => ServiceError::NotFound(message),
            E::AlreadyIssued { .. } => ServiceError::AlreadyExists(message),
            E::NotAnIssuer { .. } => ServiceError::PermissionDenied(message),
            E::Transition(_)
            | E::Superseded { .. }
            | E::ChangedConcurrently(_)
            | E::LongTerm(_)
            | E::RenewalClosed { .. }
            | E::EndOfTime
            | E::LastVersion(_)
            | E::NothingChanged(_)
            | E::UnreadableHistory(_)
            | E::KeyReused(_)
            | E::KeyInUse(_)
            | E::TypeNotPublished { .. }
            | E::OutageEnded(_)
            | E::OutageOpen(_) => ServiceError::FailedPrecondition(message),
        }
    }
}
