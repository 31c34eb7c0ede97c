//! Consumers (measures, chapter 3): usage lists and applications, uses
//! decided by the list, lookups by holder, and province and ministry access
//! through the city — each on SQLite and PostgreSQL. Annotated copies, the
//! usage log's checks and the CLI walk-through are in `copies.rs`.

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::consumers::*;
use zhengzhao_e2e::fixtures::*;
use zhengzhao_e2e::{ADMIN, CONSUMER, OTHER_ISSUER};
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::issuance::v1 as issuance;

type Result = anyhow::Result<()>;
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
