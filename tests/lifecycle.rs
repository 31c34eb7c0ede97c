//! Lifecycle and change-feed tests over gRPC, each on SQLite and PostgreSQL:
//! every event the regulation names, the transition table's refusals, new
//! versions for changes and renewals, idempotent retries, recorded expiry,
//! and a feed that resumes exactly from a cursor.

use std::time::Duration;

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{
    draft, event, imported, issue, libraries, published_type, record, renew, verify_outcome as outcome, violated_fields,
};
use zhengzhao_e2e::{ADMIN, ISSUER, Library, OTHER_ISSUER};
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::verification::v1 as verification;

type Result = anyhow::Result<()>;
use issuance::EventKind as K;
use verification::VerificationOutcome as O;

fn check(id: &str, kind: K, result: &str, next_due: &str) -> issuance::RecordEventRequest {
    issuance::RecordEventRequest {
        identifier: id.into(),
        kind: kind as i32,
        reason: "年度检查".into(),
        result: result.into(),
        next_due_date: next_due.into(),
        ..Default::default()
    }
}

async fn history(lib: &Library, id: &str) -> anyhow::Result<Vec<issuance::LicenceEvent>> {
    Ok(lib
        .issuance(Role::Auditor, ADMIN)
        .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: id.into() })
        .await?
        .into_inner()
        .events)
}

