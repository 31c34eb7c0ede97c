//! Licences, lifecycle events and drafts on the wire (`common.v1.Licence`,
//! `issuance.v1`): the records issuance hands to exchange, verification and
//! the CLI.

use time::OffsetDateTime;
use zhengzhao_core::date::{format_date, read_date};
use zhengzhao_core::{EventRecord, Holder, LastCheck, LicenceDocument, LicenceDraft, LicenceRecord, LifecycleAction};

use super::{status_from_wire, status_to_wire, stored_timestamp, timestamp};
use crate::ServiceError;
use crate::common::v1 as common;
use crate::issuance::v1 as pb;

impl From<&LicenceRecord> for common::Licence {
    fn from(l: &LicenceRecord) -> Self {
        common::Licence {
            identifier: l.identifier.clone(),
            status: status_to_wire(l.status) as i32,
            document_json: l.document_json.clone(),
            jws: l.jws.clone(),
            key_id: l.key_id.clone(),
            type_code: l.type_code.clone(),
            issuer_code: l.issuer_code.clone(),
            template_version: l.template_version,
            recorded_at: Some(timestamp(l.recorded_at)),
            updated_at: Some(timestamp(l.updated_at)),
            reported_lost: l.reported_lost,
            mortgaged: l.mortgaged,
            superseded_by: l.superseded_by.clone().unwrap_or_default(),
            replaces: l.replaces.clone().unwrap_or_default(),
            successor_from: l.successor_from.map(format_date).unwrap_or_default(),
            recorded_status: status_to_wire(l.stored_status) as i32,
            last_check_kind: l.last_check.as_ref().map(|c| c.kind.name().to_owned()).unwrap_or_default(),
            last_check_result: l.last_check.as_ref().map(|c| c.result.clone()).unwrap_or_default(),
            last_check_invalidates: l.last_check.as_ref().is_some_and(|c| c.invalidates),
        }
    }
}

/// A licence another service returned (a record it holds).
impl TryFrom<common::Licence> for LicenceRecord {
    type Error = ServiceError;

    fn try_from(l: common::Licence) -> Result<Self, ServiceError> {
        let status = common::LicenceStatus::try_from(l.status)
            .ok()
            .and_then(status_from_wire)
            .ok_or_else(|| ServiceError::internal("licence without status"))?;
        let stored_status =
            common::LicenceStatus::try_from(l.recorded_status).ok().and_then(status_from_wire).unwrap_or(status);
        let doc = LicenceDocument::from_json(l.document_json.as_bytes()).map_err(ServiceError::internal)?;
        let valid_until = doc.valid_until.as_deref().map(read_date).transpose().map_err(ServiceError::internal)?;
        let successor_from = (!l.successor_from.is_empty())
            .then(|| read_date(&l.successor_from))
            .transpose()
            .map_err(ServiceError::internal)?;
        let time = |t: &Option<prost_types::Timestamp>, f: &str| {
            t.as_ref().map(|t| stored_timestamp(f, t)).transpose().map(|t| t.unwrap_or(OffsetDateTime::UNIX_EPOCH))
        };
        let text = |s: String| (!s.is_empty()).then_some(s);
        Ok(LicenceRecord {
            identifier: l.identifier,
            type_code: l.type_code,
            issuer_code: l.issuer_code,
            template_version: l.template_version,
            status,
            stored_status,
            reported_lost: l.reported_lost,
            mortgaged: l.mortgaged,
            superseded_by: text(l.superseded_by),
            successor_from,
            replaces: text(l.replaces),
            last_check: LifecycleAction::from_name(&l.last_check_kind).map(|kind| LastCheck {
                kind,
                result: l.last_check_result,
                invalidates: l.last_check_invalidates,
            }),
            valid_until,
            document_json: l.document_json,
            jws: l.jws,
            key_id: l.key_id,
            recorded_at: time(&l.recorded_at, "recorded_at")?,
            updated_at: time(&l.updated_at, "updated_at")?,
        })
    }
}

impl From<LifecycleAction> for pb::EventKind {
    fn from(a: LifecycleAction) -> Self {
        use LifecycleAction as A;
        use pb::EventKind as K;
        match a {
            A::Issue => K::Issue,
            A::Change => K::Change,
            A::Renew => K::Renew,
            A::Replace => K::Replace,
            A::Review => K::Review,
            A::Inspect => K::Inspect,
            A::ReportLoss => K::ReportLoss,
            A::WithdrawLoss => K::WithdrawLoss,
            A::Mortgage => K::Mortgage,
            A::Release => K::Release,
            A::Seize => K::Seize,
            A::Return => K::Return,
            A::Cancel => K::Cancel,
            A::Withdraw => K::Withdraw,
            A::Revoke => K::Revoke,
            A::Expire => K::Expire,
        }
    }
}

