//! Benchmark (not a test): aggregating historical licences into PostgreSQL,
//! including validation, signing and the change feed, against plain batched
//! multi-row INSERTs of the same row shape measured in the same run.
//!
//! `cargo bench -p zhengzhao-e2e --bench import` (PostgreSQL from
//! `DATABASE_URL` or 127.0.0.1:5432; `BENCH_ROWS` sets the row count,
//! default 1,000,000). Prints both rates and their ratio.

use std::time::{Duration, Instant};

use sqlx::Connection;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, published_type};
use zhengzhao_e2e::{ISSUER, Library};
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_testkit::TestDb;

const BATCH: usize = 1000;
const TARGET: f64 = 10_000.0;

fn row(base: &issuance::LicenceDraft, n: usize) -> issuance::ImportRow {
    let mut d = base.clone();
    d.serial = format!("BENCH{n:010}");
    d.issue_date = "2022-01-01".into();
    if let Some(h) = d.holder.as_mut() {
        h.name = format!("示例企业{n}");
    }
    issuance::ImportRow {
        row_number: n as u64 + 1,
        source_key: format!("SRC-{n}"),
        identifier: String::new(),
        draft: Some(d),
    }
}

/// Plain batched INSERTs of rows shaped like the licences table's.
async fn plain_inserts(url: &str, rows: usize, document: &str, jws: &str) -> anyhow::Result<Duration> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(
        "CREATE TABLE bench_plain (identifier TEXT PRIMARY KEY, type_code TEXT NOT NULL, issuer_code TEXT NOT NULL,
            serial TEXT NOT NULL, version BIGINT NOT NULL, template_version BIGINT NOT NULL, holder_id_type TEXT NOT NULL,
            holder_id_number TEXT NOT NULL, status TEXT NOT NULL, valid_until TEXT, document_json TEXT NOT NULL, jws TEXT NOT NULL,
            key_id TEXT NOT NULL, recorded_at TEXT NOT NULL, updated_at TEXT NOT NULL, source_key TEXT, legacy_identifier BIGINT NOT NULL)",
    )
    .execute(&mut conn)
    .await?;
    let start = Instant::now();
    let mut n = 0;
    while n < rows {
        let count = BATCH.min(rows - n);
        let mut tx = conn.begin().await?;
        for chunk_start in (0..count).step_by(500) {
            let chunk = 500.min(count - chunk_start);
            let mut sql = String::from("INSERT INTO bench_plain VALUES ");
            for i in 0..chunk {
                let b = i * 17;
                let marks: Vec<String> = (1..=17).map(|c| format!("${}", b + c)).collect();
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push('(');
                sql.push_str(&marks.join(", "));
                sql.push(')');
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in 0..chunk {
                let k = n + chunk_start + i;
                q = q
                    .bind(format!("plain-{k}"))
                    .bind("11100000000013338W001")
                    .bind(ISSUER)
                    .bind(format!("BENCH{k:010}"))
                    .bind(1_i64)
                    .bind(1_i64)
                    .bind("001")
                    .bind("91350100M000100Y43")
                    .bind("valid")
                    .bind("2026-12-31")
                    .bind(document)
                    .bind(jws)
                    .bind("kid")
                    .bind("2026-11-27T00:00:00.000000Z")
                    .bind("2026-11-27T00:00:00.000000Z")
                    .bind(format!("SRC-{k}"))
                    .bind(0_i64);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        n += count;
    }
    Ok(start.elapsed())
}

async fn pipeline(
    lib: &Library,
    code: &str,
    rows: usize,
) -> anyhow::Result<(Duration, issuance::ImportLicencesResponse)> {
    let base = draft(code);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let producer = tokio::spawn(async move {
        let mut n = 0;
        while n < rows {
            let batch: Vec<_> = (n..(n + BATCH).min(rows)).map(|k| row(&base, k)).collect();
            n += batch.len();
            if tx.send(issuance::ImportLicencesRequest { rows: batch, allow_legacy: false }).await.is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let r = lib
        .issuance(Role::Issuer, ISSUER)
        .max_decoding_message_size(256 << 20)
        .import_licences(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let elapsed = start.elapsed();
    producer.await?;
    Ok((elapsed, r))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows: usize = std::env::var("BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let lib = Library::start(TestDb::postgres().await?).await?;
    let url = lib.db.url().unwrap_or_default().to_owned();
    let code = published_type(&lib).await?;
    // One real licence gives the row shape (document and signature sizes) for the baseline.
    let sample = zhengzhao_e2e::fixtures::issue(&lib, draft(&code)).await?;
    eprintln!(
        "rows: {rows}, batches of {BATCH}, PostgreSQL, {} cores",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let plain = plain_inserts(&url, rows, &sample.document_json, &sample.jws).await?;
    let plain_rate = rows as f64 / plain.as_secs_f64();
    eprintln!("plain batched INSERT:            {plain_rate:>10.0} rows/s ({:.1} s)", plain.as_secs_f64());
    let (took, r) = pipeline(&lib, &code, rows).await?;
    if r.imported as usize != rows || !r.errors.is_empty() {
        anyhow::bail!(
            "the import did not land every row: {} imported, {} errors, first: {:?}",
            r.imported,
            r.errors.len(),
            r.errors.first()
        );
    }
    let rate = rows as f64 / took.as_secs_f64();
    eprintln!("import (validate, sign, store, feed): {rate:>8.0} rows/s ({:.1} s)", took.as_secs_f64());
    eprintln!("ratio to plain INSERT: {:.2}", rate / plain_rate);
    eprintln!("target {TARGET:.0} rows/s: {}", if rate >= TARGET { "met" } else { "NOT met" });
    Ok(())
}