async fn feed(lib: &Library, after: u64) -> anyhow::Result<Vec<issuance::WatchChangesResponse>> {
    let mut stream = lib
        .issuance(Role::Sync, ADMIN)
        .watch_changes(issuance::WatchChangesRequest { after_sequence: after, until_caught_up: true })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

fn kinds(events: &[issuance::LicenceEvent]) -> Vec<K> {
    events.iter().map(|e| K::try_from(e.kind).unwrap_or_default()).collect()
}

#[tokio::test]
async fn a_licence_goes_through_every_lifecycle_path() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let v1 = issue(&lib, draft(&code)).await?;
        let id = v1.identifier.clone();

        let l = record(&lib, check(&id, K::Review, "合格", "2027-11-27")).await?;
        assert_eq!(l.status, common::LicenceStatus::Valid as i32);
        record(&lib, check(&id, K::Inspect, "pass", "2027-06-30")).await?;
        let l = record(&lib, event(&id, K::ReportLoss, "持证人报失")).await?;
        assert!(l.reported_lost, "{engine}");
        assert_eq!(outcome(&lib, &id).await?.0, O::ReportedLost);
        let e = record(&lib, event(&id, K::ReportLoss, "重复挂失")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("reported lost"), "{}", e.message());
        let l = record(&lib, event(&id, K::WithdrawLoss, "已找回")).await?;
        assert!(!l.reported_lost);
        let l = record(&lib, event(&id, K::Mortgage, "抵押登记")).await?;
        assert!(l.mortgaged);
        let (o, detail) = outcome(&lib, &id).await?;
        assert_eq!(o, O::Valid);
        assert!(detail.contains("mortgaged"));
        let l = record(&lib, event(&id, K::Seize, "违法经营暂扣")).await?;
        assert_eq!(l.status, common::LicenceStatus::Seized as i32);
        assert_eq!(outcome(&lib, &id).await?.0, O::Seized);
        record(&lib, event(&id, K::Return, "整改完成发还")).await?;
        record(&lib, event(&id, K::Release, "解除抵押")).await?;

        // Change: a new version replaces the old one, linked both ways.
        let mut changed = draft(&code);
        if let Some(h) = changed.holder.as_mut() {
            h.name = "示例食品股份有限公司".into();
        }
        changed.issue_date = String::new();
        changed.valid_from = String::new();
        let v2 = lib
            .issuance(Role::Issuer, ISSUER)
            .change_licence(issuance::ChangeLicenceRequest {
                identifier: id.clone(),
                draft: Some(changed),
                reason: "企业名称变更".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .licence
            .unwrap_or_default();
        let v2_id = zhengzhao_core::LicenceId::parse(&v2.identifier)?;
        assert_eq!(v2_id.version(), 2, "{engine}");
        assert_eq!(v2_id.serial(), zhengzhao_core::LicenceId::parse(&id)?.serial());
        assert_eq!(v2.replaces, id);
        let doc: serde_json::Value = serde_json::from_str(&v2.document_json)?;
        assert_eq!(doc["replaces"], id.as_str());
        assert_eq!(doc["holder"]["name"], "示例食品股份有限公司");
        let old = lib
            .issuance(Role::Issuer, ISSUER)
            .get_licence(issuance::GetLicenceRequest { identifier: id.clone(), ..Default::default() })
            .await?
            .into_inner();
        let old = old.licence.unwrap_or_default();
        assert_eq!(old.status, common::LicenceStatus::Superseded as i32);
        assert_eq!(old.superseded_by, v2.identifier);
        assert_eq!(outcome(&lib, &id).await?.0, O::Superseded, "{engine}");
        assert_eq!(outcome(&lib, &v2.identifier).await?.0, O::Valid);
        let e = record(&lib, event(&id, K::Cancel, "对旧版本注销")).await.unwrap_err();
        assert!(e.message().contains("superseded"), "{}", e.message());

        // Renewal: another version with a new validity period.
        let v3 = lib
            .issuance(Role::Issuer, ISSUER)
            .renew_licence(issuance::RenewLicenceRequest {
                identifier: v2.identifier.clone(),
                valid_from: "2031-11-27".into(),
                reason: "有效期届满延续".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .licence
            .unwrap_or_default();
        assert_eq!(zhengzhao_core::LicenceId::parse(&v3.identifier)?.version(), 3);
        let doc: serde_json::Value = serde_json::from_str(&v3.document_json)?;
        assert_eq!(doc["validFrom"], "2031-11-27");
        assert_eq!(doc["validUntil"], "2036-11-26");
        assert_eq!(outcome(&lib, &v3.identifier).await?.0, O::NotYetValid);

        let l = record(&lib, event(&v3.identifier, K::Cancel, "企业注销")).await?;
        assert_eq!(l.status, common::LicenceStatus::Cancelled as i32);

        // History, in order, with details.
        let h = history(&lib, &id).await?;
        assert_eq!(
            kinds(&h),
            vec![
                K::Issue,
                K::Review,
                K::Inspect,
                K::ReportLoss,
                K::WithdrawLoss,
                K::Mortgage,
                K::Seize,
                K::Return,
                K::Release,
                K::Change
            ],
            "{engine}"
        );
        assert_eq!(h[1].result, "合格");
        assert_eq!(h[1].next_due_date, "2027-11-27");
        assert_eq!(h[9].related_identifier, v2.identifier);
        assert!(h.windows(2).all(|w| w[0].sequence < w[1].sequence));
        assert_eq!(kinds(&history(&lib, &v2.identifier).await?), vec![K::Change, K::Renew]);
        assert_eq!(kinds(&history(&lib, &v3.identifier).await?), vec![K::Renew, K::Cancel]);

        // The feed holds every event of every version, in one order.
        let all = feed(&lib, 0).await?;
        assert_eq!(all.len(), 10 + 2 + 2, "{engine}");
        assert!(
            all.windows(2).all(|w| w[0].event.as_ref().map(|e| e.sequence) < w[1].event.as_ref().map(|e| e.sequence))
        );
        assert!(all.iter().all(|m| m.type_code == code && m.issuer_code == ISSUER));
    }
    Ok(())
}

#[tokio::test]
async fn the_table_refuses_what_is_not_allowed_and_names_the_status() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let id = issue(&lib, draft(&code)).await?.identifier;
        let e = record(&lib, event(&id, K::Return, "发还")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}");
        assert_eq!(e.message(), "cannot return a licence whose status is valid (01)");
        let e = record(&lib, event(&id, K::Release, "解除")).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        let e = record(&lib, check(&id, K::Review, "", "2027-01-01")).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["result".to_owned()]);
        let e = record(&lib, check(&id, K::Review, "合格", "2020-01-01")).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["next_due_date".to_owned()]);
        let mut with_result = event(&id, K::Seize, "暂扣");
        with_result.result = "合格".into();
        assert_eq!(violated_fields(&record(&lib, with_result).await.unwrap_err()), vec!["result".to_owned()]);
        for kind in [K::Issue, K::Change, K::Renew, K::Expire, K::Unspecified] {
            let e = record(&lib, event(&id, kind, "x")).await.unwrap_err();
            assert_eq!(violated_fields(&e), vec!["kind".to_owned()], "{kind:?}");
        }
        let e = lib.issuance(Role::Issuer, OTHER_ISSUER).record_event(event(&id, K::Revoke, "吊销")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        // Withdrawal from seizure, and revocation of another licence.
        record(&lib, event(&id, K::Seize, "暂扣")).await?;
        let l = record(&lib, event(&id, K::Withdraw, "以欺骗手段取得，撤销")).await?;
        assert_eq!(l.status, common::LicenceStatus::Withdrawn as i32);
        assert_eq!(outcome(&lib, &id).await?.0, O::Withdrawn);
        let other = issue(&lib, draft(&code)).await?.identifier;
        record(&lib, event(&other, K::Revoke, "严重违法吊销")).await?;
        assert_eq!(outcome(&lib, &other).await?.0, O::Revoked);
        let e = record(&lib, event(&other, K::Return, "发还")).await.unwrap_err();
        assert!(e.message().contains("revoked (07)"));
        // Nothing refused reached the feed.
        let all = feed(&lib, 0).await?;
        assert_eq!(all.len(), 2 + 2 + 1, "{engine}");
    }
    Ok(())
}

