//! Service tests over gRPC against an in-process library, each run on SQLite
//! and on PostgreSQL: catalogue, issuance, signing, verification, exchange,
//! and the one authorization policy at every door.

use std::time::Duration;

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, example_definition, imported, issue, libraries, published_type, violated_fields};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library, OTHER_ISSUER};
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::definition_to_wire;
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_testkit::TestDb;

type Result = anyhow::Result<()>;

async fn verify_id(lib: &Library, id: &str) -> anyhow::Result<verification::Verification> {
    Ok(lib
        .verification(Role::Consumer, CONSUMER)
        .verify_licence(verification::VerifyLicenceRequest {
            identifier: id.to_owned(),
            include_inclusion_proof: false,
        })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default())
}

async fn verify_jws(lib: &Library, jws: &str) -> anyhow::Result<verification::Verification> {
    Ok(lib
        .verification(Role::Consumer, CONSUMER)
        .verify_document(verification::VerifyDocumentRequest { jws: jws.to_owned() })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default())
}

fn outcome(v: &verification::Verification) -> verification::VerificationOutcome {
    verification::VerificationOutcome::try_from(v.outcome).unwrap_or_default()
}

#[tokio::test]
async fn catalogue_defines_publishes_and_pages() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let mut admin = lib.catalog(Role::Admin, ADMIN);
        // Only administrators define types; a refused call creates nothing.
        let refused = lib
            .catalog(Role::Issuer, ISSUER)
            .create_licence_type(catalog::CreateLicenceTypeRequest {
                definition: Some(definition_to_wire(&example_definition())),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{engine}");
        let mut bad = example_definition();
        bad.issuers = vec!["not-a-code".into()];
        let invalid = admin
            .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&bad)) })
            .await
            .unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument, "{engine}");
        assert_eq!(violated_fields(&invalid), vec!["issuers[0]".to_owned()], "{engine}");
        let empty = admin.list_licence_types(catalog::ListLicenceTypesRequest::default()).await?.into_inner();
        assert!(empty.licence_types.is_empty(), "{engine}: refused calls created a type");

        // Codes are assigned in order under the defining authority.
        let mut codes = Vec::new();
        for i in 0..3 {
            // One definition (name and authority) is one type: each gets its own name.
            let mut def = example_definition();
            def.name = format!("{}{i}", def.name);
            let t = admin
                .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&def)) })
                .await?
                .into_inner()
                .licence_type
                .unwrap_or_default();
            assert_eq!(t.status, catalog::LicenceTypeStatus::Draft as i32);
            codes.push(t.definition.unwrap_or_default().code);
        }
        assert_eq!(codes, vec!["11100000000013338W001", "11100000000013338W002", "11100000000013338W003"], "{engine}");

        // A draft cannot be issued; publishing makes it issuable.
        let draft_refused = issue(&lib, draft(&codes[0])).await.unwrap_err();
        assert_eq!(draft_refused.code(), Code::FailedPrecondition, "{engine}");
        assert!(draft_refused.message().contains("draft"), "{engine}: {}", draft_refused.message());
        let published = admin
            .publish_licence_type(catalog::PublishLicenceTypeRequest { code: codes[0].clone() })
            .await?
            .into_inner();
        assert_eq!(published.licence_type.unwrap_or_default().status, catalog::LicenceTypeStatus::Published as i32);
        issue(&lib, draft(&codes[0])).await?;

        // Stable pagination.
        let page1 = admin
            .list_licence_types(catalog::ListLicenceTypesRequest { page_size: 2, ..Default::default() })
            .await?
            .into_inner();
        assert_eq!(page1.licence_types.len(), 2);
        let page2 = admin
            .list_licence_types(catalog::ListLicenceTypesRequest {
                page_size: 2,
                page_token: page1.next_page_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(page2.licence_types.len(), 1);
        assert!(page2.next_page_token.is_empty());
        assert_eq!(page2.licence_types[0].definition.as_ref().map(|d| d.code.as_str()), Some("11100000000013338W003"));

        let missing = admin
            .get_licence_type(catalog::GetLicenceTypeRequest {
                code: "11100000000013338W999".into(),
                template_version: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        let malformed = admin
            .get_licence_type(catalog::GetLicenceTypeRequest { code: "x".into(), template_version: 0 })
            .await
            .unwrap_err();
        assert_eq!(malformed.code(), Code::InvalidArgument);
    }
    Ok(())
}

#[tokio::test]
async fn issuance_checks_the_template_and_names_each_field() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let mut d = draft(&code);
        d.face_fields.remove("business_scope");
        d.face_fields.insert("permit_number".into(), "XX1".into());
        d.face_fields.insert("staff_count".into(), "many".into());
        d.face_fields.insert("colour".into(), "red".into());
        if let Some(h) = d.holder.as_mut() {
            h.id_number = "91350100M000100Y44".into();
        }
        d.area_code = "35".into();
        let e = issue(&lib, d).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{engine}");
        let mut fields = violated_fields(&e);
        fields.sort();
        assert_eq!(
            fields,
            vec![
                "area_code",
                "face_fields.business_scope",
                "face_fields.colour",
                "face_fields.permit_number",
                "face_fields.staff_count",
                "holder.id_number"
            ],
            "{engine}"
        );
        // Nothing was recorded: the next good issue is the feed's first event.
        let good = issue(&lib, draft(&code)).await?;
        let history = lib
            .issuance(Role::Issuer, ISSUER)
            .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: good.identifier.clone() })
            .await?
            .into_inner();
        assert_eq!(history.events.len(), 1);
        assert_eq!(history.events[0].sequence, 1, "{engine}");
        // The identifier is a standard GB/T 36904 one, with a version of 001.
        let id = zhengzhao_core::LicenceId::parse(&good.identifier)?;
        assert_eq!(id.type_code().as_str(), code);
        assert_eq!(id.issuer().as_str(), ISSUER);
        assert_eq!(id.version(), 1);
        // Dates: the end date comes from the type's 5-year range, and a later one is refused.
        let doc: serde_json::Value = serde_json::from_str(&good.document_json)?;
        assert_eq!(doc["validUntil"], "2031-11-26");
        let mut too_long = draft(&code);
        too_long.valid_until = "2031-11-27".into();
        let e = issue(&lib, too_long).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["valid_until".to_owned()]);
        // Unknown type.
        let e = issue(&lib, draft("11100000000013338W999")).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["type_code".to_owned()], "{engine}");
    }
    Ok(())
}

