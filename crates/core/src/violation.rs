//! Field-level validation errors: every refusal names the offending field.

use std::fmt;

/// One invalid field: its path (e.g. `holder.id_number`, `face_fields.name`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// A non-empty list of field violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Violations(pub Vec<FieldViolation>);

impl Violations {
    /// `Ok(())` when the list is empty, the violations otherwise.
    pub fn into_result(list: Vec<FieldViolation>) -> Result<(), Violations> {
        if list.is_empty() { Ok(()) } else { Err(Violations(list)) }
    }

    pub fn single(field: impl Into<String>, description: impl Into<String>) -> Self {
        Violations(vec![FieldViolation::new(field, description)])
    }

    /// Whether some violation concerns this field.
    pub fn names(&self, field: &str) -> bool {
        self.0.iter().any(|v| v.field == field)
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}
