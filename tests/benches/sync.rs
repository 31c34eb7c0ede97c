//! Benchmark (not a test): district-to-city sync on PostgreSQL.
//!
//! 1. Catch-up: a district holding a backlog of `BENCH_EVENTS` entries
//!    (default 1,000,000; historical licences aggregated with the import)
//!    is replicated into an empty city by the sync job, every batch checked
//!    against the district's log; the rate is printed beside plain batched
//!    INSERTs of the same rows (the licence rows and their events) into the
//!    same database, measured in the same run: into tables shaped like the
//!    city's (every column, index and constraint: the ratio the goal is
//!    stated against) and into bare tables (the columns and a primary key).
//! 2. Steady state: `BENCH_RATE` new licences/s (default 1,000, aggregated
//!    every 100 ms) in the district for `BENCH_SECONDS` (default 20) while
//!    the job follows; the
//!    lag of each entry (committed in the district → applied in the city,
//!    observed by polling both every 20 ms) is reported as p50/p99/max.
//!
//! `cargo bench -p zhengzhao-e2e --bench sync` (PostgreSQL from
//! `DATABASE_URL` or 127.0.0.1:5432).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::Connection;
use zhengzhao_auth::{BearerToken, Role};
use zhengzhao_e2e::fixtures::{draft, published_type};
use zhengzhao_e2e::{ADMIN, ISSUER, Library};
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_testkit::TestDb;

const BATCH: usize = 1000;
const TARGET: f64 = 20_000.0;

fn row(base: &issuance::LicenceDraft, n: usize) -> issuance::ImportRow {
    let mut d = base.clone();
    d.serial = format!("SYNC{n:010}");
    d.issue_date = "2022-01-01".into();
    issuance::ImportRow {
        row_number: n as u64 + 1,
        source_key: format!("S-{n}"),
        identifier: String::new(),
        draft: Some(d),
    }
}

/// Loads `rows` historical licences into `lib` (one feed entry each).
async fn backlog(lib: &Library, code: &str, rows: usize) -> anyhow::Result<()> {
    let base = draft(code);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut n = 0;
        while n < rows {
            let batch: Vec<_> = (n..(n + BATCH).min(rows)).map(|k| row(&base, k)).collect();
            n += batch.len();
            if tx.send(issuance::ImportLicencesRequest { rows: batch, allow_legacy: false }).await.is_err() {
                break;
            }
        }
    });
    let r = lib
        .issuance(Role::Issuer, ISSUER)
        .import_licences(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    anyhow::ensure!(r.imported as usize == rows, "backlog: {} of {rows} imported ({:?})", r.imported, r.errors.first());
    Ok(())
}

