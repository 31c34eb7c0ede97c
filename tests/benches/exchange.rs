//! Benchmark (not a test): `FetchLicence` — the usage-list check, the
//! licence read and the usage-log write with its Merkle leaf — against
//! `VerifyLicence` of the same licence, measured in the same run over gRPC
//! on one library, interleaved in rounds so machine noise hits both alike.
//!
//! `cargo bench -p zhengzhao-e2e --bench exchange` (SQLite by default;
//! `BENCH_ENGINE=postgres` uses `DATABASE_URL` or 127.0.0.1:5432;
//! `BENCH_CALLS` sets calls per round, default 2,000; `BENCH_CONCURRENCY`
//! the calls in flight, default 8). Prints both rates and their ratio (the
//! goal is at least 0.5).

use std::time::{Duration, Instant};

use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, issue, published_type};
use zhengzhao_e2e::{ADMIN, CONSUMER, Library};
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_testkit::TestDb;

const ROUNDS: usize = 5;
const GOAL: f64 = 0.5;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `calls` calls of `one`, `concurrency` at a time; returns the time taken.
async fn timed<F, Fut>(calls: usize, concurrency: usize, one: F) -> anyhow::Result<Duration>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..calls {
        while set.len() >= concurrency {
            set.join_next().await.transpose()?.transpose()?;
        }
        set.spawn(one());
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls = env_usize("BENCH_CALLS", 2000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 8).max(1);
    let db = match std::env::var("BENCH_ENGINE").as_deref() {
        Ok("postgres") => TestDb::postgres().await?,
        _ => TestDb::sqlite()?,
    };
    let engine = db.engine();
    let lib = Library::start(db).await?;
    let code = published_type(&lib).await?;
    let l = issue(&lib, draft(&code)).await?;
    lib.exchange(Role::Admin, ADMIN)
        .create_usage_entry(exchange::CreateUsageEntryRequest {
            agency_code: CONSUMER.into(),
            type_code: code.clone(),
            service_item_code: "11100000000013338W3000111005000".into(),
            terms: Some(exchange::UsageTerms {
                purpose: "基准测试".into(),
                fields: vec!["business_scope".into(), "premises".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    let fetch_client = lib.exchange_as(Role::Consumer, CONSUMER, "基准");
    let verify_client = lib.verification(Role::Consumer, CONSUMER);
    let fetch_request = exchange::FetchLicenceRequest {
        identifier: l.identifier.clone(),
        r#use: Some(exchange::UseContext {
            use_cause: "基准测试".into(),
            service_item_code: "11100000000013338W3000111005000".into(),
            case_number: "BENCH-0001".into(),
        }),
    };
    let verify_request =
        verification::VerifyLicenceRequest { identifier: l.identifier.clone(), include_inclusion_proof: false };
    let fetch = || {
        let mut c = fetch_client.clone();
        let r = fetch_request.clone();
        async move {
            c.fetch_licence(r).await?;
            Ok(())
        }
    };
    let verify = || {
        let mut c = verify_client.clone();
        let r = verify_request.clone();
        async move {
            let v = c.verify_licence(r).await?.into_inner().verification.unwrap_or_default();
            anyhow::ensure!(
                v.outcome == verification::VerificationOutcome::Valid as i32,
                "the benchmark licence must verify: {}",
                v.detail
            );
            Ok(())
        }
    };
    // Warm both paths up, then interleave.
    timed(200, concurrency, fetch).await?;
    timed(200, concurrency, verify).await?;
    let (mut fetch_total, mut verify_total) = (Duration::ZERO, Duration::ZERO);
    for round in 1..=ROUNDS {
        let v = timed(calls, concurrency, verify).await?;
        let f = timed(calls, concurrency, fetch).await?;
        println!(
            "round {round}: verify {:>8.0}/s  fetch {:>8.0}/s  ratio {:.2}",
            calls as f64 / v.as_secs_f64(),
            calls as f64 / f.as_secs_f64(),
            v.as_secs_f64() / f.as_secs_f64()
        );
        verify_total += v;
        fetch_total += f;
    }
    let n = (calls * ROUNDS) as f64;
    let (verify_rate, fetch_rate) = (n / verify_total.as_secs_f64(), n / fetch_total.as_secs_f64());
    let ratio = fetch_rate / verify_rate;
    println!(
        "{engine}, {calls} calls x {ROUNDS} rounds, {concurrency} in flight: VerifyLicence {verify_rate:.0}/s, \
         FetchLicence {fetch_rate:.0}/s (list check + read + usage-log leaf), ratio {ratio:.2} (goal >= {GOAL})"
    );
    let logged = lib
        .exchange(Role::Auditor, ADMIN)
        .get_usage_checkpoint(exchange::GetUsageCheckpointRequest {})
        .await?
        .into_inner()
        .checkpoint
        .map(|c| c.tree_size)
        .unwrap_or_default();
    anyhow::ensure!(logged as usize == 400 / 2 + calls * ROUNDS, "every fetch is a usage-log leaf ({logged})");
    Ok(())
}
