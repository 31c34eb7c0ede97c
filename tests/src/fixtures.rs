//! Shared steps of the service tests: an example type, a valid licence of
//! it, issuing, and reading field violations.

use tonic_types::StatusExt;
use zhengzhao_auth::Role;
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::definition_to_wire;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_testkit::TestDb;

use crate::{ADMIN, ISSUER, Library};

/// One library on each engine.
pub async fn libraries() -> anyhow::Result<Vec<Library>> {
    let mut out = Vec::new();
    for db in TestDb::both().await? {
        out.push(Library::start(db).await?);
    }
    Ok(out)
}

pub fn example_definition() -> zhengzhao_core::LicenceTypeDefinition {
    zhengzhao::examples::definition(ISSUER).expect("example definition")
}

/// Creates and publishes the example type; returns its code.
pub async fn published_type(lib: &Library) -> anyhow::Result<String> {
    published_type_with(lib, |_| {}).await
}

/// Creates and publishes the example type as `adjust` leaves it; returns its code.
pub async fn published_type_with(
    lib: &Library,
    adjust: impl FnOnce(&mut zhengzhao_core::LicenceTypeDefinition),
) -> anyhow::Result<String> {
    let mut definition = example_definition();
    adjust(&mut definition);
    let mut c = lib.catalog(Role::Admin, ADMIN);
    let created = c
        .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&definition)) })
        .await?
        .into_inner();
    let code = created.licence_type.and_then(|t| t.definition).map(|d| d.code).unwrap_or_default();
    c.publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() }).await?;
    Ok(code)
}

pub fn draft(type_code: &str) -> issuance::LicenceDraft {
    let mut def = example_definition();
    def.code = Some(type_code.to_owned());
    let d = zhengzhao::examples::draft(&def, "2026-11-27").expect("example draft");
    issuance::LicenceDraft::from(&d)
}

pub async fn issue(lib: &Library, d: issuance::LicenceDraft) -> std::result::Result<common::Licence, tonic::Status> {
    lib.issuance(Role::Issuer, ISSUER)
        .issue_licence(issuance::IssueLicenceRequest { draft: Some(d), idempotency_key: String::new() })
        .await
        .map(|r| r.into_inner().licence.unwrap_or_default())
}

pub fn violated_fields(s: &tonic::Status) -> Vec<String> {
    s.get_details_bad_request().map(|b| b.field_violations.into_iter().map(|v| v.field).collect()).unwrap_or_default()
}

/// A licence of `type_code` issued `days` ago, brought in as a historical
/// licence (its issue event's business time is its issue date, 00:00 China
/// Standard Time, as aggregation records it); returns its identifier.
pub async fn issued_days_ago(lib: &Library, type_code: &str, days: i64) -> anyhow::Result<String> {
    let issued = zhengzhao_core::clock::Clock::default().today() - time::Duration::days(days);
    let mut d = draft(type_code);
    d.issue_date = zhengzhao_core::date::format_date(issued);
    imported(lib, d).await
}

/// Brings `d` in as a historical licence (ImportLicences); returns its identifier.
pub async fn imported(lib: &Library, mut d: issuance::LicenceDraft) -> anyhow::Result<String> {
    let serial = format!("H{}", uuid_like());
    d.serial = serial.clone();
    let type_code = d.type_code.clone();
    let row =
        issuance::ImportRow { row_number: 1, source_key: serial.clone(), identifier: String::new(), draft: Some(d) };
    let r = lib
        .issuance(Role::Issuer, ISSUER)
        .import_licences(tokio_stream::iter(vec![issuance::ImportLicencesRequest {
            rows: vec![row],
            allow_legacy: false,
        }]))
        .await?
        .into_inner();
    anyhow::ensure!(r.imported == 1, "import refused: {:?}", r.errors);
    let id = zhengzhao_core::LicenceId::new(
        zhengzhao_core::TypeCode::parse(&type_code).map_err(anyhow::Error::msg)?,
        zhengzhao_core::Uscc::parse(ISSUER)?,
        &serial,
        1,
    )?;
    Ok(id.to_string())
}

/// Twelve upper-case characters, different on every call.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:X}{n:X}", nanos % 0xFFFF_FFFF_FFFF)
}

/// A lifecycle event of `kind` on `id`, with `reason`.
pub fn event(id: &str, kind: issuance::EventKind, reason: &str) -> issuance::RecordEventRequest {
    issuance::RecordEventRequest {
        identifier: id.into(),
        kind: kind as i32,
        reason: reason.into(),
        ..Default::default()
    }
}

/// Records `r` as the example type's issuer; the licence it answers with.
pub async fn record(lib: &Library, r: issuance::RecordEventRequest) -> Result<common::Licence, tonic::Status> {
    lib.issuance(Role::Issuer, ISSUER).record_event(r).await.map(|r| r.into_inner().licence.unwrap_or_default())
}

/// Verifies `id` as a consumer: the whole verification.
pub async fn verification_of(
    lib: &Library,
    id: &str,
) -> anyhow::Result<zhengzhao_proto::verification::v1::Verification> {
    use zhengzhao_proto::verification::v1 as verification;
    Ok(lib
        .verification(Role::Consumer, crate::CONSUMER)
        .verify_licence(verification::VerifyLicenceRequest { identifier: id.into(), include_inclusion_proof: false })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default())
}

/// Verifies `id` as a consumer: the outcome and its detail.
pub async fn verify_outcome(
    lib: &Library,
    id: &str,
) -> anyhow::Result<(zhengzhao_proto::verification::v1::VerificationOutcome, String)> {
    let v = verification_of(lib, id).await?;
    Ok((zhengzhao_proto::verification::v1::VerificationOutcome::try_from(v.outcome)?, v.detail))
}

/// Runs `statements` on the issuance database behind the library's back.
pub async fn issuance_sql(lib: &Library, statements: &[&str]) -> anyhow::Result<()> {
    let db = zhengzhao_store::open(&lib.db.store(), "issuance", &zhengzhao_issuance::MIGRATIONS).await?;
    for s in statements {
        zhengzhao_store::sqlx::query(zhengzhao_store::sqlx::AssertSqlSafe(s.to_string())).execute(&db.pool).await?;
    }
    db.pool.close().await;
    Ok(())
}

/// Runs `statements` on the exchange database behind the library's back.
pub async fn exchange_sql(lib: &Library, statements: &[&str]) -> anyhow::Result<()> {
    let db = zhengzhao_store::open(&lib.db.store(), "exchange", &zhengzhao_exchange::MIGRATIONS).await?;
    for s in statements {
        zhengzhao_store::sqlx::query(zhengzhao_store::sqlx::AssertSqlSafe(s.to_string())).execute(&db.pool).await?;
    }
    db.pool.close().await;
    Ok(())
}

/// Renews `id` as the example type's issuer (`valid_from` empty: the default start).
pub async fn renew(lib: &Library, id: &str, valid_from: &str) -> Result<common::Licence, tonic::Status> {
    lib.issuance(Role::Issuer, ISSUER)
        .renew_licence(issuance::RenewLicenceRequest {
            identifier: id.into(),
            valid_from: valid_from.into(),
            reason: "延续".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().licence.unwrap_or_default())
}
