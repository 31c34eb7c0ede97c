//! What the catalogue refuses, typed; each kind maps to its gRPC code in the
//! one table (`zhengzhao_proto::ServiceError`).

use zhengzhao_proto::ServiceError;

/// A catalogue refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("no licence type {0}")]
    NoType(String),
    #[error("licence type {code} has no template version {version}")]
    NoVersion { code: String, version: u32 },
    #[error("licence type {0} already exists")]
    TypeExists(String),
    #[error("licence type {existing} already defines {name:?} for {authority}: revise that type instead")]
    AlreadyDefined { existing: String, name: String, authority: String },
    #[error("licence type {0} is retired")]
    Retired(String),
    #[error("the defining authority already has 999 types")]
    CodesExhausted,
    #[error("catalogue import refused, nothing was applied: {0}")]
    ImportConflicts(String),
}

impl From<CatalogError> for ServiceError {
    fn from(e: CatalogError) -> Self {
        use CatalogError as E;
        let message = e.to_string();
        match e {
            E::NoType(_) | E::NoVersion { .. } => ServiceError::NotFound(message),
            E::TypeExists(_) | E::AlreadyDefined { .. } => ServiceError::AlreadyExists(message),
            E::Retired(_) | E::CodesExhausted | E::ImportConflicts(_) => ServiceError::FailedPrecondition(message),
        }
    }
}
