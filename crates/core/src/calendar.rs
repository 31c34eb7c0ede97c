//! The working-day calendar (weekends, public holidays, and weekend days made
//! working days by adjustment) and the 3-working-day catch-up deadline.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use time::{Date, Weekday};

use crate::date::parse_date;

/// The calendar shipped with the library (`deploy/calendar/cn-working-days.toml`).
pub const SHIPPED: &str = include_str!("../../../deploy/calendar/cn-working-days.toml");

/// Working days an issuer has to catch up after an outage ends.
pub const CATCH_UP_WORKING_DAYS: u32 = 3;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    years: Vec<YearFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YearFile {
    year: i32,
    #[serde(default)]
    provisional: bool,
    holidays: Vec<String>,
    adjusted_working_days: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Year {
    provisional: bool,
    holidays: BTreeSet<Date>,
    adjusted: BTreeSet<Date>,
}

/// A calendar file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("working-day calendar: {0}")]
pub struct CalendarError(String);

/// Which days are working days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkingCalendar {
    years: BTreeMap<i32, Year>,
}

/// What the calendar knows about the days a computation covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Every day came from a confirmed year.
    Confirmed,
    /// Some day came from a provisional year.
    Provisional,
    /// Some day's year is not in the calendar (Monday-Friday assumed).
    Missing,
}

impl WorkingCalendar {
    /// Parses a calendar file (TOML, see the shipped one).
    pub fn parse(text: &str) -> Result<Self, CalendarError> {
        let file: File = toml::from_str(text).map_err(|e| CalendarError(e.to_string()))?;
        let mut years = BTreeMap::new();
        for y in file.years {
            let mut year = Year { provisional: y.provisional, ..Default::default() };
            for (list, target) in [(&y.holidays, &mut year.holidays), (&y.adjusted_working_days, &mut year.adjusted)] {
                for d in list {
                    let date = parse_date(d).map_err(CalendarError)?;
                    if date.year() != y.year {
                        return Err(CalendarError(format!("{d} is listed under {}", y.year)));
                    }
                    target.insert(date);
                }
            }
            if let Some(d) = year.adjusted.iter().find(|d| !is_weekend(**d)) {
                return Err(CalendarError(format!("{d} is an adjusted working day but not a weekend day")));
            }
            if let Some(d) = year.holidays.intersection(&year.adjusted).next() {
                return Err(CalendarError(format!("{d} is both a holiday and a working day")));
            }
            if years.insert(y.year, year).is_some() {
                return Err(CalendarError(format!("year {} is listed twice", y.year)));
            }
        }
        Ok(WorkingCalendar { years })
    }

    /// The shipped calendar.
    pub fn shipped() -> Self {
        // The shipped file is checked by the tests.
        Self::parse(SHIPPED).unwrap_or_default()
    }

    fn coverage_of(&self, d: Date) -> Coverage {
        match self.years.get(&d.year()) {
            None => Coverage::Missing,
            Some(y) if y.provisional => Coverage::Provisional,
            Some(_) => Coverage::Confirmed,
        }
    }

    /// Whether `d` is a working day.
    pub fn is_working_day(&self, d: Date) -> bool {
        match self.years.get(&d.year()) {
            Some(y) if y.adjusted.contains(&d) => true,
            Some(y) if y.holidays.contains(&d) => false,
            _ => !is_weekend(d),
        }
    }

    /// The `n`th working day after `d` (not counting `d`), and how sure the
    /// calendar is of the days it stepped through.
    pub fn add_working_days(&self, d: Date, n: u32) -> (Date, Coverage) {
        let mut day = d;
        let mut left = n;
        let mut coverage = self.coverage_of(d);
        while left > 0 {
            let Some(next) = day.next_day() else { break };
            day = next;
            coverage = worse(coverage, self.coverage_of(day));
            if self.is_working_day(day) {
                left -= 1;
            }
        }
        (day, coverage)
    }

    /// The last day to catch up after an outage that ended on `ended`.
    pub fn catch_up_deadline(&self, ended: Date) -> (Date, Coverage) {
        self.add_working_days(ended, CATCH_UP_WORKING_DAYS)
    }
}

fn is_weekend(d: Date) -> bool {
    matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday)
}

fn worse(a: Coverage, b: Coverage) -> Coverage {
    use Coverage::*;
    match (a, b) {
        (Missing, _) | (_, Missing) => Missing,
        (Provisional, _) | (_, Provisional) => Provisional,
        _ => Confirmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    #[test]
    fn the_shipped_calendar_parses_and_knows_the_holidays() {
        let c = WorkingCalendar::parse(SHIPPED).unwrap();
        assert!(!c.is_working_day(date!(2026 - 10 - 01)), "National Day");
        assert!(c.is_working_day(date!(2026 - 10 - 10)), "a Saturday made a working day");
        assert!(!c.is_working_day(date!(2026 - 11 - 28)), "an ordinary Saturday");
        assert!(c.is_working_day(date!(2026 - 11 - 27)), "an ordinary Friday");
    }

    #[test]
    fn deadlines_skip_weekends_and_holidays_and_count_adjusted_days() {
        let c = WorkingCalendar::shipped();
        // Cleared on Friday: Monday, Tuesday, Wednesday.
        assert_eq!(c.catch_up_deadline(date!(2026 - 11 - 27)), (date!(2026 - 12 - 02), Coverage::Confirmed));
        // Cleared on 30 September: the National Day week is off; 8, 9 and Saturday 10 October work.
        assert_eq!(c.catch_up_deadline(date!(2026 - 09 - 30)).0, date!(2026 - 10 - 10));
        // Cleared on 31 December 2026: New Year 2027 is only provisional.
        assert_eq!(c.catch_up_deadline(date!(2026 - 12 - 31)), (date!(2027 - 01 - 06), Coverage::Provisional));
        assert_eq!(c.catch_up_deadline(date!(2030 - 01 - 01)).1, Coverage::Missing);
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(
            WorkingCalendar::parse("[[years]]\nyear = 2026\nholidays = [\"2025-01-01\"]\nadjusted_working_days = []\n")
                .is_err()
        );
        assert!(
            WorkingCalendar::parse("[[years]]\nyear = 2026\nholidays = []\nadjusted_working_days = [\"2026-11-27\"]\n")
                .is_err()
        );
        assert!(WorkingCalendar::parse("nonsense").is_err());
    }

    proptest! {
        #[test]
        fn the_deadline_is_a_working_day_after_the_end(days in 0i32..2000, n in 1u32..10) {
            let c = WorkingCalendar::shipped();
            let d = date!(2025 - 01 - 01) + time::Duration::days(i64::from(days));
            let (end, _) = c.add_working_days(d, n);
            prop_assert!(end > d);
            prop_assert!(c.is_working_day(end));
            let working = (1..=(end - d).whole_days()).filter(|k| c.is_working_day(d + time::Duration::days(*k))).count();
            prop_assert_eq!(working, n as usize);
        }
    }
}
