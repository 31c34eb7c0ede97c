//! The library's clock: the current instant and "today" in China Standard
//! Time, the civil time zone every validity date is read in. One clock is
//! shared by the services of a process, so a drill or a test can move the
//! library's calendar forward and watch validity change as it will.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::{Date, OffsetDateTime, UtcOffset};

/// The library's civil time zone (China Standard Time): "today" for validity.
pub const LIBRARY_OFFSET: UtcOffset = time::macros::offset!(+8);

/// A clock: the system's, moved by an offset that is zero unless advanced.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_seconds: Arc<AtomicI64>,
}

impl Clock {
    /// The current instant.
    pub fn now(&self) -> OffsetDateTime {
        let offset = time::Duration::seconds(self.offset_seconds.load(Ordering::Relaxed));
        OffsetDateTime::now_utc().checked_add(offset).unwrap_or_else(OffsetDateTime::now_utc)
    }

    /// Today's date in the library's time zone.
    pub fn today(&self) -> Date {
        self.now().to_offset(LIBRARY_OFFSET).date()
    }

    /// Moves this clock (and every copy of it) forward by `by`: for drills
    /// and tests that walk the calendar across a validity boundary.
    pub fn advance(&self, by: time::Duration) {
        self.offset_seconds.fetch_add(by.whole_seconds(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_copy() {
        let a = Clock::default();
        let b = a.clone();
        let before = b.today();
        a.advance(time::Duration::days(3));
        assert_eq!(b.today(), before + time::Duration::days(3));
    }
}
