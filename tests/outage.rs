//! Outages and the 3-working-day catch-up rule over gRPC, on SQLite and
//! PostgreSQL: who may record them, backfill marking, refusal of old business
//! times nothing covers, and the report's deadline and state.

use time::{Duration, OffsetDateTime};
use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, issue, issued_days_ago, libraries, published_type, violated_fields};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library, OTHER_ISSUER};
use zhengzhao_proto::convert::timestamp;
use zhengzhao_proto::issuance::v1 as issuance;

type Result = anyhow::Result<()>;
use issuance::BacklogState as B;

fn ago(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::days(days)
}

async fn record_outage(
    lib: &Library,
    role: Role,
    agency: &str,
    issuer: &str,
    start: i64,
    end: Option<i64>,
) -> std::result::Result<issuance::Outage, tonic::Status> {
    lib.issuance(role, agency)
        .record_outage(issuance::RecordOutageRequest {
            issuer_code: issuer.into(),
            started_at: Some(timestamp(ago(start))),
            ended_at: end.map(|e| timestamp(ago(e))),
            cause: "机房断电".into(),
            idempotency_key: String::new(),
        })
        .await
        .map(|r| r.into_inner().outage.unwrap_or_default())
}

async fn seize_at(lib: &Library, id: &str, days_ago: i64) -> std::result::Result<(), tonic::Status> {
    lib.issuance(Role::Issuer, ISSUER)
        .record_event(issuance::RecordEventRequest {
            identifier: id.into(),
            kind: issuance::EventKind::Seize as i32,
            reason: "补录暂扣".into(),
            occurred_at: Some(timestamp(ago(days_ago))),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn report(lib: &Library) -> anyhow::Result<Vec<issuance::Outage>> {
    Ok(lib
        .issuance(Role::Auditor, ADMIN)
        .list_outages(issuance::ListOutagesRequest::default())
        .await?
        .into_inner()
        .outages)
}

fn expected_deadline(ended: OffsetDateTime) -> String {
    let local = ended.to_offset(zhengzhao_issuance::LIBRARY_OFFSET).date();
    zhengzhao_core::date::format_date(zhengzhao_core::calendar::WorkingCalendar::shipped().catch_up_deadline(local).0)
}

#[tokio::test]
async fn issuers_record_their_own_outages_and_administrators_any() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let own = record_outage(&lib, Role::Issuer, ISSUER, "", 3, Some(1)).await?;
        assert_eq!(own.issuer_code, ISSUER, "{engine}");
        assert_eq!(own.recorded_by, format!("issuer@{ISSUER}"));
        record_outage(&lib, Role::Admin, ADMIN, OTHER_ISSUER, 2, None).await?;
        assert_eq!(
            record_outage(&lib, Role::Issuer, ISSUER, OTHER_ISSUER, 2, None).await.unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            record_outage(&lib, Role::Consumer, CONSUMER, ISSUER, 2, None).await.unwrap_err().code(),
            Code::PermissionDenied
        );
        let e = record_outage(&lib, Role::Issuer, ISSUER, "", 1, Some(2)).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["ended_at".to_owned()]);
        let e = record_outage(&lib, Role::Issuer, ISSUER, "", -1, None).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["started_at".to_owned()]);
        let e = lib
            .issuance(Role::Issuer, ISSUER)
            .record_outage(issuance::RecordOutageRequest {
                started_at: Some(timestamp(ago(1))),
                cause: " ".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["cause".to_owned()]);
        // A retry with an idempotency key records nothing new.
        let once = issuance::RecordOutageRequest {
            started_at: Some(timestamp(ago(2))),
            cause: "网络中断".into(),
            idempotency_key: "outage-7".into(),
            ..Default::default()
        };
        let a = lib
            .issuance(Role::Issuer, ISSUER)
            .record_outage(once.clone())
            .await?
            .into_inner()
            .outage
            .unwrap_or_default();
        let b = lib.issuance(Role::Issuer, ISSUER).record_outage(once).await?.into_inner().outage.unwrap_or_default();
        assert_eq!(a.id, b.id, "{engine}");
        // Issuers see only their own; administrators and auditors see all.
        let mine = lib
            .issuance(Role::Issuer, ISSUER)
            .list_outages(issuance::ListOutagesRequest::default())
            .await?
            .into_inner()
            .outages;
        assert_eq!(mine.len(), 2);
        assert_eq!(report(&lib).await?.len(), 3);
        let e = lib
            .issuance(Role::Issuer, ISSUER)
            .list_outages(issuance::ListOutagesRequest { issuer_code: OTHER_ISSUER.into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    Ok(())
}

#[tokio::test]
async fn events_inside_an_outage_are_backfill_and_old_uncovered_ones_are_refused() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let a = issued_days_ago(&lib, &code, 10).await?;
        let b = issue(&lib, draft(&code)).await?.identifier;
        // Three days old and no outage: refused, nothing recorded.
        let e = seize_at(&lib, &a, 3).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}");
        assert!(e.message().contains("record the outage first"), "{}", e.message());
        // Record the outage that explains it: now accepted, as backfill.
        let outage = record_outage(&lib, Role::Issuer, ISSUER, "", 4, Some(1)).await?;
        seize_at(&lib, &a, 3).await?;
        // Recent business time outside any outage: accepted, not backfill.
        seize_at(&lib, &b, 0).await?;
        let history = |id: String| {
            let mut c = lib.issuance(Role::Issuer, ISSUER);
            async move {
                Ok::<_, anyhow::Error>(
                    c.get_licence_history(issuance::GetLicenceHistoryRequest { identifier: id })
                        .await?
                        .into_inner()
                        .events,
                )
            }
        };
        let ha = history(a.clone()).await?;
        assert!(ha[1].backfill, "{engine}");
        assert!(!history(b.clone()).await?[1].backfill);
        let r = report(&lib).await?;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, outage.id);
        assert_eq!(r[0].backfill_events, 1, "{engine}");
        let ended = ago(1);
        assert_eq!(r[0].deadline, expected_deadline(ended));
        assert_eq!(r[0].state, B::Pending as i32, "{engine}: {:?}", r[0]);
        // Mark the backlog done within the deadline.
        let done = lib
            .issuance(Role::Issuer, ISSUER)
            .complete_outage_backlog(issuance::CompleteOutageBacklogRequest { id: outage.id })
            .await?;
        assert_eq!(done.into_inner().outage.unwrap_or_default().state, B::Done as i32);
    }
    Ok(())
}