/// Plain batched INSERTs of the rows a replica writes (each licence row and
/// its event), 500 rows a statement, 2,000 a transaction: into bare tables
/// (the columns, a primary key), or into tables shaped like the city's
/// (`LIKE ... INCLUDING ALL`: every column, index and constraint, with
/// every column bound as the sync binds it).
async fn plain_inserts(
    url: &str,
    rows: usize,
    sample: &issuance::ReplicaLicence,
    shaped: bool,
) -> anyhow::Result<Duration> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let (lt, et) = if shaped { ("shaped_licences", "shaped_events") } else { ("bare_licences", "bare_events") };
    if shaped {
        sqlx::query("CREATE TABLE shaped_licences (LIKE issuance.licences INCLUDING ALL)").execute(&mut conn).await?;
        sqlx::query("CREATE TABLE shaped_events (LIKE issuance.licence_events INCLUDING ALL)")
            .execute(&mut conn)
            .await?;
    } else {
        sqlx::query(
            "CREATE TABLE bare_licences (identifier TEXT PRIMARY KEY, type_code TEXT, issuer_code TEXT, serial TEXT,
                version BIGINT, template_version BIGINT, holder_id_type TEXT, holder_id_number TEXT, status TEXT,
                valid_until TEXT, document_json TEXT, jws TEXT, key_id TEXT, recorded_at TEXT, updated_at TEXT,
                source_key TEXT, origin_library TEXT)",
        )
        .execute(&mut conn)
        .await?;
        sqlx::query(
            "CREATE TABLE bare_events (sequence BIGSERIAL PRIMARY KEY, identifier TEXT, kind TEXT, status_after TEXT,
                actor TEXT, reason TEXT, details_json TEXT, backfill BIGINT, occurred_at TEXT, recorded_at TEXT,
                log_index BIGINT, origin_library TEXT, origin_sequence BIGINT)",
        )
        .execute(&mut conn)
        .await?;
    }
    let licence_columns = if shaped {
        "identifier, type_code, issuer_code, serial, version, template_version, holder_id_type, holder_id_number, \
         status, valid_until, document_json, jws, key_id, recorded_at, updated_at, replaces, superseded_by, \
         successor_from, reported_lost, mortgaged, source_key, legacy_identifier, standard_check, last_check_kind, \
         last_check_result, last_check_invalidates, origin_library"
    } else {
        "identifier, type_code, issuer_code, serial, version, template_version, holder_id_type, holder_id_number, \
         status, valid_until, document_json, jws, key_id, recorded_at, updated_at, source_key, origin_library"
    };
    let event_columns = if shaped {
        "identifier, kind, status_after, actor, reason, details_json, backfill, occurred_at, recorded_at, log_index, \
         origin_library, origin_sequence, origin_log_index"
    } else {
        "identifier, kind, status_after, actor, reason, details_json, backfill, occurred_at, recorded_at, log_index, \
         origin_library, origin_sequence"
    };
    let marks = |n: usize, per: usize| -> String {
        (0..n)
            .map(|i| format!("({})", (1..=per).map(|c| format!("${}", i * per + c)).collect::<Vec<_>>().join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (lc, ec) = (licence_columns.split(',').count(), event_columns.split(',').count());
    let start = Instant::now();
    let mut n = 0;
    while n < rows {
        let count = 2000.min(rows - n);
        let mut tx = conn.begin().await?;
        for part in (0..count).collect::<Vec<_>>().chunks(500) {
            let sql = format!("INSERT INTO {lt} ({licence_columns}) VALUES {}", marks(part.len(), lc));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for k in part {
                let k = n + k;
                q = q
                    .bind(format!("plain-{k}"))
                    .bind(&sample.type_code)
                    .bind(&sample.issuer_code)
                    .bind(format!("P{k:010}"))
                    .bind(1_i64)
                    .bind(1_i64)
                    .bind(&sample.holder_id_type)
                    .bind(&sample.holder_id_number)
                    .bind("valid")
                    .bind(&sample.valid_until)
                    .bind(&sample.document_json)
                    .bind(&sample.jws)
                    .bind(&sample.key_id)
                    .bind("2026-11-27T00:00:00.000000Z")
                    .bind("2026-11-27T00:00:00.000000Z");
                if shaped {
                    q = q.bind(None::<String>).bind(None::<String>).bind(None::<String>).bind(0_i64).bind(0_i64);
                }
                q = q.bind(format!("S-{k}"));
                if shaped {
                    q = q.bind(0_i64).bind(None::<String>).bind(None::<String>).bind(None::<String>).bind(0_i64);
                }
                q = q.bind("d1");
            }
            q.execute(&mut *tx).await?;
            let sql = format!("INSERT INTO {et} ({event_columns}) VALUES {}", marks(part.len(), ec));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for k in part {
                let k = (n + k) as i64;
                q = q
                    .bind(format!("plain-{k}"))
                    .bind("issue")
                    .bind("valid")
                    .bind("issuer@91350100M000100Y43")
                    .bind("historical licence aggregated")
                    .bind("{}")
                    .bind(0_i64)
                    .bind("2022-01-01T00:00:00.000000Z")
                    .bind("2026-11-27T00:00:00.000000Z")
                    .bind(k)
                    .bind("d1")
                    .bind(k + 1);
                if shaped {
                    q = q.bind(k);
                }
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        n += count;
    }
    Ok(start.elapsed())
}

fn job(city: &Library, district: &Library, token: &str) -> anyhow::Result<zhengzhao_sync::SyncJob> {
    Ok(zhengzhao_sync::SyncJob {
        city: city.channel(),
        city_signing: None,
        city_catalog: None,
        districts: vec![zhengzhao_sync::District {
            name: "d1".into(),
            url: format!("http://{}", district.addr),
            channel: district.channel(),
        }],
        token: BearerToken::new(token)?,
        batch: 5000,
        refresh: Duration::from_secs(30),
    })
}

async fn city_cursor(city: &Library, token: &str) -> anyhow::Result<u64> {
    let mut c = issuance::issuance_service_client::IssuanceServiceClient::with_interceptor(
        city.channel(),
        BearerToken::new(token)?,
    );
    let r = c.list_replicas(issuance::ListReplicasRequest { library: "d1".into() }).await?.into_inner();
    Ok(r.replicas.first().map_or(0, |r| r.cursor))
}

async fn district_head(district: &Library, token: &str) -> anyhow::Result<(u64, Option<issuance::ReplicaLicence>)> {
    let mut c = issuance::issuance_service_client::IssuanceServiceClient::with_interceptor(
        district.channel(),
        BearerToken::new(token)?,
    );
    let r = c
        .read_replica_feed(issuance::ReadReplicaFeedRequest {
            after_sequence: 0,
            limit: 1,
            wait_seconds: 0,
            library: String::new(),
            max_bytes: 0,
        })
        .await?
        .into_inner();
    Ok((r.head_sequence, r.licences.into_iter().next()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rate: u64 = std::env::var("BENCH_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let city = Library::start(TestDb::postgres().await?).await?;
    let district = Library::start_district(TestDb::postgres().await?, "d1", &city).await?;
    let token = city.token(Role::Sync, ADMIN);
    let code = published_type(&district).await?;
    eprintln!(
        "backlog: {events} entries, PostgreSQL, {} cores; loading the district...",
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let load = Instant::now();
    backlog(&district, &code, events).await?;
    eprintln!("  loaded in {:.1} s", load.elapsed().as_secs_f64());
    let (head, sample) = district_head(&district, &token).await?;
    let sample = sample.ok_or_else(|| anyhow::anyhow!("no licence row in the district"))?;

    let url = city.db.url().unwrap_or_default().to_owned();
    let bare = events as f64 / plain_inserts(&url, events, &sample, false).await?.as_secs_f64();
    eprintln!("plain batched INSERT, bare tables (licence + event rows):          {bare:>7.0} rows/s");
    let shaped = events as f64 / plain_inserts(&url, events, &sample, true).await?.as_secs_f64();
    eprintln!("plain batched INSERT, tables shaped like the city's (every index): {shaped:>7.0} rows/s");

    let start = Instant::now();
    let runner = tokio::spawn(job(&city, &district, &token)?.run(std::future::pending()));
    loop {
        if city_cursor(&city, &token).await? >= head {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = start.elapsed();
    let catch_up = events as f64 / took.as_secs_f64();
    eprintln!("catch-up (read, verify against the log, apply): {catch_up:>6.0} events/s ({:.1} s)", took.as_secs_f64());
    eprintln!(
        "ratio to plain INSERT into tables shaped like the city's: {:.2} (goal 0.4); into bare tables: {:.2}",
        catch_up / shaped,
        catch_up / bare
    );
    eprintln!("target {TARGET:.0} events/s: {}", if catch_up >= TARGET { "met" } else { "NOT met" });

    // Steady state: new licences at `rate`/s, aggregated every 100 ms (a
    // district's own write path cannot make 1,000 single changes a second
    // on this machine beside the city and the database; the sync job sees
    // entries either way).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let writer_lib_issuance = district.issuance(Role::Issuer, ISSUER);
    let base = draft(&code);
    let writer = tokio::spawn(async move {
        let per_tick = (rate / 10).max(1) as usize;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n = events;
        let mut inflight = tokio::task::JoinSet::new();
        for _ in 0..seconds * 10 {
            tick.tick().await;
            let rows: Vec<_> = (n..n + per_tick).map(|k| row(&base, k)).collect();
            n += per_tick;
            let mut c = writer_lib_issuance.clone();
            let tx = tx.clone();
            inflight.spawn(async move {
                let r = c
                    .import_licences(tokio_stream::iter(vec![issuance::ImportLicencesRequest {
                        rows,
                        allow_legacy: false,
                    }]))
                    .await;
                if let Ok(r) = r {
                    let _ = tx.send(r.into_inner().imported);
                }
            });
        }
        while inflight.join_next().await.is_some() {}
    });
    let mut committed: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut lags = Vec::new();
    let mut applied_to = head;
    let mut seen_head = head;
    let steady = Instant::now();
    let mut accepted = 0u64;
    loop {
        let writing_done = writer.is_finished();
        while let Ok(k) = rx.try_recv() {
            accepted += k;
        }
        let now = Instant::now();
        let (h, _) = district_head(&district, &token).await?;
        for s in seen_head + 1..=h {
            committed.insert(s, now);
        }
        seen_head = seen_head.max(h);
        let c = city_cursor(&city, &token).await?;
        let now = Instant::now();
        for s in applied_to + 1..=c {
            if let Some(t) = committed.remove(&s) {
                lags.push((now - t).as_secs_f64());
            }
        }
        applied_to = applied_to.max(c);
        if writing_done && applied_to >= seen_head && committed.is_empty() {
            break;
        }
        if steady.elapsed() > Duration::from_secs(seconds * 4 + 60) {
            anyhow::bail!("the city did not keep up: {} entries still waiting", committed.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    runner.abort();
    lags.sort_by(f64::total_cmp);
    let achieved = accepted as f64 / seconds as f64;
    eprintln!(
        "steady state: {accepted} changes in {seconds} s ({achieved:.0}/s asked {rate}/s); lag p50 {:.3} s, p99 {:.3} s, max {:.3} s (goal p99 < 1 s): {}",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
        if percentile(&lags, 0.99) < 1.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
