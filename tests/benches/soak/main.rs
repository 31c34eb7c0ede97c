//! Soak and crash (issue 17): a benchmark, run by `scripts/soak` outside
//! CI's time budget.
//!
//! The city runs split on PostgreSQL: catalogue, signing, issuance,
//! verification and exchange, each its own process with only its own keys.
//! A district library (`zhengzhao serve --library d1`, PostgreSQL) issues
//! too, and the sync job (`zhengzhao sync`) streams its feed to the city.
//!
//! 1. Soak: `SOAK_SECONDS` (600) of a mixed workload at `SOAK_RATE`
//!    operations a second (40): issue, change, verify, fetch through the
//!    exchange, present (holder login, PresentLicence, the counter's
//!    VerifyPresentation), import (three rows a call) and district issues
//!    that sync carries to the city. Every failed call is an error (no
//!    retries). Each minute: calls, errors, p50/p99, each process's RSS,
//!    PostgreSQL connections. Passes with 0 errors, RSS and connections
//!    flat (last minute within 25% + 16 MB of the second, connections within
//!    4) and p99 stable (no minute above 3× the median minute).
//! 2. Crash: the same load, while each process in turn (the five city
//!    services, the district and the sync job) is killed with SIGKILL and
//!    started again on its address. A write that fails is retried with its
//!    idempotency key (or source key) until it is accepted; reads are
//!    retried too. Then every accepted write is looked for in the city's
//!    database: 0 lost, 0 duplicated (one row per issuer, serial and
//!    version, one issue event per licence, one licence per import source
//!    key), and every district licence replicated once.
//!
//! `SOAK_CRASH=0` skips the crash phase. PostgreSQL from `DATABASE_URL` or
//! 127.0.0.1:5432; release binaries (`cargo build --release --bins`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use sqlx::Connection;
use zhengzhao_auth::Role;
use zhengzhao_crypto::Es256KeyPair;
use zhengzhao_e2e::consumers::{ITEM, terms};
use zhengzhao_e2e::fixtures::draft;
use zhengzhao_e2e::remote::Remote;
use zhengzhao_e2e::{ADMIN, Authed, CONSUMER, ISSUER, OTHER_ISSUER};
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::exchange::v1::holder_service_client::HolderServiceClient;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;
use zhengzhao_testkit::{TestDb, binary};

mod audit;
mod processes;
mod workload;

use audit::audit;
use processes::{Service, SyncJob, rss_mb};
use workload::{Clients, MIX, Op, Shared, bearer, channel, load};

/// The agency running the holders' front end.
const PORTAL: &str = "11350000MB01234560";
/// The example licence's holder (a company, ID type 001).
const HOLDER: &str = "91350100M000100Y43";

