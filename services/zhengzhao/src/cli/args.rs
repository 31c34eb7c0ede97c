//! What several commands' arguments share: RFC 3339 times, lifetimes, the
//! `--limit` of listings (with the paging behind it), and input files.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// A time flag's value: RFC 3339 with an offset. A value that does not
/// parse is a usage error (exit 2), said once with the format wanted.
pub fn rfc3339(t: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(t.trim(), &time::format_description::well_known::Rfc3339).map_err(|e| {
        // The error's source repeats its own text: say it once.
        let reason = match &e {
            time::error::Parse::TryFromParsed(inner) => inner.to_string(),
            time::error::Parse::ParseFromDescription(inner) => inner.to_string(),
            other => other.to_string(),
        };
        format!("not an RFC 3339 time ({reason}); use a date, T, a time and an offset, e.g. 2026-11-27T09:30:00+08:00")
    })
}

/// `time` on the wire.
pub fn timestamp(time: time::OffsetDateTime) -> prost_types::Timestamp {
    zhengzhao_proto::convert::timestamp(time)
}

/// A lifetime: seconds, or a number with s, m, h or d; 1 second to 366 days.
pub fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let (n, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = n.parse().with_context(|| format!("--ttl {s:?}: use e.g. 3600, 30m, 1h or 7d"))?;
    let secs = match unit {
        's' => n,
        'm' => n.saturating_mul(60),
        'h' => n.saturating_mul(3600),
        'd' => n.saturating_mul(86400),
        _ => bail!("--ttl {s:?}: unit must be s, m, h or d"),
    };
    if secs == 0 || secs > 366 * 86400 {
        bail!("--ttl must be between 1 second and 366 days");
    }
    Ok(Duration::from_secs(secs))
}

/// The text of an input file.
pub fn read_file(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The JSON document in `file`, which should be `what` (said when it is not).
pub fn json_file<T: serde::de::DeserializeOwned>(file: &Path, what: &str) -> anyhow::Result<T> {
    serde_json::from_str(&read_file(file)?).with_context(|| format!("{} is not {what}", file.display()))
}

/// The `--limit` of listings when none is given; `--limit 0` means it too,
/// as a page size of 0 means the service's default page in the API.
pub const DEFAULT_LIMIT: u32 = 100;

/// No limit: every page.
pub const EVERY_PAGE: u32 = u32::MAX;

/// Reads up to `limit` items (see [`DEFAULT_LIMIT`]), newest first, page by
/// page: `page(page_size, page_token)` answers a page and the next token
/// (empty at the end); `each` gets every item.
pub async fn pages<T>(
    limit: u32,
    mut page: impl AsyncFnMut(u32, String) -> anyhow::Result<(Vec<T>, String)>,
    mut each: impl FnMut(T) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut token = String::new();
    let mut left = if limit == 0 { DEFAULT_LIMIT } else { limit };
    while left > 0 {
        let (items, next) = page(left.min(500), token).await?;
        if items.is_empty() {
            break;
        }
        for item in items {
            left = left.saturating_sub(1);
            each(item)?;
        }
        if next.is_empty() {
            break;
        }
        token = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("400d").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
