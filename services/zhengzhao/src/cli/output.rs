//! What the CLI prints: lines on stdout through [`say!`] (a closed stdout
//! ends the command quietly), notes on stderr through [`note!`], JSON from
//! `serde`, one-line errors, and the wire's enums and times as words.

use std::io::Write as _;
use std::process::ExitCode;

use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::{from_timestamp, status_from_wire};

/// Exit code of a check that ran and answered no (`verify`: not valid;
/// `audit`: the log does not check out; `licence import`: rows refused).
pub const NOT_VALID: u8 = 3;

/// Success, or [`NOT_VALID`].
pub fn answer(yes: bool) -> ExitCode {
    if yes { ExitCode::SUCCESS } else { ExitCode::from(NOT_VALID) }
}

/// Prints one line on stdout; a closed stdout ends the command quietly
/// (see [`StdoutClosed`]).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::write_line(format_args!($($arg)*))?
    };
}
pub(crate) use say;

/// Prints one line on stderr, ignoring a closed stderr (`2>&1 | head`).
macro_rules! note {
    ($($arg:tt)*) => {{
        let mut err = std::io::stderr().lock();
        let _ = std::io::Write::write_fmt(&mut err, format_args!($($arg)*))
            .and_then(|()| std::io::Write::write_all(&mut err, b"\n"));
    }};
}
pub(crate) use note;

/// The reader of stdout went away (`zhengzhao ... | head -1`): the command
/// stops quietly instead of failing.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether `e` is a closed stdout (the command ends quietly).
pub fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

/// Writes one line on stdout; a broken pipe is [`StdoutClosed`].
pub fn write_line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// `r`, with a closed stdout counted as done: for commands whose exit code
/// is their answer (`verify`, `audit`, `licence import`), which keeps it.
pub fn quietly(r: anyhow::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if stdout_closed(&e) => Ok(()),
        other => other,
    }
}

/// Prints `v` as pretty JSON.
pub fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints `v` as one JSON line.
pub fn print_json_line(v: &impl serde::Serialize) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string(v)?);
    Ok(())
}

/// One line describing an error, for stderr.
pub fn one_line(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        let code = format!("{:?}", s.code());
        let mut words = String::new();
        for (i, c) in code.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                words.push(' ');
            }
            words.extend(c.to_lowercase());
        }
        return format!("{words}: {}", s.message()).replace('\n', " ");
    }
    format!("{e:#}").replace('\n', " ")
}

/// A wire enum's value as a word: `name` without its `prefix`, lower-case;
/// "unknown" for a value this client does not know.
pub fn wire_word(name: Option<&str>, prefix: &str) -> String {
    name.map_or_else(|| "unknown".to_owned(), |n| n.trim_start_matches(prefix).to_lowercase())
}

/// A wire time as RFC 3339; empty when unset.
pub fn time_text(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| from_timestamp("t", t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A licence status's name and code (`valid`, `10`); "unknown" and empty
/// for a status this client does not know.
pub fn status_text(code: i32) -> (String, String) {
    common::LicenceStatus::try_from(code)
        .ok()
        .and_then(status_from_wire)
        .map(|s| (s.name().to_owned(), s.code().to_owned()))
        .unwrap_or_else(|| ("unknown".into(), String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_are_one_line() {
        let e = anyhow::Error::new(tonic::Status::permission_denied("issuer@X may not\nissue"));
        assert_eq!(one_line(&e), "permission denied: issuer@X may not issue");
    }

    #[test]
    fn wire_words() {
        assert_eq!(wire_word(Some("KEY_STATUS_ACTIVE"), "KEY_STATUS_"), "active");
        assert_eq!(wire_word(None, "KEY_STATUS_"), "unknown");
    }
}
