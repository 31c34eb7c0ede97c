//! Citizen ID number (公民身份号码, GB 11643-1999): 17 digits and an ISO 7064
//! MOD 11-2 check character (`X` for 10); digits 1-6 are the address code
//! (GB/T 2260) and digits 7-14 the birth date.
//!
//! Beyond the check character, a number must be possible: its birth date a
//! real date from 1900-01-01 up to "today" (China Standard Time, given by
//! the caller), and its address code under a real province (see
//! [`crate::division`] for exactly what is checked: retired county codes stay
//! acceptable, since a number keeps the code it was issued under).

use std::fmt;

use time::Date;

use crate::division;

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
    #[error("the birth date (digits 7-14) is after today ({today})")]
    BornInFuture { today: String },
    #[error("the birth date (digits 7-14) is before {EARLIEST_BIRTH_YEAR}-01-01")]
    BornTooEarly,
    #[error("{0}")]
    AddressCode(String),
    #[error("check character is wrong")]
    Check,
}

/// The earliest birth year a citizen ID number may carry.
pub const EARLIEST_BIRTH_YEAR: i32 = 1900;

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
    /// Parses an ID number as of `today` (China Standard Time); a lower-case
    /// `x` check character is accepted and upper-cased.
    pub fn parse(s: &str, today: Date) -> Result<Self, CitizenIdError> {
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
        let born = Date::from_calendar_date(year, month, day).map_err(|_| CitizenIdError::BirthDate)?;
        if !check.starts_with(expected) {
            return Err(CitizenIdError::Check);
        }
        division::check_address_code(&body[..6]).map_err(CitizenIdError::AddressCode)?;
        if born.year() < EARLIEST_BIRTH_YEAR {
            return Err(CitizenIdError::BornTooEarly);
        }
        if born > today {
            return Err(CitizenIdError::BornInFuture { today: crate::date::format_date(today) });
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
    use time::macros::date;

    const TODAY: Date = date!(2026 - 11 - 27);

    fn with_check(body: &str) -> String {
        format!("{body}{}", check_char(body).unwrap())
    }

    #[test]
    fn accepts_the_standard_example() {
        // GB 11643-1999 appendix example.
        let id = CitizenId::parse("11010519491231002X", TODAY).unwrap();
        assert_eq!(id.birth_date(), date!(1949 - 12 - 31));
        assert!(CitizenId::parse("11010519491231002x", TODAY).is_ok());
    }

    #[test]
    fn refuses_bad_check_date_and_shape() {
        assert_eq!(CitizenId::parse("110105194912310021", TODAY), Err(CitizenIdError::Check));
        assert_eq!(CitizenId::parse("110105194913310021", TODAY), Err(CitizenIdError::BirthDate));
        assert_eq!(CitizenId::parse("1101051949123100", TODAY), Err(CitizenIdError::Length(16)));
        assert_eq!(CitizenId::parse("11010519491231A02X", TODAY), Err(CitizenIdError::NotDigits));
    }

    #[test]
    fn refuses_impossible_birth_dates_and_address_codes() {
        let future = with_check("11010520990101002");
        let e = CitizenId::parse(&future, TODAY).unwrap_err();
        assert_eq!(e, CitizenIdError::BornInFuture { today: "2026-11-27".into() });
        assert_eq!(e.to_string(), "the birth date (digits 7-14) is after today (2026-11-27)");
        // Born today is possible; tomorrow is not.
        assert!(CitizenId::parse(&with_check("11010520261127002"), TODAY).is_ok());
        assert!(CitizenId::parse(&with_check("11010520261128002"), TODAY).is_err());
        assert_eq!(CitizenId::parse(&with_check("11010518000101002"), TODAY), Err(CitizenIdError::BornTooEarly));
        assert_eq!(CitizenId::parse(&with_check("11010518991231002"), TODAY), Err(CitizenIdError::BornTooEarly));
        assert!(CitizenId::parse(&with_check("11010519000101002"), TODAY).is_ok());
        for (body, says) in [
            ("00000019491231002", "00 is not a GB/T 2260 province"),
            ("99999919491231002", "99 is not a GB/T 2260 province"),
            ("11000019491231002", "names a province"),
        ] {
            match CitizenId::parse(&with_check(body), TODAY) {
                Err(CitizenIdError::AddressCode(m)) => assert!(m.contains(says), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        // A county code retired since (110224, 大兴县) stays acceptable.
        assert!(CitizenId::parse(&with_check("11022419491231002"), TODAY).is_ok());
    }

    #[test]
    fn debug_is_masked() {
        let id = CitizenId::parse("11010519491231002X", TODAY).unwrap();
        assert!(!format!("{id:?}").contains("19491231"));
    }

    /// The province prefixes of GB/T 2260.
    fn provinces() -> Vec<u32> {
        (10..=99).filter(|p| division::province(&p.to_string()).is_some()).collect()
    }

    proptest! {
        #[test]
        fn possible_numbers_are_accepted(
            p in prop::sample::select(provinces()),
            rest in 100u32..10_000,
            born in 0i64..46_000,
            seq in 0u32..999,
        ) {
            let birth = date!(1900 - 01 - 01) + time::Duration::days(born);
            prop_assume!(birth <= TODAY);
            let ymd = time::macros::format_description!("[year][month][day]");
            let body = format!("{p:02}{rest:04}{}{seq:03}", birth.format(ymd).unwrap());
            let id = with_check(&body);
            let parsed = CitizenId::parse(&id, TODAY).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
            prop_assert_eq!(parsed.birth_date(), birth);
        }

        #[test]
        fn each_impossible_part_is_refused_naming_it(
            p in prop::sample::select(provinces()),
            rest in 100u32..10_000,
            late in 1i64..30_000,
            year in 1000i32..1900,
            bad_prefix in 0u32..100,
        ) {
            let future = TODAY + time::Duration::days(late);
            let ymd = time::macros::format_description!("[year][month][day]");
            let body = format!("{p:02}{rest:04}{}001", future.format(ymd).unwrap());
            let refused = CitizenId::parse(&with_check(&body), TODAY);
            let in_future = matches!(refused, Err(CitizenIdError::BornInFuture { .. }));
            prop_assert!(in_future);
            let body = format!("{p:02}{rest:04}{year:04}0615001");
            prop_assert_eq!(CitizenId::parse(&with_check(&body), TODAY), Err(CitizenIdError::BornTooEarly));
            prop_assume!(division::province(&format!("{bad_prefix:02}")).is_none());
            let body = format!("{bad_prefix:02}{rest:04}19800615001");
            let e = CitizenId::parse(&with_check(&body), TODAY).unwrap_err();
            let names_province = matches!(&e, CitizenIdError::AddressCode(m) if m.contains("not a GB/T 2260 province"));
            prop_assert!(names_province, "{}", e);
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = CitizenId::parse(&s, TODAY);
        }
    }
}
