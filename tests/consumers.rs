//! Consumers (measures, chapter 3): usage lists and applications, uses
//! decided by the list, lookups by holder, annotated copies with their PDF
//! and links, province and ministry access through the city, and the usage
//! log — each on SQLite and PostgreSQL.

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_crypto::merkle;
use zhengzhao_e2e::fixtures::*;
use zhengzhao_e2e::{ADMIN, CONSUMER, Library, OTHER_ISSUER};
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::issuance::v1 as issuance;

type Result = anyhow::Result<()>;

/// The example type's service item.
const ITEM: &str = "11100000000013338W3000111005000";
/// A provincial agency.
const PROVINCE: &str = "11350000MB01234560";
/// The example licence's holder.
const HOLDER: &str = "91350100M000100Y43";

fn use_ctx(cause: &str) -> Option<exchange::UseContext> {
    Some(exchange::UseContext {
        use_cause: cause.into(),
        service_item_code: ITEM.into(),
        case_number: "2026-0001".into(),
    })
}

fn terms(fields: &[&str]) -> Option<exchange::UsageTerms> {
    Some(exchange::UsageTerms {
        purpose: "办理食品经营许可".into(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        all_fields: fields.is_empty(),
        ..Default::default()
    })
}

async fn add_entry(
    lib: &Library,
    agency: &str,
    type_code: &str,
    fields: &[&str],
) -> std::result::Result<exchange::UsageEntry, tonic::Status> {
    lib.exchange_as(Role::Admin, ADMIN, "王五")
        .create_usage_entry(exchange::CreateUsageEntryRequest {
            agency_code: agency.into(),
            level: 0,
            type_code: type_code.into(),
            service_item_code: ITEM.into(),
            terms: terms(fields),
        })
        .await
        .map(|r| r.into_inner().entry.unwrap_or_default())
}

async fn fetch(lib: &Library, agency: &str, id: &str) -> std::result::Result<exchange::UsedLicence, tonic::Status> {
    lib.exchange_as(Role::Consumer, agency, "李四")
        .fetch_licence(exchange::FetchLicenceRequest { identifier: id.into(), r#use: use_ctx("核验经营资质") })
        .await
        .map(|r| r.into_inner().used.unwrap_or_default())
}

async fn usage_log(lib: &Library, r: exchange::ListUsageLogRequest) -> anyhow::Result<Vec<exchange::UsageRecord>> {
    Ok(lib.exchange(Role::Auditor, ADMIN).list_usage_log(r).await?.into_inner().records)
}

fn face(l: &common::Licence) -> serde_json::Map<String, serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(&l.document_json).unwrap_or_default();
    doc["faceFields"].as_object().cloned().unwrap_or_default()
}

fn other_holder(code: &str) -> issuance::LicenceDraft {
    let mut d = draft(code);
    d.holder = Some(common::Holder {
        name: "另一家食品有限公司".into(),
        id_type_code: "001".into(),
        id_number: OTHER_ISSUER.into(),
    });
    d
}

/// A second type with the same service item, under another name.
async fn second_type(lib: &Library) -> anyhow::Result<String> {
    published_type_with(lib, |d| d.name = "食品小作坊登记证".into()).await
}

#[tokio::test]
async fn usage_lists_are_administered_and_every_change_is_recorded() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        // Only administrators add entries.
        let e = lib
            .exchange(Role::Consumer, CONSUMER)
            .create_usage_entry(exchange::CreateUsageEntryRequest {
                agency_code: CONSUMER.into(),
                type_code: code.clone(),
                service_item_code: ITEM.into(),
                terms: terms(&["business_scope"]),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        // What an entry names is checked against the catalogue.
        let mut admin = lib.exchange_as(Role::Admin, ADMIN, "王五");
        let bad = |item: &str, fields: &[&str], agency: &str| exchange::CreateUsageEntryRequest {
            agency_code: agency.into(),
            level: 0,
            type_code: code.clone(),
            service_item_code: item.into(),
            terms: terms(fields),
        };
        let e = admin.create_usage_entry(bad("SX-NOT-LISTED", &["premises"], CONSUMER)).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["service_item_code"], "{engine}: {e:?}");
        let e = admin.create_usage_entry(bad(ITEM, &["no_such_field"], CONSUMER)).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["terms.fields[0]"], "{engine}: {e:?}");
        let e = admin.create_usage_entry(bad(ITEM, &["premises"], "not-a-code")).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["agency_code"]);
        let mut unknown_type = bad(ITEM, &["premises"], CONSUMER);
        unknown_type.type_code = code.replace("0001", "0999");
        let e = admin.create_usage_entry(unknown_type).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{engine}: {e:?}");
        let mut past = bad(ITEM, &["premises"], CONSUMER);
        past.terms = Some(exchange::UsageTerms {
            effective_from: "2020-01-01".into(),
            effective_until: "2020-12-31".into(),
            ..terms(&["premises"]).unwrap_or_default()
        });
        let e = admin.create_usage_entry(past).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["terms.effective_until"]);

        let entry = add_entry(&lib, CONSUMER, &code, &["business_scope", "premises"]).await?;
        assert_eq!(entry.state, exchange::UsageEntryState::Active as i32);
        assert!(entry.effective && entry.created_by.starts_with("admin@"), "{entry:?}");
        let change = |id: u64, reason: &str| exchange::SuspendUsageEntryRequest { entry_id: id, reason: reason.into() };
        let e = admin.suspend_usage_entry(change(entry.id, "")).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["reason"]);
        let e = admin.suspend_usage_entry(change(entry.id + 100, "核查")).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let s =
            admin.suspend_usage_entry(change(entry.id, "核查期间暂停")).await?.into_inner().entry.unwrap_or_default();
        assert!(!s.effective && s.state == exchange::UsageEntryState::Suspended as i32);
        let e = admin.suspend_usage_entry(change(entry.id, "again")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        admin
            .resume_usage_entry(exchange::ResumeUsageEntryRequest { entry_id: entry.id, reason: "核查完毕".into() })
            .await?;
        admin.end_usage_entry(exchange::EndUsageEntryRequest { entry_id: entry.id, reason: "事项取消".into() }).await?;
        let e = admin
            .resume_usage_entry(exchange::ResumeUsageEntryRequest { entry_id: entry.id, reason: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "an ended entry stays ended");

        // A consumer lists its own list only.
        let mut consumer = lib.exchange(Role::Consumer, CONSUMER);
        let own = consumer.list_usage_entries(exchange::ListUsageEntriesRequest::default()).await?.into_inner();
        assert_eq!(own.entries.len(), 1);
        let e = consumer
            .list_usage_entries(exchange::ListUsageEntriesRequest {
                agency_code: PROVINCE.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        // Every change is recorded: who (and which operator), when, what.
        let changes =
            admin.list_usage_list_changes(exchange::ListUsageListChangesRequest::default()).await?.into_inner().changes;
        let actions: Vec<&str> = changes.iter().map(|c| c.action.as_str()).collect();
        assert_eq!(actions, ["ended", "resumed", "suspended", "created"], "{engine}");
        assert!(changes.iter().all(|c| c.actor == format!("admin@{ADMIN}") && c.operator == "王五" && c.at.is_some()));
        assert_eq!(changes[2].reason, "核查期间暂停");
        let details: serde_json::Value = serde_json::from_str(&changes[0].details_json)?;
        assert_eq!(details["state"], "ended");
    }
    Ok(())
}

#[tokio::test]
async fn a_use_is_granted_only_by_an_effective_entry_and_shows_only_its_fields() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        // No entry: refused, saying which rule, and logged.
        let e = fetch(&lib, CONSUMER, &l.identifier).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        assert!(e.message().contains("no usage-list entry"), "{e:?}");
        // Cause, service item and case number are all required.
        let mut consumer = lib.exchange(Role::Consumer, CONSUMER);
        let e = consumer
            .fetch_licence(exchange::FetchLicenceRequest { identifier: l.identifier.clone(), r#use: None })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["use.use_cause", "use.service_item_code", "use.case_number"]);
        let long =
            exchange::FetchLicenceRequest { identifier: l.identifier.clone(), r#use: use_ctx(&"因".repeat(201)) };
        assert_eq!(violated_fields(&consumer.fetch_licence(long).await.unwrap_err()), vec!["use.use_cause"]);

        let entry = add_entry(&lib, CONSUMER, &code, &["business_scope"]).await?;
        let used = fetch(&lib, CONSUMER, &l.identifier).await?;
        let got = used.licence.clone().unwrap_or_default();
        assert_eq!(got.identifier, l.identifier);
        assert_eq!(face(&got).keys().collect::<Vec<_>>(), ["business_scope"], "{engine}");
        assert!(got.jws.is_empty(), "the signed document would show withheld fields");
        assert!(used.withheld_fields.contains(&"premises".to_owned()) && !used.whole_licence);
        assert_eq!(used.entry_id, entry.id);
        // Another agency's entry grants nothing to this one.
        let e = fetch(&lib, OTHER_ISSUER, &l.identifier).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        // A suspended entry grants nothing; resumed, it does again.
        let mut admin = lib.exchange(Role::Admin, ADMIN);
        admin
            .suspend_usage_entry(exchange::SuspendUsageEntryRequest { entry_id: entry.id, reason: "核查".into() })
            .await?;
        let e = fetch(&lib, CONSUMER, &l.identifier).await.unwrap_err();
        assert!(e.code() == Code::PermissionDenied && e.message().contains("suspended"), "{e:?}");
        admin
            .resume_usage_entry(exchange::ResumeUsageEntryRequest { entry_id: entry.id, reason: "恢复".into() })
            .await?;
        fetch(&lib, CONSUMER, &l.identifier).await?;
        // An entry for the whole licence returns the signed document.
        admin.end_usage_entry(exchange::EndUsageEntryRequest { entry_id: entry.id, reason: "换新条目".into() }).await?;
        let e = fetch(&lib, CONSUMER, &l.identifier).await.unwrap_err();
        assert!(e.message().contains("ended"), "{e:?}");
        let whole = add_entry(&lib, CONSUMER, &code, &[]).await?;
        let used = fetch(&lib, CONSUMER, &l.identifier).await?;
        let got = used.licence.unwrap_or_default();
        assert!(used.whole_licence && used.withheld_fields.is_empty());
        assert_eq!((got.jws.as_str(), got.document_json.as_str()), (l.jws.as_str(), l.document_json.as_str()));
        // An entry that starts tomorrow does not grant today.
        admin.end_usage_entry(exchange::EndUsageEntryRequest { entry_id: whole.id, reason: "到期".into() }).await?;
        let tomorrow = zhengzhao_core::date::format_date(lib.clock.today() + time::Duration::days(1));
        admin
            .create_usage_entry(exchange::CreateUsageEntryRequest {
                agency_code: CONSUMER.into(),
                type_code: code.clone(),
                service_item_code: ITEM.into(),
                terms: Some(exchange::UsageTerms {
                    effective_from: tomorrow.clone(),
                    ..terms(&[]).unwrap_or_default()
                }),
                ..Default::default()
            })
            .await?;
        let e = fetch(&lib, CONSUMER, &l.identifier).await.unwrap_err();
        assert!(e.message().contains(&format!("takes effect on {tomorrow}")), "{e:?}");

        // Every attempt is in the log, with the rule that refused.
        let log =
            usage_log(&lib, exchange::ListUsageLogRequest { identifier: l.identifier.clone(), ..Default::default() })
                .await?;
        let rules: Vec<&str> = log.iter().map(|r| r.refusal_rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                "entry_not_effective",
                "",
                "entry_not_effective",
                "",
                "entry_not_effective",
                "no_entry",
                "",
                "invalid_request",
                "invalid_request",
                "no_entry"
            ],
            "{engine}"
        );
        let granted = &log[1];
        assert_eq!(granted.decision, exchange::UsageDecision::Granted as i32);
        assert_eq!((granted.method.as_str(), granted.operator.as_str()), ("FetchLicence", "李四"));
        assert!(granted.client_address.starts_with("127.0.0.1:"), "{granted:?}");
        assert_eq!(granted.type_code, code);
        assert_eq!(granted.holder_id_type, "001");
        assert_eq!(granted.holder_id_masked, zhengzhao_core::mask_id_number(HOLDER));
        assert_eq!(granted.entry_id, whole.id);
        assert!(log.iter().all(|r| !r.holder_id_masked.contains(HOLDER)), "the log never holds an ID number");
    }
    Ok(())
}

#[tokio::test]
async fn consumers_find_a_holders_licences_of_the_types_their_list_covers() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let a = published_type(&lib).await?;
        let b = second_type(&lib).await?;
        let a1 = issue(&lib, draft(&a)).await?;
        let a2 = issue(&lib, draft(&a)).await?;
        let b1 = issue(&lib, draft(&b)).await?;
        let other = issue(&lib, other_holder(&a)).await?;
        let find = |types: &[&str]| exchange::FindLicencesRequest {
            holder_id_type: "001".into(),
            holder_id_number: HOLDER.into(),
            type_codes: types.iter().map(|t| (*t).to_owned()).collect(),
            r#use: use_ctx("核验经营资质"),
            ..Default::default()
        };
        let mut consumer = lib.exchange_as(Role::Consumer, CONSUMER, "李四");
        // Nothing on the list: refused and logged.
        let e = consumer.find_licences(find(&[])).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        add_entry(&lib, CONSUMER, &a, &["business_scope"]).await?;
        let found = consumer.find_licences(find(&[])).await?.into_inner();
        let mut ids: Vec<String> =
            found.licences.iter().map(|u| u.licence.clone().unwrap_or_default().identifier).collect();
        ids.sort();
        let mut want = vec![a1.identifier.clone(), a2.identifier.clone()];
        want.sort();
        assert_eq!(ids, want, "{engine}: only the covered type, only this holder");
        assert!(found.licences.iter().all(|u| face(u.licence.as_ref().expect("licence")).len() == 1));
        // Asking for a type the list does not cover: said, not searched.
        let found = consumer.find_licences(find(&[&a, &b])).await?.into_inner();
        assert_eq!(found.licences.len(), 2);
        assert_eq!(found.uncovered_type_codes, std::slice::from_ref(&b));
        let e = consumer.find_licences(find(&[&b])).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        // Pages, and a status filter (as of today).
        let page =
            consumer.find_licences(exchange::FindLicencesRequest { page_size: 1, ..find(&[]) }).await?.into_inner();
        assert_eq!(page.licences.len(), 1);
        let rest = consumer
            .find_licences(exchange::FindLicencesRequest {
                page_size: 1,
                page_token: page.next_page_token.clone(),
                ..find(&[])
            })
            .await?
            .into_inner();
        assert_eq!(rest.licences.len(), 1);
        assert_ne!(rest.licences[0].usage_id, page.licences[0].usage_id);
        record(&lib, event(&a2.identifier, issuance::EventKind::Revoke, "违法经营")).await?;
        let valid = consumer
            .find_licences(exchange::FindLicencesRequest { status: common::LicenceStatus::Valid as i32, ..find(&[]) })
            .await?
            .into_inner();
        assert_eq!(valid.licences.len(), 1);
        // Malformed holder IDs are refused at the edge.
        let e = consumer
            .find_licences(exchange::FindLicencesRequest { holder_id_type: "002".into(), ..find(&[]) })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["holder_id_type"]);
        let e = consumer
            .find_licences(exchange::FindLicencesRequest { holder_id_number: "91350100\nM0".into(), ..find(&[]) })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["holder_id_number"]);
        // Each licence found is a logged use; the log is queried by holder.
        let by_holder = usage_log(
            &lib,
            exchange::ListUsageLogRequest {
                holder_id_type: "001".into(),
                holder_id_number: HOLDER.into(),
                decision: exchange::UsageDecision::Granted as i32,
                ..Default::default()
            },
        )
        .await?;
        assert_eq!(by_holder.len(), 2 + 2 + 1 + 1 + 1, "{engine}");
        assert!(by_holder.iter().all(|r| r.method == "FindLicences" && r.operator == "李四"));
        assert!(by_holder.iter().all(|r| r.identifier != other.identifier && r.identifier != b1.identifier));
        let other_holder_log = usage_log(
            &lib,
            exchange::ListUsageLogRequest {
                holder_id_type: "001".into(),
                holder_id_number: OTHER_ISSUER.into(),
                ..Default::default()
            },
        )
        .await?;
        assert!(other_holder_log.is_empty());
        // Nobody else looks holders up across issuers, unlogged: not a
        // consumer, not even an administrator.
        for role in [Role::Consumer, Role::Admin] {
            let e = lib
                .issuance(role, CONSUMER)
                .list_holder_licences(issuance::ListHolderLicencesRequest {
                    holder_id_type: "001".into(),
                    holder_id_number: HOLDER.into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied);
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_province_applies_through_the_city_and_its_uses_go_through_the_same_checks() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let a = published_type(&lib).await?;
        let b = second_type(&lib).await?;
        let l = issue(&lib, draft(&b)).await?;
        let mut province = lib.exchange_as(Role::Consumer, PROVINCE, "赵六");
        let apply = |types: Vec<String>, items: Vec<String>| exchange::ApplyForUsageRequest {
            level: exchange::AgencyLevel::Province as i32,
            type_codes: types,
            service_item_codes: items,
            terms: Some(exchange::UsageTerms {
                purpose: "省级食品安全抽检".into(),
                fields: vec!["business_scope".into(), "premises".into()],
                effective_until: "2027-12-31".into(),
                ..Default::default()
            }),
        };
        let e = province.apply_for_usage(apply(vec![a.clone()], vec!["SX-OTHER".into()])).await.unwrap_err();
        assert!(violated_fields(&e).contains(&"service_item_codes[0]".to_owned()), "{engine}: {e:?}");
        let app = province
            .apply_for_usage(apply(vec![a.clone(), b.clone()], vec![ITEM.into()]))
            .await?
            .into_inner()
            .application
            .unwrap_or_default();
        assert_eq!(app.state, exchange::ApplicationState::Pending as i32);
        assert_eq!(app.agency_code, PROVINCE);
        // Pending is not granted; only the city's administrators decide.
        assert_eq!(fetch(&lib, PROVINCE, &l.identifier).await.unwrap_err().code(), Code::PermissionDenied);
        let e = province
            .approve_application(exchange::ApproveApplicationRequest { application_id: app.id, reason: String::new() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let mut admin = lib.exchange_as(Role::Admin, ADMIN, "王五");
        let e = admin
            .refuse_application(exchange::RefuseApplicationRequest { application_id: app.id, reason: " ".into() })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["reason"]);
        let approved = admin
            .approve_application(exchange::ApproveApplicationRequest {
                application_id: app.id,
                reason: "符合要求".into(),
            })
            .await?
            .into_inner();
        assert_eq!(approved.entries.len(), 2, "{engine}");
        assert!(approved.entries.iter().all(|e| e.level == exchange::AgencyLevel::Province as i32
            && e.agency_code == PROVINCE
            && e.application_id == app.id
            && e.effective_until == "2027-12-31"));
        let e = admin
            .approve_application(exchange::ApproveApplicationRequest { application_id: app.id, reason: String::new() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "decided once");
        // Its uses go through the same checks and the same log.
        let used = fetch(&lib, PROVINCE, &l.identifier).await?;
        assert_eq!(face(used.licence.as_ref().expect("licence")).len(), 2);
        let log = usage_log(&lib, exchange::ListUsageLogRequest { agency_code: PROVINCE.into(), ..Default::default() })
            .await?;
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].refusal_rule, "");
        assert_eq!(log[1].refusal_rule, "no_entry");
        // A second application, refused with a reason; both listed by state.
        let second = province
            .apply_for_usage(apply(vec![a.clone()], vec![ITEM.into()]))
            .await?
            .into_inner()
            .application
            .unwrap_or_default();
        let refused = admin
            .refuse_application(exchange::RefuseApplicationRequest {
                application_id: second.id,
                reason: "重复申请".into(),
            })
            .await?
            .into_inner()
            .application
            .unwrap_or_default();
        assert_eq!(refused.state, exchange::ApplicationState::Refused as i32);
        assert_eq!(
            (refused.decision_reason.as_str(), refused.decided_by.as_str()),
            ("重复申请", &*format!("admin@{ADMIN}"))
        );
        let listed = |state: exchange::ApplicationState| exchange::ListApplicationsRequest {
            state: state as i32,
            ..Default::default()
        };
        let approved_list =
            province.list_applications(listed(exchange::ApplicationState::Approved)).await?.into_inner();
        assert_eq!(approved_list.applications.iter().map(|a| a.id).collect::<Vec<_>>(), [app.id]);
        let all = admin.list_applications(listed(exchange::ApplicationState::Unspecified)).await?.into_inner();
        assert_eq!(all.applications.len(), 2);
        // Another consumer sees none of them.
        let theirs = lib
            .exchange(Role::Consumer, CONSUMER)
            .list_applications(listed(exchange::ApplicationState::Unspecified))
            .await?
            .into_inner();
        assert!(theirs.applications.is_empty());
    }
    Ok(())
}

