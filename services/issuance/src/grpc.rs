//! The issuance service's gRPC edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::principal;
use zhengzhao_core::date::parse_date;
use zhengzhao_core::{Holder, LicenceDraft};
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::{from_timestamp, status_from_wire, status_to_wire, timestamp};
use zhengzhao_proto::issuance::v1 as pb;
use zhengzhao_proto::issuance::v1::issuance_service_server::{IssuanceService, IssuanceServiceServer};

use crate::{EventRecord, Issuance, LicenceRecord};

/// The tonic service over [`Issuance`].
#[derive(Debug, Clone)]
pub struct IssuanceGrpc(pub Arc<Issuance>);

impl IssuanceGrpc {
    pub fn into_server(self) -> IssuanceServiceServer<Self> {
        IssuanceServiceServer::new(self)
    }
}

pub fn licence_to_wire(l: &LicenceRecord) -> common::Licence {
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
    }
}

pub fn licence_from_wire(l: common::Licence) -> Result<LicenceRecord, ServiceError> {
    let status = common::LicenceStatus::try_from(l.status)
        .ok()
        .and_then(status_from_wire)
        .ok_or_else(|| ServiceError::internal("licence without status"))?;
    let doc = zhengzhao_core::LicenceDocument::from_json(l.document_json.as_bytes()).map_err(ServiceError::internal)?;
    let valid_until = doc.valid_until.as_deref().map(parse_date).transpose().map_err(ServiceError::internal)?;
    let time = |t: &Option<prost_types::Timestamp>, f: &str| {
        t.as_ref().map(|t| from_timestamp(f, t)).transpose().map(|t| t.unwrap_or(time::OffsetDateTime::UNIX_EPOCH))
    };
    Ok(LicenceRecord {
        identifier: l.identifier,
        type_code: l.type_code,
        issuer_code: l.issuer_code,
        template_version: l.template_version,
        status,
        stored_status: status,
        valid_until,
        document_json: l.document_json,
        jws: l.jws,
        key_id: l.key_id,
        recorded_at: time(&l.recorded_at, "recorded_at")?,
        updated_at: time(&l.updated_at, "updated_at")?,
    })
}

fn event_to_wire(e: &EventRecord) -> pb::LicenceEvent {
    pb::LicenceEvent {
        sequence: u64::try_from(e.sequence).unwrap_or_default(),
        kind: match e.kind.as_str() {
            "issue" => pb::EventKind::Issue,
            "cancel" => pb::EventKind::Cancel,
            "revoke" => pb::EventKind::Revoke,
            _ => pb::EventKind::Unspecified,
        } as i32,
        status_after: status_to_wire(e.status_after) as i32,
        actor: e.actor.clone(),
        reason: e.reason.clone(),
        occurred_at: Some(timestamp(e.occurred_at)),
        recorded_at: Some(timestamp(e.recorded_at)),
    }
}

/// The domain draft from the wire draft (the full check happens in [`Issuance::issue`]).
pub fn draft_from_wire(d: pb::LicenceDraft) -> LicenceDraft {
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

/// The wire draft from a domain draft (clients).
pub fn draft_to_wire(d: &LicenceDraft) -> pb::LicenceDraft {
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

#[tonic::async_trait]
impl IssuanceService for IssuanceGrpc {
    async fn issue_licence(
        &self,
        req: Request<pb::IssueLicenceRequest>,
    ) -> Result<Response<pb::IssueLicenceResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let draft = r.draft.ok_or_else(|| ServiceError::invalid("draft", "required"))?;
        let l = self.0.issue(&who, draft_from_wire(draft), &r.idempotency_key).await?;
        Ok(Response::new(pb::IssueLicenceResponse { licence: Some(licence_to_wire(&l)) }))
    }

    async fn cancel_licence(
        &self,
        req: Request<pb::CancelLicenceRequest>,
    ) -> Result<Response<pb::CancelLicenceResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let occurred_at = r.occurred_at.as_ref().map(|t| from_timestamp("occurred_at", t)).transpose()?;
        let l = self.0.cancel(&who, &r.identifier, &r.reason, occurred_at, &r.idempotency_key).await?;
        Ok(Response::new(pb::CancelLicenceResponse { licence: Some(licence_to_wire(&l)) }))
    }

    async fn get_licence(
        &self,
        req: Request<pb::GetLicenceRequest>,
    ) -> Result<Response<pb::GetLicenceResponse>, Status> {
        let who = principal(&req)?;
        let l = self.0.get(&who, &req.into_inner().identifier).await?;
        Ok(Response::new(pb::GetLicenceResponse { licence: Some(licence_to_wire(&l)) }))
    }

    async fn get_licence_history(
        &self,
        req: Request<pb::GetLicenceHistoryRequest>,
    ) -> Result<Response<pb::GetLicenceHistoryResponse>, Status> {
        let who = principal(&req)?;
        let identifier = req.into_inner().identifier;
        let events = self.0.history(&who, &identifier).await?;
        Ok(Response::new(pb::GetLicenceHistoryResponse {
            identifier,
            events: events.iter().map(event_to_wire).collect(),
        }))
    }
}
