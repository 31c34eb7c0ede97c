//! The read path's caches never outlive what they cache: a verifying
//! process keeps issuer keys until the signing service says a key changed,
//! so a compromise (or a new key) shows in the very next verification —
//! across processes on PostgreSQL, where the verification service learns of
//! key changes over `WatchKeyEvents`. And verification can read from a
//! PostgreSQL streaming replica (a primary and a hot standby started from
//! the binaries on this machine), whose lag the read status shows.

use std::time::Duration;

use sqlx::Connection;
use time::OffsetDateTime;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::{BearerToken, Role, ServiceName};
use zhengzhao_e2e::remote::{Remote, Split};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER};
use zhengzhao_proto::convert::timestamp;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::VerificationOutcome as O;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;
use zhengzhao_server::keys;
use zhengzhao_testkit::{PgCluster, ServerProcess, TestDb};

type Authed = InterceptedService<Channel, BearerToken>;

async fn verify(v: &mut VerificationServiceClient<Authed>, id: &str) -> anyhow::Result<(O, String)> {
    let r = v
        .verify_licence(verification::VerifyLicenceRequest {
            identifier: id.to_owned(),
            include_inclusion_proof: false,
        })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default();
    Ok((O::try_from(r.outcome)?, r.detail))
}

/// How many ListPublicKeys calls the signing service has answered (its /metrics).
async fn key_reads(metrics: std::net::SocketAddr) -> anyhow::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(metrics).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n").await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("zhengzhao_grpc_requests_total{") && l.contains("/ListPublicKeys\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

async fn refused_watch(mut client: SigningServiceClient<Authed>) -> Code {
    let (_acks, rx) = tokio::sync::mpsc::channel::<signing::WatchKeyEventsRequest>(1);
    match client.watch_key_events(tokio_stream::wrappers::ReceiverStream::new(rx)).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn split_services_see_a_key_change_in_the_next_verification() -> anyhow::Result<()> {
    let db = TestDb::postgres().await?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let split =
        Split::start(db.url().unwrap_or_default(), &["--metrics-listen".into(), metrics.to_string()], &[]).await?;
    let remote = &split.remote;
    let code = remote.publish_example_type(&split.catalog.url()).await?;
    let mut keys_admin = remote.signing(&split.signing.url(), Role::Admin, ADMIN)?;
    let mut ver = remote.verification(&split.verification.url(), Role::Consumer, CONSUMER)?;
    let issuance_url = split.issuance.url();
    // Three rounds: each verifies (so the verification process caches the
    // issuer's keys), then changes a key and verifies again at once.
    for round in 0..3 {
        let licence = remote.issue(&issuance_url, &code).await?;
        assert_eq!(verify(&mut ver, &licence.identifier).await?.0, O::Valid, "round {round}");
        // Once the verification service follows the key events (it starts
        // watching on its first read), it takes the keys from its cache.
        let mut following = false;
        for _ in 0..100 {
            let reads = key_reads(metrics).await?;
            assert_eq!(verify(&mut ver, &licence.identifier).await?.0, O::Valid, "round {round}");
            if key_reads(metrics).await? == reads {
                following = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(following, "round {round}: the verification service never used its key cache");
        let reads = key_reads(metrics).await?;
        for _ in 0..3 {
            assert_eq!(verify(&mut ver, &licence.identifier).await?.0, O::Valid, "round {round}");
        }
        assert_eq!(key_reads(metrics).await?, reads, "round {round}: keys read once, then cached");
        let compromised = keys_admin
            .compromise_key(signing::CompromiseKeyRequest {
                key_id: licence.key_id.clone(),
                since: Some(timestamp(OffsetDateTime::now_utc() - Duration::from_secs(3600))),
                reason: "found on a shared drive".into(),
            })
            .await?
            .into_inner();
        let (outcome, detail) = verify(&mut ver, &licence.identifier).await?;
        assert_eq!(outcome, O::KeyCompromised, "round {round}: the very next verification: {detail}");
        // The replacement key signs the next licence, which verifies at once.
        let next = remote.issue(&issuance_url, &code).await?;
        assert_eq!(Some(next.key_id.clone()), compromised.replacement.map(|k| k.key_id));
        assert_eq!(verify(&mut ver, &next.identifier).await?.0, O::Valid, "round {round}: the new key is known");
    }

    // Nobody but the caching services may hold key changes back.
    for (role, agency) in [(Role::Admin, ADMIN), (Role::Consumer, CONSUMER), (Role::Issuer, ISSUER)] {
        let code = refused_watch(remote.signing(&split.signing.url(), role, agency)?).await;
        assert_eq!(code, Code::PermissionDenied, "{role}");
    }
    let issuance_key =
        std::fs::read_to_string(split.dir("issuance").join(keys::service_key_file(ServiceName::Issuance)))?;
    let issuance_token = zhengzhao_auth::TokenAuthority::service(
        zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&issuance_key)?,
        ServiceName::Issuance,
    )
    .mint(ADMIN, Role::Service(ServiceName::Issuance), Duration::from_secs(60))?;
    let channel = tonic::transport::Endpoint::from_shared(split.signing.url())?.connect_lazy();
    let as_issuance = SigningServiceClient::with_interceptor(channel, BearerToken::new(&issuance_token)?);
    assert_eq!(refused_watch(as_issuance).await, Code::PermissionDenied, "the issuance service");

    split.stop().await;
    Ok(())
}

/// Polls the read status until the replica has replayed everything.
async fn caught_up(remote: &Remote, url: &str) -> anyhow::Result<()> {
    let mut issuance = remote.issuance(url, Role::Admin, ADMIN)?;
    for _ in 0..200 {
        let s = issuance.get_read_status(issuance::GetReadStatusRequest {}).await?.into_inner();
        assert!(s.replica, "a replica serves the lagging reads");
        if s.lag_bytes == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the replica did not catch up in 10 s")
}

#[tokio::test]
async fn verification_reads_from_a_streaming_replica_and_the_status_shows_its_lag() -> anyhow::Result<()> {
    let primary = PgCluster::primary()?;
    let standby = PgCluster::standby_of(&primary)?;
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let server = ServerProcess::start(
        "zhengzhao",
        &[
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--database-url".into(),
            primary.url(),
            "--read-database-url".into(),
            standby.url(),
        ],
        // Long enough that the paused replica keeps serving while the test looks.
        &[("ZHENGZHAO_READ_MAX_LAG_SECONDS", "3600")],
    )
    .await?;
    let url = server.url();
    let remote = Remote::new(&data)?;
    let code = remote.publish_example_type(&url).await?;
    let first = remote.issue(&url, &code).await?;
    caught_up(&remote, &url).await?;
    let mut ver = remote.verification(&url, Role::Consumer, CONSUMER)?;
    assert_eq!(verify(&mut ver, &first.identifier).await?.0, O::Valid);

    // The replica stops replaying: writes still succeed (they go to the
    // primary), and verification answers from the replica as it stands.
    let mut standby_conn = sqlx::PgConnection::connect(&standby.url()).await?;
    sqlx::query("SELECT pg_wal_replay_pause()").execute(&mut standby_conn).await?;
    remote
        .issuance(&url, Role::Issuer, ISSUER)?
        .cancel_licence(issuance::CancelLicenceRequest {
            identifier: first.identifier.clone(),
            reason: "企业申请注销".into(),
            ..Default::default()
        })
        .await?;
    let second = remote.issue(&url, &code).await?;
    let mut issuance = remote.issuance(&url, Role::Admin, ADMIN)?;
    let mut lagging = None;
    for _ in 0..100 {
        let s = issuance.get_read_status(issuance::GetReadStatusRequest {}).await?.into_inner();
        if s.lag_bytes > 0 {
            lagging = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lagging = lagging.expect("the status shows the replica behind");
    assert!(lagging.replica && lagging.in_use, "{lagging:?}");
    let (outcome, detail) = verify(&mut ver, &first.identifier).await?;
    assert_eq!(outcome, O::Valid, "the paused replica has not seen the cancellation: {detail}");
    // A licence the replica does not hold yet is read from the primary.
    assert_eq!(verify(&mut ver, &second.identifier).await?.0, O::Valid, "not yet replicated: from the primary");
    // With the proof, the licence is read where the log is: the primary.
    let proved = ver
        .verify_licence(verification::VerifyLicenceRequest {
            identifier: first.identifier.clone(),
            include_inclusion_proof: true,
        })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default();
    assert_eq!(O::try_from(proved.outcome)?, O::Cancelled, "{}", proved.detail);
    // GetLicence answers from the primary unless the caller accepts lag.
    let current = remote
        .issuance(&url, Role::Issuer, ISSUER)?
        .get_licence(issuance::GetLicenceRequest { identifier: first.identifier.clone(), may_lag: false })
        .await?
        .into_inner()
        .licence
        .unwrap_or_default();
    assert_eq!(current.status, zhengzhao_proto::common::v1::LicenceStatus::Cancelled as i32);
    let out = std::process::Command::new(zhengzhao_testkit::binary("zhengzhao"))
        .args(["--server", &url, "--token", &remote.token(Role::Auditor, ADMIN)?, "read-status"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("streaming replica") && !text.contains(" 0 bytes"), "{text}");

    sqlx::query("SELECT pg_wal_replay_resume()").execute(&mut standby_conn).await?;
    caught_up(&remote, &url).await?;
    assert_eq!(verify(&mut ver, &first.identifier).await?.0, O::Cancelled, "once replayed");

    // Only administrators and auditors see where reads come from.
    let refused = remote
        .issuance(&url, Role::Consumer, CONSUMER)?
        .get_read_status(issuance::GetReadStatusRequest {})
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied);
    server.stop().await;
    Ok(())
}
