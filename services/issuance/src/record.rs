//! Licences and events as read back from the database.

use sqlx::Row;
use time::{Date, OffsetDateTime};
use zhengzhao_core::LicenceStatus;
use zhengzhao_core::date::parse_date;
use zhengzhao_proto::ServiceError;
use zhengzhao_store::parse_time;

/// A licence as the library holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenceRecord {
    pub identifier: String,
    pub type_code: String,
    pub issuer_code: String,
    pub template_version: u32,
    /// Status as of the read (expiry derived from `valid_until`).
    pub status: LicenceStatus,
    /// Status as recorded.
    pub stored_status: LicenceStatus,
    pub valid_until: Option<Date>,
    pub document_json: String,
    pub jws: String,
    pub key_id: String,
    pub recorded_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub sequence: i64,
    pub kind: String,
    pub status_after: LicenceStatus,
    pub actor: String,
    pub reason: String,
    pub occurred_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
}

fn bad(what: &str) -> ServiceError {
    ServiceError::internal(format!("unreadable {what} in database"))
}

pub(crate) fn licence_from_row(row: &sqlx::any::AnyRow, today: Date) -> Result<LicenceRecord, ServiceError> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::internal);
    let stored_status = LicenceStatus::from_code(&s("status")?).ok_or_else(|| bad("status"))?;
    let valid_until: Option<String> = row.try_get("valid_until").map_err(ServiceError::internal)?;
    let valid_until = valid_until.map(|d| parse_date(&d).map_err(|_| bad("valid_until"))).transpose()?;
    let template_version: i64 = row.try_get("template_version").map_err(ServiceError::internal)?;
    Ok(LicenceRecord {
        identifier: s("identifier")?,
        type_code: s("type_code")?,
        issuer_code: s("issuer_code")?,
        template_version: u32::try_from(template_version).map_err(|_| bad("template_version"))?,
        status: stored_status.effective(valid_until, today),
        stored_status,
        valid_until,
        document_json: s("document_json")?,
        jws: s("jws")?,
        key_id: s("key_id")?,
        recorded_at: parse_time(&s("recorded_at")?).ok_or_else(|| bad("recorded_at"))?,
        updated_at: parse_time(&s("updated_at")?).ok_or_else(|| bad("updated_at"))?,
    })
}

pub(crate) fn event_from_row(row: &sqlx::any::AnyRow) -> Result<EventRecord, ServiceError> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::internal);
    Ok(EventRecord {
        sequence: row.try_get("sequence").map_err(ServiceError::internal)?,
        kind: s("kind")?,
        status_after: LicenceStatus::from_code(&s("status_after")?).ok_or_else(|| bad("status_after"))?,
        actor: s("actor")?,
        reason: s("reason")?,
        occurred_at: parse_time(&s("occurred_at")?).ok_or_else(|| bad("occurred_at"))?,
        recorded_at: parse_time(&s("recorded_at")?).ok_or_else(|| bad("recorded_at"))?,
    })
}