/// Verifies a compact JWS under the JWKS the library publishes for `issuer`.
async fn verify_under_jwks(lib: &Library, issuer: &str, jws: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = lib.http_get(&format!("/keys/{issuer}/jwks.json")).await?;
    anyhow::ensure!(status == 200, "JWKS: {status}");
    let jwks: serde_json::Value = serde_json::from_slice(&body)?;
    let parsed = zhengzhao_crypto::jws::parse(jws)?;
    let kid = parsed.header.kid.clone().unwrap_or_default();
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["kid"] == kid.as_str()))
        .ok_or_else(|| anyhow::anyhow!("no key {kid} in the JWKS"))?;
    let key = zhengzhao_crypto::IssuerPublicKey::from_jwk(jwk)?;
    anyhow::ensure!(key.verify(parsed.signing_input.as_bytes(), &parsed.signature), "signature does not verify");
    Ok(serde_json::from_slice(&parsed.payload)?)
}

fn tool(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(name).args(args).output().map_err(|e| {
        anyhow::anyhow!("cannot run {name} ({e}): install poppler-utils and zbar-tools (scripts/test does)")
    })?;
    anyhow::ensure!(out.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn an_annotated_copy_is_signed_by_the_library_printed_and_checked() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        let copy = |pdf: bool, link: bool| exchange::IssueCopyRequest {
            identifier: l.identifier.clone(),
            r#use: use_ctx("食品经营许可变更审查"),
            valid_days: 0,
            pdf,
            link,
        };
        let mut consumer = lib.exchange_as(Role::Consumer, CONSUMER, "李四");
        assert_eq!(consumer.issue_copy(copy(false, false)).await.unwrap_err().code(), Code::PermissionDenied);
        let entry = add_entry(&lib, CONSUMER, &code, &["business_scope", "premises"]).await?;
        let e =
            consumer.issue_copy(exchange::IssueCopyRequest { valid_days: 91, ..copy(false, false) }).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["valid_days"]);
        let c = consumer.issue_copy(copy(true, true)).await?.into_inner();
        // Signed by the library's key, as published in the JWKS.
        let payload = verify_under_jwks(&lib, &lib.keys.agency, &c.jws).await?;
        assert_eq!(payload["typ"], "zhengzhao-copy");
        assert_eq!(payload["copyId"], c.copy_id.as_str());
        assert_eq!(payload["licence"]["identifier"], l.identifier.as_str());
        assert_eq!(payload["use"]["agencyCode"], CONSUMER);
        assert_eq!(payload["use"]["operator"], "李四");
        assert_eq!(payload["use"]["useCause"], "食品经营许可变更审查");
        assert_eq!(payload["use"]["entryId"], entry.id);
        let shown: Vec<&String> =
            payload["licence"]["faceFields"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
        assert_eq!(shown, ["business_scope", "premises"], "{engine}");
        assert_eq!(payload["licence"]["jwsSha256"], zhengzhao_crypto::translog::jws_digest(&l.jws).as_str());
        let good_until = c.good_until.unwrap_or_default();
        let days = (good_until.seconds - time::OffsetDateTime::now_utc().unix_timestamp()) / 86400;
        assert!((29..=30).contains(&days), "{days}");
        if let Ok(python) = std::env::var("JOSE_PYTHON") {
            let dir = tempfile::tempdir()?;
            let (_, jwks) = lib.http_get("/.well-known/jwks.json").await?;
            std::fs::write(dir.path().join("jwks.json"), jwks)?;
            std::fs::write(dir.path().join("copy.jws"), &c.jws)?;
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/jose_verify.py");
            let p = dir.path();
            let out = tool(
                &python,
                &[script, &p.join("jwks.json").to_string_lossy(), &p.join("copy.jws").to_string_lossy()],
            )?;
            assert_eq!(out.trim(), l.identifier, "jwcrypto verifies the copy");
        }

        // The PDF: the holder's name, the cause in the watermark, and a QR
        // code that resolves to the copy's verification.
        let dir = tempfile::tempdir()?;
        let pdf = dir.path().join("copy.pdf");
        std::fs::write(&pdf, &c.pdf)?;
        let text = tool("pdftotext", &["-layout", &pdf.to_string_lossy(), "-"])?;
        assert!(text.contains("示例食品有限公司"), "{engine}: {text}");
        assert!(text.contains("食品经营许可变更审查"), "{text}");
        // The watermark (rotated, so read in drawing order) names the agency and the cause.
        let raw: String = tool("pdftotext", &["-raw", &pdf.to_string_lossy(), "-"])?.split_whitespace().collect();
        assert!(raw.contains(&format!("仅供{CONSUMER}用于食品经营许可变更审查")), "{engine}: {raw}");
        let png = dir.path().join("copy");
        tool("pdftoppm", &["-r", "150", "-png", "-singlefile", &pdf.to_string_lossy(), &png.to_string_lossy()])?;
        let url = tool("zbarimg", &["--quiet", "--raw", &format!("{}.png", png.display())])?;
        let url = url.trim();
        assert_eq!(url, c.verify_url);
        let path = url.strip_prefix(&format!("http://{}", lib.addr)).ok_or_else(|| anyhow::anyhow!("{url}"))?;
        let (status, body) = lib.http_get(path).await?;
        assert_eq!(status, 200);
        let verdict: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!((verdict["genuine"].as_bool(), verdict["valid"].as_bool()), (Some(true), Some(true)), "{verdict}");

        // The link works once.
        let link = c.download_url.strip_prefix(&format!("http://{}", lib.addr)).unwrap_or_default().to_owned();
        assert!(link.starts_with("/copies/download/"), "{}", c.download_url);
        let (status, body) = lib.http_get(&link).await?;
        assert_eq!(status, 200, "{engine}");
        assert!(body.starts_with(b"%PDF"));
        let (status, _) = lib.http_get(&link).await?;
        assert_eq!(status, 404, "a used link is gone");
        let (status, _) = lib.http_get("/copies/download/not-a-link").await?;
        assert_eq!(status, 404);
        // A link left for ten minutes is gone too.
        let late = consumer.issue_copy(copy(false, true)).await?.into_inner();
        exchange_sql(&lib, &["UPDATE copy_links SET expires_at = '2026-01-01T00:00:00.000000Z'"]).await?;
        let late_path =
            late.download_url.split_once("/copies/").map(|(_, p)| format!("/copies/{p}")).unwrap_or_default();
        assert_eq!(lib.http_get(&late_path).await?.0, 404);
        // Revoked, the licence no longer stands behind the copy.
        record(&lib, event(&l.identifier, issuance::EventKind::Revoke, "违法经营")).await?;
        let (_, body) = lib.http_get(path).await?;
        let verdict: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!((verdict["genuine"].as_bool(), verdict["valid"].as_bool()), (Some(true), Some(false)));
        assert_eq!(verdict["licenceStatus"], "revoked", "{verdict}");
        // Unknown copies are not found.
        assert_eq!(lib.http_get("/copies/00000000-0000-4000-8000-000000000000").await?.0, 404);
        assert_eq!(lib.http_get("/copies/%0Aevil").await?.0, 404);
        // The copy is a logged use.
        let log =
            usage_log(&lib, exchange::ListUsageLogRequest { identifier: l.identifier.clone(), ..Default::default() })
                .await?;
        assert!(log.iter().any(|r| r.method == "IssueCopy" && r.copy_id == c.copy_id && r.operator == "李四"));
    }
    Ok(())
}

