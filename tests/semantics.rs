//! Licence semantics as an agency expects them, over gRPC on SQLite and
//! PostgreSQL: encumbrances across versions and cancellation, combined
//! states in verification, the rules of change, renewal and replacement,
//! and plausible dates.

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{
    draft, event, imported, issue, libraries, published_type, record, renew, verify_outcome as verify, violated_fields,
};
use zhengzhao_e2e::{ADMIN, ISSUER, Library};
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::verification::v1 as verification;

type Result = anyhow::Result<()>;
use issuance::EventKind as K;
use verification::VerificationOutcome as O;

async fn change(
    lib: &Library,
    id: &str,
    d: issuance::LicenceDraft,
) -> std::result::Result<common::Licence, tonic::Status> {
    lib.issuance(Role::Issuer, ISSUER)
        .change_licence(issuance::ChangeLicenceRequest {
            identifier: id.into(),
            draft: Some(d),
            reason: "变更".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().licence.unwrap_or_default())
}

fn renamed(code: &str, name: &str) -> issuance::LicenceDraft {
    let mut d = draft(code);
    if let Some(h) = d.holder.as_mut() {
        h.name = name.into();
    }
    d
}

#[tokio::test]
async fn a_mortgage_follows_the_licence_to_its_new_versions_and_is_released_there() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let v1 = issue(&lib, draft(&code)).await?.identifier;
        record(&lib, event(&v1, K::Mortgage, "向银行抵押")).await?;
        let v2 = change(&lib, &v1, renamed(&code, "示例食品股份有限公司")).await?;
        assert!(v2.mortgaged, "{engine}: the pledge carries over to the changed version");
        let v3 = renew(&lib, &v2.identifier, "").await?;
        assert!(v3.mortgaged, "{engine}: and to the renewed one");
        let (o, detail) = verify(&lib, &v2.identifier).await?;
        assert_eq!(o, O::Valid, "{engine}: {detail}");
        assert!(detail.contains("mortgaged"), "{engine}: {detail}");
        // The bank releases with the identifier it registered: the current version is released.
        let released = record(&lib, event(&v1, K::Release, "贷款结清")).await?;
        assert_eq!(released.identifier, v3.identifier, "{engine}");
        assert!(!released.mortgaged);
        let e = record(&lib, event(&v3.identifier, K::Release, "再次解押")).await.unwrap_err();
        assert!(e.message().contains("not mortgaged"), "{engine}: {}", e.message());
    }
    Ok(())
}

#[tokio::test]
async fn an_encumbered_licence_is_not_cancelled_or_mortgaged_unless_an_administrator_forces_it() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let id = issue(&lib, draft(&code)).await?.identifier;
        record(&lib, event(&id, K::Mortgage, "抵押")).await?;
        let e = record(&lib, event(&id, K::Cancel, "企业申请注销")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("mortgaged"), "{engine}: {}", e.message());
        // An issuer cannot force; an administrator can, and it is recorded.
        let mut forced = event(&id, K::Cancel, "法院裁定强制注销");
        forced.force = true;
        let e = record(&lib, forced.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        let l = lib.issuance(Role::Admin, ADMIN).record_event(forced).await?.into_inner().licence.unwrap_or_default();
        assert_eq!(l.status, common::LicenceStatus::Cancelled as i32, "{engine}");
        let history = lib
            .issuance(Role::Auditor, ADMIN)
            .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: id.clone() })
            .await?
            .into_inner()
            .events;
        let last = history.last().cloned().unwrap_or_default();
        assert!(last.forced, "{engine}: recorded as forced");
        assert!(last.actor.starts_with("admin@"), "{engine}");
        // Forcing is for cancellation only.
        let other = issue(&lib, draft(&code)).await?.identifier;
        let mut forced_revoke = event(&other, K::Revoke, "x");
        forced_revoke.force = true;
        let e = lib.issuance(Role::Admin, ADMIN).record_event(forced_revoke).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["force".to_owned()], "{engine}");
        // A licence reported lost is not mortgaged.
        record(&lib, event(&other, K::ReportLoss, "遗失")).await?;
        let e = record(&lib, event(&other, K::Mortgage, "抵押")).await.unwrap_err();
        assert!(e.message().contains("reported lost"), "{engine}: {}", e.message());
    }
    Ok(())
}

#[tokio::test]
async fn verification_says_combined_states() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let id = issue(&lib, draft(&code)).await?.identifier;
        let mut review = event(&id, K::Review, "年度审验");
        review.result = "不合格".into();
        review.next_due_date = "2027-12-01".into();
        record(&lib, review).await?;
        let (o, detail) = verify(&lib, &id).await?;
        assert_eq!(o, O::Valid, "{engine}");
        assert!(detail.contains("review failed (不合格)"), "{engine}: {detail}");
        record(&lib, event(&id, K::Seize, "暂扣")).await?;
        assert_eq!(verify(&lib, &id).await?.0, O::Seized, "{engine}");
        // Past its end date a seized licence is expired, the seizure noted.
        let end = time::Date::from_calendar_date(2031, time::Month::November, 27)?;
        lib.clock.advance(end - lib.clock.today());
        let (o, detail) = verify(&lib, &id).await?;
        assert_eq!(o, O::Expired, "{engine}: {detail}");
        assert!(detail.contains("also seized"), "{engine}: {detail}");
    }
    Ok(())
}

