//! `zhengzhao licence import`: reads historical licences from CSV or JSON
//! Lines, streams them to the library in batches with a progress bar, and
//! reports every refused row with its row number, field and reason.
//!
//! CSV columns (header row required; order free): `source_key`,
//! `identifier` (optional), `type_code`, `template_version` (optional),
//! `issuer_name`, `serial` (optional when `identifier` is given),
//! `holder_name`, `holder_id_type_code`, `holder_id_number`, `issue_date`,
//! `valid_from` (optional), `valid_until` (optional), `area_code`, and one
//! `face.<key>` column per face field. JSON Lines: one object per line,
//! `{"source_key": ..., "identifier": ... (optional), "licence": {...}}` where
//! `licence` is what `licence example` prints.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use zhengzhao_core::{Holder, LicenceDraft};
use zhengzhao_proto::issuance::v1 as pb;

/// Columns a CSV file may have besides `face.<key>`.
const COLUMNS: &[&str] = &[
    "source_key",
    "identifier",
    "type_code",
    "template_version",
    "issuer_name",
    "serial",
    "holder_name",
    "holder_id_type_code",
    "holder_id_number",
    "issue_date",
    "valid_from",
    "valid_until",
    "area_code",
];
const REQUIRED: &[&str] = &[
    "source_key",
    "type_code",
    "issuer_name",
    "holder_name",
    "holder_id_type_code",
    "holder_id_number",
    "issue_date",
    "area_code",
];

/// A row the client could not even read.
#[derive(Debug, Clone)]
pub struct LocalError {
    pub row_number: u64,
    pub reason: String,
}

/// The file's format (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    // JSON Lines.
    #[value(name = "jsonl", alias = "ndjson", alias = "json-lines")]
    JsonLines,
}

impl Format {
    /// `given`, or else the format `path`'s extension names.
    pub fn of(path: &Path, given: Option<Format>) -> anyhow::Result<Self> {
        if let Some(format) = given {
            return Ok(format);
        }
        let extension = path.extension().map(|e| e.to_string_lossy()).unwrap_or_default();
        <Format as clap::ValueEnum>::from_str(&extension, true).map_err(|_| {
            anyhow::anyhow!("cannot tell the format of {}: use --format csv or --format jsonl", path.display())
        })
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    source_key: String,
    #[serde(default)]
    identifier: String,
    licence: LicenceDraft,
}

/// Reads rows one at a time, numbering data rows from 1.
pub struct Rows {
    inner: RowsInner,
    row_number: u64,
    /// A read failed in a way that will not change (not bad text on one
    /// line): nothing more is read.
    failed: bool,
}

/// What rows are read from: a file, or any reader (a test's bytes).
type Source = Box<dyn std::io::Read + Send>;

enum RowsInner {
    Csv { records: csv::StringRecordsIntoIter<Source>, header: Vec<String> },
    Json(std::io::Lines<std::io::BufReader<Source>>),
}

impl Rows {
    pub fn open(path: &Path, format: Format) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_reader(Box::new(file), format).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Rows of `format` read from `source`; a CSV header is checked here.
    pub fn from_reader(source: Source, format: Format) -> anyhow::Result<Self> {
        let inner = match format {
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(source);
                let header: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_owned()).collect();
                for h in &header {
                    if !COLUMNS.contains(&h.as_str()) && !h.starts_with("face.") {
                        bail!("unknown column {h:?} (see `zhengzhao licence import --help`)");
                    }
                }
                for r in REQUIRED {
                    if !header.iter().any(|h| h == r) {
                        bail!("missing column {r:?}");
                    }
                }
                RowsInner::Csv { records: reader.into_records(), header }
            }
            Format::JsonLines => {
                use std::io::BufRead;
                RowsInner::Json(std::io::BufReader::new(source).lines())
            }
        };
        Ok(Rows { inner, row_number: 0, failed: false })
    }

    /// The next row, or why it cannot be read; `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<pb::ImportRow, LocalError>> {
        loop {
            if self.failed {
                return None;
            }
            let parsed = match &mut self.inner {
                RowsInner::Csv { records, header } => {
                    let record = records.next()?;
                    self.row_number += 1;
                    record.map_err(|e| e.to_string()).map(|r| csv_row(header, &r))
                }
                RowsInner::Json(lines) => {
                    let line = match lines.next()? {
                        Ok(l) => l,
                        Err(e) => {
                            self.row_number += 1;
                            self.failed = e.kind() != std::io::ErrorKind::InvalidData;
                            return Some(Err(LocalError { row_number: self.row_number, reason: e.to_string() }));
                        }
                    };
                    self.row_number += 1;
                    if line.trim().is_empty() {
                        continue;
                    }
                    serde_json::from_str::<JsonRow>(&line)
                        .map_err(|e| format!("not a licence row: {e}"))
                        .map(|j| (j.source_key, j.identifier, j.licence))
                }
            };
            let row_number = self.row_number;
            return Some(match parsed {
                Ok((source_key, identifier, draft)) => {
                    Ok(pb::ImportRow { row_number, source_key, identifier, draft: Some((&draft).into()) })
                }
                Err(reason) => Err(LocalError { row_number, reason }),
            });
        }
    }
}

