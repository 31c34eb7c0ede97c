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
use tonic::Code;
use tonic::transport::Channel;
use zhengzhao_auth::{BearerToken, Role};
use zhengzhao_crypto::Es256KeyPair;
use zhengzhao_crypto::sdjwt::Presentation;
use zhengzhao_e2e::consumers::{ITEM, terms, use_ctx};
use zhengzhao_e2e::fixtures::draft;
use zhengzhao_e2e::remote::Remote;
use zhengzhao_e2e::{ADMIN, Authed, CONSUMER, ISSUER, OTHER_ISSUER};
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::exchange::v1::holder_service_client::HolderServiceClient;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;
use zhengzhao_testkit::{ServerProcess, TestDb, binary};

/// The agency running the holders' front end.
const PORTAL: &str = "11350000MB01234560";
/// The example licence's holder (a company, ID type 001).
const HOLDER: &str = "91350100M000100Y43";

const ENVS: &[(&str, &str)] =
    &[("ZHENGZHAO_TELEMETRY__LOG_FILTER", "error"), ("ZHENGZHAO_LIMITS__PRINCIPAL_RATE_PER_SECOND", "0")];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process with a fixed address, so that it can be killed and
/// started again where its peers look for it.
struct Service {
    name: &'static str,
    binary: &'static str,
    args: Vec<String>,
    port: u16,
    process: Option<ServerProcess>,
}

impl Service {
    fn new(name: &'static str, binary: &'static str, args: Vec<String>) -> anyhow::Result<Self> {
        Ok(Service { name, binary, args, port: free_port()?, process: None })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let mut args = self.args.clone();
        args.extend(["--listen".into(), format!("127.0.0.1:{}", self.port)]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match ServerProcess::start(self.binary, &args, ENVS).await {
                Ok(p) => {
                    self.process = Some(p);
                    return Ok(());
                }
                // The killed process's port can take a moment to come free.
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => return Err(e.context(format!("starting {}", self.name))),
            }
        }
    }

    /// SIGKILL.
    async fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop().await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServerProcess::pid)
    }
}

/// The sync job's process.
struct SyncJob {
    args: Vec<String>,
    token: String,
    child: Option<tokio::process::Child>,
}

impl SyncJob {
    fn start(&mut self) -> anyhow::Result<()> {
        let child = tokio::process::Command::new(binary("zhengzhao"))
            .args(&self.args)
            .env("ZHENGZHAO_TOKEN", &self.token)
            .envs(ENVS.iter().copied())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

fn bearer(token: &str) -> BearerToken {
    BearerToken::new(token).expect("tokens are header text")
}

/// Everything the workers call, and the tokens they call with.
struct Clients {
    city_issuer: IssuanceServiceClient<Authed>,
    district_issuer: IssuanceServiceClient<Authed>,
    verifier: VerificationServiceClient<Authed>,
    consumer: ExchangeServiceClient<Authed>,
    portal: HolderServiceClient<Authed>,
    counter: HolderServiceClient<Authed>,
    exchange_url: String,
}

/// What the workload has done, and what it must find afterwards.
#[derive(Default)]
struct Ledger {
    /// Licences issued in the city and not changed since (verified, fetched, presented).
    stable: Vec<String>,
    /// Licences issued in the city for changing; each is taken while a change runs.
    changeable: Vec<String>,
    /// Every identifier the city accepted (issues and changes).
    city_accepted: Vec<String>,
    /// Every source key an import accepted.
    imported: Vec<String>,
    /// Every identifier the district accepted.
    district_accepted: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Issue,
    Change,
    Verify,
    Fetch,
    Present,
    Import,
    DistrictIssue,
}

/// The mix, per 20 operations.
const MIX: [(Op, usize); 7] = [
    (Op::Issue, 3),
    (Op::Change, 2),
    (Op::Verify, 6),
    (Op::Fetch, 3),
    (Op::Present, 2),
    (Op::Import, 1),
    (Op::DistrictIssue, 3),
];

struct Sample {
    at: Duration,
    latency: Duration,
    ok: bool,
    retries: u32,
}

struct Shared {
    clients: Clients,
    ledger: Mutex<Ledger>,
    type_code: String,
    scenario: u64,
    front_end_key: Es256KeyPair,
    counter: AtomicU64,
    /// Retry failed calls (the crash phase) or count them as errors.
    retry: bool,
    samples: Mutex<Vec<(Op, Sample)>>,
    errors: Mutex<Vec<String>>,
}

fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Internal | Code::Aborted
    )
}

