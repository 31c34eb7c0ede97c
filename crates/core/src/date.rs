//! Calendar dates as the licence documents write them (`YYYY-MM-DD`).

use time::macros::format_description;
use time::{Date, OffsetDateTime};

const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// The earliest year a caller may name, in a date or an instant.
pub const EARLIEST_YEAR: i32 = 1900;
/// The latest year a caller may name, in a date or an instant.
pub const LATEST_YEAR: i32 = 9999;

/// Parses `YYYY-MM-DD` as a caller gives it: a real calendar date in the
/// years [`EARLIEST_YEAR`] to [`LATEST_YEAR`].
pub fn parse_date(s: &str) -> Result<Date, String> {
    let d = read_date(s)?;
    if !(EARLIEST_YEAR..=LATEST_YEAR).contains(&d.year()) {
        return Err(format!("{s:?} is outside the years {EARLIEST_YEAR} to {LATEST_YEAR}"));
    }
    Ok(d)
}

/// Parses `YYYY-MM-DD` as stored, without the range check of [`parse_date`]
/// (rows written before the check existed must still read back).
pub fn read_date(s: &str) -> Result<Date, String> {
    Date::parse(s, FORMAT).map_err(|_| format!("{s:?} is not a date in YYYY-MM-DD form"))
}

/// The earliest instant a caller may name: 1900-01-01T00:00:00Z.
pub fn earliest_instant() -> OffsetDateTime {
    Date::from_calendar_date(EARLIEST_YEAR, time::Month::January, 1)
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The first instant a caller may no longer name: 9999-12-31T00:00:00Z (so
/// that every accepted instant is still in year 9999 in China Standard Time).
pub fn instant_limit() -> OffsetDateTime {
    Date::from_calendar_date(LATEST_YEAR, time::Month::December, 31)
        .map(|d| d.midnight().assume_utc())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Checks that an instant a caller supplies lies in the accepted range
/// (from 1900-01-01T00:00:00Z, before 9999-12-31T00:00:00Z).
pub fn check_instant(t: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if t < earliest_instant() || t >= instant_limit() {
        return Err(format!(
            "outside the accepted range: from {EARLIEST_YEAR}-01-01T00:00:00Z to before {LATEST_YEAR}-12-31T00:00:00Z"
        ));
    }
    Ok(t)
}

/// Formats as `YYYY-MM-DD`.
pub fn format_date(d: Date) -> String {
    d.format(FORMAT).unwrap_or_else(|_| d.to_string())
}

const STORED_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A timestamp as stored: RFC 3339, UTC, microseconds (sorts as text).
/// Callers' instants are range-checked at the edge ([`check_instant`]),
/// so what is stored is always in years 1900 to 9999.
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC).format(STORED_TIME).unwrap_or_default()
}

/// Parses a stored timestamp: RFC 3339, or anything [`format_time`] ever
/// wrote (before the edge checked ranges, years such as `-0001` were stored).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .or_else(|_| time::PrimitiveDateTime::parse(s, STORED_TIME).map(time::PrimitiveDateTime::assume_utc))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(days in 0i32..200_000) {
            let d = Date::from_julian_day(2_400_000 + days).unwrap();
            prop_assert_eq!(read_date(&format_date(d)).unwrap(), d);
            let in_range = (EARLIEST_YEAR..=LATEST_YEAR).contains(&d.year());
            prop_assert_eq!(parse_date(&format_date(d)).is_ok(), in_range);
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

    #[test]
    fn refuses_dates_outside_the_range_but_reads_them_back() {
        for s in ["-0001-01-01", "0000-01-01", "1899-12-31"] {
            assert!(parse_date(s).unwrap_err().contains("outside"), "{s}");
            assert_eq!(format_date(read_date(s).unwrap()), s);
        }
        assert!(parse_date("1900-01-01").is_ok());
        assert!(parse_date("9999-12-31").is_ok());
    }

    #[test]
    fn instants_are_bounded() {
        assert!(check_instant(earliest_instant()).is_ok());
        assert!(check_instant(earliest_instant() - time::Duration::nanoseconds(1)).is_err());
        assert!(check_instant(instant_limit()).is_err());
        assert!(check_instant(instant_limit() - time::Duration::nanoseconds(1)).is_ok());
        let last = instant_limit() - time::Duration::nanoseconds(1);
        assert_eq!(last.to_offset(time::macros::offset!(+8)).year(), LATEST_YEAR);
    }
}
