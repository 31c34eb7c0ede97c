//! Log fields written so that no caller-supplied text can forge a log line:
//! every control character (newline, carriage return, escape, ...) in a field
//! of the text format is written escaped, as Rust's `escape_debug` writes it.

use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// `text` with every control character (and the Unicode line and paragraph
/// separators) escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The text format's field formatter: `name=value`, space-delimited, with
/// values escaped; the message goes first without its name.
pub fn fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(|w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
        let text = escape(&format!("{value:?}"));
        if field.name() == "message" { w.write_str(&text) } else { write!(w, "{field}={text}") }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_newline_in_a_field_cannot_forge_a_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer().with_ansi(false).fmt_fields(fields()).with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            let forged = "91350100M000100Y43\n2026-12-04T00:00:00Z  INFO forged: licence revoked\x1b[2J";
            tracing::info!(identifier = %forged, cause = ?forged, "licence issued");
        });
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("licence issued identifier=91350100M000100Y43\\n2026"), "{text}");
        assert!(text.contains("\\u{1b}[2J"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn escape_keeps_ordinary_text() {
        assert_eq!(escape("食品经营许可证 a=b"), "食品经营许可证 a=b");
        assert_eq!(escape("a\r\nb\u{2028}"), "a\\r\\nb\\u{2028}");
    }
}
