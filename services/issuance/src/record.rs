//! Licences and events as read back from the database.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::{Date, OffsetDateTime};
use zhengzhao_core::date::read_date;
use zhengzhao_core::{LicenceState, LicenceStatus, LifecycleAction};
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
    pub reported_lost: bool,
    pub mortgaged: bool,
    pub superseded_by: Option<String>,
    /// While superseded: the day the successor takes effect. Until then this
    /// version stays in force (its `status` reads valid).
    pub successor_from: Option<Date>,
    pub replaces: Option<String>,
    /// The latest annual review or inspection.
    pub last_check: Option<LastCheck>,
    pub valid_until: Option<Date>,
    pub document_json: String,
    pub jws: String,
    pub key_id: String,
    pub recorded_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl LicenceRecord {
    /// The state the transition table works on: a version replaced by a
    /// successor takes no more events, even while it stays in force.
    pub fn state(&self) -> LicenceState {
        let status = if self.superseded_by.is_some() { LicenceStatus::Superseded } else { self.status };
        LicenceState { status, lost: self.reported_lost, mortgaged: self.mortgaged }
    }

    /// Whether this version was replaced but stays in force until its
    /// successor takes effect.
    pub fn awaiting_successor(&self) -> bool {
        self.superseded_by.is_some() && self.status == LicenceStatus::Valid
    }
}

/// The latest annual review (年审) or inspection (年检) of a licence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    pub kind: LifecycleAction,
    pub result: String,
    /// Failed, and its type says a failed check puts the licence out of force.
    pub invalidates: bool,
}

impl LastCheck {
    /// Whether the check failed (不合格, fail).
    pub fn failed(&self) -> bool {
        zhengzhao_core::check_failed(&self.result)
    }
}

/// What an event carries beyond its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due_date: Option<String>,
    /// For change and renewal: the other version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related_identifier: Option<String>,
    /// A cancellation an administrator forced on an encumbered licence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<bool>,
}

/// One lifecycle event, which is also one entry of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub sequence: i64,
    pub identifier: String,
    pub kind: LifecycleAction,
    pub status_after: LicenceStatus,
    pub actor: String,
    pub reason: String,
    pub details: EventDetails,
    pub backfill: bool,
    pub occurred_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
}

/// An event with the type and issuer of its licence, as the feed streams it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    pub event: EventRecord,
    pub type_code: String,
    pub issuer_code: String,
}

/// Whether the document's validity has started by `today`.
pub fn started(document_json: &str, today: Date) -> bool {
    zhengzhao_core::LicenceDocument::from_json(document_json.as_bytes())
        .ok()
        .and_then(|d| read_date(&d.valid_from).ok())
        .is_some_and(|from| from <= today)
}

fn bad(what: &str) -> ServiceError {
    ServiceError::internal(format!("unreadable {what} in database"))
}

pub(crate) const LICENCE_COLUMNS: &str = "identifier, type_code, issuer_code, template_version, status, valid_until, \
    document_json, jws, key_id, recorded_at, updated_at, reported_lost, mortgaged, superseded_by, replaces, successor_from, last_check_kind, last_check_result, last_check_invalidates";

pub(crate) fn licence_from_row(row: &sqlx::any::AnyRow, today: Date) -> Result<LicenceRecord, ServiceError> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::internal);
    let i = |c: &str| row.try_get::<i64, _>(c).map_err(ServiceError::internal);
    let o = |c: &str| row.try_get::<Option<String>, _>(c).map_err(ServiceError::internal);
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
