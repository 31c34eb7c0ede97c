//! Times and business-time rules over gRPC, on SQLite and PostgreSQL: every
//! instant and date a caller supplies is range-checked at the edge (nothing
//! stored that cannot be read back), rows older versions stored still read,
//! an issuer cannot backdate events through a self-declared outage, and
//! outage numbers reveal nothing about other issuers.

use time::{Duration, OffsetDateTime};
use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{
    draft, issuance_sql as sql, issue, issued_days_ago, libraries, published_type, violated_fields,
};
use zhengzhao_e2e::{ADMIN, ISSUER, Library, OTHER_ISSUER};
use zhengzhao_proto::convert::timestamp;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::verification::v1 as verification;

type Result = anyhow::Result<()>;

/// 0001-01-01T00:00:00Z minus a year: year −1 on the wire.
fn year_minus_one() -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: -62_198_755_200, nanos: 0 }
}

fn event(id: &str, kind: issuance::EventKind, at: Option<prost_types::Timestamp>) -> issuance::RecordEventRequest {
    issuance::RecordEventRequest {
        identifier: id.into(),
        kind: kind as i32,
        reason: "测试".into(),
        occurred_at: at,
        ..Default::default()
    }
}

async fn outages(lib: &Library) -> anyhow::Result<Vec<issuance::Outage>> {
    Ok(lib
        .issuance(Role::Admin, ADMIN)
        .list_outages(issuance::ListOutagesRequest::default())
        .await?
        .into_inner()
        .outages)
}

#[tokio::test]
async fn caller_times_outside_the_range_are_refused_naming_the_field_and_store_nothing() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let id = issue(&lib, draft(&code)).await?.identifier;
        let mut issuer = lib.issuance(Role::Issuer, ISSUER);

        let e = issuer
            .record_outage(issuance::RecordOutageRequest {
                started_at: Some(year_minus_one()),
                cause: "机房断电".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!((e.code(), violated_fields(&e)), (Code::InvalidArgument, vec!["started_at".to_owned()]), "{engine}");
        assert!(outages(&lib).await?.is_empty(), "{engine}: nothing stored");

        let e = issuer.record_event(event(&id, issuance::EventKind::Seize, Some(year_minus_one()))).await.unwrap_err();
        assert_eq!((e.code(), violated_fields(&e)), (Code::InvalidArgument, vec!["occurred_at".to_owned()]));
        let huge = prost_types::Timestamp { seconds: i64::MAX, nanos: 999_999_999 };
        let e = issuer.record_event(event(&id, issuance::EventKind::Seize, Some(huge))).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["occurred_at".to_owned()]);
        let history = lib
            .issuance(Role::Issuer, ISSUER)
            .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: id.clone() })
            .await?
            .into_inner()
            .events;
        assert_eq!(history.len(), 1, "{engine}: only the issue");

        for (field, value) in
            [("valid_until", "0000-12-31"), ("issue_date", "1899-12-31"), ("valid_from", "-0001-01-01")]
        {
            let mut d = draft(&code);
            match field {
                "valid_until" => d.valid_until = value.into(),
                "issue_date" => d.issue_date = value.into(),
                _ => d.valid_from = value.into(),
            }
            let e = issue(&lib, d).await.unwrap_err();
            assert!(violated_fields(&e).contains(&field.to_owned()), "{engine}: {field} {value}: {e:?}");
        }

        let key = lib
            .signing(Role::Admin, ADMIN)
            .list_public_keys(signing::ListPublicKeysRequest { issuer_code: ISSUER.into() })
            .await?
            .into_inner()
            .keys
            .into_iter()
            .next()
            .unwrap_or_default();
        let e = lib
            .signing(Role::Admin, ADMIN)
            .compromise_key(signing::CompromiseKeyRequest {
                key_id: key.key_id.clone(),
                since: Some(year_minus_one()),
                reason: "leak".into(),
            })
            .await
            .unwrap_err();
        assert_eq!((e.code(), violated_fields(&e)), (Code::InvalidArgument, vec!["since".to_owned()]), "{engine}");
    }
    Ok(())
}