#[tokio::test]
async fn retried_events_with_an_idempotency_key_change_nothing() -> Result {
    for lib in libraries().await? {
        let code = published_type(&lib).await?;
        let id = issue(&lib, draft(&code)).await?.identifier;
        let mut seize = event(&id, K::Seize, "暂扣");
        seize.idempotency_key = "case-1".into();
        record(&lib, seize.clone()).await?;
        let again = record(&lib, seize.clone()).await?;
        assert_eq!(again.status, common::LicenceStatus::Seized as i32);
        seize.reason = "别的原因".into();
        assert_eq!(record(&lib, seize).await.unwrap_err().code(), Code::FailedPrecondition);
        let renew = issuance::RenewLicenceRequest {
            identifier: id.clone(),
            reason: "延续".into(),
            idempotency_key: "renew-1".into(),
            ..Default::default()
        };
        record(&lib, event(&id, K::Return, "发还")).await?;
        let a = lib
            .issuance(Role::Issuer, ISSUER)
            .renew_licence(renew.clone())
            .await?
            .into_inner()
            .licence
            .unwrap_or_default();
        let b = lib.issuance(Role::Issuer, ISSUER).renew_licence(renew).await?.into_inner().licence.unwrap_or_default();
        assert_eq!(a.identifier, b.identifier, "{}", lib.db.engine());
        assert_eq!(kinds(&history(&lib, &id).await?), vec![K::Issue, K::Seize, K::Return, K::Renew]);
    }
    Ok(())
}

#[tokio::test]
async fn expiry_is_right_at_read_time_and_recorded_by_the_job() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let mut d = draft(&code);
        d.issue_date = "2022-01-01".into();
        d.valid_until = zhengzhao_core::date::format_date(lib.clock.today() - time::Duration::days(30));
        // An expired licence enters only as a historical licence.
        let refused = issue(&lib, d.clone()).await.unwrap_err();
        assert!(violated_fields(&refused).contains(&"valid_until".to_owned()), "{engine}: {refused:?}");
        let old = imported(&lib, d).await?;
        let old = lib
            .issuance(Role::Issuer, ISSUER)
            .get_licence(issuance::GetLicenceRequest { identifier: old, ..Default::default() })
            .await?
            .into_inner()
            .licence
            .unwrap_or_default();
        assert_eq!(old.status, common::LicenceStatus::Expired as i32, "{engine}: derived before the job ran");
        let current = issue(&lib, draft(&code)).await?;
        let job = zhengzhao_auth::Principal::service(zhengzhao_auth::ServiceName::Issuance, &lib.keys.agency);
        let today = zhengzhao_core::clock::Clock::default().today();
        assert_eq!(lib.issuance_service.record_expiries(&job, today).await?, 1, "{engine}");
        assert_eq!(lib.issuance_service.record_expiries(&job, today).await?, 0, "{engine}: the job is idempotent");
        assert_eq!(kinds(&history(&lib, &old.identifier).await?), vec![K::Issue, K::Expire]);
        assert_eq!(kinds(&history(&lib, &current.identifier).await?), vec![K::Issue]);
        // Renewing an expired licence is allowed (within the renewal window).
        let renewed = lib
            .issuance(Role::Issuer, ISSUER)
            .renew_licence(issuance::RenewLicenceRequest {
                identifier: old.identifier.clone(),
                reason: "延续".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .licence
            .unwrap_or_default();
        assert_eq!(renewed.status, common::LicenceStatus::Valid as i32);
    }
    Ok(())
}