#[tokio::test]
async fn a_renewal_extends_and_a_change_keeps_what_it_must() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let id = issue(&lib, draft(&code)).await?.identifier;
        // Valid to 2031-11-26: a renewal starts 2031-11-27, no earlier, no later.
        for from in ["2020-01-01", "2026-12-01", "2031-11-28"] {
            let e = renew(&lib, &id, from).await.unwrap_err();
            assert_eq!(violated_fields(&e), vec!["valid_from".to_owned()], "{engine}: {from}: {}", e.message());
            assert!(e.message().contains("2031-11-27"), "{engine}: {}", e.message());
        }
        let e = lib
            .issuance(Role::Issuer, ISSUER)
            .renew_licence(issuance::RenewLicenceRequest {
                identifier: id.clone(),
                valid_until: "2099-12-31".into(),
                reason: "延续".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(violated_fields(&e).contains(&"valid_until".to_owned()), "{engine}: beyond the type's range");

        // A change keeps the holder, the issue date and the validity, and must change something.
        let mut other_holder = draft(&code);
        if let Some(h) = other_holder.holder.as_mut() {
            h.id_number = "91110000802100433B".into();
            h.name = "另一家公司".into();
        }
        let e = change(&lib, &id, other_holder).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["draft.holder".to_owned()], "{engine}: {}", e.message());
        for (field, value) in [("draft.issue_date", "2020-01-01"), ("draft.valid_until", "2027-01-01")] {
            let mut d = renamed(&code, "新名称有限公司");
            if field == "draft.issue_date" {
                d.issue_date = value.into();
            } else {
                d.valid_until = value.into();
            }
            let e = change(&lib, &id, d).await.unwrap_err();
            assert_eq!(violated_fields(&e), vec![field.to_owned()], "{engine}: {}", e.message());
        }
        let e = change(&lib, &id, draft(&code)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}: {}", e.message());
        assert!(e.message().contains("changes nothing"), "{engine}: {}", e.message());

        // An expired licence renews from today, within the renewal window only.
        let mut d = draft(&code);
        d.issue_date = "2020-01-01".into();
        d.valid_until = "2024-12-31".into();
        let long_expired = imported(&lib, d).await?;
        let e = renew(&lib, &long_expired, "").await.unwrap_err();
        assert!(e.message().contains("renewal closed"), "{engine}: {}", e.message());
        let mut d = draft(&code);
        d.issue_date = "2022-01-01".into();
        d.valid_until = zhengzhao_core::date::format_date(lib.clock.today() - time::Duration::days(10));
        let just_expired = imported(&lib, d).await?;
        let renewed = renew(&lib, &just_expired, "").await?;
        let doc: serde_json::Value = serde_json::from_str(&renewed.document_json)?;
        assert_eq!(doc["validFrom"], zhengzhao_core::date::format_date(lib.clock.today()), "{engine}");
        assert_eq!(verify(&lib, &renewed.identifier).await?.0, O::Valid);
    }
    Ok(())
}

#[tokio::test]
async fn a_lost_licence_is_replaced_not_changed() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let id = issue(&lib, draft(&code)).await?.identifier;
        record(&lib, event(&id, K::Mortgage, "抵押")).await?;
        record(&lib, event(&id, K::ReportLoss, "遗失")).await?;
        let e = change(&lib, &id, renamed(&code, "新名称有限公司")).await.unwrap_err();
        assert!(e.message().contains("reported lost"), "{engine}: {}", e.message());
        let e = renew(&lib, &id, "").await.unwrap_err();
        assert!(e.message().contains("reported lost"), "{engine}: {}", e.message());
        let replaced = record(&lib, event(&id, K::Replace, "遗失补发")).await?;
        assert_ne!(replaced.identifier, id);
        assert_eq!(replaced.replaces, id, "{engine}");
        assert!(!replaced.reported_lost && replaced.mortgaged, "{engine}: not lost, still mortgaged");
        assert_eq!(verify(&lib, &id).await?.0, O::Superseded, "{engine}: the lost one no longer verifies");
        assert_eq!(verify(&lib, &replaced.identifier).await?.0, O::Valid, "{engine}");
        let e = record(&lib, event(&replaced.identifier, K::Replace, "再次补发")).await.unwrap_err();
        assert!(e.message().contains("not reported lost"), "{engine}: {}", e.message());

        // Expired while lost: the loss can be withdrawn, or the licence renewed.
        let mut d = draft(&code);
        d.issue_date = "2022-01-01".into();
        d.valid_until = zhengzhao_core::date::format_date(lib.clock.today() + time::Duration::days(2));
        let a = imported(&lib, d.clone()).await?;
        record(&lib, event(&a, K::ReportLoss, "遗失")).await?;
        let b = imported(&lib, d).await?;
        record(&lib, event(&b, K::ReportLoss, "遗失")).await?;
        lib.clock.advance(time::Duration::days(3));
        let withdrawn = record(&lib, event(&a, K::WithdrawLoss, "找回")).await?;
        assert!(!withdrawn.reported_lost, "{engine}");
        let renewed = renew(&lib, &b, "").await?;
        assert!(!renewed.reported_lost, "{engine}");
        assert_eq!(verify(&lib, &renewed.identifier).await?.0, O::Valid, "{engine}");
    }
    Ok(())
}

