//! Log fields written so that no caller-supplied text can forge a log line
//! or a field: in the text format every control character (newline, carriage
//! return, escape, ...) and bidirectional override is written escaped, as
//! Rust's `escape_debug` writes it, and a value with a space, `=` or `"` is
//! quoted.

use std::fmt::Write as _;

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

/// Whether `c` could change how a log line reads: control characters, the
/// Unicode line and paragraph separators, and bidirectional overrides.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character that could change how a line reads escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "{}", c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A field value as written: as it is when it is plain; otherwise quoted,
/// with `"` and `\\` escaped and every unsafe character escaped (so neither
/// `x actor=admin` nor a newline can pass for another field or line).
fn value(text: &str) -> String {
    if !text.chars().any(|c| unsafe_char(c) || matches!(c, ' ' | '=' | '"' | '\\')) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The text format's field formatter: `name=value`, space-delimited, with
/// values escaped; the message goes first without its name.
pub fn fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    debug_fn(|w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
        let text = format!("{value:?}");
        if field.name() == "message" {
            w.write_str(&escape(&text))
        } else {
            write!(w, "{field}={}", self::value(&text))
        }
    })
    .delimited(" ")
}

/// The text-format log layer every process installs, writing to `writer`.
pub fn text_layer<S, W>(ansi: bool, writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer().with_ansi(ansi).fmt_fields(fields()).with_writer(writer)
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
        let subscriber = tracing_subscriber::registry().with(text_layer(false, move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let forged = "91350100M000100Y43\n2026-12-04T00:00:00Z  INFO forged: licence revoked\x1b[2J";
            tracing::info!(identifier = %forged, cause = ?forged, reason = %"x actor=admin", "licence issued");
        });
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r#"licence issued identifier="91350100M000100Y43\u{a}2026"#), "{text}");
        assert!(text.contains(r"\u{1b}[2J"), "{text}");
        assert!(text.contains(r#"reason="x actor=admin""#), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn escape_keeps_ordinary_text() {
        assert_eq!(escape("食品经营许可证 a=b"), "食品经营许可证 a=b");
        assert_eq!(escape("a\r\nb\u{2028}\u{202E}"), "a\\u{d}\\u{a}b\\u{2028}\\u{202e}");
    }
}