#[tokio::test]
async fn the_feed_resumes_exactly_from_a_cursor_and_follows_new_changes() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        for _ in 0..3 {
            issue(&lib, draft(&code)).await?;
        }
        let all = feed(&lib, 0).await?;
        assert_eq!(all.len(), 3);
        let second = all[1].event.as_ref().map(|e| e.sequence).unwrap_or_default();
        let rest = feed(&lib, second).await?;
        assert_eq!(rest.len(), 1, "{engine}");
        assert_eq!(rest[0].event, all[2].event);
        // Following: a new change arrives on an open stream.
        let last = all[2].event.as_ref().map(|e| e.sequence).unwrap_or_default();
        let mut stream = lib
            .issuance(Role::Sync, ADMIN)
            .watch_changes(issuance::WatchChangesRequest { after_sequence: last, until_caught_up: false })
            .await?
            .into_inner();
        let fresh = issue(&lib, draft(&code)).await?;
        let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        assert_eq!(next.event.map(|e| e.identifier), Some(fresh.identifier), "{engine}");
        // Only feed readers may watch.
        let e = lib
            .issuance(Role::Issuer, ISSUER)
            .watch_changes(issuance::WatchChangesRequest::default())
            .await
            .err()
            .map(|s| s.code());
        assert_eq!(e, Some(Code::PermissionDenied));
    }
    Ok(())
}

/// Which of `ids` verify as valid.
async fn valid_ones(lib: &Library, ids: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for id in ids {
        if outcome(lib, id).await?.0 == O::Valid {
            out.push((*id).to_owned());
        }
    }
    Ok(out)
}

