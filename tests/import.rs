//! Bulk aggregation of historical licences over gRPC, on SQLite and
//! PostgreSQL: good rows land and bad rows are reported by row, field and
//! reason; re-running is safe; legacy identifiers (any wrong check character
//! on a well-formed identifier) only with the flag, kept verbatim, and
//! fetched and verified by exactly that string.

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, libraries, published_type};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library};
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::verification::v1 as verification;

type Result = anyhow::Result<()>;

fn row(n: u64, key: &str, code: &str, serial: &str) -> issuance::ImportRow {
    let mut d = draft(code);
    d.serial = serial.into();
    d.issue_date = "2019-03-01".into();
    d.valid_until = "2024-02-28".into();
    issuance::ImportRow { row_number: n, source_key: key.into(), identifier: String::new(), draft: Some(d) }
}

async fn import(
    lib: &Library,
    batches: Vec<Vec<issuance::ImportRow>>,
    allow_legacy: bool,
) -> std::result::Result<issuance::ImportLicencesResponse, tonic::Status> {
    let msgs: Vec<_> = batches.into_iter().map(|rows| issuance::ImportLicencesRequest { rows, allow_legacy }).collect();
    lib.issuance(Role::Issuer, ISSUER).import_licences(tokio_stream::iter(msgs)).await.map(|r| r.into_inner())
}

fn errors(r: &issuance::ImportLicencesResponse) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = r.errors.iter().map(|e| (e.row_number, e.field.clone())).collect();
    v.sort();
    v
}

/// An identifier for `serial` with the legacy check character.
fn legacy_identifier(code: &str, serial: &str) -> String {
    let body = format!("{code}{ISSUER}{serial}001");
    let check = zhengzhao_core::mod3736::legacy_check_char(&body).expect("alphanumeric");
    format!("{}.{code}.{ISSUER}.{serial}.001.{check}", zhengzhao_core::identifier::ROOT)
}

/// The standard check character for `serial`, and an identifier with a
/// wrong one that no known computation gives (neither the standard nor
/// letters valued one too high).
fn arbitrary_legacy_identifier(code: &str, serial: &str) -> (char, String) {
    use zhengzhao_core::mod3736::{check_char, legacy_check_char, value_char};
    let body = format!("{code}{ISSUER}{serial}001");
    let standard = check_char(&body).expect("alphanumeric");
    let one_high = legacy_check_char(&body).expect("alphanumeric");
    let check = (0..36).map(value_char).find(|c| *c != standard && *c != one_high).expect("36 characters");
    (standard, format!("{}.{code}.{ISSUER}.{serial}.001.{check}", zhengzhao_core::identifier::ROOT))
}

/// The `standard_check` column of a held licence, read from its database.
async fn standard_check_column(lib: &Library, identifier: &str) -> anyhow::Result<Option<String>> {
    let db = zhengzhao_store::open(&lib.db.store(), "issuance", &zhengzhao_issuance::MIGRATIONS).await?;
    let got = sqlx::query_scalar::<_, Option<String>>("SELECT standard_check FROM licences WHERE identifier = $1")
        .bind(identifier)
        .fetch_one(&db.pool)
        .await?;
    db.pool.close().await;
    Ok(got)
}