pub(crate) const ENVS: &[(&str, &str)] =
    &[("ZHENGZHAO_TELEMETRY__LOG_FILTER", "error"), ("ZHENGZHAO_LIMITS__PRINCIPAL_RATE_PER_SECOND", "0")];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn pg_connections(conn: &mut sqlx::PgConnection, dbs: &[String]) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = ANY($1)")
        .bind(dbs)
        .fetch_one(conn)
        .await?)
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_owned()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let soak_seconds = env_u64("SOAK_SECONDS", 600);
    let rate = env_u64("SOAK_RATE", 40).max(1);
    let crash = env_u64("SOAK_CRASH", 1) == 1;
    for b in ["zhengzhao", "zhengzhao-catalog", "zhengzhao-signing", "zhengzhao-issuance", "zhengzhao-verification"] {
        ensure!(binary(b).exists(), "{} is not built: cargo build --release --bins", binary(b).display());
    }

    // The city, split, on one PostgreSQL database; the district on another.
    let city_db = TestDb::postgres().await?;
    let district_db = TestDb::postgres().await?;
    let city_url = city_db.url().context("PostgreSQL")?.to_owned();
    let district_url = district_db.url().context("PostgreSQL")?.to_owned();
    let work = tempfile::tempdir()?;
    let root = work.path().join("city");
    zhengzhao_server::keys::init_split(&root)?;
    let dir = |s: &str| root.join(s).display().to_string();
    let common =
        |s: &str| -> Vec<String> { vec!["--database-url".into(), city_url.clone(), "--data-dir".into(), dir(s)] };
    let mut catalog = Service::new("catalog", "zhengzhao-catalog", common("catalog"))?;
    let mut signing = Service::new("signing", "zhengzhao-signing", common("signing"))?;
    let mut issuance_svc = Service::new("issuance", "zhengzhao-issuance", common("issuance"))?;
    let mut verification_svc = Service::new("verification", "zhengzhao-verification", common("verification"))?;
    let mut exchange_svc = Service::new("exchange", "zhengzhao-exchange", common("exchange"))?;
    let (cat, sig, iss) = (catalog.url(), signing.url(), issuance_svc.url());
    signing.args.extend(["--catalog-url".into(), cat.clone()]);
    for s in [&mut issuance_svc, &mut verification_svc, &mut exchange_svc] {
        s.args.extend(["--catalog-url".into(), cat.clone(), "--signing-url".into(), sig.clone()]);
    }
    for s in [&mut verification_svc, &mut exchange_svc] {
        s.args.extend(["--issuance-url".into(), iss.clone()]);
    }
    let district_dir = work.path().join("d1");
    let out = std::process::Command::new(binary("zhengzhao"))
        .args(["init", "--data-dir", &district_dir.display().to_string()])
        .output()?;
    ensure!(out.status.success(), "init d1: {}", String::from_utf8_lossy(&out.stderr));
    // One operator: the district trusts the city's token keys.
    std::fs::copy(root.join("operator/token-keys.json"), district_dir.join("token-keys.json"))?;
    let mut district = Service::new(
        "district",
        "zhengzhao",
        vec![
            "serve".into(),
            "--data-dir".into(),
            district_dir.display().to_string(),
            "--database-url".into(),
            district_url.clone(),
            "--library".into(),
            "d1".into(),
        ],
    )?;
    for s in [&mut catalog, &mut signing, &mut issuance_svc, &mut verification_svc, &mut exchange_svc, &mut district] {
        s.start().await?;
    }
    let remote = Remote::new(&root.join("operator"))?;
    let mut sync = SyncJob {
        args: vec![
            "sync".into(),
            "--city".into(),
            iss.clone(),
            "--city-signing".into(),
            sig.clone(),
            "--city-catalog".into(),
            cat.clone(),
            "--district".into(),
            format!("d1={}", district.url()),
            "--refresh-seconds".into(),
            "2".into(),
            "--timeout-seconds".into(),
            "10".into(),
        ],
        token: remote.token(Role::Sync, ADMIN)?,
        child: None,
    };
    sync.start()?;

    // The type, a usage entry for the consumer, an approved scenario and a
    // front end; the district follows the city's catalogue.
    // The district keeps its own issuer's licences; the city, ISSUER's.
    let type_code = {
        let mut def = zhengzhao::examples::definition(ISSUER)?;
        def.issuers.push(OTHER_ISSUER.to_owned());
        let mut c = remote.catalog(&cat, Role::Admin, ADMIN)?;
        let created = c
            .create_licence_type(zhengzhao_proto::catalog::v1::CreateLicenceTypeRequest {
                definition: Some(zhengzhao_proto::convert::definition_to_wire(&def)),
            })
            .await?
            .into_inner();
        let code = created.licence_type.and_then(|t| t.definition).map(|d| d.code).context("type code")?;
        c.publish_licence_type(zhengzhao_proto::catalog::v1::PublishLicenceTypeRequest { code: code.clone() }).await?;
        code
    };
    let ex = |role, agency| -> anyhow::Result<ExchangeServiceClient<Authed>> {
        Ok(ExchangeServiceClient::with_interceptor(channel(&exchange_svc.url())?, bearer(&remote.token(role, agency)?)))
    };
    let holders = |role, agency| -> anyhow::Result<HolderServiceClient<Authed>> {
        Ok(HolderServiceClient::with_interceptor(channel(&exchange_svc.url())?, bearer(&remote.token(role, agency)?)))
    };
    ex(Role::Admin, ADMIN)?
        .create_usage_entry(exchange::CreateUsageEntryRequest {
            agency_code: CONSUMER.into(),
            level: 0,
            type_code: type_code.clone(),
            service_item_code: ITEM.into(),
            terms: terms(&[]),
        })
        .await?;
    let scenario = holders(Role::Consumer, CONSUMER)?
        .propose_scenario(exchange::ProposeScenarioRequest {
            name: "窗口核验".into(),
            type_codes: vec![type_code.clone()],
            fields: vec!["holder_name".into(), "premises".into()],
            purpose: "窗口办理时核验许可证".into(),
        })
        .await?
        .into_inner()
        .scenario
        .unwrap_or_default()
        .id;
    holders(Role::Admin, ADMIN)?
        .approve_scenario(exchange::ApproveScenarioRequest { id: scenario, reason: String::new() })
        .await?;
    let front_end_key = Es256KeyPair::generate();
    holders(Role::Admin, ADMIN)?
        .register_front_end(exchange::RegisterFrontEndRequest {
            name: "闽政通".into(),
            agency_code: PORTAL.into(),
            jwk_json: front_end_key.public_key().to_jwk("").to_string(),
            scenario_ids: vec![scenario],
            webhook_url: String::new(),
        })
        .await?;
    let issuer_at = |url: &str, agency: &str| -> anyhow::Result<IssuanceServiceClient<Authed>> {
        Ok(IssuanceServiceClient::with_interceptor(channel(url)?, bearer(&remote.token(Role::Issuer, agency)?)))
    };
    // Wait for the district to have the type (the sync job brings it).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut d = draft(&type_code);
        d.serial = "SOAKWARMUP".into();
        match issuer_at(&district.url(), OTHER_ISSUER)?
            .issue_licence(issuance::IssueLicenceRequest { draft: Some(d), idempotency_key: "warm-up".into() })
            .await
        {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => bail!("the district never learnt the type: {e}"),
        }
    }
    let clients = Clients {
        city_issuer: issuer_at(&iss, ISSUER)?,
        district_issuer: issuer_at(&district.url(), OTHER_ISSUER)?,
        verifier: VerificationServiceClient::with_interceptor(
            channel(&verification_svc.url())?,
            bearer(&remote.token(Role::Consumer, CONSUMER)?),
        ),
        consumer: ex(Role::Consumer, CONSUMER)?,
        portal: holders(Role::Portal, PORTAL)?,
        counter: holders(Role::Consumer, CONSUMER)?,
        exchange_url: exchange_svc.url(),
    };
    let shared = Arc::new(Shared {
        clients,
        ledger: Mutex::default(),
        type_code,
        scenario,
        front_end_key,
        counter: AtomicU64::new(0),
        retry: false,
        samples: Mutex::default(),
        errors: Mutex::default(),
    });

    let mut pg = sqlx::PgConnection::connect(&zhengzhao_testkit::postgres_server_url()).await?;
    let dbs = vec![db_name(&city_url), db_name(&district_url)];
    println!(
        "soak: {soak_seconds} s at {rate} operations/s (mix per 20: {}), city split on PostgreSQL, district d1, sync",
        MIX.iter().map(|(o, n)| format!("{o:?} {n}")).collect::<Vec<_>>().join(", ")
    );
    let start = Instant::now();
    let loader = tokio::spawn(load(shared.clone(), rate, Duration::from_secs(soak_seconds), start));
    // One row a minute (or at the end of a shorter run).
    let window = Duration::from_secs(60.min(soak_seconds.max(1)));
    let names = ["catalog", "signing", "issuance", "verification", "exchange", "district", "sync"];
    println!(
        "{:>4} {:>7} {:>6} {:>8} {:>8} | RSS MB: {} | PG conns",
        "min",
        "calls",
        "errors",
        "p50 ms",
        "p99 ms",
        names.join(" ")
    );
    let mut rows: Vec<(f64, Vec<f64>, i64, Duration)> = Vec::new();
    let mut minute = 1u32;
    while !loader.is_finished() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if start.elapsed() < window * minute && !loader.is_finished() {
            continue;
        }
        let from = window * (minute - 1);
        let to = window * minute;
        let (calls, errors, p50, p99) = {
            let samples = shared.samples.lock().expect("samples");
            let mut lat: Vec<Duration> =
                samples.iter().filter(|(_, s)| s.at >= from && s.at < to).map(|(_, s)| s.latency).collect();
            let errors = samples.iter().filter(|(_, s)| s.at >= from && s.at < to && !s.ok).count();
            lat.sort();
            (lat.len(), errors, percentile(&lat, 0.5), percentile(&lat, 0.99))
        };
        let pids = [
            catalog.pid(),
            signing.pid(),
            issuance_svc.pid(),
            verification_svc.pid(),
            exchange_svc.pid(),
            district.pid(),
            sync.pid(),
        ];
        let rss: Vec<f64> = pids.iter().map(|p| p.map_or(0.0, rss_mb)).collect();
        let conns = pg_connections(&mut pg, &dbs).await?;
        println!(
            "{minute:>4} {calls:>7} {errors:>6} {:>8.1} {:>8.1} | {} | {conns}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            rss.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>().join(" ")
        );
        rows.push((rss.iter().sum(), rss, conns, p99));
        minute += 1;
    }
    loader.await?;
    let mut failures = Vec::new();
    let errors = shared.errors.lock().expect("errors").clone();
    if !errors.is_empty() {
        failures.push(format!("{} errors, first: {}", errors.len(), errors[0]));
    }
    let calls = shared.samples.lock().expect("samples").len();
    println!("soak: {calls} operations, {} errors", errors.len());
    print_errors(&errors);
    per_op(&shared);
    if rows.iter().any(|r| r.1.contains(&0.0)) {
        failures.push("a process was gone during the soak".into());
    }
    if rows.len() < 3 {
        println!("soak: RSS, connections and p99 not checked for flatness (a run of under 3 minutes)");
    } else {
        // From the second minute: the first has the start-up and the caches filling.
        let (base, last) = (&rows[1], &rows[rows.len() - 1]);
        for (i, name) in names.iter().enumerate() {
            // The sync job and the district grow with their data a little.
            if last.1[i] > base.1[i] * 1.25 + 16.0 {
                failures.push(format!("{name}'s RSS grew from {:.1} MB to {:.1} MB", base.1[i], last.1[i]));
            }
        }
        let conns: Vec<i64> = rows[1..].iter().map(|r| r.2).collect();
        let (lo, hi) = (conns.iter().min().copied().unwrap_or(0), conns.iter().max().copied().unwrap_or(0));
        if hi - lo > 4 {
            failures.push(format!("PostgreSQL connections ranged from {lo} to {hi}"));
        }
        let mut p99s: Vec<Duration> = rows[1..].iter().map(|r| r.3).collect();
        p99s.sort();
        let median = p99s[p99s.len() / 2];
        if let Some(worst) = p99s.last()
            && *worst > median * 3
        {
            failures.push(format!("p99 unstable: a minute at {worst:?}, the median minute {median:?}"));
        }
    }

    if crash {
        let mut crashed = Arc::new(Shared {
            clients: Clients {
                city_issuer: shared.clients.city_issuer.clone(),
                district_issuer: shared.clients.district_issuer.clone(),
                verifier: shared.clients.verifier.clone(),
                consumer: shared.clients.consumer.clone(),
                portal: shared.clients.portal.clone(),
                counter: shared.clients.counter.clone(),
                exchange_url: shared.clients.exchange_url.clone(),
            },
            ledger: Mutex::new(std::mem::take(&mut *shared.ledger.lock().expect("ledger"))),
            type_code: shared.type_code.clone(),
            scenario: shared.scenario,
            front_end_key: Es256KeyPair::from_pkcs8_pem(&shared.front_end_key.to_pkcs8_pem()?)?,
            counter: AtomicU64::new(shared.counter.load(Ordering::Relaxed)),
            retry: true,
            samples: Mutex::default(),
            errors: Mutex::default(),
        });
        let victims = 7u64;
        let per_victim = Duration::from_secs(20);
        println!("crash: the same load; each process killed (SIGKILL) in turn and started again");
        let start = Instant::now();
        let loader =
            tokio::spawn(load(crashed.clone(), rate, per_victim * victims as u32 + Duration::from_secs(10), start));
        let mut services =
            [&mut catalog, &mut signing, &mut issuance_svc, &mut verification_svc, &mut exchange_svc, &mut district];
        for i in 0..victims as usize {
            tokio::time::sleep(Duration::from_secs(8)).await;
            let t = Instant::now();
            let name = match services.get_mut(i) {
                Some(s) => {
                    s.kill().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    s.start().await?;
                    s.name
                }
                None => {
                    sync.kill().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    sync.start()?;
                    "sync"
                }
            };
            println!("  killed {name} and started it again in {:.1} s", t.elapsed().as_secs_f64());
            tokio::time::sleep(per_victim - Duration::from_secs(8) - t.elapsed().min(Duration::from_secs(11))).await;
        }
        loader.await?;
        let c = Arc::get_mut(&mut crashed).map(|s| std::mem::take(&mut *s.ledger.lock().expect("ledger")));
        let ledger = c.context("the load still holds the ledger")?;
        let errors = crashed.errors.lock().expect("errors").clone();
        let retried = crashed.samples.lock().expect("samples").iter().filter(|(_, s)| s.retries > 0).count();
        let calls = crashed.samples.lock().expect("samples").len();
        println!("crash: {calls} operations, {retried} needed retries, {} never succeeded", errors.len());
        print_errors(&errors);
        if !errors.is_empty() {
            failures.push(format!("crash: {} operations never succeeded, first: {}", errors.len(), errors[0]));
        }
        let (lost, duplicated) = audit(&city_url, &ledger).await?;
        println!(
            "crash: {} city writes, {} import rows, {} district licences accepted in both phases: {lost} lost, {duplicated} duplicated",
            ledger.city_accepted.len(),
            ledger.imported.len(),
            ledger.district_accepted.len()
        );
        if lost > 0 || duplicated > 0 {
            failures.push(format!("{lost} accepted writes lost, {duplicated} duplicated"));
        }
    }

    sync.kill().await;
    for s in [&mut district, &mut exchange_svc, &mut verification_svc, &mut issuance_svc, &mut signing, &mut catalog] {
        s.kill().await;
    }
    if failures.is_empty() {
        println!("PASS");
        Ok(())
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        bail!("{} checks failed", failures.len())
    }
}

/// The distinct errors (their text up to the first digit-bearing detail), with counts.
fn print_errors(errors: &[String]) {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for e in errors {
        *by.entry(e.chars().take(120).collect()).or_default() += 1;
    }
    for (e, n) in by.iter().take(10) {
        println!("  {n} x {e}");
    }
}

fn per_op(shared: &Shared) {
    let samples = shared.samples.lock().expect("samples");
    let mut by: BTreeMap<Op, Vec<Duration>> = BTreeMap::new();
    for (op, s) in samples.iter() {
        by.entry(*op).or_default().push(s.latency);
    }
    for (op, mut lat) in by {
        lat.sort();
        println!(
            "  {op:?}: {} calls, p50 {:.1} ms, p99 {:.1} ms",
            lat.len(),
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        );
    }
}
