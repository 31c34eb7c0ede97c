//! The one error-code table: every service error knows its gRPC code;
//! invalid arguments carry field violations; internal details are logged
//! under a reference and never sent to the caller. What goes on the wire is
//! bounded: a status travels in HTTP/2 trailers, and a client refuses
//! trailers past its header-list limit (16 KiB by default in hyper) with a
//! protocol error instead of the status.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use zhengzhao_core::{FieldViolation, Violations};

/// Most field violations a status reports; a final one counts the rest.
pub const MAX_REPORTED_VIOLATIONS: usize = 50;
/// Longest status message, in bytes (percent-encoding on the wire may triple it).
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Longest field path reported in a violation, in bytes.
pub const MAX_FIELD_BYTES: usize = 128;
/// Longest violation description reported, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 256;
/// Most bytes of field paths and descriptions reported in one status.
pub const MAX_VIOLATION_BYTES: usize = 4096;
/// Ends a message or text that was cut.
pub const TRUNCATED: &str = "… (truncated)";
/// The field of the final violation that counts those not reported.
pub const MORE_FIELD: &str = "(more)";

/// `text` cut to at most `max` bytes on a character boundary, ending in
/// [`TRUNCATED`] when it was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &text[..end])
}

/// The violations a status reports: at most [`MAX_REPORTED_VIOLATIONS`],
/// each cut to size, within [`MAX_VIOLATION_BYTES`] in all, then one more
/// saying how many were left out.
pub fn reported_violations(all: &[FieldViolation]) -> Vec<FieldViolation> {
    let mut out = Vec::with_capacity(all.len().min(MAX_REPORTED_VIOLATIONS + 1));
    let mut bytes = 0;
    for v in all.iter().take(MAX_REPORTED_VIOLATIONS) {
        let field = truncate(&v.field, MAX_FIELD_BYTES);
        let description = truncate(&v.description, MAX_DESCRIPTION_BYTES);
        bytes += field.len() + description.len();
        if bytes > MAX_VIOLATION_BYTES {
            break;
        }
        out.push(FieldViolation { field, description });
    }
    let left_out = all.len() - out.len();
    if left_out > 0 {
        out.push(FieldViolation::new(MORE_FIELD, format!("{left_out} more violations not reported")));
    }
    out
}

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
                let reported = Violations(reported_violations(&v.0));
                let mut details = ErrorDetails::new();
                for f in &reported.0 {
                    details.add_bad_request_violation(f.field.clone(), f.description.clone());
                }
                let message = truncate(&format!("invalid argument: {reported}"), MAX_MESSAGE_BYTES);
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ServiceError::Internal(detail) => {
                let reference = uuid::Uuid::new_v4();
                tracing::error!(%reference, %detail, "internal error");
                Status::internal(format!("internal error (reference {reference})"))
            }
            other => Status::new(other.code(), truncate(&other.to_string(), MAX_MESSAGE_BYTES)),
        }
    }
}

impl From<zhengzhao_core::Violations> for ServiceError {
    fn from(v: Violations) -> Self {
        ServiceError::Invalid(v)
    }
}