fn csv_row(header: &[String], r: &csv::StringRecord) -> (String, String, LicenceDraft) {
    let mut cols: BTreeMap<&str, String> = BTreeMap::new();
    let mut face = BTreeMap::new();
    for (h, v) in header.iter().zip(r.iter()) {
        match h.strip_prefix("face.") {
            Some(key) if !v.is_empty() => {
                face.insert(key.to_owned(), v.to_owned());
            }
            Some(_) => {}
            None => {
                cols.insert(h.as_str(), v.to_owned());
            }
        }
    }
    let mut take = |k: &str| cols.remove(k).unwrap_or_default();
    let source_key = take("source_key");
    let identifier = take("identifier");
    let template_version = take("template_version").parse().unwrap_or(0);
    let draft = LicenceDraft {
        type_code: take("type_code"),
        issuer_name: take("issuer_name"),
        serial: take("serial"),
        holder: Holder {
            name: take("holder_name"),
            id_type_code: take("holder_id_type_code"),
            id_number: take("holder_id_number"),
        },
        issue_date: take("issue_date"),
        valid_from: take("valid_from"),
        valid_until: take("valid_until"),
        area_code: take("area_code"),
        face_fields: face,
        template_version,
    };
    (source_key, identifier, draft)
}

/// Counts the data rows of a file (for the progress bar).
pub fn count_rows(path: &Path, format: Format) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path)?;
    let lines =
        std::io::BufReader::new(file).lines().map_while(Result::ok).filter(|l| !l.trim().is_empty()).count() as u64;
    Ok(match format {
        Format::Csv => lines.saturating_sub(1),
        Format::JsonLines => lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_map_to_drafts_and_unknown_columns_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        std::fs::write(
            &path,
            "source_key,type_code,issuer_name,holder_name,holder_id_type_code,holder_id_number,issue_date,area_code,serial,face.business_scope\n\
             k1,T,某局,张三,111,11010519491231002X,2020-01-01,350102,S1,预包装食品\n\
             k2,T,某局,\"李,四\",111,x,2020-01-02,350102,S2,\n",
        )
        .unwrap();
        let mut rows = Rows::open(&path, Format::Csv).unwrap();
        let first = rows.next_row().unwrap().unwrap();
        assert_eq!(first.row_number, 1);
        assert_eq!(first.source_key, "k1");
        let d = first.draft.unwrap();
        assert_eq!(d.face_fields.get("business_scope").map(String::as_str), Some("预包装食品"));
        let second = rows.next_row().unwrap().unwrap();
        assert_eq!(second.draft.unwrap().holder.unwrap().name, "李,四");
        assert!(rows.next_row().is_none());
        assert_eq!(count_rows(&path, Format::Csv).unwrap(), 2);
        std::fs::write(&path, "source_key,colour\nk,red\n").unwrap();
        assert!(Rows::open(&path, Format::Csv).is_err());
    }

    #[test]
    fn json_lines_report_bad_lines_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        std::fs::write(&path, "{\"source_key\":\"k\"}\n\n{not json}\n").unwrap();
        let mut rows = Rows::open(&path, Format::JsonLines).unwrap();
        assert_eq!(rows.next_row().unwrap().unwrap_err().row_number, 1);
        assert_eq!(rows.next_row().unwrap().unwrap_err().row_number, 3);
        assert!(rows.next_row().is_none());
    }
}