#[tokio::test]
async fn only_listed_issuers_issue_and_only_for_themselves() -> Result {
    for lib in libraries().await? {
        let code = published_type(&lib).await?;
        for (role, agency) in
            [(Role::Issuer, OTHER_ISSUER), (Role::Consumer, CONSUMER), (Role::Admin, ADMIN), (Role::Auditor, ISSUER)]
        {
            let e = lib
                .issuance(role, agency)
                .issue_licence(issuance::IssueLicenceRequest {
                    draft: Some(draft(&code)),
                    idempotency_key: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{} {role} {agency}", lib.db.engine());
        }
        // Signing is reserved to the issuance service.
        let e = lib
            .signing(Role::Issuer, ISSUER)
            .sign_document(signing::SignDocumentRequest { issuer_code: ISSUER.into(), payload: b"{}".to_vec() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    Ok(())
}

#[tokio::test]
async fn cancel_follows_the_transition_table_and_history_is_ordered() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        let cancel = |reason: &str| issuance::CancelLicenceRequest {
            identifier: l.identifier.clone(),
            reason: reason.into(),
            occurred_at: None,
            idempotency_key: String::new(),
        };
        let e = lib.issuance(Role::Issuer, ISSUER).cancel_licence(cancel("  ")).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["reason".to_owned()], "{engine}");
        for (role, agency) in [(Role::Consumer, CONSUMER), (Role::Issuer, OTHER_ISSUER)] {
            let e = lib.issuance(role, agency).cancel_licence(cancel("停业")).await.unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        }
        let done = lib.issuance(Role::Issuer, ISSUER).cancel_licence(cancel("停业")).await?.into_inner();
        assert_eq!(done.licence.unwrap_or_default().status, common::LicenceStatus::Cancelled as i32);
        let again = lib.issuance(Role::Issuer, ISSUER).cancel_licence(cancel("停业")).await.unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{engine}");
        assert!(again.message().contains("cancelled (04)"), "{engine}: {}", again.message());
        let h = lib
            .issuance(Role::Auditor, ADMIN)
            .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: l.identifier.clone() })
            .await?
            .into_inner();
        let kinds: Vec<i32> = h.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![issuance::EventKind::Issue as i32, issuance::EventKind::Cancel as i32], "{engine}");
        assert!(h.events[0].sequence < h.events[1].sequence);
        assert_eq!(h.events[1].reason, "停业");
        assert_eq!(h.events[1].actor, format!("issuer@{ISSUER}"));
        // Consumers read licences only through the exchange.
        let e = lib
            .issuance(Role::Consumer, CONSUMER)
            .get_licence(issuance::GetLicenceRequest { identifier: l.identifier.clone(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    Ok(())
}

#[tokio::test]
async fn retries_with_an_idempotency_key_change_nothing() -> Result {
    for lib in libraries().await? {
        let code = published_type(&lib).await?;
        let mut c = lib.issuance(Role::Issuer, ISSUER);
        let req = issuance::IssueLicenceRequest { draft: Some(draft(&code)), idempotency_key: "batch-7-row-1".into() };
        let first = c.issue_licence(req.clone()).await?.into_inner().licence.unwrap_or_default();
        let second = c.issue_licence(req.clone()).await?.into_inner().licence.unwrap_or_default();
        assert_eq!(first.identifier, second.identifier, "{}", lib.db.engine());
        let mut other = req.clone();
        if let Some(d) = other.draft.as_mut() {
            d.issuer_name = "另一个机构".into();
        }
        let e = c.issue_licence(other).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        let h = c
            .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: first.identifier })
            .await?
            .into_inner();
        assert_eq!(h.events.len(), 1);
    }
    Ok(())
}

#[tokio::test]
async fn verification_names_every_outcome() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        let v = verify_id(&lib, &l.identifier).await?;
        assert_eq!(outcome(&v), verification::VerificationOutcome::Valid, "{engine}: {}", v.detail);
        assert_eq!(v.key_id, l.key_id);
        assert_eq!(outcome(&verify_jws(&lib, &l.jws).await?), verification::VerificationOutcome::Valid);

        // Tampered payload.
        let parts: Vec<&str> = l.jws.split('.').collect();
        let mut doc: serde_json::Value = serde_json::from_str(&l.document_json)?;
        doc["holder"]["name"] = "冒名公司".into();
        let forged_payload = zhengzhao_crypto::b64url(&zhengzhao_core::canonical_json(&doc)?);
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            outcome(&verify_jws(&lib, &forged).await?),
            verification::VerificationOutcome::SignatureInvalid,
            "{engine}"
        );
        // Unknown key.
        let header = zhengzhao_crypto::b64url(br#"{"alg":"ES256","kid":"91350100M000100Y43.es256.000000000000"}"#);
        let unknown = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(outcome(&verify_jws(&lib, &unknown).await?), verification::VerificationOutcome::KeyUnknown);
        // Not a JWS.
        assert_eq!(outcome(&verify_jws(&lib, "not.a-jws").await?), verification::VerificationOutcome::Malformed);
        // Genuinely signed by the issuer's key but not what the library holds.
        let service = lib.service_token(zhengzhao_auth::ServiceName::Issuance)?;
        let mut signer = zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient::with_interceptor(
            lib.channel(),
            zhengzhao_auth::BearerToken::new(&service)?,
        );
        let altered = signer
            .sign_document(signing::SignDocumentRequest {
                issuer_code: ISSUER.into(),
                payload: zhengzhao_core::canonical_json(&doc)?,
            })
            .await?
            .into_inner();
        assert_eq!(
            outcome(&verify_jws(&lib, &altered.jws).await?),
            verification::VerificationOutcome::Mismatch,
            "{engine}"
        );
        doc["identifier"] = l.identifier.replace(".001.", ".002.").into();
        let unheld = signer
            .sign_document(signing::SignDocumentRequest {
                issuer_code: ISSUER.into(),
                payload: zhengzhao_core::canonical_json(&doc)?,
            })
            .await?
            .into_inner();
        assert_eq!(outcome(&verify_jws(&lib, &unheld.jws).await?), verification::VerificationOutcome::NotFound);
        // Not found by identifier; malformed identifier is a bad argument.
        let absent = zhengzhao_core::LicenceId::new(
            zhengzhao_core::TypeCode::parse(&code).map_err(anyhow::Error::msg)?,
            zhengzhao_core::Uscc::parse(ISSUER)?,
            "NOSUCHSERIAL",
            1,
        )?;
        assert_eq!(outcome(&verify_id(&lib, &absent.to_string()).await?), verification::VerificationOutcome::NotFound);
        let e = lib
            .verification(Role::Consumer, CONSUMER)
            .verify_licence(verification::VerifyLicenceRequest {
                identifier: "1.2.3".into(),
                include_inclusion_proof: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        // Expired (derived at read time) and not yet valid.
        let mut old = draft(&code);
        old.issue_date = "2020-01-01".into();
        old.valid_until = "2020-12-31".into();
        let old = imported(&lib, old).await?;
        assert_eq!(outcome(&verify_id(&lib, &old).await?), verification::VerificationOutcome::Expired);
        let mut future = draft(&code);
        future.valid_from = "2099-01-01".into();
        let future = issue(&lib, future).await?;
        assert_eq!(
            outcome(&verify_id(&lib, &future.identifier).await?),
            verification::VerificationOutcome::NotYetValid
        );
        // Cancelled.
        lib.issuance(Role::Issuer, ISSUER)
            .cancel_licence(issuance::CancelLicenceRequest {
                identifier: l.identifier.clone(),
                reason: "注销".into(),
                occurred_at: None,
                idempotency_key: String::new(),
            })
            .await?;
        assert_eq!(outcome(&verify_id(&lib, &l.identifier).await?), verification::VerificationOutcome::Cancelled);
        assert_eq!(outcome(&verify_jws(&lib, &l.jws).await?), verification::VerificationOutcome::Cancelled, "{engine}");
    }
    Ok(())
}

#[tokio::test]
async fn exchange_requires_a_use_cause_and_logs_every_access() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        lib.exchange(Role::Admin, ADMIN)
            .create_usage_entry(exchange::CreateUsageEntryRequest {
                agency_code: CONSUMER.into(),
                type_code: code.clone(),
                service_item_code: "11100000000013338W3000111005000".into(),
                terms: Some(exchange::UsageTerms { purpose: "核验".into(), all_fields: true, ..Default::default() }),
                ..Default::default()
            })
            .await?;
        let fetch = |cause: &str| exchange::FetchLicenceRequest {
            identifier: l.identifier.clone(),
            r#use: Some(exchange::UseContext {
                use_cause: cause.into(),
                service_item_code: "11100000000013338W3000111005000".into(),
                case_number: "2026-0001".into(),
            }),
        };
        let mut consumer = lib.exchange(Role::Consumer, CONSUMER);
        let e = consumer.fetch_licence(fetch("")).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["use.use_cause".to_owned()], "{engine}");
        let e = consumer.fetch_licence(fetch(&"因".repeat(201))).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["use.use_cause".to_owned()]);
        let e = lib.exchange(Role::Issuer, ISSUER).fetch_licence(fetch("查看")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let got = consumer.fetch_licence(fetch(&"因".repeat(200))).await?.into_inner().used.unwrap_or_default();
        let got = got.licence.unwrap_or_default();
        assert_eq!(got.identifier, l.identifier);
        assert_eq!(got.jws, l.jws);
        let mut absent = fetch("办理");
        absent.identifier = l.identifier.replace(".001.", ".002.");
        let e = consumer.fetch_licence(absent).await.unwrap_err();
        assert!(matches!(e.code(), Code::NotFound | Code::InvalidArgument), "{engine}: {e:?}");

        let e = consumer.list_usage_log(exchange::ListUsageLogRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let log = lib
            .exchange(Role::Auditor, ADMIN)
            .list_usage_log(exchange::ListUsageLogRequest::default())
            .await?
            .into_inner();
        let decisions: Vec<(i32, String)> = log.records.iter().map(|r| (r.decision, r.consumer_role.clone())).collect();
        let granted = exchange::UsageDecision::Granted as i32;
        let refused = exchange::UsageDecision::Refused as i32;
        assert_eq!(
            decisions,
            vec![
                (refused, "consumer".into()),
                (granted, "consumer".into()),
                (refused, "issuer".into()),
                (refused, "consumer".into()),
                (refused, "consumer".into()),
            ],
            "{engine}"
        );
        assert_eq!(log.records[1].use_cause, "因".repeat(200));
        assert_eq!(log.records[1].case_number, "2026-0001");
        assert!(log.records[4].refusal_reason.contains("use_cause"));
        assert!(log.records.iter().all(|r| r.accessed_at.is_some()));
        // Pages are stable and newest first.
        let page = lib
            .exchange(Role::Admin, ADMIN)
            .list_usage_log(exchange::ListUsageLogRequest {
                identifier: l.identifier.clone(),
                page_size: 2,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(page.records.len(), 2);
        let rest = lib
            .exchange(Role::Admin, ADMIN)
            .list_usage_log(exchange::ListUsageLogRequest {
                identifier: l.identifier.clone(),
                page_size: 10,
                page_token: page.next_page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(rest.records.len(), 2, "{engine}: the not-found access is logged under its own identifier");
    }
    Ok(())
}

#[tokio::test]
async fn calls_without_valid_credentials_are_unauthenticated_and_change_nothing() -> Result {
    for lib in libraries().await? {
        let code_before = lib
            .catalog(Role::Admin, ADMIN)
            .list_licence_types(catalog::ListLicenceTypesRequest::default())
            .await?
            .into_inner();
        let def = Some(definition_to_wire(&example_definition()));
        let mut anonymous =
            zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient::new(lib.channel());
        let e = anonymous
            .create_licence_type(catalog::CreateLicenceTypeRequest { definition: def.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let other_library =
            zhengzhao_auth::TokenAuthority::operator(zhengzhao_crypto::Es256KeyPair::generate(), lib.tokens.kid());
        let expired = lib.tokens.mint(ADMIN, Role::Admin, Duration::from_secs(0))?;
        for token in [other_library.mint(ADMIN, Role::Admin, Duration::from_secs(60))?, expired, "garbage".to_owned()] {
            let mut c = zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient::with_interceptor(
                lib.channel(),
                zhengzhao_auth::BearerToken::new(&token)?,
            );
            let e =
                c.create_licence_type(catalog::CreateLicenceTypeRequest { definition: def.clone() }).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
        }
        let after = lib
            .catalog(Role::Admin, ADMIN)
            .list_licence_types(catalog::ListLicenceTypesRequest::default())
            .await?
            .into_inner();
        assert_eq!(code_before.licence_types.len(), after.licence_types.len());
        // Health answers without credentials, for every service.
        let mut health = tonic_health::pb::health_client::HealthClient::new(lib.channel());
        for svc in [
            "",
            "zhengzhao.catalog.v1.CatalogService",
            "zhengzhao.issuance.v1.IssuanceService",
            "zhengzhao.gateway.v1.GatewayService",
        ] {
            let r = health.check(tonic_health::pb::HealthCheckRequest { service: svc.into() }).await?.into_inner();
            assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{svc}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn issuer_keys_are_encrypted_at_rest_and_published_without_private_parts() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        let keys = lib
            .signing(Role::Consumer, CONSUMER)
            .list_public_keys(signing::ListPublicKeysRequest::default())
            .await?
            .into_inner();
        assert_eq!(keys.keys.len(), 1);
        assert_eq!(keys.keys[0].key_id, l.key_id);
        let jwks: serde_json::Value = serde_json::from_str(&keys.jwks_json)?;
        assert!(jwks["keys"][0].get("d").is_none(), "{engine}: JWKS leaks a private key");
        // What the database holds is an envelope that opens only under the master key.
        let db = zhengzhao_store::open(&lib.db.store(), "signing", &zhengzhao_signing::MIGRATIONS).await?;
        let (kid, envelope): (String, Vec<u8>) =
            sqlx::query_as("SELECT key_id, private_envelope FROM issuer_keys").fetch_one(&db.pool).await?;
        let secret = lib.keys.master.as_ref().ok_or_else(|| anyhow::anyhow!("no master key"))?.open(&kid, &envelope)?;
        assert_eq!(secret.len(), 32);
        assert!(!envelope.windows(32).any(|w| w == secret.as_slice()), "{engine}: private key stored in the clear");
        assert!(zhengzhao_crypto::MasterKey::generate().open(&kid, &envelope).is_err());
        // The key in the database is the one that signed the licence.
        let key = zhengzhao_crypto::Es256KeyPair::from_secret_bytes(&secret)?;
        let parsed = zhengzhao_crypto::jws::parse(&l.jws)?;
        assert!(key.public_key().verify(parsed.signing_input.as_bytes(), &parsed.signature));
    }
    Ok(())
}

#[tokio::test]
async fn reflection_lists_every_service() -> Result {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let lib = Library::start(TestDb::sqlite()?).await?;
    let mut client = ServerReflectionClient::new(lib.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client.server_reflection_info(tokio_stream::iter(vec![request])).await?.into_inner();
    let response = responses.message().await?.ok_or_else(|| anyhow::anyhow!("no reflection response"))?;
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        anyhow::bail!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for svc in [
        "zhengzhao.catalog.v1.CatalogService",
        "zhengzhao.issuance.v1.IssuanceService",
        "zhengzhao.signing.v1.SigningService",
        "zhengzhao.verification.v1.VerificationService",
        "zhengzhao.exchange.v1.ExchangeService",
        "zhengzhao.gateway.v1.GatewayService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == svc), "{svc} missing from {names:?}");
    }
    Ok(())
}