/// A database failure is internal: logged in full, masked for the caller.
#[cfg(feature = "sqlx")]
impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        ServiceError::internal(e)
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

    /// The size of `status` as HTTP/2 trailers, counted as a peer's
    /// header-list limit counts it (RFC 9113 §6.5.2: name, value and 32 per field).
    fn trailer_bytes(status: &Status) -> usize {
        let mut map = tonic::codegen::http::HeaderMap::new();
        status.add_header(&mut map).expect("a status encodes as headers");
        map.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum()
    }

    fn reported(status: &Status) -> Vec<(String, String)> {
        let details = status.get_details_bad_request().expect("invalid arguments carry field violations");
        details.field_violations.into_iter().map(|v| (v.field, v.description)).collect()
    }

    #[test]
    fn few_violations_are_reported_whole() {
        let list: Vec<_> = (0..MAX_REPORTED_VIOLATIONS)
            .map(|i| zhengzhao_core::FieldViolation::new(format!("face_fields.f{i}"), "not a field of this template"))
            .collect();
        let status = Status::from(ServiceError::Invalid(Violations(list)));
        let got = reported(&status);
        assert_eq!(got.len(), MAX_REPORTED_VIOLATIONS);
        assert!(got.iter().all(|(f, _)| f != MORE_FIELD));
        assert_eq!(got[49].0, "face_fields.f49");
    }

    #[test]
    fn many_violations_are_capped_with_a_count_of_the_rest() {
        for n in [MAX_REPORTED_VIOLATIONS + 1, 100, 100_000] {
            let list: Vec<_> = (0..n)
                .map(|i| zhengzhao_core::FieldViolation::new(format!("face_fields.k{i:06}"), "not a field"))
                .collect();
            let status = Status::from(ServiceError::Invalid(Violations(list)));
            assert_eq!(status.code(), Code::InvalidArgument);
            let got = reported(&status);
            assert_eq!(got.len(), MAX_REPORTED_VIOLATIONS + 1, "{n}");
            assert_eq!(got[0].0, "face_fields.k000000");
            assert_eq!(got[MAX_REPORTED_VIOLATIONS - 1].0, "face_fields.k000049");
            let last = &got[MAX_REPORTED_VIOLATIONS];
            assert_eq!(last.0, MORE_FIELD);
            assert_eq!(last.1, format!("{} more violations not reported", n - MAX_REPORTED_VIOLATIONS));
            assert!(status.message().len() <= MAX_MESSAGE_BYTES, "{n}: {}", status.message().len());
            assert!(trailer_bytes(&status) < 16 * 1024, "{n}: {} bytes of trailers", trailer_bytes(&status));
        }
    }

    #[test]
    fn long_violations_and_messages_are_cut_on_char_boundaries() {
        // Worst case: long non-ASCII fields and descriptions (3 bytes a
        // character, percent-encoded to 9 in grpc-message).
        let list: Vec<_> = (0..1000)
            .map(|i| zhengzhao_core::FieldViolation::new(format!("{i}{}", "键".repeat(500)), "错".repeat(5000)))
            .collect();
        let status = Status::from(ServiceError::Invalid(Violations(list)));
        let got = reported(&status);
        let shown = got.len() - 1;
        assert!((1..=MAX_REPORTED_VIOLATIONS).contains(&shown), "{shown}");
        for (field, description) in &got[..shown] {
            assert!(field.len() <= MAX_FIELD_BYTES && field.ends_with(TRUNCATED), "{field}");
            assert!(description.len() <= MAX_DESCRIPTION_BYTES && description.ends_with(TRUNCATED));
        }
        let total: usize = got[..shown].iter().map(|(f, d)| f.len() + d.len()).sum();
        assert!(total <= MAX_VIOLATION_BYTES, "{total}");
        assert_eq!(got[shown], (MORE_FIELD.to_owned(), format!("{} more violations not reported", 1000 - shown)));
        assert!(status.message().len() <= MAX_MESSAGE_BYTES);
        assert!(status.message().ends_with(TRUNCATED));
        assert!(trailer_bytes(&status) < 16 * 1024, "{} bytes of trailers", trailer_bytes(&status));

        let status = Status::from(ServiceError::FailedPrecondition("状态".repeat(100_000)));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().len() <= MAX_MESSAGE_BYTES && status.message().ends_with(TRUNCATED));
        assert!(status.message().starts_with("状态状态"));
        assert!(trailer_bytes(&status) < 16 * 1024);
    }

    #[test]
    fn truncate_keeps_short_text_and_cuts_long_text_to_size() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        for max in TRUNCATED.len()..TRUNCATED.len() + 8 {
            let cut = truncate("一二三四五六七八九十", max);
            assert!(cut.len() <= max && cut.ends_with(TRUNCATED), "{max}: {cut}");
        }
    }

    #[test]
    fn internal_details_are_masked() {
        let status = Status::from(ServiceError::internal("password=hunter2 at db"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
