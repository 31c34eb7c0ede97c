//! Bounded caller text (reasons, causes, names, results) under one rule:
//! trimmed, non-empty, at most `MAX` characters, no control characters.
//! Parsed once at the edge; past it the text is known good.

use std::fmt;

use crate::Violations;

/// Text a caller supplies, trimmed and checked: non-empty, at most `MAX`
/// characters (Unicode scalar values), no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct BoundedText<const MAX: usize>(String);

/// Why a lifecycle event, a retirement, a revocation or a key change happened.
pub type Reason = BoundedText<500>;
/// Why an issuer's system was out of service.
pub type Cause = BoundedText<500>;
/// Why a consumer uses a licence (GB/T 36906 practice).
pub type UseCause = BoundedText<200>;
/// A name as a person reads it: an issuing agency's, a licence type's.
pub type Name = BoundedText<200>;

/// What the rule says, for a refusal: the same words wherever it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("required, at most {max} characters, no control characters")]
pub struct TextError {
    pub max: usize,
}

impl<const MAX: usize> BoundedText<MAX> {
    /// The longest text accepted, in characters.
    pub const MAX: usize = MAX;

    /// `text` trimmed, if it keeps the rule.
    pub fn parse(text: &str) -> Result<Self, TextError> {
        Self::check(text).map(|t| BoundedText(t.to_owned()))
    }

    /// As [`BoundedText::parse`], the refusal naming `field`.
    pub fn parse_field(field: &str, text: &str) -> Result<Self, Violations> {
        Self::parse(text).map_err(|e| Violations::single(field, e.to_string()))
    }

    /// `text` trimmed, if it keeps the rule (for a validator that keeps the
    /// text as given).
    pub fn check(text: &str) -> Result<&str, TextError> {
        let t = text.trim();
        if t.is_empty() || t.chars().count() > MAX || t.chars().any(char::is_control) {
            return Err(TextError { max: MAX });
        }
        Ok(t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MAX: usize> AsRef<str> for BoundedText<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> std::ops::Deref for BoundedText<MAX> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Display for BoundedText<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> From<BoundedText<MAX>> for String {
    fn from(t: BoundedText<MAX>) -> String {
        t.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_kept() {
        assert_eq!(BoundedText::<5>::parse("  审核不通过 ").map(String::from), Ok("审核不通过".to_owned()));
    }

    #[test]
    fn empty_long_and_control_text_is_refused() {
        for bad in ["", "   ", "abcdef", "a\u{0}b", "a\nb", "\u{7f}"] {
            assert_eq!(BoundedText::<5>::parse(bad), Err(TextError { max: 5 }), "{bad:?}");
        }
        assert!(BoundedText::<5>::parse("一二三四五").is_ok());
    }

    #[test]
    fn a_refusal_names_its_field() {
        let v = Reason::parse_field("reason", "").expect_err("empty");
        assert!(v.names("reason"));
        assert!(v.to_string().contains("at most 500 characters"));
    }
}
