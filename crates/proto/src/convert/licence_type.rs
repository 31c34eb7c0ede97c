//! Licence types as the catalogue holds them, on the wire (`catalog.v1.LicenceType`).

use time::OffsetDateTime;
use zhengzhao_core::{LicenceTypeRecord, TypeStatus};

use super::{definition_from_wire, definition_to_wire, stored_timestamp, timestamp};
use crate::ServiceError;
use crate::catalog::v1 as pb;

impl From<TypeStatus> for pb::LicenceTypeStatus {
    fn from(s: TypeStatus) -> Self {
        match s {
            TypeStatus::Draft => pb::LicenceTypeStatus::Draft,
            TypeStatus::Published => pb::LicenceTypeStatus::Published,
            TypeStatus::Retired => pb::LicenceTypeStatus::Retired,
        }
    }
}

/// The type status a wire value names (`None`: unspecified or unknown).
pub fn type_status_from_wire(v: i32) -> Option<TypeStatus> {
    match pb::LicenceTypeStatus::try_from(v).ok()? {
        pb::LicenceTypeStatus::Draft => Some(TypeStatus::Draft),
        pb::LicenceTypeStatus::Published => Some(TypeStatus::Published),
        pb::LicenceTypeStatus::Retired => Some(TypeStatus::Retired),
        pb::LicenceTypeStatus::Unspecified => None,
    }
}

impl From<&LicenceTypeRecord> for pb::LicenceType {
    fn from(r: &LicenceTypeRecord) -> Self {
        pb::LicenceType {
            definition: Some(definition_to_wire(&r.definition)),
            status: pb::LicenceTypeStatus::from(r.status) as i32,
            created_at: Some(timestamp(r.created_at)),
            published_at: r.published_at.map(timestamp),
            retired_at: r.retired_at.map(timestamp),
        }
    }
}

/// A type the catalogue returned.
impl TryFrom<pb::LicenceType> for LicenceTypeRecord {
    type Error = ServiceError;

    fn try_from(t: pb::LicenceType) -> Result<Self, ServiceError> {
        let mut definition = definition_from_wire(t.definition.unwrap_or_default())?;
        if definition.template.version == 0 {
            definition.template.version = 1;
        }
        let status = type_status_from_wire(t.status)
            .ok_or_else(|| ServiceError::internal("catalog returned a type without status"))?;
        let time =
            |ts: &Option<prost_types::Timestamp>, f: &str| ts.as_ref().map(|ts| stored_timestamp(f, ts)).transpose();
        Ok(LicenceTypeRecord {
            current_version: definition.template.version,
            definition,
            status,
            created_at: time(&t.created_at, "created_at")?.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            published_at: time(&t.published_at, "published_at")?,
            retired_at: time(&t.retired_at, "retired_at")?,
        })
    }
}