impl Shared {
    /// Calls `f` until it succeeds (when retrying, for up to two minutes
    /// of transient failures); the result and how many retries it took.
    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> (Result<T, String>, u32)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut retries = 0;
        loop {
            match f().await {
                Ok(v) => return (Ok(v), retries),
                Err(s) if self.retry && transient(&s) && Instant::now() < deadline => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(s) => return (Err(format!("{what}: {:?} {}", s.code(), s.message())), retries),
            }
        }
    }

    fn take_stable(&self, n: u64) -> Option<String> {
        let l = self.ledger.lock().expect("ledger");
        (!l.stable.is_empty()).then(|| l.stable[n as usize % l.stable.len()].clone())
    }

    async fn run(&self, op: Op, start: Instant) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let (result, retries) = match op {
            Op::Issue => self.issue(n).await,
            Op::Change => self.change(n).await,
            Op::Verify => self.verify(n).await,
            Op::Fetch => self.fetch(n).await,
            Op::Present => self.present(n).await,
            Op::Import => self.import(n).await,
            Op::DistrictIssue => self.district_issue(n).await,
        };
        let sample = Sample { at: t - start, latency: t.elapsed(), ok: result.is_ok(), retries };
        if let Err(e) = result {
            self.errors.lock().expect("errors").push(format!("{op:?}: {e}"));
        }
        self.samples.lock().expect("samples").push((op, sample));
    }

    async fn issue(&self, n: u64) -> (Result<(), String>, u32) {
        let mut d = draft(&self.type_code);
        d.serial = format!("SOAK{n:08}");
        let req = issuance::IssueLicenceRequest { draft: Some(d), idempotency_key: format!("soak-issue-{n}") };
        let (r, retries) = self
            .call("IssueLicence", || {
                let mut c = self.clients.city_issuer.clone();
                let req = req.clone();
                async move { c.issue_licence(req).await }
            })
            .await;
        let r = r.map(|r| r.into_inner().licence.unwrap_or_default().identifier);
        if let Ok(id) = &r {
            let mut l = self.ledger.lock().expect("ledger");
            l.city_accepted.push(id.clone());
            if n.is_multiple_of(2) { l.stable.push(id.clone()) } else { l.changeable.push(id.clone()) }
        }
        (r.map(|_| ()), retries)
    }

    async fn change(&self, n: u64) -> (Result<(), String>, u32) {
        let Some(id) = self.ledger.lock().expect("ledger").changeable.pop() else { return self.issue(n).await };
        let mut d = draft(&self.type_code);
        d.face_fields.insert("business_scope".into(), format!("预包装食品销售（第{n}次变更）"));
        let req = issuance::ChangeLicenceRequest {
            identifier: id.clone(),
            draft: Some(d),
            reason: "经营范围变更".into(),
            occurred_at: None,
            idempotency_key: format!("soak-change-{n}"),
        };
        let (r, retries) = self
            .call("ChangeLicence", || {
                let mut c = self.clients.city_issuer.clone();
                let req = req.clone();
                async move { c.change_licence(req).await }
            })
            .await;
        let mut l = self.ledger.lock().expect("ledger");
        match r {
            Ok(r) => {
                let new = r.into_inner().licence.unwrap_or_default().identifier;
                l.city_accepted.push(new.clone());
                l.changeable.push(new);
                (Ok(()), retries)
            }
            Err(e) => {
                l.changeable.push(id);
                (Err(e), retries)
            }
        }
    }

    async fn verify(&self, n: u64) -> (Result<(), String>, u32) {
        let Some(id) = self.take_stable(n) else { return self.issue(n).await };
        let (r, retries) = self
            .call("VerifyLicence", || {
                let mut c = self.clients.verifier.clone();
                let id = id.clone();
                async move {
                    c.verify_licence(verification::VerifyLicenceRequest {
                        identifier: id,
                        include_inclusion_proof: false,
                    })
                    .await
                }
            })
            .await;
        let r = r.and_then(|r| {
            let v = r.into_inner().verification.unwrap_or_default();
            if v.outcome() == verification::VerificationOutcome::Valid {
                Ok(())
            } else {
                Err(format!("{id} verified {:?}: {}", v.outcome(), v.detail))
            }
        });
        (r, retries)
    }

    async fn fetch(&self, n: u64) -> (Result<(), String>, u32) {
        let Some(id) = self.take_stable(n) else { return self.issue(n).await };
        let (r, retries) = self
            .call("FetchLicence", || {
                let mut c = self.clients.consumer.clone();
                let id = id.clone();
                async move {
                    c.fetch_licence(exchange::FetchLicenceRequest {
                        identifier: id, r#use: use_ctx("核验经营资质")
                    })
                    .await
                }
            })
            .await;
        (r.map(|_| ()), retries)
    }

    async fn present(&self, n: u64) -> (Result<(), String>, u32) {
        let Some(id) = self.take_stable(n) else { return self.issue(n).await };
        let (r, retries) = self
            .call("present", || {
                let mut portal = self.clients.portal.clone();
                let mut counter = self.clients.counter.clone();
                let exchange_url = self.clients.exchange_url.clone();
                let id = id.clone();
                let scenario = self.scenario;
                async move {
                    let token = portal
                        .holder_login(exchange::HolderLoginRequest {
                            holder_id_type: "001".into(),
                            holder_id_number: HOLDER.into(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .token;
                    let ch = channel(&exchange_url).map_err(|e| tonic::Status::internal(e.to_string()))?;
                    let mut holder = HolderServiceClient::with_interceptor(ch, bearer(&token));
                    let p = holder
                        .present_licence(exchange::PresentLicenceRequest { identifier: id, scenario_id: scenario })
                        .await?
                        .into_inner();
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let text = Presentation::parse(&p.sd_jwt)
                        .map_err(|e| tonic::Status::internal(e.to_string()))?
                        .bind(&self.front_end_key, &p.audience, &p.nonce, now)
                        .serialize();
                    let v = counter
                        .verify_presentation(exchange::VerifyPresentationRequest { presentation: text })
                        .await?
                        .into_inner();
                    if v.valid {
                        Ok(())
                    } else {
                        Err(tonic::Status::failed_precondition(format!("presentation refused: {}", v.reason)))
                    }
                }
            })
            .await;
        (r, retries)
    }

    async fn import(&self, n: u64) -> (Result<(), String>, u32) {
        let rows: Vec<_> = (0..3u64)
            .map(|k| {
                let mut d = draft(&self.type_code);
                d.serial = format!("SOAKIMP{n:07}{k}");
                d.issue_date = "2024-03-01".into();
                d.valid_from = "2024-03-01".into();
                issuance::ImportRow {
                    row_number: k + 1,
                    source_key: format!("soak-{n}-{k}"),
                    identifier: String::new(),
                    draft: Some(d),
                }
            })
            .collect();
        let keys: Vec<String> = rows.iter().map(|r| r.source_key.clone()).collect();
        let (r, retries) = self
            .call("ImportLicences", || {
                let mut c = self.clients.city_issuer.clone();
                let req = issuance::ImportLicencesRequest { rows: rows.clone(), allow_legacy: false };
                async move { c.import_licences(tokio_stream::iter(vec![req])).await }
            })
            .await;
        let r = r.and_then(|r| {
            let r = r.into_inner();
            if r.errors.is_empty() && r.imported + r.already_present == 3 {
                Ok(())
            } else {
                Err(format!("import: {} imported, {:?}", r.imported, r.errors.first()))
            }
        });
        if r.is_ok() {
            self.ledger.lock().expect("ledger").imported.extend(keys);
        }
        (r, retries)
    }

    async fn district_issue(&self, n: u64) -> (Result<(), String>, u32) {
        let mut d = draft(&self.type_code);
        d.serial = format!("SOAKD{n:08}");
        let req = issuance::IssueLicenceRequest { draft: Some(d), idempotency_key: format!("soak-district-{n}") };
        let (r, retries) = self
            .call("district IssueLicence", || {
                let mut c = self.clients.district_issuer.clone();
                let req = req.clone();
                async move { c.issue_licence(req).await }
            })
            .await;
        let r = r.map(|r| r.into_inner().licence.unwrap_or_default().identifier);
        if let Ok(id) = &r {
            self.ledger.lock().expect("ledger").district_accepted.push(id.clone());
        }
        (r.map(|_| ()), retries)
    }
}

/// Drives the mix at `rate` operations a second for `duration`, at most
/// 64 in flight; returns when every operation has ended.
async fn load(shared: Arc<Shared>, rate: u64, duration: Duration, start: Instant) {
    let ops: Vec<Op> = MIX.iter().flat_map(|(op, n)| std::iter::repeat_n(*op, *n)).collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        let op = ops[(i * 7) % ops.len()];
        i += 1;
        let permit = limit.clone().acquire_owned().await.expect("the semaphore stays open");
        let s = shared.clone();
        tasks.spawn(async move {
            s.run(op, start).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
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
        for i in 0..victims {
            tokio::time::sleep(Duration::from_secs(8)).await;
            let t = Instant::now();
            let name = match i {
                0 => {
                    catalog.kill().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    catalog.start().await?;
                    "catalog"
                }
                1 => {
                    signing.kill().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    signing.start().await?;
                    "signing"
                }
                2 => {
                    issuance_svc.kill().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    issuance_svc.start().await?;
                    "issuance"
                }
                3 => {
                    verification_svc.kill().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    verification_svc.start().await?;
                    "verification"
                }
                4 => {
                    exchange_svc.kill().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    exchange_svc.start().await?;
                    "exchange"
                }
                5 => {
                    district.kill().await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    district.start().await?;
                    "district"
                }
                _ => {
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

/// Looks for every accepted write in the city's database once the sync job
/// has caught up: how many are missing, and how many rows are doubled.
async fn audit(city_url: &str, ledger: &Ledger) -> anyhow::Result<(usize, i64)> {
    let mut db = sqlx::PgConnection::connect(city_url).await?;
    let count = |sql: &'static str, v: String| sqlx::query_scalar::<_, i64>(sql).bind(v);
    // District licences arrive through sync: wait for them (up to 3 minutes).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut missing = 0;
        for id in &ledger.district_accepted {
            if count("SELECT count(*) FROM issuance.licences WHERE identifier = $1", id.clone())
                .fetch_one(&mut db)
                .await?
                == 0
            {
                missing += 1;
            }
        }
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut lost = 0;
    for id in ledger.city_accepted.iter().chain(&ledger.district_accepted) {
        let n = count("SELECT count(*) FROM issuance.licences WHERE identifier = $1", id.clone())
            .fetch_one(&mut db)
            .await?;
        if n != 1 {
            lost += 1;
            println!("  {id}: {n} rows in the city");
        }
    }
    for key in &ledger.imported {
        let n = count("SELECT count(*) FROM issuance.licences WHERE source_key = $1", key.clone())
            .fetch_one(&mut db)
            .await?;
        if n != 1 {
            lost += 1;
            println!("  import row {key}: {n} licences in the city");
        }
    }
    // What the database holds of the workload's serials, against what was
    // accepted: more rows than accepted writes is a write done twice (or one
    // the ledger missed), fewer is a loss.
    let mut duplicated = 0i64;
    for (pattern, accepted, what) in [
        ("^SOAK[0-9]", ledger.city_accepted.len(), "city issues and changes"),
        ("^SOAKIMP", ledger.imported.len(), "import rows"),
        ("^SOAKD[0-9]", ledger.district_accepted.len(), "district licences"),
    ] {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM issuance.licences WHERE serial ~ $1")
            .bind(pattern)
            .fetch_one(&mut db)
            .await?;
        let accepted = i64::try_from(accepted)?;
        if held != accepted {
            println!("  {what}: {held} rows in the city, {accepted} accepted");
            duplicated += (held - accepted).max(0);
        }
    }
    // Every licence has the event that made it, in the log.
    let unlogged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM issuance.licences l WHERE l.serial ~ '^SOAK' AND NOT EXISTS
         (SELECT 1 FROM issuance.licence_events e WHERE e.identifier = l.identifier AND e.log_index IS NOT NULL)",
    )
    .fetch_one(&mut db)
    .await?;
    if unlogged > 0 {
        println!("  {unlogged} licences without their logged event");
    }
    let doubled_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT identifier FROM issuance.licence_events WHERE kind = 'issue'
         GROUP BY identifier HAVING count(*) > 1) d",
    )
    .fetch_one(&mut db)
    .await?;
    lost += usize::try_from(unlogged)?;
    Ok((lost, duplicated + doubled_events))
}
