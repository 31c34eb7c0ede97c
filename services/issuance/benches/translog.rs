//! Benchmark (not a test): the transparency log's append rate in batches and
//! inclusion-proof latency over a large tree, on the issuance schema itself.
//!
//! Appends `BENCH_LEAVES` leaves (default 10,000,000) in batches of
//! `BENCH_BATCH` (default 10,000), each batch one transaction as an import
//! batch is; the first million are timed beside plain batched INSERTs of the
//! same number of (key, hash) rows into a plain table in the same run (the
//! ratio is what to compare across machines). Then proves 1,000 random leaves
//! against the full tree, checking every proof, and reports the latency
//! beside a single primary-key lookup.
//!
//! `cargo bench -p zhengzhao-issuance --bench translog` on SQLite in a
//! temporary directory; `BENCH_ENGINE=postgres` uses a fresh database on
//! `DATABASE_URL` or 127.0.0.1:5432.

use std::time::{Duration, Instant};

use sqlx::Row;
use zhengzhao_crypto::merkle;
use zhengzhao_issuance::translog;
use zhengzhao_testkit::TestDb;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn leaf(i: u64) -> merkle::Hash {
    merkle::leaf_hash(&i.to_be_bytes())
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn plain_inserts(db: &zhengzhao_store::Db, rows: u64, batch: u64) -> anyhow::Result<Duration> {
    let blob = if db.engine == zhengzhao_store::Engine::Postgres { "BYTEA" } else { "BLOB" };
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE bench_plain (id BIGINT PRIMARY KEY, hash {blob} NOT NULL)")))
        .execute(&db.pool)
        .await?;
    let start = Instant::now();
    let mut at = 0;
    while at < rows {
        let n = batch.min(rows - at);
        let mut tx = db.pool.begin().await?;
        for part in (at..at + n).collect::<Vec<_>>().chunks(1000) {
            let marks: Vec<String> = (0..part.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO bench_plain (id, hash) VALUES {}",
                marks.join(", ")
            )));
            for i in part {
                q = q.bind(*i as i64).bind(leaf(*i).to_vec());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        at += n;
    }
    Ok(start.elapsed())
}

async fn append(db: &zhengzhao_store::Db, from: u64, to: u64, batch: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut at = from;
    while at < to {
        let n = batch.min(to - at);
        let leaves: Vec<merkle::Hash> = (at..at + n).map(leaf).collect();
        let mut tx = db.pool.begin().await?;
        let size = translog::size(&mut tx).await?;
        anyhow::ensure!(size == at, "log size {size}, expected {at}");
        translog::append(&mut tx, size, &leaves).await?;
        tx.commit().await?;
        at += n;
        if at.is_multiple_of(1_000_000) {
            let s = start.elapsed().as_secs_f64();
            eprintln!("  {at} leaves, {:.0} leaves/s so far", (at - from) as f64 / s);
        }
    }
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = env("BENCH_LEAVES", 10_000_000);
    let batch = env("BENCH_BATCH", 10_000);
    let head = total.min(1_000_000);
    let test_db = match std::env::var("BENCH_ENGINE").as_deref() {
        Ok("postgres") => TestDb::postgres().await?,
        _ => TestDb::sqlite()?,
    };
    let db = zhengzhao_store::open(&test_db.store(), "issuance", &zhengzhao_issuance::MIGRATIONS).await?;
    println!("engine {}, {total} leaves in batches of {batch}", test_db.engine());

    let plain = plain_inserts(&db, head, batch).await?;
    let first = append(&db, 0, head, batch).await?;
    let plain_rate = head as f64 / plain.as_secs_f64();
    let log_rate = head as f64 / first.as_secs_f64();
    println!(
        "first {head}: log append {log_rate:.0} leaves/s, plain INSERT {plain_rate:.0} rows/s, ratio {:.2}",
        log_rate / plain_rate
    );
    let rest = append(&db, head, total, batch).await?;
    let overall = total as f64 / (first + rest).as_secs_f64();
    println!(
        "all {total}: log append {overall:.0} leaves/s overall (goal >= 10,000: {})",
        if overall >= 10_000.0 { "met" } else { "NOT met" }
    );

    let mut conn = db.pool.acquire().await?;
    let root = translog::root(&mut conn, total).await?;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut proofs = Vec::with_capacity(1000);
    let mut lookups = Vec::with_capacity(1000);
    for _ in 0..1000 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let index = (seed >> 11) % total;
        let start = Instant::now();
        let path = translog::audit_path(&mut conn, index, total).await?;
        proofs.push(start.elapsed());
        anyhow::ensure!(merkle::verify_inclusion(index, total, &leaf(index), &path, &root), "proof of {index} failed");
        let start = Instant::now();
        let row = sqlx::query("SELECT hash FROM bench_plain WHERE id = $1")
            .bind((index % head) as i64)
            .fetch_one(&mut *conn)
            .await?;
        let _: Vec<u8> = row.try_get("hash")?;
        lookups.push(start.elapsed());
    }
    let (p50, p99, max) = (percentile(&mut proofs, 0.5), percentile(&mut proofs, 0.99), percentile(&mut proofs, 1.0));
    let lookup = percentile(&mut lookups, 0.5);
    println!(
        "inclusion proof over {total} leaves (1,000 random, all verified): median {p50:?}, p99 {p99:?}, max {max:?} \
         (goal < 5 ms: {}); one primary-key lookup: median {lookup:?}",
        if p99 < Duration::from_millis(5) { "met" } else { "NOT met" }
    );
    Ok(())
}
