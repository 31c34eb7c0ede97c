//! The catalogue's gRPC edge: wire to domain (validating), domain to wire.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::principal;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::catalog::v1 as pb;
use zhengzhao_proto::catalog::v1::catalog_service_server::{CatalogService, CatalogServiceServer};
use zhengzhao_proto::convert::{definition_from_wire, definition_to_wire, timestamp};

use crate::{Catalog, LicenceTypeRecord, TypeStatus};

/// The tonic service over a [`Catalog`].
#[derive(Debug, Clone)]
pub struct CatalogGrpc(pub Arc<Catalog>);

impl CatalogGrpc {
    pub fn into_server(self) -> CatalogServiceServer<Self> {
        CatalogServiceServer::new(self)
    }
}

pub fn record_to_wire(r: &LicenceTypeRecord) -> pb::LicenceType {
    pb::LicenceType {
        definition: Some(definition_to_wire(&r.definition)),
        status: match r.status {
            TypeStatus::Draft => pb::LicenceTypeStatus::Draft,
            TypeStatus::Published => pb::LicenceTypeStatus::Published,
            TypeStatus::Retired => pb::LicenceTypeStatus::Retired,
        } as i32,
        created_at: Some(timestamp(r.created_at)),
        published_at: r.published_at.map(timestamp),
    }
}

pub fn record_from_wire(t: pb::LicenceType) -> Result<LicenceTypeRecord, ServiceError> {
    let mut definition = definition_from_wire(t.definition.unwrap_or_default())?;
    if definition.template.version == 0 {
        definition.template.version = 1;
    }
    let status = match pb::LicenceTypeStatus::try_from(t.status) {
        Ok(pb::LicenceTypeStatus::Draft) => TypeStatus::Draft,
        Ok(pb::LicenceTypeStatus::Published) => TypeStatus::Published,
        Ok(pb::LicenceTypeStatus::Retired) => TypeStatus::Retired,
        _ => return Err(ServiceError::internal("catalog returned a type without status")),
    };
    let created_at = t
        .created_at
        .as_ref()
        .map(|ts| zhengzhao_proto::convert::from_timestamp("created_at", ts))
        .transpose()?
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let published_at =
        t.published_at.as_ref().map(|ts| zhengzhao_proto::convert::from_timestamp("published_at", ts)).transpose()?;
    Ok(LicenceTypeRecord { definition, status, created_at, published_at })
}

#[tonic::async_trait]
impl CatalogService for CatalogGrpc {
    async fn create_licence_type(
        &self,
        req: Request<pb::CreateLicenceTypeRequest>,
    ) -> Result<Response<pb::CreateLicenceTypeResponse>, Status> {
        let who = principal(&req)?;
        let def = req.into_inner().definition.ok_or_else(|| ServiceError::invalid("definition", "required"))?;
        let def = definition_from_wire(def).map_err(ServiceError::from)?;
        let r = self.0.create(&who, def).await?;
        Ok(Response::new(pb::CreateLicenceTypeResponse { licence_type: Some(record_to_wire(&r)) }))
    }

    async fn publish_licence_type(
        &self,
        req: Request<pb::PublishLicenceTypeRequest>,
    ) -> Result<Response<pb::PublishLicenceTypeResponse>, Status> {
        let who = principal(&req)?;
        let r = self.0.publish(&who, &req.into_inner().code).await?;
        Ok(Response::new(pb::PublishLicenceTypeResponse { licence_type: Some(record_to_wire(&r)) }))
    }

    async fn get_licence_type(
        &self,
        req: Request<pb::GetLicenceTypeRequest>,
    ) -> Result<Response<pb::GetLicenceTypeResponse>, Status> {
        let who = principal(&req)?;
        let r = self.0.get(&who, &req.into_inner().code).await?;
        Ok(Response::new(pb::GetLicenceTypeResponse { licence_type: Some(record_to_wire(&r)) }))
    }

    async fn list_licence_types(
        &self,
        req: Request<pb::ListLicenceTypesRequest>,
    ) -> Result<Response<pb::ListLicenceTypesResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (types, next) = self.0.list(&who, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListLicenceTypesResponse {
            licence_types: types.iter().map(record_to_wire).collect(),
            next_page_token: next,
        }))
    }
}