#[tokio::test]
async fn rows_older_versions_stored_do_not_take_down_a_read() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let a = issue(&lib, draft(&code)).await?.identifier;
        let b = issue(&lib, draft(&code)).await?.identifier;
        lib.issuance(Role::Issuer, ISSUER).record_event(event(&b, issuance::EventKind::Seize, None)).await?;
        // What an older version accepted and stored, and a row nobody can read.
        sql(
            &lib,
            &[
                &format!(
                    "UPDATE licence_events SET occurred_at = '-0001-01-01T00:00:00.000000Z' WHERE identifier = '{a}'"
                ),
                &format!("UPDATE licence_events SET occurred_at = 'not a time' WHERE identifier = '{b}' AND kind = 'seize'"),
                "INSERT INTO outages (issuer_code, started_at, cause, recorded_by, recorded_at)
                 VALUES ('91350100M000100Y43', '-0001-01-01T00:00:00.000000Z', 'old', 'issuer@x', '2026-01-01T00:00:00.000000Z')",
                "INSERT INTO outages (issuer_code, started_at, cause, recorded_by, recorded_at)
                 VALUES ('91350100M000100Y43', 'garbage', 'bad', 'issuer@x', '2026-01-01T00:00:00.000000Z')",
            ],
        )
        .await?;
        let lib = lib.restart().await?;

        let listed = outages(&lib).await?;
        assert_eq!(listed.len(), 1, "{engine}: the unreadable outage is left out, the old one is listed");
        let old = listed[0].id;
        let mut issuer = lib.issuance(Role::Issuer, ISSUER);
        issuer.end_outage(issuance::EndOutageRequest { id: old, ended_at: None }).await?;
        issuer.complete_outage_backlog(issuance::CompleteOutageBacklogRequest { id: old }).await?;

        let history = issuer.get_licence_history(issuance::GetLicenceHistoryRequest { identifier: a.clone() }).await?;
        assert_eq!(history.into_inner().events.len(), 1, "{engine}");
        let history = issuer.get_licence_history(issuance::GetLicenceHistoryRequest { identifier: b.clone() }).await?;
        assert_eq!(history.into_inner().events.len(), 1, "{engine}: the unreadable event is left out");

        let mut feed = lib
            .issuance(Role::Sync, ADMIN)
            .watch_changes(issuance::WatchChangesRequest { after_sequence: 0, until_caught_up: true })
            .await?
            .into_inner();
        let mut seen = Vec::new();
        while let Some(m) = feed.message().await? {
            seen.push(m.event.unwrap_or_default().identifier);
        }
        assert_eq!(seen, vec![a.clone(), b.clone()], "{engine}: the feed goes on past both rows");

        let v = lib
            .verification(Role::Auditor, ADMIN)
            .verify_licence(verification::VerifyLicenceRequest { identifier: a.clone(), include_inclusion_proof: true })
            .await?
            .into_inner()
            .verification
            .unwrap_or_default();
        // The row was edited behind the log's back, so the log disagrees; what
        // matters is an answer, not INTERNAL.
        assert_eq!(v.outcome, verification::VerificationOutcome::LogMismatch as i32, "{engine}: {v:?}");
    }
    Ok(())
}

#[tokio::test]
async fn an_issuer_cannot_backdate_through_a_self_declared_outage() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        // Issued yesterday (aggregated: its issue event is at 00:00 CST).
        let id = issued_days_ago(&lib, &code, 1).await?;
        let now = OffsetDateTime::now_utc();
        let mut issuer = lib.issuance(Role::Issuer, ISSUER);
        let outage = |start: OffsetDateTime| issuance::RecordOutageRequest {
            issuer_code: ISSUER.into(),
            started_at: Some(timestamp(start)),
            cause: "系统故障".into(),
            ..Default::default()
        };

        // An outage starting far back is refused for an issuer...
        let e = issuer.record_outage(outage(now - Duration::days(8))).await.unwrap_err();
        assert_eq!((e.code(), violated_fields(&e)), (Code::InvalidArgument, vec!["started_at".to_owned()]), "{engine}");
        assert!(e.message().contains("7 days"), "{}", e.message());
        // ...but an administrator may record one.
        lib.issuance(Role::Admin, ADMIN).record_outage(outage(now - Duration::days(400))).await?;

        // Inside the window it is accepted, but events still may not precede
        // the licence's issue, or its last event.
        issuer.record_outage(outage(now - Duration::days(6))).await?;
        let e = issuer
            .record_event(event(&id, issuance::EventKind::Revoke, Some(timestamp(now - Duration::days(5)))))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), violated_fields(&e)),
            (Code::InvalidArgument, vec!["occurred_at".to_owned()]),
            "{engine}"
        );
        assert!(e.message().contains("before its issue"), "{}", e.message());
        // A caller-chosen issue date far back does not open the past either.
        let mut old_paper = draft(&code);
        old_paper.issue_date = "2025-01-01".into();
        let old_paper = issue(&lib, old_paper).await?.identifier;
        let at = |y, m| -> anyhow::Result<OffsetDateTime> {
            Ok(OffsetDateTime::new_utc(time::Date::from_calendar_date(y, m, 1)?, time::Time::MIDNIGHT))
        };
        lib.issuance(Role::Admin, ADMIN)
            .record_outage(issuance::RecordOutageRequest {
                issuer_code: ISSUER.into(),
                started_at: Some(timestamp(at(2025, time::Month::February)?)),
                cause: "历史故障".into(),
                ..Default::default()
            })
            .await?;
        let e = issuer
            .record_event(event(&old_paper, issuance::EventKind::Revoke, Some(timestamp(at(2025, time::Month::June)?))))
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["occurred_at".to_owned()], "{engine}: {}", e.message());
        // An issue date after today is refused outright.
        let mut future = draft(&code);
        future.issue_date = "2099-01-01".into();
        let e = issue(&lib, future).await.unwrap_err();
        assert!(violated_fields(&e).contains(&"issue_date".to_owned()), "{engine}: {e:?}");
        issuer
            .record_event(event(&id, issuance::EventKind::Seize, Some(timestamp(now - Duration::minutes(10)))))
            .await?;
        let e = issuer
            .record_event(event(&id, issuance::EventKind::Return, Some(timestamp(now - Duration::minutes(20)))))
            .await
            .unwrap_err();
        assert!(e.message().contains("last recorded event"), "{engine}: {}", e.message());
        let l = issuer
            .get_licence(issuance::GetLicenceRequest { identifier: id.clone(), ..Default::default() })
            .await?
            .into_inner();
        assert_eq!(
            l.licence.unwrap_or_default().status,
            zhengzhao_proto::common::v1::LicenceStatus::Seized as i32,
            "{engine}: only the seizure took"
        );
    }
    Ok(())
}

