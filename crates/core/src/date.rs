//! Calendar dates as the licence documents write them (`YYYY-MM-DD`).

use time::Date;
use time::macros::format_description;

const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<Date, String> {
    Date::parse(s, FORMAT).map_err(|_| format!("{s:?} is not a date in YYYY-MM-DD form"))
}

/// Formats as `YYYY-MM-DD`.
pub fn format_date(d: Date) -> String {
    d.format(FORMAT).unwrap_or_else(|_| d.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(days in 0i32..200_000) {
            let d = Date::from_julian_day(2_400_000 + days).unwrap();
            prop_assert_eq!(parse_date(&format_date(d)).unwrap(), d);
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = parse_date(&s);
        }
    }

    #[test]
    fn refuses_impossible_dates() {
        assert!(parse_date("2026-02-30").is_err());
        assert!(parse_date("2026-2-3").is_err());
    }
}