#[tokio::test]
async fn exactly_one_version_is_valid_across_a_renewal_and_a_change() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        // Valid 2026-11-27 to 2031-11-26 (5 years); renewed with no dates,
        // the successor starts the day after: 2031-11-27.
        let v1 = issue(&lib, draft(&code)).await?.identifier;
        let v2 = renew(&lib, &v1, "").await?;
        assert_eq!(v2.replaces, v1);
        let doc: serde_json::Value = serde_json::from_str(&v2.document_json)?;
        assert_eq!(doc["validFrom"], "2031-11-27", "{engine}");
        let v2 = v2.identifier;

        // Right after the renewal: the renewed version stays valid and says so.
        assert_eq!(valid_ones(&lib, &[&v1, &v2]).await?, vec![v1.clone()], "{engine}: right after renewal");
        let (_, detail) = outcome(&lib, &v1).await?;
        assert!(detail.contains(&v2) && detail.contains("2031-11-27"), "{engine}: {detail}");
        assert_eq!(outcome(&lib, &v2).await?.0, O::NotYetValid);
        let old = lib
            .issuance(Role::Issuer, ISSUER)
            .get_licence(issuance::GetLicenceRequest { identifier: v1.clone(), ..Default::default() })
            .await?
            .into_inner()
            .licence
            .unwrap_or_default();
        assert_eq!(old.status, common::LicenceStatus::Valid as i32, "{engine}: in force until the successor");
        assert_eq!(old.recorded_status, common::LicenceStatus::Superseded as i32);
        assert_eq!((old.superseded_by.as_str(), old.successor_from.as_str()), (v2.as_str(), "2031-11-27"));
        // Events go to the current version, not to the one being replaced.
        let e = record(&lib, event(&v1, K::Mortgage, "抵押")).await.unwrap_err();
        assert!(e.message().contains(&format!("superseded by {v2}")), "{engine}: {}", e.message());
        // With the proof, the log agrees with the records.
        let with_proof = lib
            .verification(Role::Auditor, ADMIN)
            .verify_licence(verification::VerifyLicenceRequest {
                identifier: v1.clone(),
                include_inclusion_proof: true,
            })
            .await?
            .into_inner()
            .verification
            .unwrap_or_default();
        assert_eq!(O::try_from(with_proof.outcome)?, O::Valid, "{engine}: {}", with_proof.detail);

        // Walk the clock to the last day of v1, then to the first of v2.
        let last_day = time::Date::from_calendar_date(2031, time::Month::November, 26)?;
        lib.clock.advance(last_day - lib.clock.today());
        assert_eq!(valid_ones(&lib, &[&v1, &v2]).await?, vec![v1.clone()], "{engine}: last day of v1");
        lib.clock.advance(time::Duration::days(1));
        assert_eq!(valid_ones(&lib, &[&v1, &v2]).await?, vec![v2.clone()], "{engine}: first day of v2");
        assert_eq!(outcome(&lib, &v1).await?.0, O::Superseded);

        // A change takes effect at once: its successor keeps the validity.
        let mut changed = draft(&code);
        if let Some(h) = changed.holder.as_mut() {
            h.name = "示例食品股份有限公司".into();
        }
        changed.issue_date = String::new();
        changed.valid_from = String::new();
        let v3 = lib
            .issuance(Role::Issuer, ISSUER)
            .change_licence(issuance::ChangeLicenceRequest {
                identifier: v2.clone(),
                draft: Some(changed),
                reason: "企业名称变更".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .licence
            .unwrap_or_default()
            .identifier;
        assert_eq!(valid_ones(&lib, &[&v1, &v2, &v3]).await?, vec![v3.clone()], "{engine}: after the change");
        lib.clock.advance(time::Duration::days(365));
        assert_eq!(valid_ones(&lib, &[&v1, &v2, &v3]).await?, vec![v3.clone()], "{engine}: a year on");
    }
    Ok(())
}

#[tokio::test]
async fn a_renewed_version_falls_with_its_successor() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let v1 = issue(&lib, draft(&code)).await?.identifier;
        let v2 = renew(&lib, &v1, "").await?.identifier;
        record(&lib, event(&v2, K::Revoke, "吊销")).await?;
        let (o, detail) = outcome(&lib, &v1).await?;
        assert_eq!(o, O::Superseded, "{engine}: {detail}");
        assert!(detail.contains(&v2) && detail.contains("revoked"), "{engine}: {detail}");
        assert!(valid_ones(&lib, &[&v1, &v2]).await?.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn versions_replaced_before_they_took_effect_never_verify_valid() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let v1 = issue(&lib, draft(&code)).await?.identifier;
        let mut issuer = lib.issuance(Role::Issuer, ISSUER);
        let v2 = renew(&lib, &v1, "").await?.identifier;
        // Renewing the pending successor again: still only v1 is in force.
        let v3 = renew(&lib, &v2, "").await?.identifier;

        assert_eq!(valid_ones(&lib, &[&v1, &v2, &v3]).await?, vec![v1.clone()], "{engine}: after renewing twice");
        assert_eq!(outcome(&lib, &v2).await?.0, O::Superseded, "{engine}: v2 never took effect");
        // A change cannot move the validity (that would start v3 at once
        // beside v1): it is refused, naming the field.
        let mut changed = draft(&code);
        changed.issue_date = String::new();
        changed.valid_from = zhengzhao_core::date::format_date(lib.clock.today());
        let e = issuer
            .change_licence(issuance::ChangeLicenceRequest {
                identifier: v3.clone(),
                draft: Some(changed),
                reason: "更正".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["draft.valid_from".to_owned()], "{engine}: {}", e.message());
        assert_eq!(valid_ones(&lib, &[&v1, &v2, &v3]).await?, vec![v1.clone()], "{engine}: still only v1");
    }
    Ok(())
}