#[tokio::test]
async fn good_rows_land_bad_rows_are_reported_and_reruns_change_nothing() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let mut bad_face = row(4, "K4", &code, "H4");
        if let Some(d) = bad_face.draft.as_mut() {
            d.face_fields.insert("staff_count".into(), "many".into());
        }
        let mut bad_holder = row(5, "K5", &code, "H5");
        if let Some(h) = bad_holder.draft.as_mut().and_then(|d| d.holder.as_mut()) {
            h.id_number = "91350100M000100Y44".into();
        }
        let duplicate_key = row(6, "K1", &code, "H6");
        let mut wrong_identifier = row(7, "K7", &code, "H7");
        wrong_identifier.identifier = legacy_identifier(&code, "OTHER");
        let batches = vec![
            vec![row(1, "K1", &code, "H1"), row(2, "K2", &code, "H2"), bad_face.clone(), duplicate_key.clone()],
            vec![row(3, "K3", &code, "H3"), bad_holder.clone(), wrong_identifier.clone()],
        ];
        let r = import(&lib, batches.clone(), false).await?;
        assert_eq!((r.received, r.imported, r.already_present), (7, 3, 0), "{engine}: {:?}", r.errors);
        assert_eq!(
            errors(&r),
            vec![
                (4, "face_fields.staff_count".to_owned()),
                (5, "holder.id_number".to_owned()),
                (6, "source_key".to_owned()),
                (7, "identifier".to_owned())
            ],
            "{engine}"
        );
        assert!(r.errors.iter().all(|e| !e.reason.is_empty()));
        // The feed got one issue event per imported licence, at its business time.
        let mut feed = lib
            .issuance(Role::Sync, ADMIN)
            .watch_changes(issuance::WatchChangesRequest { after_sequence: 0, until_caught_up: true })
            .await?
            .into_inner();
        let mut events = Vec::new();
        while let Some(m) = feed.message().await? {
            events.push(m.event.unwrap_or_default());
        }
        assert_eq!(events.len(), 3, "{engine}");
        assert!(events.iter().all(|e| e.actor == format!("issuer@{ISSUER}")));
        assert_eq!(events[0].occurred_at.as_ref().map(|t| t.seconds), Some(1_551_369_600), "2019-03-01T00:00+08:00");

        // Re-running the same file duplicates nothing.
        let again = import(&lib, batches, false).await?;
        assert_eq!((again.imported, again.already_present), (0, 3), "{engine}");
        assert_eq!(errors(&again).len(), 4);
        // Historical licences whose validity ended read as expired.
        let id = zhengzhao_core::LicenceId::new(
            zhengzhao_core::TypeCode::parse(&code).map_err(anyhow::Error::msg)?,
            zhengzhao_core::Uscc::parse(ISSUER)?,
            "H1",
            1,
        )?;
        let l = lib
            .issuance(Role::Issuer, ISSUER)
            .get_licence(issuance::GetLicenceRequest { identifier: id.to_string(), ..Default::default() })
            .await?;
        assert_eq!(l.into_inner().licence.unwrap_or_default().status, common::LicenceStatus::Expired as i32);
        // Only issuers import, for themselves.
        let e = lib
            .issuance(Role::Consumer, CONSUMER)
            .import_licences(tokio_stream::iter(vec![issuance::ImportLicencesRequest {
                rows: vec![row(1, "X", &code, "X1")],
                allow_legacy: false,
            }]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    Ok(())
}

#[tokio::test]
async fn legacy_identifiers_need_the_flag_are_kept_verbatim_and_verify() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let (standard, arbitrary) = arbitrary_legacy_identifier(&code, "LEGACY02");
        let one_high = legacy_identifier(&code, "LEGACY01");
        let one_high_standard = zhengzhao_core::mod3736::check_char(&format!("{code}{ISSUER}LEGACY01001"))
            .ok_or_else(|| anyhow::anyhow!("alphanumeric"))?;
        let mut rows = Vec::new();
        for (n, identifier) in [(1, &one_high), (2, &arbitrary)] {
            assert!(
                matches!(zhengzhao_core::LicenceId::parse(identifier), Err(zhengzhao_core::IdError::Check { .. })),
                "{identifier}"
            );
            let mut r = row(n, &format!("L{n}"), &code, "");
            r.identifier = identifier.clone();
            if let Some(d) = r.draft.as_mut() {
                d.valid_until = String::new();
                d.issue_date = "2024-01-01".into();
            }
            rows.push(r);
        }
        // Without the flag: refused, naming the standard check character.
        let refused = import(&lib, vec![rows.clone()], false).await?;
        assert_eq!(refused.imported, 0, "{engine}");
        assert_eq!(errors(&refused), vec![(1, "identifier".to_owned()), (2, "identifier".to_owned())], "{engine}");
        let reason = |n: u64| refused.errors.iter().find(|e| e.row_number == n).map(|e| e.reason.clone());
        let r1 = reason(1).unwrap_or_default();
        let r2 = reason(2).unwrap_or_default();
        assert!(r1.contains(&format!("should be {one_high_standard}")), "{engine}: {r1}");
        assert!(r2.contains(&format!("should be {standard}")) && r2.contains("legacy"), "{engine}: {r2}");

        // With the flag: both land, marked legacy, kept verbatim.
        let accepted = import(&lib, vec![rows], true).await?;
        assert_eq!((accepted.imported, accepted.legacy), (2, 2), "{engine}: {:?}", accepted.errors);
        assert_eq!(standard_check_column(&lib, &arbitrary).await?, Some(standard.to_string()), "{engine}");
        assert_eq!(standard_check_column(&lib, &one_high).await?, Some(one_high_standard.to_string()), "{engine}");

        for identifier in [&one_high, &arbitrary] {
            let l = lib
                .issuance(Role::Issuer, ISSUER)
                .get_licence(issuance::GetLicenceRequest { identifier: identifier.clone(), ..Default::default() })
                .await?
                .into_inner()
                .licence
                .unwrap_or_default();
            assert_eq!(&l.identifier, identifier, "{engine}");
            // By identifier.
            let v = lib
                .verification(Role::Consumer, CONSUMER)
                .verify_licence(verification::VerifyLicenceRequest {
                    identifier: identifier.clone(),
                    include_inclusion_proof: false,
                })
                .await?
                .into_inner()
                .verification
                .unwrap_or_default();
            assert_eq!(v.outcome, verification::VerificationOutcome::Valid as i32, "{engine}: {}", v.detail);
            // By the signed document (what `verify --document` sends).
            let v = lib
                .verification(Role::Consumer, CONSUMER)
                .verify_document(verification::VerifyDocumentRequest { jws: l.jws.clone() })
                .await?
                .into_inner()
                .verification
                .unwrap_or_default();
            assert_eq!(v.outcome, verification::VerificationOutcome::Valid as i32, "{engine}: {}", v.detail);
            assert_eq!(&v.identifier, identifier, "{engine}");
        }
        // The standard form of a legacy identifier names no licence held.
        let standard_form = format!("{}{standard}", &arbitrary[..arbitrary.len() - 1]);
        let e = lib
            .issuance(Role::Issuer, ISSUER)
            .get_licence(issuance::GetLicenceRequest { identifier: standard_form, ..Default::default() })
            .await
            .expect_err("not held");
        assert_eq!(e.code(), Code::NotFound, "{engine}");
    }
    Ok(())
}
