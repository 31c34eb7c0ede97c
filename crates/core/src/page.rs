//! Keyset pagination over rows listed newest first by a numeric id: a page
//! size (0 means [`DEFAULT_PAGE_SIZE`]), an opaque token saying where the
//! next page starts, and the next token from a page fetched one row long.

use crate::{FieldViolation, Violations};

/// The page size a request of 0 gets.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub size: u32,
    /// Rows with an id below this one.
    pub before: i64,
}

impl Page {
    /// A page of `size` (0: the default, at most `max`) from `token` (empty: the first).
    pub fn parse(size: u32, token: &str, max: u32) -> Result<Page, Violations> {
        let size = match size {
            0 => DEFAULT_PAGE_SIZE.min(max),
            n if n > max => return Err(Violations::single("page_size", format!("at most {max}"))),
            n => n,
        };
        let before = if token.is_empty() {
            i64::MAX
        } else {
            token
                .parse()
                .map_err(|_| Violations(vec![FieldViolation::new("page_token", "not a token this listing returned")]))?
        };
        Ok(Page { size, before })
    }

    /// How many rows to fetch: one more than the page, to know whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// Cuts `rows` (fetched with [`Page::fetch_limit`]) to the page and
    /// returns the next page's token, empty on the last page.
    pub fn finish<T>(&self, rows: &mut Vec<T>, id: impl Fn(&T) -> i64) -> String {
        let size = self.size as usize;
        if rows.len() > size {
            rows.truncate(size);
            rows.last().map(|r| id(r).to_string()).unwrap_or_default()
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_each_other() {
        let p = Page::parse(0, "", 500).unwrap();
        assert_eq!((p.size, p.before, p.fetch_limit()), (100, i64::MAX, 101));
        let mut rows: Vec<i64> = (0..3).rev().collect();
        let p = Page::parse(2, "", 500).unwrap();
        assert_eq!(p.finish(&mut rows, |r| *r), "1");
        assert_eq!(rows, vec![2, 1]);
        let next = Page::parse(2, "1", 500).unwrap();
        assert_eq!(next.before, 1);
        let mut last = vec![0_i64];
        assert_eq!(next.finish(&mut last, |r| *r), "");
        assert!(Page::parse(501, "", 500).unwrap_err().names("page_size"));
        assert!(Page::parse(1, "x", 500).unwrap_err().names("page_token"));
    }
}
