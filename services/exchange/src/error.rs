//! What the exchange refuses, typed; each kind maps to its gRPC code in the
//! one table (`zhengzhao_proto::ServiceError`), and every refused use names
//! the rule that refused it ([`Refusal`]) in the usage log.

use zhengzhao_proto::ServiceError;

/// An exchange refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("no usage-list entry of {agency} covers licence type {type_code} for service item {service_item}")]
    NoEntry { agency: String, type_code: String, service_item: String },
    #[error("no usage-list entry of {agency} covers any licence type for service item {service_item}")]
    NoEntryForItem { agency: String, service_item: String },
    #[error("{0}")]
    EntryNotEffective(String),
    #[error("no usage-list entry {0}")]
    NoSuchEntry(i64),
    #[error("usage-list entry {id} is {state}: it cannot be {action}")]
    EntryState { id: i64, state: &'static str, action: &'static str },
    #[error("no application {0}")]
    NoSuchApplication(i64),
    #[error("application {id} was already {state}")]
    AlreadyDecided { id: i64, state: &'static str },
    #[error("no annotated copy {0}")]
    NoSuchCopy(String),
    #[error("no CJK font to print copies with: {0}")]
    NoFont(String),
}

impl From<ExchangeError> for ServiceError {
    fn from(e: ExchangeError) -> Self {
        use ExchangeError as E;
        let message = e.to_string();
        match e {
            E::NoEntry { .. } | E::NoEntryForItem { .. } | E::EntryNotEffective(_) => {
                ServiceError::PermissionDenied(message)
            }
            E::NoSuchEntry(_) | E::NoSuchApplication(_) | E::NoSuchCopy(_) => ServiceError::NotFound(message),
            E::EntryState { .. } | E::AlreadyDecided { .. } => ServiceError::FailedPrecondition(message),
            E::NoFont(_) => ServiceError::FailedPrecondition(message),
        }
    }
}

/// Which rule refused a use, as the usage log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller's role may not use licences through the exchange.
    Authorization,
    /// The request itself is malformed (identifier, cause, service item, case number, holder ID).
    InvalidRequest,
    /// No such licence.
    NotFound,
    /// No entry of the caller's usage list covers the type for the service item.
    NoEntry,
    /// An entry covers it but is suspended, ended or outside its dates.
    EntryNotEffective,
    /// A service the exchange depends on did not answer.
    Unavailable,
    /// Something failed inside the library.
    Internal,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Authorization => "authorization",
            Refusal::InvalidRequest => "invalid_request",
            Refusal::NotFound => "not_found",
            Refusal::NoEntry => "no_entry",
            Refusal::EntryNotEffective => "entry_not_effective",
            Refusal::Unavailable => "unavailable",
            Refusal::Internal => "internal",
        }
    }

    /// The rule behind an error from elsewhere (issuance, catalogue, checks).
    pub fn of(e: &ServiceError) -> Self {
        match e {
            ServiceError::Invalid(_) => Refusal::InvalidRequest,
            ServiceError::NotFound(_) => Refusal::NotFound,
            ServiceError::PermissionDenied(_) => Refusal::Authorization,
            ServiceError::Unavailable(_) => Refusal::Unavailable,
            ServiceError::AlreadyExists(_) | ServiceError::FailedPrecondition(_) | ServiceError::Internal(_) => {
                Refusal::Internal
            }
        }
    }
}

/// A refused use: the rule and the error the caller gets.
#[derive(Debug, Clone)]
pub struct Refused {
    pub rule: Refusal,
    pub error: ServiceError,
}

impl Refused {
    pub fn new(rule: Refusal, error: impl Into<ServiceError>) -> Self {
        Refused { rule, error: error.into() }
    }
}

impl From<ServiceError> for Refused {
    fn from(error: ServiceError) -> Self {
        Refused { rule: Refusal::of(&error), error }
    }
}
