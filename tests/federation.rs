//! The city and its districts as real processes on PostgreSQL: three
//! all-in-one libraries (the city, districts d1 and d2, each with its own
//! database, keys and log), the gateway in front, and the sync job. Each
//! district is reached through a TCP proxy the test controls, so it can be
//! cut off from the network as well as killed.
//!
//! One scenario, in order: licences issued and changed in both districts
//! through the gateway while `kill -9` hits the sync job and a district;
//! afterwards the city holds every district entry once, in order, and the
//! replica audits clean against each district's log. Then a district down,
//! and one cut off: the gateway answers reads from the city's replica,
//! marked stale; after healing, sync catches up. Last, a district's history
//! is rewritten in its database: its sync stops with the alarm, the other
//! district's goes on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::{BearerToken, Role};
use zhengzhao_e2e::{ADMIN, ISSUER, OTHER_ISSUER};
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::convert::definition_to_wire;
use zhengzhao_proto::gateway::v1 as gateway;
use zhengzhao_proto::gateway::v1::gateway_service_client::GatewayServiceClient;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;
use zhengzhao_testkit::{ServerProcess, TestDb, binary};

type Authed = InterceptedService<Channel, BearerToken>;

/// A TCP proxy the test controls: forwards to its target, or (cut) holds
/// every connection open and silent, as a network partition does.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    cut: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    held: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target = Arc::new(Mutex::new(target));
        let cut = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let held: Arc<Mutex<Vec<tokio::net::TcpStream>>> = Arc::default();
        let (t, c, l, h) = (target.clone(), cut.clone(), live.clone(), held.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    h.lock().expect("lock").push(inbound);
                    continue;
                }
                let to = *t.lock().expect("lock");
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                l.lock().expect("lock").push(task.abort_handle());
            }
        });
        Ok(Proxy { addr, target, cut, live, held, accept })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Partitions: open connections are dropped, new ones hang.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.live.lock().expect("lock").drain(..) {
            t.abort();
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.held.lock().expect("lock").clear();
    }

    fn retarget(&self, to: SocketAddr) {
        *self.target.lock().expect("lock") = to;
        for t in self.live.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for t in self.live.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

/// One library: its data directory, database and process.
struct Member {
    name: String,
    dir: PathBuf,
    db: TestDb,
    process: Option<ServerProcess>,
}

impl Member {
    async fn start(&mut self) -> anyhow::Result<SocketAddr> {
        self.start_with(&[]).await
    }

    async fn start_with(&mut self, extra: &[String]) -> anyhow::Result<SocketAddr> {
        let url = self.db.url().context("PostgreSQL")?.to_owned();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            self.dir.display().to_string(),
            "--database-url".into(),
            url,
            "--library".into(),
            self.name.clone(),
        ];
        args.extend(extra.iter().cloned());
        let p = ServerProcess::start("zhengzhao", &args, &[]).await?;
        let addr = p.addr;
        self.process = Some(p);
        Ok(addr)
    }

    /// `kill -9`.
    async fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop().await;
        }
    }

    fn url(&self) -> String {
        self.process.as_ref().map(ServerProcess::url).unwrap_or_default()
    }
}

fn cli(args: &[&str], token: &str, server: &str) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(binary("zhengzhao"))
        .args(args)
        .env("ZHENGZHAO_SERVER", server)
        .env("ZHENGZHAO_TOKEN", token)
        .output()?)
}

fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_owned())?.timeout(Duration::from_secs(20)).connect_lazy())
}

fn issuance_at(url: &str, token: &str) -> anyhow::Result<IssuanceServiceClient<Authed>> {
    Ok(IssuanceServiceClient::with_interceptor(channel(url)?, BearerToken::new(token)?))
}

/// The sync job's process.
struct SyncProcess(tokio::process::Child);

impl SyncProcess {
    fn start(city: &str, d1: &str, d2: &str, token: &str) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new(binary("zhengzhao"))
            .args([
                "sync",
                "--city",
                city,
                "--district",
                &format!("d1={d1}"),
                "--district",
                &format!("d2={d2}"),
                "--batch",
                "7",
                "--refresh-seconds",
                "1",
                "--timeout-seconds",
                "8",
            ])
            .env("ZHENGZHAO_TOKEN", token)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        Ok(SyncProcess(child))
    }

    /// `kill -9`.
    async fn kill(mut self) {
        let _ = self.0.kill().await;
    }
}

