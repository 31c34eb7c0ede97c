//! The one error-code table: every service error knows its gRPC code;
//! invalid arguments carry field violations; internal details are logged
//! under a reference and never sent to the caller.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use zhengzhao_core::Violations;

/// An error a service returns to its caller.
#[derive(Debug, Clone)]
pub enum ServiceError {
    /// INVALID_ARGUMENT, naming each offending field.
    Invalid(Violations),
    /// NOT_FOUND.
    NotFound(String),
    /// ALREADY_EXISTS.
    AlreadyExists(String),
    /// FAILED_PRECONDITION: the request is valid but the state forbids it.
    FailedPrecondition(String),
    /// PERMISSION_DENIED.
    PermissionDenied(String),
    /// UNAVAILABLE: a service this one depends on did not answer.
    Unavailable(String),
    /// INTERNAL: logged in full, masked for the caller.
    Internal(String),
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceError::Invalid(v) => write!(f, "invalid argument: {v}"),
            ServiceError::NotFound(m)
            | ServiceError::AlreadyExists(m)
            | ServiceError::FailedPrecondition(m)
            | ServiceError::PermissionDenied(m)
            | ServiceError::Unavailable(m)
            | ServiceError::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ServiceError {}

impl ServiceError {
    /// One invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        ServiceError::Invalid(Violations::single(field, description))
    }

    /// An internal failure (database, encoding); the detail is logged, not returned.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ServiceError::Internal(e.to_string())
    }

    pub fn code(&self) -> Code {
        match self {
            ServiceError::Invalid(_) => Code::InvalidArgument,
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Internal(_) => Code::Internal,
        }
    }

    /// Rebuilds a service error from a status another service returned.
    pub fn from_status(status: &Status) -> Self {
        let msg = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => {
                let details = status.get_details_bad_request();
                let list: Vec<zhengzhao_core::FieldViolation> = details
                    .map(|b| {
                        b.field_violations
                            .into_iter()
                            .map(|v| zhengzhao_core::FieldViolation::new(v.field, v.description))
                            .collect()
                    })
                    .unwrap_or_default();
                if list.is_empty() {
                    ServiceError::invalid("request", msg)
                } else {
                    ServiceError::Invalid(Violations(list))
                }
            }
            Code::NotFound => ServiceError::NotFound(msg),
            Code::AlreadyExists => ServiceError::AlreadyExists(msg),
            Code::FailedPrecondition => ServiceError::FailedPrecondition(msg),
            Code::PermissionDenied | Code::Unauthenticated => ServiceError::PermissionDenied(msg),
            Code::Unavailable | Code::DeadlineExceeded => ServiceError::Unavailable(msg),
            _ => ServiceError::Internal(format!("{}: {msg}", status.code())),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(v) => {
                let mut details = ErrorDetails::new();
                for f in &v.0 {
                    details.add_bad_request_violation(f.field.clone(), f.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, v.to_string(), details)
            }
            ServiceError::Internal(detail) => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(%reference, %detail, "internal error");
                Status::internal(format!("internal error (reference {reference})"))
            }
            other => Status::new(other.code(), other.to_string()),
        }
    }
}

impl From<zhengzhao_core::Violations> for ServiceError {
    fn from(v: Violations) -> Self {
        ServiceError::Invalid(v)
    }
}

impl From<zhengzhao_auth::policy::Denied> for ServiceError {
    fn from(d: zhengzhao_auth::policy::Denied) -> Self {
        ServiceError::PermissionDenied(d.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_violations_survive_the_wire() {
        let e = ServiceError::Invalid(Violations(vec![
            zhengzhao_core::FieldViolation::new("a", "bad"),
            zhengzhao_core::FieldViolation::new("b.c", "worse"),
        ]));
        let status = Status::from(e);
        assert_eq!(status.code(), Code::InvalidArgument);
        let back = ServiceError::from_status(&status);
        match back {
            ServiceError::Invalid(v) => assert!(v.names("a") && v.names("b.c")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn internal_details_are_masked() {
        let status = Status::from(ServiceError::internal("password=hunter2 at db"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
