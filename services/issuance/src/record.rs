//! Licences and events as read back from the database.

use sqlx::Row;
use time::Date;
use zhengzhao_core::date::read_date;
pub use zhengzhao_core::record::{EventDetails, EventRecord, FeedEntry, LastCheck, LicenceRecord, started};
use zhengzhao_core::{LicenceStatus, LifecycleAction};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Columns, parse_time};

fn bad(what: &str) -> ServiceError {
    ServiceError::internal(format!("unreadable {what} in database"))
}

pub(crate) const LICENCE_COLUMNS: &str = "identifier, type_code, issuer_code, template_version, status, valid_until, \
    document_json, jws, key_id, recorded_at, updated_at, reported_lost, mortgaged, superseded_by, replaces, successor_from, last_check_kind, last_check_result, last_check_invalidates";

pub(crate) fn licence_from_row(row: &impl Columns, today: Date) -> Result<LicenceRecord, ServiceError> {
    let s = |c: &str| row.text(c).map_err(ServiceError::from);
    let i = |c: &str| row.int(c).map_err(ServiceError::from);
    let o = |c: &str| row.opt_text(c).map_err(ServiceError::from);
    let stored_status = LicenceStatus::from_name(&s("status")?).ok_or_else(|| bad("status"))?;
    let valid_until = o("valid_until")?.map(|d| read_date(&d).map_err(|_| bad("valid_until"))).transpose()?;
    let successor_from = o("successor_from")?.map(|d| read_date(&d).map_err(|_| bad("successor_from"))).transpose()?;
    // A replaced version that took effect stays in force until its successor does.
    let document_json = s("document_json")?;
    let status = match (stored_status, successor_from) {
        (LicenceStatus::Superseded, Some(from)) if from > today && started(&document_json, today) => {
            LicenceStatus::Valid.effective(valid_until, today)
        }
        _ => stored_status.effective(valid_until, today),
    };
    Ok(LicenceRecord {
        identifier: s("identifier")?,
        type_code: s("type_code")?,
        issuer_code: s("issuer_code")?,
        template_version: u32::try_from(i("template_version")?).map_err(|_| bad("template_version"))?,
        status,
        stored_status,
        reported_lost: i("reported_lost")? != 0,
        mortgaged: i("mortgaged")? != 0,
        superseded_by: o("superseded_by")?,
        successor_from,
        replaces: o("replaces")?,
        last_check: match (o("last_check_kind")?, o("last_check_result")?) {
            (Some(k), Some(result)) => LifecycleAction::from_name(&k).map(|kind| LastCheck {
                kind,
                result,
                invalidates: i("last_check_invalidates").unwrap_or(0) != 0,
            }),
            _ => None,
        },
        valid_until,
        document_json,
        jws: s("jws")?,
        key_id: s("key_id")?,
        recorded_at: parse_time(&s("recorded_at")?).ok_or_else(|| bad("recorded_at"))?,
        updated_at: parse_time(&s("updated_at")?).ok_or_else(|| bad("updated_at"))?,
    })
}

pub(crate) const EVENT_COLUMNS: &str = "e.sequence, e.identifier, e.kind, e.status_after, e.actor, e.reason, e.details_json, e.backfill, e.occurred_at, e.recorded_at";

pub(crate) fn event_from_row(row: &sqlx::any::AnyRow) -> Result<EventRecord, ServiceError> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::internal);
    Ok(EventRecord {
        sequence: row.try_get("sequence").map_err(ServiceError::internal)?,
        identifier: s("identifier")?,
        kind: LifecycleAction::from_name(&s("kind")?).ok_or_else(|| bad("kind"))?,
        status_after: LicenceStatus::from_name(&s("status_after")?).ok_or_else(|| bad("status_after"))?,
        actor: s("actor")?,
        reason: s("reason")?,
        details: serde_json::from_str(&s("details_json")?).map_err(|_| bad("details_json"))?,
        backfill: row.try_get::<i64, _>("backfill").map_err(ServiceError::internal)? != 0,
        occurred_at: parse_time(&s("occurred_at")?).ok_or_else(|| bad("occurred_at"))?,
        recorded_at: parse_time(&s("recorded_at")?).ok_or_else(|| bad("recorded_at"))?,
    })
}

/// Events from `rows`, leaving out (and reporting) any row that cannot be
/// read, so that one bad row never takes down a whole history or feed page.
pub(crate) fn readable<T>(
    rows: &[sqlx::any::AnyRow],
    read: impl Fn(&sqlx::any::AnyRow) -> Result<T, ServiceError>,
) -> Vec<T> {
    rows.iter()
        .filter_map(|row| match read(row) {
            Ok(v) => Some(v),
            Err(e) => {
                let sequence: Option<i64> = row.try_get("sequence").ok();
                tracing::error!(sequence = ?sequence, error = %e, "unreadable event row left out");
                None
            }
        })
        .collect()
}
