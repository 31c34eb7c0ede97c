//! `zhengzhao licence import`: streams a file of historical licences to the
//! library in batches, with a progress bar, and reports every refused row
//! (reading the file is `zhengzhao::import`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;
use zhengzhao::import::{Format, Rows, count_rows};
use zhengzhao_proto::issuance::v1 as issuance;

use super::super::client::Client;
use super::super::output::{answer, note, quietly, write_line};

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[arg(long)]
    file: PathBuf,
    /// The file's format [default: from the file extension].
    #[arg(long)]
    format: Option<Format>,
    /// Accept existing identifiers with a legacy check character (marked legacy).
    #[arg(long)]
    allow_legacy: bool,
    /// Rows per message.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Write refused rows to this file (JSON lines) instead of stderr.
    #[arg(long)]
    errors: Option<PathBuf>,
}

/// A refused row, as the errors file (or stderr) lists it.
#[derive(Serialize)]
struct Refused<'a> {
    row: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_key: Option<&'a str>,
    field: &'a str,
    reason: &'a str,
}

/// Streams the file to the library: exit 0 when every row is in it, 3 when
/// some were refused.
pub async fn run(c: &Client, a: ImportArgs) -> anyhow::Result<ExitCode> {
    let ImportArgs { file, format, allow_legacy, batch, errors } = a;
    if !(1..=1000).contains(&batch) {
        bail!("--batch must be between 1 and 1000");
    }
    let format = Format::of(&file, format)?;
    let mut rows = Rows::open(&file, format)?;
    let total = count_rows(&file, format)?;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} rows, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<issuance::ImportLicencesRequest>(4);
    let reader_bar = bar.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut local = Vec::new();
        let mut chunk = Vec::with_capacity(batch);
        while let Some(row) = rows.next_row() {
            reader_bar.inc(1);
            match row {
                Ok(r) => chunk.push(r),
                Err(e) => local.push(e),
            }
            if chunk.len() == batch {
                let msg = issuance::ImportLicencesRequest { rows: std::mem::take(&mut chunk), allow_legacy };
                if tx.blocking_send(msg).is_err() {
                    return local;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(issuance::ImportLicencesRequest { rows: chunk, allow_legacy });
        }
        local
    });
    let response = c
        .issuance()
        .max_decoding_message_size(256 << 20)
        .import_licences(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let local = reader.await?;
    bar.finish();
    let r = response?.into_inner();
    let unread = local.iter().map(|e| Refused { row: e.row_number, source_key: None, field: "row", reason: &e.reason });
    let refused = r.errors.iter().map(|e| Refused {
        row: e.row_number,
        source_key: Some(&e.source_key),
        field: &e.field,
        reason: &e.reason,
    });
    let mut lines = String::new();
    let mut refused_rows = BTreeSet::new();
    for e in unread.chain(refused) {
        refused_rows.insert(e.row);
        lines.push_str(&serde_json::to_string(&e)?);
        lines.push('\n');
    }
    match &errors {
        Some(path) => std::fs::write(path, lines).with_context(|| format!("cannot write {}", path.display()))?,
        None if lines.is_empty() => {}
        None => note!("{}", lines.trim_end()),
    }
    quietly(write_line(format_args!(
        "rows {}, imported {}, already present {}, legacy identifiers {}, refused {}",
        r.received + local.len() as u64,
        r.imported,
        r.already_present,
        r.legacy,
        refused_rows.len()
    )))?;
    Ok(answer(refused_rows.is_empty()))
}