#[tokio::test]
async fn another_issuers_outage_answers_as_a_missing_one() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let theirs = lib
            .issuance(Role::Admin, ADMIN)
            .record_outage(issuance::RecordOutageRequest {
                issuer_code: OTHER_ISSUER.into(),
                started_at: Some(timestamp(OffsetDateTime::now_utc() - Duration::hours(2))),
                cause: "断网".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .outage
            .unwrap_or_default();
        let missing = theirs.id + 1000;
        let mut issuer = lib.issuance(Role::Issuer, ISSUER);
        let answers = |e: tonic::Status, id: u64| (e.code(), e.message().replace(&id.to_string(), "N"));
        let a = issuer.end_outage(issuance::EndOutageRequest { id: theirs.id, ended_at: None }).await.unwrap_err();
        let b = issuer.end_outage(issuance::EndOutageRequest { id: missing, ended_at: None }).await.unwrap_err();
        let (a, b) = (answers(a, theirs.id), answers(b, missing));
        assert_eq!(a, b, "{engine}");
        assert_eq!(a.0, Code::NotFound);
        assert!(!a.1.contains(OTHER_ISSUER), "{engine}: {}", a.1);
        let a =
            issuer.complete_outage_backlog(issuance::CompleteOutageBacklogRequest { id: theirs.id }).await.unwrap_err();
        let b =
            issuer.complete_outage_backlog(issuance::CompleteOutageBacklogRequest { id: missing }).await.unwrap_err();
        assert_eq!(answers(a, theirs.id), answers(b, missing), "{engine}");
    }
    Ok(())
}

/// Over the whole wire range, on each engine: every timestamp the edge
/// accepts is stored as text and read back to the same instant (to the
/// microsecond); everything else is refused before it reaches the store.
#[tokio::test]
async fn every_accepted_timestamp_is_stored_and_read_back_on_both_engines() -> Result {
    // splitmix64: reproducible samples over all of i64, plus the range's edges.
    let mut state = 0x5A5A_F00D_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (first, limit) = (-2_208_988_800_i64, 253_402_214_400_i64);
    let mut samples: Vec<prost_types::Timestamp> = Vec::new();
    for edge in [first, limit, 0] {
        for d in -2..=2 {
            samples.push(prost_types::Timestamp { seconds: edge + d, nanos: 0 });
            samples.push(prost_types::Timestamp { seconds: edge + d, nanos: 999_999_999 });
        }
    }
    for _ in 0..400 {
        let seconds = next() as i64;
        let inside = first + (next() % u64::try_from(limit - first)?) as i64;
        let nanos = (next() % 1_000_000_000) as i32;
        samples.push(prost_types::Timestamp { seconds, nanos });
        samples.push(prost_types::Timestamp { seconds: inside, nanos });
    }
    for db in zhengzhao_testkit::TestDb::both().await? {
        let store = zhengzhao_store::open(&db.store(), "issuance", &zhengzhao_issuance::MIGRATIONS).await?;
        sqlx::query("CREATE TABLE times_probe (n BIGINT, t TEXT)").execute(&store.pool).await?;
        let mut accepted = 0;
        for (n, wire) in samples.iter().enumerate() {
            let Ok(t) = zhengzhao_proto::convert::from_timestamp("t", wire) else { continue };
            accepted += 1;
            sqlx::query("INSERT INTO times_probe (n, t) VALUES ($1, $2)")
                .bind(i64::try_from(n)?)
                .bind(zhengzhao_store::format_time(t))
                .execute(&store.pool)
                .await?;
            let text: String = sqlx::query_scalar("SELECT t FROM times_probe WHERE n = $1")
                .bind(i64::try_from(n)?)
                .fetch_one(&store.pool)
                .await?;
            let back = zhengzhao_store::parse_time(&text);
            let back = back.ok_or_else(|| anyhow::anyhow!("{}: {text} does not read back", db.engine()))?;
            assert!(back <= t && t - back < time::Duration::microseconds(1), "{}: {t} became {back}", db.engine());
        }
        assert!(accepted > 400, "{}: the samples reach inside the range ({accepted})", db.engine());
        store.pool.close().await;
    }
    Ok(())
}
