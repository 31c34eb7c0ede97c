//! Citizen ID number (公民身份号码, GB 11643-1999): 17 digits and an ISO 7064
//! MOD 11-2 check character (`X` for 10); digits 7-14 are the birth date.

use std::fmt;

use time::Date;

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECKS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Why a string is not a citizen ID number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CitizenIdError {
    #[error("must be 18 characters, got {0}")]
    Length(usize),
    #[error("the first 17 characters must be digits")]
    NotDigits,
    #[error("digits 7-14 are not a valid birth date")]
    BirthDate,
    #[error("check character is wrong")]
    Check,
}

/// A validated citizen ID number (upper-case `X`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CitizenId(String);

/// The MOD 11-2 check character for 17 digits.
pub fn check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(b, w)| u32::from(b - b'0') * w).sum();
    Some(CHECKS[(sum % 11) as usize])
}

impl CitizenId {
    /// Parses an ID number; a lower-case `x` check character is accepted and upper-cased.
    pub fn parse(s: &str) -> Result<Self, CitizenIdError> {
        let len = s.chars().count();
        if len != 18 || !s.is_ascii() {
            return Err(CitizenIdError::Length(len));
        }
        let upper = s.to_ascii_uppercase();
        let (body, check) = upper.split_at(17);
        let expected = check_char(body).ok_or(CitizenIdError::NotDigits)?;
        let year: i32 = body[6..10].parse().map_err(|_| CitizenIdError::BirthDate)?;
        let month: u8 = body[10..12].parse().map_err(|_| CitizenIdError::BirthDate)?;
        let day: u8 = body[12..14].parse().map_err(|_| CitizenIdError::BirthDate)?;
        let month = time::Month::try_from(month).map_err(|_| CitizenIdError::BirthDate)?;
        Date::from_calendar_date(year, month, day).map_err(|_| CitizenIdError::BirthDate)?;
        if !check.starts_with(expected) {
            return Err(CitizenIdError::Check);
        }
        Ok(CitizenId(upper))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The birth date encoded in digits 7-14.
    pub fn birth_date(&self) -> Date {
        let year: i32 = self.0[6..10].parse().unwrap_or(1900);
        let month = self.0[10..12].parse::<u8>().ok().and_then(|m| time::Month::try_from(m).ok());
        let day: u8 = self.0[12..14].parse().unwrap_or(1);
        month.and_then(|m| Date::from_calendar_date(year, m, day).ok()).unwrap_or(Date::MIN)
    }
}

/// Never prints the full number.
impl fmt::Debug for CitizenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CitizenId({})", crate::holder::mask_id_number(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_standard_example() {
        // GB 11643-1999 appendix example.
        let id = CitizenId::parse("11010519491231002X").unwrap();
        assert_eq!(id.birth_date(), time::macros::date!(1949 - 12 - 31));
        assert!(CitizenId::parse("11010519491231002x").is_ok());
    }

    #[test]
    fn refuses_bad_check_date_and_shape() {
        assert_eq!(CitizenId::parse("110105194912310021"), Err(CitizenIdError::Check));
        assert_eq!(CitizenId::parse("110105194913310021"), Err(CitizenIdError::BirthDate));
        assert_eq!(CitizenId::parse("1101051949123100"), Err(CitizenIdError::Length(16)));
        assert_eq!(CitizenId::parse("11010519491231A02X"), Err(CitizenIdError::NotDigits));
    }

    #[test]
    fn debug_is_masked() {
        let id = CitizenId::parse("11010519491231002X").unwrap();
        assert!(!format!("{id:?}").contains("19491231"));
    }

    proptest! {
        #[test]
        fn generated_numbers_round_trip(area in 110000u32..659999, y in 1900i32..2025, m in 1u8..=12, d in 1u8..=28, seq in 0u32..999) {
            let body = format!("{area:06}{y:04}{m:02}{d:02}{seq:03}");
            let id = format!("{body}{}", check_char(&body).unwrap());
            let parsed = CitizenId::parse(&id).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = CitizenId::parse(&s);
        }
    }
}