/// The action a wire kind names (`None`: unspecified or unknown).
pub fn action_from_wire(v: i32) -> Option<LifecycleAction> {
    let k = pb::EventKind::try_from(v).ok()?;
    LifecycleAction::ALL.into_iter().find(|a| pb::EventKind::from(*a) == k)
}

impl From<&EventRecord> for pb::LicenceEvent {
    fn from(e: &EventRecord) -> Self {
        pb::LicenceEvent {
            sequence: u64::try_from(e.sequence).unwrap_or_default(),
            kind: pb::EventKind::from(e.kind) as i32,
            status_after: status_to_wire(e.status_after) as i32,
            actor: e.actor.clone(),
            reason: e.reason.clone(),
            occurred_at: Some(timestamp(e.occurred_at)),
            recorded_at: Some(timestamp(e.recorded_at)),
            result: e.details.result.clone().unwrap_or_default(),
            next_due_date: e.details.next_due_date.clone().unwrap_or_default(),
            related_identifier: e.details.related_identifier.clone().unwrap_or_default(),
            backfill: e.backfill,
            identifier: e.identifier.clone(),
            forced: e.details.forced.unwrap_or(false),
        }
    }
}

/// An event as issuance answered it (clients).
impl TryFrom<pb::LicenceEvent> for EventRecord {
    type Error = ServiceError;
    fn try_from(e: pb::LicenceEvent) -> Result<Self, ServiceError> {
        let opt = |s: String| (!s.is_empty()).then_some(s);
        Ok(EventRecord {
            sequence: i64::try_from(e.sequence).map_err(ServiceError::internal)?,
            identifier: e.identifier,
            kind: action_from_wire(e.kind)
                .ok_or_else(|| ServiceError::internal("issuance sent an unknown event kind"))?,
            status_after: common::LicenceStatus::try_from(e.status_after)
                .ok()
                .and_then(status_from_wire)
                .ok_or_else(|| ServiceError::internal("issuance sent an unknown status"))?,
            actor: e.actor,
            reason: e.reason,
            details: zhengzhao_core::EventDetails {
                result: opt(e.result),
                next_due_date: opt(e.next_due_date),
                related_identifier: opt(e.related_identifier),
                forced: e.forced.then_some(true),
            },
            backfill: e.backfill,
            occurred_at: stored_timestamp("occurred_at", &e.occurred_at.unwrap_or_default())?,
            recorded_at: stored_timestamp("recorded_at", &e.recorded_at.unwrap_or_default())?,
        })
    }
}

/// The domain draft from the wire draft (the full check happens in issuance).
impl From<pb::LicenceDraft> for LicenceDraft {
    fn from(d: pb::LicenceDraft) -> Self {
        let holder = d.holder.unwrap_or_default();
        LicenceDraft {
            type_code: d.type_code,
            issuer_name: d.issuer_name,
            serial: d.serial,
            holder: Holder { name: holder.name, id_type_code: holder.id_type_code, id_number: holder.id_number },
            issue_date: d.issue_date,
            valid_from: d.valid_from,
            valid_until: d.valid_until,
            area_code: d.area_code,
            face_fields: d.face_fields.into_iter().collect(),
            template_version: d.template_version,
        }
    }
}

/// The wire draft from a domain draft (clients).
impl From<&LicenceDraft> for pb::LicenceDraft {
    fn from(d: &LicenceDraft) -> Self {
        pb::LicenceDraft {
            type_code: d.type_code.clone(),
            issuer_name: d.issuer_name.clone(),
            serial: d.serial.clone(),
            holder: Some(common::Holder {
                name: d.holder.name.clone(),
                id_type_code: d.holder.id_type_code.clone(),
                id_number: d.holder.id_number.clone(),
            }),
            issue_date: d.issue_date.clone(),
            valid_from: d.valid_from.clone(),
            valid_until: d.valid_until.clone(),
            area_code: d.area_code.clone(),
            face_fields: d.face_fields.clone().into_iter().collect(),
            template_version: d.template_version,
        }
    }
}
