//! The read path's caches never outlive what they cache: a verifying
//! process keeps issuer keys until the signing service says a key changed,
//! so a compromise (or a new key) shows in the very next verification —
//! across processes on PostgreSQL, where the verification service learns of
//! key changes over `WatchKeyEvents`.

use std::time::Duration;

use time::OffsetDateTime;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::{BearerToken, Role, ServiceName};
use zhengzhao_e2e::fixtures::{draft, example_definition};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER};
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::convert::{definition_to_wire, timestamp};
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::VerificationOutcome as O;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;
use zhengzhao_server::keys;
use zhengzhao_testkit::{ServerProcess, TestDb};

type Authed = InterceptedService<Channel, BearerToken>;

fn authed(url: &str, token: &str) -> anyhow::Result<(Channel, BearerToken)> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect_lazy();
    Ok((channel, BearerToken::new(token)?))
}

async fn verify(v: &mut VerificationServiceClient<Authed>, id: &str) -> anyhow::Result<(O, String)> {
    let r = v
        .verify_licence(verification::VerifyLicenceRequest { identifier: id.to_owned(), include_inclusion_proof: false })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default();
    Ok((O::try_from(r.outcome)?, r.detail))
}

#[tokio::test]
async fn split_services_see_a_key_change_in_the_next_verification() -> anyhow::Result<()> {
    let db = TestDb::postgres().await?;
    let url = db.url().unwrap_or_default().to_owned();
    let work = tempfile::tempdir()?;
    let root = work.path().join("keys");
    keys::init_split(&root)?;
    let args = |name: &str, extra: &[String]| -> Vec<String> {
        let mut v: Vec<String> =
            ["--listen", "127.0.0.1:0", "--database-url", &url].iter().map(|s| (*s).to_owned()).collect();
        v.push("--data-dir".into());
        v.push(root.join(name).display().to_string());
        v.extend_from_slice(extra);
        v
    };
    let catalog_p = ServerProcess::start("zhengzhao-catalog", &args("catalog", &[]), &[]).await?;
    let signing_p =
        ServerProcess::start("zhengzhao-signing", &args("signing", &["--catalog-url".into(), catalog_p.url()]), &[])
            .await?;
    let peers = ["--catalog-url".into(), catalog_p.url(), "--signing-url".into(), signing_p.url()];
    let issuance_p = ServerProcess::start("zhengzhao-issuance", &args("issuance", &peers), &[]).await?;
    let mut with_issuance = peers.to_vec();
    with_issuance.extend(["--issuance-url".into(), issuance_p.url()]);
    let verification_p = ServerProcess::start("zhengzhao-verification", &args("verification", &with_issuance), &[]).await?;

    let operator = keys::operator_authority(&root.join("operator"))?;
    let hour = Duration::from_secs(3600);
    let admin = operator.mint(ADMIN, Role::Admin, hour)?;
    let issuer = operator.mint(ISSUER, Role::Issuer, hour)?;
    let consumer = operator.mint(CONSUMER, Role::Consumer, hour)?;

    let (ch, b) = authed(&catalog_p.url(), &admin)?;
    let mut cat = CatalogServiceClient::with_interceptor(ch, b);
    let created = cat
        .create_licence_type(catalog::CreateLicenceTypeRequest {
            definition: Some(definition_to_wire(&example_definition())),
        })
        .await?
        .into_inner();
    let code = created.licence_type.and_then(|t| t.definition).map(|d| d.code).unwrap_or_default();
    cat.publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() }).await?;
    let (ch, b) = authed(&issuance_p.url(), &issuer)?;
    let mut iss = IssuanceServiceClient::with_interceptor(ch, b);
    let (ch, b) = authed(&signing_p.url(), &admin)?;
    let mut keys_admin = SigningServiceClient::with_interceptor(ch, b);
    let (ch, b) = authed(&verification_p.url(), &consumer)?;
    let mut ver = VerificationServiceClient::with_interceptor(ch, b);

    let issue = |iss: &mut IssuanceServiceClient<Authed>| {
        let mut iss = iss.clone();
        let d = draft(&code);
        async move {
            anyhow::Ok(
                iss.issue_licence(issuance::IssueLicenceRequest { draft: Some(d), ..Default::default() })
                    .await?
                    .into_inner()
                    .licence
                    .unwrap_or_default(),
            )
        }
    };
    // Three rounds: each verifies (so the verification process caches the
    // issuer's keys), then changes a key and verifies again at once.
    for round in 0..3 {
        let licence = issue(&mut iss).await?;
        for _ in 0..3 {
            assert_eq!(verify(&mut ver, &licence.identifier).await?.0, O::Valid, "round {round}");
        }
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
        let next = issue(&mut iss).await?;
        assert_eq!(Some(next.key_id.clone()), compromised.replacement.map(|k| k.key_id));
        assert_eq!(verify(&mut ver, &next.identifier).await?.0, O::Valid, "round {round}: the new key is known");
    }

    // Nobody but the caching services may hold key changes back.
    for (role, agency) in [(Role::Admin, ADMIN), (Role::Consumer, CONSUMER), (Role::Issuer, ISSUER)] {
        let (ch, b) = authed(&signing_p.url(), &operator.mint(agency, role, hour)?)?;
        let (_acks, rx) = tokio::sync::mpsc::channel::<signing::WatchKeyEventsRequest>(1);
        let refused = SigningServiceClient::with_interceptor(ch, b)
            .watch_key_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::PermissionDenied, "{role}");
    }
    let issuance_key = std::fs::read_to_string(root.join("issuance").join(keys::service_key_file(ServiceName::Issuance)))?;
    let issuance_token = zhengzhao_auth::TokenAuthority::service(
        zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&issuance_key)?,
        ServiceName::Issuance,
    )
    .mint(ADMIN, Role::Service(ServiceName::Issuance), Duration::from_secs(60))?;
    let (ch, b) = authed(&signing_p.url(), &issuance_token)?;
    let (_acks, rx) = tokio::sync::mpsc::channel::<signing::WatchKeyEventsRequest>(1);
    let refused = SigningServiceClient::with_interceptor(ch, b)
        .watch_key_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "the issuance service");

    for p in [verification_p, issuance_p, signing_p, catalog_p] {
        p.stop().await;
    }
    Ok(())
}
