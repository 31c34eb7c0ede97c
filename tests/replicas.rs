//! District-to-city replication in-process, on both engines: the sync job
//! brings a district's licences and events to the city unchanged; the city
//! refuses what its log does not vouch for and stops that district.

use std::time::Duration;

use zhengzhao_auth::{BearerToken, Role};
use zhengzhao_e2e::fixtures::{draft, event, issue, published_type, record};
use zhengzhao_e2e::{ADMIN, Library};
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_testkit::TestDb;

type Client =
    IssuanceServiceClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>>;

fn client(lib: &Library, token: &str) -> anyhow::Result<Client> {
    Ok(IssuanceServiceClient::with_interceptor(lib.channel(), BearerToken::new(token)?))
}

async fn replica(city: &Library, token: &str) -> anyhow::Result<Option<issuance::Replica>> {
    Ok(client(city, token)?
        .list_replicas(issuance::ListReplicasRequest { library: "d1".into() })
        .await?
        .into_inner()
        .replicas
        .into_iter()
        .next())
}

/// An administrator resumes d1's sync (with `repin`, forgetting its log key).
async fn resume(city: &Library, admin: &str, repin: bool) -> anyhow::Result<issuance::Replica> {
    let r = client(city, admin)?
        .resume_replica(issuance::ResumeReplicaRequest { library: "d1".into(), repin_log_key: repin })
        .await?
        .into_inner();
    r.replica.ok_or_else(|| anyhow::anyhow!("no replica in the answer"))
}

async fn read(
    lib: &Library,
    token: &str,
    after: u64,
    library: &str,
) -> anyhow::Result<issuance::ReadReplicaFeedResponse> {
    Ok(client(lib, token)?
        .read_replica_feed(issuance::ReadReplicaFeedRequest {
            after_sequence: after,
            limit: 1000,
            wait_seconds: 0,
            library: library.into(),
            max_bytes: 0,
        })
        .await?
        .into_inner())
}

/// A batch for the city as the sync job would make it.
async fn batch(
    district: &Library,
    token: &str,
    after: u64,
    tree_size: u64,
) -> anyhow::Result<issuance::ApplyReplicaRequest> {
    let b = read(district, token, after, "").await?;
    let cp = client(district, token)?.get_checkpoint(issuance::GetCheckpointRequest {}).await?.into_inner();
    let checkpoint = cp.checkpoint.clone();
    let size = tree_size + b.events.len() as u64;
    let proof_from_batch = match &checkpoint {
        Some(c) if size < c.tree_size && size > 0 => {
            client(district, token)?
                .get_consistency_proof(issuance::GetConsistencyProofRequest {
                    first_tree_size: size,
                    second_tree_size: c.tree_size,
                })
                .await?
                .into_inner()
                .hashes
        }
        _ => Vec::new(),
    };
    Ok(issuance::ApplyReplicaRequest {
        library: "d1".into(),
        remote_library: b.library,
        after_sequence: after,
        events: b.events,
        licences: b.licences,
        checkpoint,
        library_jwk_json: cp.library_jwk_json,
        proof_from_batch,
        proof_from_last: Vec::new(),
        last_checkpoint_size: 0,
        head_sequence: b.head_sequence,
        next_recorded_at: b.next_recorded_at,
    })
}