#[tokio::test]
async fn the_expiry_event_happens_at_the_end_of_the_last_valid_day() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let mut d = draft(&code);
        d.issue_date = "2021-12-01".into();
        d.valid_until = "2026-11-30".into();
        let id = imported(&lib, d).await?;
        let job = zhengzhao_auth::Principal::service(zhengzhao_auth::ServiceName::Issuance, &lib.keys.agency);
        lib.issuance_service.record_expiries(&job, lib.clock.today()).await?;
        let history = lib
            .issuance(Role::Auditor, ADMIN)
            .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: id })
            .await?
            .into_inner()
            .events;
        let expiry = history.last().cloned().unwrap_or_default();
        assert_eq!(expiry.kind, K::Expire as i32, "{engine}");
        // 2026-11-30 23:59:59.999999 +08:00 = 2026-11-30T15:59:59.999999Z
        let at = expiry.occurred_at.unwrap_or_default();
        assert_eq!((at.seconds, at.nanos), (1_796_054_399, 999_999_000), "{engine}");
    }
    Ok(())
}

#[tokio::test]
async fn a_replay_answers_with_the_original_result() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let id = issue(&lib, draft(&code)).await?.identifier;
        let mut seize = event(&id, K::Seize, "暂扣");
        seize.idempotency_key = "seize-1".into();
        let first = record(&lib, seize.clone()).await?;
        assert_eq!(first.status, common::LicenceStatus::Seized as i32);
        record(&lib, event(&id, K::Return, "发还")).await?;
        let replayed = record(&lib, seize).await?;
        assert_eq!(replayed.status, common::LicenceStatus::Seized as i32, "{engine}: the original result, not today's");
        let now = lib
            .issuance(Role::Issuer, ISSUER)
            .get_licence(issuance::GetLicenceRequest { identifier: id.clone(), ..Default::default() })
            .await?
            .into_inner()
            .licence
            .unwrap_or_default();
        assert_eq!(now.status, common::LicenceStatus::Valid as i32, "{engine}: and nothing changed");
    }
    Ok(())
}

#[tokio::test]
async fn messages_name_what_is_wrong() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        // An unknown type is an unknown type, whatever template version is asked for.
        let mut d = draft(&code);
        d.type_code = "11100000000013338W999".into();
        d.template_version = 1;
        let e = issue(&lib, d).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["type_code".to_owned()], "{engine}: {}", e.message());
        let mut d = draft(&code);
        d.template_version = 7;
        let e = issue(&lib, d).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["template_version".to_owned()], "{engine}: {}", e.message());
        // A business time is shown in China Standard Time, to the second.
        let id = issue(&lib, draft(&code)).await?.identifier;
        let mut old = event(&id, K::Seize, "补录");
        let at = time::OffsetDateTime::now_utc() - time::Duration::days(3);
        old.occurred_at = Some(zhengzhao_proto::convert::timestamp(at));
        let e = record(&lib, old).await.unwrap_err();
        let shown = at.to_offset(zhengzhao_issuance::LIBRARY_OFFSET).replace_nanosecond(0)?;
        let shown = shown.format(&time::format_description::well_known::Rfc3339)?;
        assert!(e.message().contains(&shown) && shown.ends_with("+08:00"), "{engine}: {} / {shown}", e.message());
    }
    Ok(())
}

#[tokio::test]
async fn a_type_sets_its_renewal_window_and_whether_a_failed_check_suspends() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let strict = zhengzhao_e2e::fixtures::published_type_with(&lib, |d| {
            d.name = "危险化学品经营许可证".into();
            d.renewal_window_days = 0;
            d.failed_check_invalidates = true;
        })
        .await?;
        let mut d = draft(&strict);
        d.issue_date = "2022-01-01".into();
        d.valid_until = zhengzhao_core::date::format_date(lib.clock.today() - time::Duration::days(1));
        let expired = imported(&lib, d).await?;
        let e = renew(&lib, &expired, "").await.unwrap_err();
        assert!(e.message().contains("0 days after"), "{engine}: {}", e.message());

        let id = issue(&lib, draft(&strict)).await?.identifier;
        let check = |result: &str| {
            let mut r = event(&id, K::Inspect, "年检");
            r.result = result.into();
            r.next_due_date = "2027-12-01".into();
            r
        };
        record(&lib, check("不合格")).await?;
        let (o, detail) = verify(&lib, &id).await?;
        assert_eq!(o, O::NotInForce, "{engine}: {detail}");
        assert!(detail.contains("inspection failed"), "{engine}: {detail}");
        record(&lib, check("合格")).await?;
        assert_eq!(verify(&lib, &id).await?.0, O::Valid, "{engine}: a passing check restores it");
    }
    Ok(())
}