#[tokio::test]
async fn the_usage_log_is_queried_and_any_alteration_shows_against_a_checkpoint() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        add_entry(&lib, CONSUMER, &code, &["business_scope"]).await?;
        fetch(&lib, CONSUMER, &l.identifier).await?;
        fetch(&lib, OTHER_ISSUER, &l.identifier).await.unwrap_err();
        let mut auditor = lib.exchange(Role::Auditor, ADMIN);
        let first = auditor.get_usage_checkpoint(exchange::GetUsageCheckpointRequest {}).await?.into_inner();
        let first = first.checkpoint.unwrap_or_default();
        assert_eq!(first.tree_size, 2, "{engine}");
        let body = verify_under_jwks(&lib, &lib.keys.agency, &first.jws).await?;
        assert_eq!(body["typ"], "zhengzhao-usage-checkpoint");
        fetch(&lib, CONSUMER, &l.identifier).await?;
        let second = auditor.get_usage_checkpoint(exchange::GetUsageCheckpointRequest {}).await?.into_inner();
        let second = second.checkpoint.unwrap_or_default();
        let proof = auditor
            .get_usage_consistency_proof(exchange::GetUsageConsistencyProofRequest {
                first_tree_size: first.tree_size,
                second_tree_size: second.tree_size,
            })
            .await?
            .into_inner()
            .hashes;
        let proof: Vec<merkle::Hash> = proof.into_iter().map(|h| h.try_into().expect("32 bytes")).collect();
        let root =
            |c: &exchange::UsageCheckpoint| -> merkle::Hash { c.root_hash.clone().try_into().expect("32 bytes") };
        assert!(merkle::verify_consistency(first.tree_size, second.tree_size, &root(&first), &root(&second), &proof));

        // Queries: by agency, decision, time.
        let q = |r: exchange::ListUsageLogRequest| usage_log(&lib, r);
        assert_eq!(
            q(exchange::ListUsageLogRequest { agency_code: CONSUMER.into(), ..Default::default() }).await?.len(),
            2
        );
        let refused = q(exchange::ListUsageLogRequest {
            decision: exchange::UsageDecision::Refused as i32,
            ..Default::default()
        })
        .await?;
        assert_eq!(refused.iter().map(|r| r.consumer_code.as_str()).collect::<Vec<_>>(), [OTHER_ISSUER]);
        let future =
            prost_types::Timestamp { seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 3600, nanos: 0 };
        assert!(q(exchange::ListUsageLogRequest { since: Some(future), ..Default::default() }).await?.is_empty());
        assert_eq!(q(exchange::ListUsageLogRequest { until: Some(future), ..Default::default() }).await?.len(), 3);
        let e = auditor
            .list_usage_log(exchange::ListUsageLogRequest {
                since: Some(prost_types::Timestamp { seconds: -62_198_755_200, nanos: 0 }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["since"], "year -1 is refused at the edge");
        let e = lib
            .exchange(Role::Consumer, CONSUMER)
            .list_usage_log(exchange::ListUsageLogRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);

        // Rebuilt from the records, the log matches its checkpoint …
        let rebuilt = |records: &[exchange::UsageRecord]| -> anyhow::Result<merkle::Hash> {
            let leaves = records
                .iter()
                .map(|r| {
                    let record = zhengzhao_exchange::grpc::record_from_wire(r)?;
                    zhengzhao_exchange::usagelog::UsageLeaf::of(&record, r.log_index).hash().map_err(anyhow::Error::msg)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(merkle::root(&leaves))
        };
        let oldest_first = exchange::ListUsageLogRequest { oldest_first: true, ..Default::default() };
        let records = q(oldest_first.clone()).await?;
        assert_eq!(records.iter().map(|r| r.log_index).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rebuilt(&records)?, root(&second), "{engine}");
        // … and no longer once a record is altered behind the service's back.
        exchange_sql(&lib, &["UPDATE usage_log SET use_cause = '随便看看' WHERE log_index = 1"]).await?;
        let records = q(oldest_first).await?;
        assert_ne!(rebuilt(&records)?, root(&second), "{engine}");
    }
    Ok(())
}

/// `zhengzhao ARGS` against `lib` as `token`: exit code, stdout, stderr.
async fn cli(
    lib: &Library,
    token: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<(i32, String, String)> {
    let out = tokio::process::Command::new(zhengzhao_testkit::binary("zhengzhao"))
        .current_dir(dir)
        .env("ZHENGZHAO_SERVER", format!("http://{}", lib.addr))
        .env("ZHENGZHAO_TOKEN", token)
        .args(args)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("run `cargo build --workspace --bins` first: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn the_cli_walks_a_consumer_from_application_to_printed_copy_and_audits_the_log() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        let admin = lib.token_for(Role::Admin, ADMIN, "王五");
        let auditor = lib.token(Role::Auditor, ADMIN);
        let consumer = lib.token_for(Role::Consumer, CONSUMER, "李四");
        let use_args = ["--cause", "核验经营资质", "--service-item", ITEM, "--case-number", "2026-0001"];
        let with =
            |head: &[&str]| -> Vec<String> { head.iter().chain(use_args.iter()).map(|s| (*s).to_owned()).collect() };
        let strs = |v: &Vec<String>| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
        let lib_ref = &lib;
        let run = |token: &str, args: Vec<String>| {
            let token = token.to_owned();
            async move {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                cli(lib_ref, &token, d, &refs).await
            }
        };
        // Outside the list: refused, exit 1, the reason on stderr.
        let (code_out, _, err) = run(&consumer, with(&["licence", "fetch", &l.identifier])).await?;
        assert_eq!(code_out, 1, "{engine}: {err}");
        assert!(err.contains("no usage-list entry"), "{err}");
        // A missing --case-number is a usage error, exit 2.
        let (code_out, _, _) =
            run(&consumer, vec!["licence".into(), "fetch".into(), l.identifier.clone(), "--cause".into(), "x".into()])
                .await?;
        assert_eq!(code_out, 2);
        // Apply, approve, look up, fetch, copy.
        let apply: Vec<String> = [
            "usage-list",
            "apply",
            "--type",
            &code,
            "--service-item",
            ITEM,
            "--purpose",
            "食品经营许可变更审查",
            "--fields",
            "business_scope,premises",
            "--until",
            "2027-12-31",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (status, out, err) = run(&consumer, apply.clone()).await?;
        assert_eq!(status, 0, "{engine}: {} {err}", strs(&apply));
        let app = out.trim().to_owned();
        assert!(app.parse::<u64>().is_ok(), "the application id alone: {out:?}");
        let (_, pending, _) = run(
            &admin,
            vec![
                "usage-list".into(),
                "applications".into(),
                "--state".into(),
                "pending".into(),
                "--format".into(),
                "csv".into(),
            ],
        )
        .await?;
        let mut rows = pending.lines();
        assert!(rows.next().unwrap_or_default().starts_with("id,agency,level,"), "{pending}");
        assert!(rows.next().unwrap_or_default().starts_with(&format!("{app},{CONSUMER},city,")), "{pending}");
        let (status, out, err) = run(
            &admin,
            vec!["usage-list".into(), "approve".into(), app.clone(), "--reason".into(), "符合用证要求".into()],
        )
        .await?;
        assert_eq!(status, 0, "{err}");
        let approved: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(approved["application"]["state"], "approved");
        assert_eq!(approved["entries"][0]["fields"], "business_scope,premises");
        let (status, out, err) =
            run(&consumer, with(&["licence", "find", "--holder-id-type", "001", "--holder-id", HOLDER])).await?;
        assert_eq!(status, 0, "{err}");
        assert_eq!(out.lines().count(), 1, "{out}");
        let found: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or_default())?;
        assert_eq!(found["identifier"], l.identifier.as_str());
        assert!(found["withheld_fields"].as_array().is_some_and(|w| !w.is_empty()), "{found}");
        let (status, out, err) = run(&consumer, with(&["licence", "fetch", &l.identifier])).await?;
        assert_eq!(status, 0, "{err}");
        let fetched: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(fetched["whole_licence"], false);
        let (status, out, err) =
            run(&consumer, with(&["licence", "copy", &l.identifier, "--pdf", "copy.pdf", "--link"])).await?;
        assert_eq!(status, 0, "{err}");
        let copy: serde_json::Value = serde_json::from_str(&out)?;
        assert!(copy["download_url"].as_str().is_some_and(|u| u.contains("/copies/download/")), "{copy}");
        assert!(std::fs::read(d.join("copy.pdf"))?.starts_with(b"%PDF"));
        // The history and the log, as CSV.
        let (_, history, _) = run(&admin, vec!["usage-list".into(), "history".into()]).await?;
        let actions: Vec<String> = history
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .map(|v| v["action"].as_str().unwrap_or_default().to_owned())
            })
            .collect::<std::result::Result<_, _>>()?;
        assert_eq!(actions, ["created", "approved", "applied"], "{engine}");
        let (status, csv, err) = run(
            &admin,
            vec![
                "usage-log".into(),
                "--holder-id-type".into(),
                "001".into(),
                "--holder-id".into(),
                HOLDER.into(),
                "--format".into(),
                "csv".into(),
            ],
        )
        .await?;
        assert_eq!(status, 0, "{err}");
        assert!(csv.starts_with("id,log_index,accessed_at,consumer,role,operator,method,"), "{csv}");
        assert_eq!(csv.lines().count(), 1 + 4, "{engine}: header, refused fetch, find, fetch, copy: {csv}");
        assert!(csv.contains(",李四,IssueCopy,") && csv.contains(",001,913*************43,"), "{csv}");
        let (status, _, _) = run(&admin, vec!["usage-log".into(), "--holder-id".into(), HOLDER.into()]).await?;
        assert_eq!(status, 2, "--holder-id needs --holder-id-type");

        // The audit passes, keeps a checkpoint, and catches an altered record.
        let audit = |extra: &[&str]| -> Vec<String> {
            ["audit", "--usage"].iter().chain(extra.iter()).map(|s| (*s).to_owned()).collect()
        };
        let (status, out, err) = run(&auditor, audit(&["--save-usage", "usage.jws"])).await?;
        assert_eq!(status, 0, "{engine}: {out}{err}");
        assert!(out.contains("audit passed") && out.contains("records rebuild its signed checkpoint"), "{out}");
        run(&consumer, with(&["licence", "fetch", &l.identifier])).await?;
        let (status, out, err) = run(&auditor, audit(&["--usage-from", "usage.jws"])).await?;
        assert_eq!(status, 0, "{out}{err}");
        assert!(out.contains("grew from 4 to 5 records"), "{out}");
        exchange_sql(&lib, &["UPDATE usage_log SET case_number = '2026-9999' WHERE log_index = 2"]).await?;
        let (status, _, err) = run(&auditor, audit(&["--usage-from", "usage.jws"])).await?;
        assert_eq!(status, 3, "{engine}: {err}");
        assert!(
            err.contains("AUDIT FAILED: usage log: the 5 records rebuilt do not give the checkpoint's root"),
            "{err}"
        );
        exchange_sql(&lib, &["DELETE FROM usage_log WHERE log_index = 4"]).await?;
        let (status, _, err) = run(&auditor, audit(&[])).await?;
        assert_eq!(status, 3);
        assert!(err.contains("records were deleted"), "{err}");
        // A file that is no checkpoint is the auditor's input error (exit 1).
        std::fs::write(d.join("garbage.jws"), "not a checkpoint")?;
        let (status, _, err) = run(&auditor, audit(&["--usage-from", "garbage.jws"])).await?;
        assert_eq!(status, 1, "{err}");
        let (status, _, _) = run(&auditor, vec!["audit".into()]).await?;
        assert_eq!(status, 2, "audit needs --from or --usage");
    }
    Ok(())
}

#[tokio::test]
async fn filters_no_code_could_match_are_bad_requests_not_server_errors() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let e = lib
            .exchange(Role::Auditor, ADMIN)
            .list_usage_log(exchange::ListUsageLogRequest { identifier: "1.2\0x".into(), ..Default::default() })
            .await
            .expect_err("a NUL in a filter");
        assert_eq!(e.code(), Code::InvalidArgument, "{engine}: {e:?}");
        let e = lib
            .exchange(Role::Admin, ADMIN)
            .list_usage_entries(exchange::ListUsageEntriesRequest { agency_code: "x\0".into(), ..Default::default() })
            .await
            .expect_err("a NUL in an agency");
        assert_eq!(e.code(), Code::InvalidArgument, "{engine}: {e:?}");
    }
    Ok(())
}