#[tokio::test]
async fn the_sync_job_replicates_a_district_and_the_city_checks_every_batch() -> anyhow::Result<()> {
    for (city_db, district_db) in
        [(TestDb::sqlite()?, TestDb::sqlite()?), (TestDb::postgres().await?, TestDb::postgres().await?)]
    {
        let engine = city_db.engine();
        let city = Library::start(city_db).await?;
        let district = Library::start_district(district_db, "d1", &city).await?;
        let sync = city.token(Role::Sync, ADMIN);
        let code = published_type(&district).await?;
        let a = issue(&district, draft(&code)).await?;
        record(&district, event(&a.identifier, issuance::EventKind::ReportLoss, "遗失")).await?;

        // A hostile batch: an extra licence row no entry vouches for.
        let mut forged = batch(&district, &sync, 0, 0).await?;
        let mut extra = forged.licences[0].clone();
        extra.identifier = extra.identifier.replace(".001.", ".002.");
        forged.licences.push(extra);
        let refused = client(&city, &sync)?.apply_replica(forged).await.expect_err("forged row");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{engine}: {refused:?}");
        let r = replica(&city, &sync).await?.expect("the replica was started");
        assert_eq!(r.state, issuance::ReplicaState::Stopped as i32, "{engine}");
        assert!(r.reason.contains("no entry of the batch"), "{engine}: {}", r.reason);
        assert_eq!(r.cursor, 0, "{engine}: nothing applied");
        // Only a sync token applies; an administrator resumes.
        let admin = city.token(Role::Admin, ADMIN);
        let denied =
            client(&city, &admin)?.apply_replica(batch(&district, &sync, 0, 0).await?).await.expect_err("admin");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{engine}");
        resume(&city, &admin, false).await?;

        // A batch whose document is not what was signed.
        let mut forged = batch(&district, &sync, 0, 0).await?;
        forged.licences[0].document_json = forged.licences[0].document_json.replace("示例", "伪造");
        client(&city, &sync)?.apply_replica(forged).await.expect_err("forged document");
        assert!(
            replica(&city, &sync).await?.expect("replica").reason.contains("not what its signature signed"),
            "{engine}"
        );
        resume(&city, &admin, false).await?;

        // A document not in its canonical form (row and payload agreeing):
        // verification relies on held documents being canonical.
        let mut forged = batch(&district, &sync, 0, 0).await?;
        let spaced = format!(" {}", forged.licences[0].document_json);
        let mut parts: Vec<String> = forged.licences[0].jws.split('.').map(str::to_owned).collect();
        parts[1] = zhengzhao_crypto::b64url(spaced.as_bytes());
        forged.licences[0].jws = parts.join(".");
        forged.licences[0].document_json = spaced;
        client(&city, &sync)?.apply_replica(forged).await.expect_err("non-canonical document");
        assert!(replica(&city, &sync).await?.expect("replica").reason.contains("not in canonical form"), "{engine}");
        resume(&city, &admin, false).await?;

        // A row whose indexed columns are not what its signed document says.
        let mut forged = batch(&district, &sync, 0, 0).await?;
        forged.licences[0].holder_id_number = "110101199003074477".into();
        client(&city, &sync)?.apply_replica(forged).await.expect_err("forged holder column");
        assert!(
            replica(&city, &sync).await?.expect("replica").reason.contains("not what its signed document says"),
            "{engine}"
        );
        resume(&city, &admin, false).await?;

        // Another log key than the one pinned stops it; an administrator may
        // have the next batch re-pin (the history checks still hold).
        let mut forged = batch(&district, &sync, 0, 0).await?;
        forged.library_jwk_json = client(&city, &sync)?
            .get_checkpoint(issuance::GetCheckpointRequest {})
            .await?
            .into_inner()
            .library_jwk_json;
        client(&city, &sync)?.apply_replica(forged).await.expect_err("another log key");
        assert!(replica(&city, &sync).await?.expect("replica").reason.contains("not the one pinned"), "{engine}");
        let resumed = resume(&city, &admin, true).await?;
        assert_eq!(resumed.library_jwk_json, "", "{engine}: the key is forgotten until the next batch");

        // The genuine batch applies once; the same batch again is refused (cursor).
        let good = batch(&district, &sync, 0, 0).await?;
        let applied = client(&city, &sync)?.apply_replica(good.clone()).await?.into_inner().replica.expect("replica");
        assert_eq!((applied.cursor, applied.tree_size, applied.events_applied), (2, 2, 2), "{engine}");
        let again = client(&city, &sync)?.apply_replica(good).await.expect_err("re-sent");
        assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{engine}");
        assert_eq!(replica(&city, &sync).await?.expect("replica").state, issuance::ReplicaState::Ok as i32, "{engine}");

        // The sync job follows from there.
        let b = issue(&district, {
            let mut d = draft(&code);
            d.serial = "SECOND1".into();
            d
        })
        .await?;
        let job = zhengzhao_sync::SyncJob {
            city: city.channel(),
            city_signing: None,
            city_catalog: None,
            districts: vec![zhengzhao_sync::District {
                name: "d1".into(),
                url: format!("http://{}", district.addr),
                channel: district.channel(),
            }],
            token: BearerToken::new(&sync)?,
            batch: 1,
            refresh: Duration::from_secs(1),
        };
        let running = tokio::spawn(job.run(std::future::pending()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while replica(&city, &sync).await?.is_none_or(|r| r.cursor < 3) {
            assert!(tokio::time::Instant::now() < deadline, "{engine}: the job did not catch up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The city holds the district's licences unchanged, and verifies them
        // with the district's keys; writes there are refused.
        let held = city
            .issuance(Role::Admin, ADMIN)
            .get_licence(issuance::GetLicenceRequest { identifier: b.identifier.clone(), ..Default::default() })
            .await?
            .into_inner();
        let held = held.licence.expect("licence");
        assert_eq!(
            (held.jws.as_str(), held.document_json.as_str()),
            (b.jws.as_str(), b.document_json.as_str()),
            "{engine}"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = zhengzhao_e2e::fixtures::verify_outcome(&city, &b.identifier).await?;
            if v.0 == zhengzhao_proto::verification::v1::VerificationOutcome::Valid {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{engine}: the city never verified the district's licence ({v:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let refused =
            record(&city, event(&a.identifier, issuance::EventKind::WithdrawLoss, "找回")).await.expect_err("replica");
        assert!(refused.message().contains("kept by district d1"), "{engine}: {refused:?}");
        // The audit view lists the replica in the district's order.
        let copy = read(&city, &sync, 0, "d1").await?;
        let own = read(&district, &sync, 0, "").await?;
        let seqs = |r: &issuance::ReadReplicaFeedResponse| {
            r.events.iter().map(|e| (e.event.as_ref().map(|e| e.sequence), e.log_index)).collect::<Vec<_>>()
        };
        assert_eq!(seqs(&copy), seqs(&own), "{engine}");
        running.abort();
    }
    Ok(())
}

#[tokio::test]
async fn a_district_cannot_take_over_an_issuer_the_city_keeps_itself() -> anyhow::Result<()> {
    let city = Library::start(TestDb::sqlite()?).await?;
    let district = Library::start_district(TestDb::sqlite()?, "d1", &city).await?;
    let sync = city.token(Role::Sync, ADMIN);
    // The same issuer has licences of its own on the city, and in the district.
    let city_code = published_type(&city).await?;
    issue(&city, {
        let mut d = draft(&city_code);
        d.serial = "CITYOWN1".into();
        d
    })
    .await?;
    let code = published_type(&district).await?;
    issue(&district, draft(&code)).await?;
    let refused = client(&city, &sync)?.apply_replica(batch(&district, &sync, 0, 0).await?).await.expect_err("taken");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let r = replica(&city, &sync).await?.expect("replica");
    assert_eq!(r.state, issuance::ReplicaState::Stopped as i32);
    assert!(r.reason.contains("issuer") && r.reason.contains("the city's own"), "{}", r.reason);
    assert_eq!(r.cursor, 0, "nothing applied");
    Ok(())
}