/// Every entry of a feed as (sequence, identifier, kind, status), read with
/// ReadReplicaFeed: a library's own (`library` empty) or the city's replica.
async fn entries(url: &str, token: &str, library: &str) -> anyhow::Result<Vec<(u64, String, i32, i32)>> {
    let mut c = issuance_at(url, token)?;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = c
            .read_replica_feed(issuance::ReadReplicaFeedRequest {
                after_sequence: after,
                limit: 1000,
                wait_seconds: 0,
                library: library.to_owned(),
                max_bytes: 0,
            })
            .await?
            .into_inner();
        if page.events.is_empty() {
            return Ok(out);
        }
        for e in page.events {
            let e = e.event.context("event")?;
            after = e.sequence;
            out.push((e.sequence, e.identifier, e.kind, e.status_after));
        }
    }
}

async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    loop {
        match f().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {secs}s (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The city holds exactly the district's feed, in order.
async fn city_matches(city: &str, district: &str, name: &str, token: &str) -> anyhow::Result<bool> {
    let own = entries(district, token, "").await?;
    let replica = entries(city, token, name).await?;
    Ok(!own.is_empty() && own == replica)
}

/// Waits until the city holds exactly the district's feed.
async fn city_catches_up(
    what: &str,
    secs: u64,
    city: &str,
    district: &str,
    name: &str,
    token: &str,
) -> anyhow::Result<()> {
    eventually(what, secs, || city_matches(city, district, name, token)).await
}

fn draft(type_code: &str, serial: &str) -> issuance::LicenceDraft {
    let mut def = zhengzhao::examples::definition(ISSUER).expect("example definition");
    def.code = Some(type_code.to_owned());
    let d = zhengzhao::examples::draft(&def, "2026-11-27").expect("example draft");
    let mut d = issuance::LicenceDraft::from(&d);
    d.serial = serial.to_owned();
    d
}

/// Issues (and, every third, reports lost) through the gateway, retrying
/// each call with its idempotency key until the owning library takes it.
async fn traffic(
    gateway: String,
    token: String,
    district: &'static str,
    type_code: String,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut c = issuance_at(&gateway, &token)?;
    let mut ids = Vec::new();
    for i in 0..n {
        let serial = format!("{}{:04}", district.to_uppercase(), i);
        let key = format!("issue-{serial}");
        let id = loop {
            let r = c
                .issue_licence(issuance::IssueLicenceRequest {
                    draft: Some(draft(&type_code, &serial)),
                    idempotency_key: key.clone(),
                })
                .await;
            match r {
                Ok(r) => break r.into_inner().licence.context("licence")?.identifier,
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Internal
                    ) =>
                {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(s) => bail!("issuing {serial} in {district}: {s}"),
            }
        };
        if i % 3 == 0 {
            let key = format!("loss-{serial}");
            loop {
                let r = c
                    .record_event(issuance::RecordEventRequest {
                        identifier: id.clone(),
                        kind: issuance::EventKind::ReportLoss as i32,
                        reason: "持证人报告遗失".into(),
                        idempotency_key: key.clone(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => break,
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                                | tonic::Code::DeadlineExceeded
                                | tonic::Code::Internal
                        ) =>
                    {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Err(s) => bail!("reporting {id} lost: {s}"),
                }
            }
        }
        ids.push(id);
        // Spread the traffic so that the kills land in the middle of it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ids)
}

/// Licences issued in each district during the kills.
const N: usize = 60;
/// Their entries: each issue, and every third reported lost.
const ENTRIES: usize = N + N.div_ceil(3);

#[tokio::test]
async fn a_city_and_two_districts_survive_kills_partitions_and_a_rewritten_history() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let dir = |n: &str| work.path().join(n);
    for n in ["city", "d1", "d2"] {
        let out = std::process::Command::new(binary("zhengzhao"))
            .args(["init", "--data-dir", &dir(n).display().to_string()])
            .output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // One operator for the federation: the districts trust the city's token key.
    for n in ["d1", "d2"] {
        std::fs::copy(dir("city").join("token-keys.json"), dir(n).join("token-keys.json"))?;
    }
    let gw = dir("gateway");
    zhengzhao_server::keys::create_private_dir(&gw)?;
    for f in ["token-keys.json", "service-keys.json", "service-gateway.pem"] {
        copy_private(&dir("city").join(f), &gw.join(f))?;
    }
    let operator = zhengzhao_server::keys::operator_authority(&dir("city"))?;
    let ttl = Duration::from_secs(3600);
    let sync_token = operator.mint(ADMIN, Role::Sync, ttl)?;
    let admin = operator.mint(ADMIN, Role::Admin, ttl)?;
    let issuer1 = operator.mint(ISSUER, Role::Issuer, ttl)?;
    let issuer2 = operator.mint(OTHER_ISSUER, Role::Issuer, ttl)?;
    let consumer = operator.mint(zhengzhao_e2e::CONSUMER, Role::Consumer, ttl)?;

    let mut city = Member { name: "city".into(), dir: dir("city"), db: TestDb::postgres().await?, process: None };
    let mut d1 = Member { name: "d1".into(), dir: dir("d1"), db: TestDb::postgres().await?, process: None };
    let mut d2 = Member { name: "d2".into(), dir: dir("d2"), db: TestDb::postgres().await?, process: None };
    city.start().await?;
    let p1 = Proxy::start(d1.start().await?).await?;
    let p2 = Proxy::start(d2.start().await?).await?;
    let gateway = ServerProcess::start(
        "zhengzhao-gateway",
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            gw.display().to_string(),
            "--catalog-url".into(),
            city.url(),
            "--member".into(),
            format!("city={}", city.url()),
            "--member".into(),
            format!("d1={}", p1.url()),
            "--member".into(),
            format!("d2={}", p2.url()),
            "--member-issuers".into(),
            format!("d1={ISSUER}"),
            "--member-issuers".into(),
            format!("d2={OTHER_ISSUER}"),
        ],
        &[],
    )
    .await?;
    let gw_url = gateway.url();

    // The catalogue is the city's; the sync job brings it to the districts.
    let mut def = zhengzhao::examples::definition(ISSUER)?;
    def.issuers.push(OTHER_ISSUER.to_owned());
    let mut cat = CatalogServiceClient::with_interceptor(channel(&city.url())?, BearerToken::new(&admin)?);
    let created = cat
        .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&def)) })
        .await?
        .into_inner();
    let code = created.licence_type.and_then(|t| t.definition).map(|d| d.code).context("type code")?;
    cat.publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() }).await?;
    let mut sync = SyncProcess::start(&city.url(), &p1.url(), &p2.url(), &sync_token)?;
    for d in [&d1, &d2] {
        let url = d.url();
        let admin = admin.clone();
        let code = code.clone();
        eventually("the district follows the city's catalogue", 60, move || {
            let (url, admin, code) = (url.clone(), admin.clone(), code.clone());
            async move {
                let mut c = CatalogServiceClient::with_interceptor(channel(&url)?, BearerToken::new(&admin)?);
                Ok(c.get_licence_type(catalog::GetLicenceTypeRequest { code, template_version: 0 }).await.is_ok())
            }
        })
        .await?;
    }

    // Traffic in both districts through the gateway, with kill -9 of the
    // sync job and of district d1 in the middle of it.
    let t1 = tokio::spawn(traffic(gw_url.clone(), issuer1.clone(), "d1", code.clone(), N));
    let t2 = tokio::spawn(traffic(gw_url.clone(), issuer2.clone(), "d2", code.clone(), N));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sync.kill().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sync = SyncProcess::start(&city.url(), &p1.url(), &p2.url(), &sync_token)?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!t1.is_finished() && !t2.is_finished(), "the kills land while licences are being issued");
    d1.kill().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    p1.retarget(d1.start().await?);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sync.kill().await;
    sync = SyncProcess::start(&city.url(), &p1.url(), &p2.url(), &sync_token)?;
    let ids1 = t1.await??;
    let ids2 = t2.await??;
    assert_eq!(ids1.len(), N);
    for (d, name) in [(&d1, "d1"), (&d2, "d2")] {
        city_catches_up(&format!("the city holds all of {name}"), 120, &city.url(), &d.url(), name, &sync_token)
            .await?;
    }
    // Writes went to the issuer's library, never to the city: everything
    // the city's own feed holds is a district's.
    let city_own = entries(&city.url(), &sync_token, "").await?;
    let (r1, r2) = (entries(&city.url(), &sync_token, "d1").await?, entries(&city.url(), &sync_token, "d2").await?);
    assert_eq!(city_own.len(), r1.len() + r2.len());
    let own1 = entries(&d1.url(), &sync_token, "").await?;
    assert_eq!(own1.len(), ENTRIES, "d1: {N} issues and every third reported lost, each once");
    assert!(own1.windows(2).all(|w| w[0].0 < w[1].0));
    // The replica audits clean against each district's log.
    for (d, name) in [(&d1, "d1"), (&d2, "d2")] {
        let out = cli(&["sync", "audit", "--district", &format!("{name}={}", d.url())], &sync_token, &city.url())?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.starts_with(&format!("ok: the city's {ENTRIES} entries of")), "{text}");
    }
    // The city verifies district licences with the district's keys.
    let mut verify = VerificationServiceClient::with_interceptor(channel(&city.url())?, BearerToken::new(&consumer)?);
    let v = verify
        .verify_licence(verification::VerifyLicenceRequest { identifier: ids2[1].clone(), ..Default::default() })
        .await?
        .into_inner()
        .verification
        .context("verification")?;
    assert_eq!(v.outcome, verification::VerificationOutcome::Valid as i32, "{v:?}");
    // Writing to a replica at the city is refused: the district keeps it.
    let refused = issuance_at(&city.url(), &issuer1)?
        .record_event(issuance::RecordEventRequest {
            identifier: ids1[1].clone(),
            kind: issuance::EventKind::ReportLoss as i32,
            reason: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("a replica is read-only");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("kept by district d1"), "{refused:?}");

    // d2 down: the gateway reads its licences from the city, marked stale.
    d2.kill().await;
    let mut via_gateway = issuance_at(&gw_url, &admin)?;
    let got = via_gateway
        .get_licence(issuance::GetLicenceRequest { identifier: ids2[2].clone(), ..Default::default() })
        .await?;
    let stale = got.metadata().get("zhengzhao-stale").context("marked stale")?.to_str()?.to_owned();
    assert!(stale.starts_with("d2; lag_events="), "{stale}");
    assert_eq!(got.metadata().get("zhengzhao-served-by").map(|v| v.to_str().unwrap_or("")), Some("city"));
    assert_eq!(got.into_inner().licence.context("licence")?.identifier, ids2[2]);
    // A write for d2 is not taken by anyone else.
    let w = issuance_at(&gw_url, &issuer2)?
        .issue_licence(issuance::IssueLicenceRequest {
            draft: Some(draft(&code, "D2DOWN")),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("d2 is down");
    assert_eq!(w.code(), tonic::Code::Unavailable, "{w:?}");
    // d1 is served by d1 itself.
    let fresh = via_gateway
        .get_licence(issuance::GetLicenceRequest { identifier: ids1[0].clone(), ..Default::default() })
        .await?;
    assert_eq!(fresh.metadata().get("zhengzhao-served-by").map(|v| v.to_str().unwrap_or("")), Some("d1"));
    assert!(fresh.metadata().get("zhengzhao-stale").is_none());
    p2.retarget(d2.start().await?);

    // d2 cut off by the network: new licences at d2 (its own door) wait;
    // the gateway answers from the replica; after healing the city catches up.
    p2.cut();
    let mut direct2 = issuance_at(&d2.url(), &issuer2)?;
    for i in 0..5 {
        direct2
            .issue_licence(issuance::IssueLicenceRequest {
                draft: Some(draft(&code, &format!("D2CUT{i}"))),
                idempotency_key: String::new(),
            })
            .await?;
    }
    let got = via_gateway
        .get_licence(issuance::GetLicenceRequest { identifier: ids2[3].clone(), ..Default::default() })
        .await?;
    assert!(got.metadata().get("zhengzhao-stale").is_some(), "a partitioned district's read is marked stale");
    let members = cli(&["gateway", "members"], &admin, &gw_url)?;
    let text = String::from_utf8_lossy(&members.stdout).to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    let d2_line: serde_json::Value = serde_json::from_str(text.lines().nth(2).context("d2 line")?)?;
    assert_eq!(d2_line["name"], "d2");
    assert_eq!(d2_line["serving"], false, "{text}");
    assert_eq!(members.status.code(), Some(3), "not every member serves");
    p2.heal();
    city_catches_up("the city catches up with d2 after the partition", 120, &city.url(), &d2.url(), "d2", &sync_token)
        .await?;
    let status = cli(&["sync", "status"], &admin, &city.url())?;
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stdout));

    // d1's history rewritten behind its back: its sync stops, d2's goes on.
    sync.kill().await;
    let mut direct1 = issuance_at(&d1.url(), &issuer1)?;
    for i in 0..2 {
        direct1
            .issue_licence(issuance::IssueLicenceRequest {
                draft: Some(draft(&code, &format!("D1LATE{i}"))),
                idempotency_key: String::new(),
            })
            .await?;
    }
    let pool = sqlx::PgPool::connect(d1.db.url().context("d1 database")?).await?;
    sqlx::query("UPDATE issuance.licence_events SET reason = 'rewritten' WHERE sequence = (SELECT MAX(sequence) FROM issuance.licence_events)")
        .execute(&pool)
        .await?;
    pool.close().await;
    let _sync = SyncProcess::start(&city.url(), &p1.url(), &p2.url(), &sync_token)?;
    let city_url = city.url();
    let token = sync_token.clone();
    eventually("d1's sync stops", 60, move || {
        let (c, t) = (city_url.clone(), token.clone());
        async move {
            let r = issuance_at(&c, &t)?
                .list_replicas(issuance::ListReplicasRequest { library: "d1".into() })
                .await?
                .into_inner();
            Ok(r.replicas.first().is_some_and(|r| r.state == issuance::ReplicaState::Stopped as i32))
        }
    })
    .await?;
    let status = cli(&["sync", "status"], &admin, &city.url())?;
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert_eq!(status.status.code(), Some(3), "{text}");
    assert!(text.contains("\"state\":\"stopped: the entries up to leaf"), "{text}");
    // The batch holding the rewritten entry was refused whole.
    let city_d1 = entries(&city.url(), &sync_token, "d1").await?;
    assert_eq!(city_d1.len(), ENTRIES, "nothing past the last verified batch");
    // d2 goes on.
    direct2
        .issue_licence(issuance::IssueLicenceRequest {
            draft: Some(draft(&code, "D2AFTER")),
            idempotency_key: String::new(),
        })
        .await?;
    city_catches_up("d2 keeps syncing while d1 is stopped", 60, &city.url(), &d2.url(), "d2", &sync_token).await?;
    let members: Vec<gateway::Library> =
        GatewayServiceClient::with_interceptor(channel(&gw_url)?, BearerToken::new(&admin)?)
            .list_libraries(gateway::ListLibrariesRequest {})
            .await?
            .into_inner()
            .libraries;
    let d1_member = members.iter().find(|l| l.name == "d1").context("d1 member")?;
    assert!(d1_member.sync_state.starts_with("stopped:"), "{d1_member:?}");

    // The all-in-one city exposes the same surface: with d2 as its member,
    // a read of a d2 licence at the city's own port is answered by d2, and
    // a city read by the city.
    city.kill().await;
    city.start_with(&[
        "--member".into(),
        format!("d2={}", d2.url()),
        "--member-issuers".into(),
        format!("d2={OTHER_ISSUER}"),
    ])
    .await?;
    let mut at_city = issuance_at(&city.url(), &admin)?;
    let got =
        at_city.get_licence(issuance::GetLicenceRequest { identifier: ids2[4].clone(), ..Default::default() }).await?;
    assert_eq!(got.metadata().get("zhengzhao-served-by").map(|v| v.to_str().unwrap_or("")), Some("d2"));
    let members: Vec<gateway::Library> =
        GatewayServiceClient::with_interceptor(channel(&city.url())?, BearerToken::new(&admin)?)
            .list_libraries(gateway::ListLibrariesRequest {})
            .await?
            .into_inner()
            .libraries;
    assert_eq!(members.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), vec!["city", "d2"]);
    Ok(())
}
