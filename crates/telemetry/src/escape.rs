//! Log fields written so that no caller-supplied text can forge a log line
//! or a field: in the text format every control character (newline, carriage
//! return, escape, ...) and bidirectional override is written escaped, as
//! Rust's `escape_debug` writes it, and a value with a space, `=` or `"` is
//! quoted.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

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
/// values escaped; the message goes first without its name. A string field
/// is written as it is when plain (`service=issuance`), quoted otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

/// The text format's field formatter (see [`EscapedFields`]).
pub fn fields() -> EscapedFields {
    EscapedFields
}

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> std::fmt::Result {
        let mut visitor = Visitor { writer: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Visitor<'_, '_> {
    fn write(&mut self, field: &Field, text: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{}", escape(text))
        } else {
            write!(self.writer, "{separator}{field}={}", value(text))
        };
    }
}

impl Visit for Visitor<'_, '_> {
    fn record_str(&mut self, field: &Field, text: &str) {
        self.write(field, text);
    }

    fn record_debug(&mut self, field: &Field, v: &dyn std::fmt::Debug) {
        self.write(field, &format!("{v:?}"));
    }
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
            tracing::info!(identifier = %forged, cause = ?forged, reason = %"x actor=admin", service = "issuance", "licence issued");
        });
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r#"licence issued identifier="91350100M000100Y43\u{a}2026"#), "{text}");
        assert!(text.contains(r"\u{1b}[2J"), "{text}");
        assert!(text.contains(r#"reason="x actor=admin""#), "{text}");
        assert!(text.contains(" service=issuance"), "a plain string stays plain: {text}");
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn escape_keeps_ordinary_text() {
        assert_eq!(escape("食品经营许可证 a=b"), "食品经营许可证 a=b");
        assert_eq!(escape("a\r\nb\u{2028}\u{202E}"), "a\\u{d}\\u{a}b\\u{2028}\\u{202e}");
    }
}