#[tokio::test]
async fn open_outages_cover_backfill_until_ended_and_late_ones_show_overdue() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let id = issued_days_ago(&lib, &code, 10).await?;
        let open = record_outage(&lib, Role::Issuer, ISSUER, "", 5, None).await?;
        assert_eq!(open.state, B::Open as i32, "{engine}");
        assert!(open.deadline.is_empty());
        let e = lib
            .issuance(Role::Issuer, ISSUER)
            .complete_outage_backlog(issuance::CompleteOutageBacklogRequest { id: open.id })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        seize_at(&lib, &id, 2).await?;
        let ended = lib
            .issuance(Role::Issuer, ISSUER)
            .end_outage(issuance::EndOutageRequest { id: open.id, ended_at: None })
            .await?
            .into_inner()
            .outage
            .unwrap_or_default();
        assert!(ended.ended_at.is_some());
        assert!(matches!(B::try_from(ended.state), Ok(B::Pending | B::DueSoon)), "{engine}: {ended:?}");
        let again = lib
            .issuance(Role::Issuer, ISSUER)
            .end_outage(issuance::EndOutageRequest { id: open.id, ended_at: None })
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition);

        // An outage that ended a month ago is past its deadline: overdue, and no longer covers backfill.
        let old = record_outage(&lib, Role::Admin, ADMIN, ISSUER, 40, Some(30)).await?;
        assert_eq!(old.state, B::Overdue as i32, "{engine}");
        let other = issued_days_ago(&lib, &code, 60).await?;
        assert_eq!(seize_at(&lib, &other, 35).await.unwrap_err().code(), Code::FailedPrecondition);
        let late = lib
            .issuance(Role::Issuer, ISSUER)
            .complete_outage_backlog(issuance::CompleteOutageBacklogRequest { id: old.id })
            .await?;
        assert_eq!(late.into_inner().outage.unwrap_or_default().state, B::DoneLate as i32);
    }
    Ok(())
}
