//! The catalogue's gRPC edge: wire to domain (validating), domain to wire.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::{Action, authorized, principal};
use zhengzhao_core::HolderCategory;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::catalog::v1 as pb;
use zhengzhao_proto::catalog::v1::catalog_service_server::{CatalogService, CatalogServiceServer};
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::{
    definition_fields_from_wire, definition_from_wire, template_from_wire, template_to_wire, timestamp,
    type_status_from_wire,
};

use crate::{Catalog, CatalogDocument, LicenceTypeRecord, TypeFilter};

/// The tonic service over a [`Catalog`].
#[derive(Debug, Clone)]
pub struct CatalogGrpc(pub Arc<Catalog>);

impl CatalogGrpc {
    pub fn into_server(self) -> CatalogServiceServer<Self> {
        CatalogServiceServer::new(self)
    }
}

fn one(r: LicenceTypeRecord) -> Option<pb::LicenceType> {
    Some(pb::LicenceType::from(&r))
}

#[tonic::async_trait]
impl CatalogService for CatalogGrpc {
    async fn create_licence_type(
        &self,
        req: Request<pb::CreateLicenceTypeRequest>,
    ) -> Result<Response<pb::CreateLicenceTypeResponse>, Status> {
        let who = authorized(&req, &Action::ManageCatalog)?;
        let def = req.into_inner().definition.ok_or_else(|| ServiceError::invalid("definition", "required"))?;
        let def = definition_from_wire(def).map_err(ServiceError::from)?;
        let r = self.0.create(&who, def).await?;
        Ok(Response::new(pb::CreateLicenceTypeResponse { licence_type: one(r) }))
    }

    async fn publish_licence_type(
        &self,
        req: Request<pb::PublishLicenceTypeRequest>,
    ) -> Result<Response<pb::PublishLicenceTypeResponse>, Status> {
        let who = principal(&req)?;
        let r = self.0.publish(&who, &req.into_inner().code).await?;
        Ok(Response::new(pb::PublishLicenceTypeResponse { licence_type: one(r) }))
    }

    async fn get_licence_type(
        &self,
        req: Request<pb::GetLicenceTypeRequest>,
    ) -> Result<Response<pb::GetLicenceTypeResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let t = self.0.get(&who, &r.code, r.template_version).await?;
        Ok(Response::new(pb::GetLicenceTypeResponse { licence_type: one(t) }))
    }

    async fn list_licence_types(
        &self,
        req: Request<pb::ListLicenceTypesRequest>,
    ) -> Result<Response<pb::ListLicenceTypesResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let holder_category = match common::HolderCategory::try_from(r.holder_category) {
            Ok(common::HolderCategory::NaturalPerson) => Some(HolderCategory::NaturalPerson),
            Ok(common::HolderCategory::LegalPerson) => Some(HolderCategory::LegalPerson),
            Ok(common::HolderCategory::Unspecified) => None,
            Err(_) => return Err(ServiceError::invalid("holder_category", "unknown holder category").into()),
        };
        let status = match r.status {
            0 => None,
            v => Some(type_status_from_wire(v).ok_or_else(|| ServiceError::invalid("status", "unknown status"))?),
        };
        let filter = TypeFilter {
            name_contains: r.name_contains,
            defining_authority_code: r.defining_authority_code,
            holder_category,
            status,
        };
        let (types, next) = self.0.list(&who, &filter, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListLicenceTypesResponse {
            licence_types: types.iter().map(pb::LicenceType::from).collect(),
            next_page_token: next,
        }))
    }

    async fn revise_template(
        &self,
        req: Request<pb::ReviseTemplateRequest>,
    ) -> Result<Response<pb::ReviseTemplateResponse>, Status> {
        let who = authorized(&req, &Action::ManageCatalog)?;
        let r = req.into_inner();
        let mut violations = Vec::new();
        let template = template_from_wire(
            r.template.ok_or_else(|| ServiceError::invalid("template", "required"))?,
            &mut violations,
        );
        zhengzhao_core::Violations::into_result(violations).map_err(ServiceError::from)?;
        let t = self.0.revise_template(&who, &r.code, template, r.new_version).await?;
        Ok(Response::new(pb::ReviseTemplateResponse { licence_type: one(t) }))
    }

    async fn revise_licence_type(
        &self,
        req: Request<pb::ReviseLicenceTypeRequest>,
    ) -> Result<Response<pb::ReviseLicenceTypeResponse>, Status> {
        let who = authorized(&req, &Action::ManageCatalog)?;
        let r = req.into_inner();
        let def = r.definition.ok_or_else(|| ServiceError::invalid("definition", "required"))?;
        let def = definition_fields_from_wire(def).map_err(ServiceError::from)?;
        let t = self.0.revise_type(&who, &r.code, def, &r.reason).await?;
        Ok(Response::new(pb::ReviseLicenceTypeResponse { licence_type: one(t) }))
    }

    async fn retire_licence_type(
        &self,
        req: Request<pb::RetireLicenceTypeRequest>,
    ) -> Result<Response<pb::RetireLicenceTypeResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let t = self.0.retire(&who, &r.code, &r.reason).await?;
        Ok(Response::new(pb::RetireLicenceTypeResponse { licence_type: one(t) }))
    }

    async fn list_template_versions(
        &self,
        req: Request<pb::ListTemplateVersionsRequest>,
    ) -> Result<Response<pb::ListTemplateVersionsResponse>, Status> {
        let who = principal(&req)?;
        let versions = self.0.versions(&who, &req.into_inner().code).await?;
        Ok(Response::new(pb::ListTemplateVersionsResponse {
            versions: versions
                .iter()
                .map(|v| pb::TemplateVersion {
                    template: Some(template_to_wire(&v.template)),
                    created_at: Some(timestamp(v.created_at)),
                })
                .collect(),
        }))
    }

    async fn list_catalog_changes(
        &self,
        req: Request<pb::ListCatalogChangesRequest>,
    ) -> Result<Response<pb::ListCatalogChangesResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (changes, next) = self.0.changes(&who, &r.code, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListCatalogChangesResponse {
            changes: changes
                .into_iter()
                .map(|c| pb::CatalogChange {
                    id: u64::try_from(c.id).unwrap_or_default(),
                    code: c.code,
                    actor: c.actor,
                    change: c.change,
                    detail_json: c.detail_json,
                    recorded_at: Some(timestamp(c.recorded_at)),
                })
                .collect(),
            next_page_token: next,
        }))
    }

    async fn export_catalog(
        &self,
        req: Request<pb::ExportCatalogRequest>,
    ) -> Result<Response<pb::ExportCatalogResponse>, Status> {
        let who = principal(&req)?;
        let doc = self.0.export(&who).await?;
        let catalog_json = serde_json::to_string_pretty(&doc).map_err(ServiceError::internal)?;
        Ok(Response::new(pb::ExportCatalogResponse { catalog_json }))
    }

    async fn import_catalog(
        &self,
        req: Request<pb::ImportCatalogRequest>,
    ) -> Result<Response<pb::ImportCatalogResponse>, Status> {
        let who = authorized(&req, &Action::FollowCatalogue)?;
        let doc: CatalogDocument = serde_json::from_str(&req.into_inner().catalog_json)
            .map_err(|e| ServiceError::invalid("catalog_json", format!("not a catalogue document: {e}")))?;
        let s = self.0.import(&who, doc).await?;
        Ok(Response::new(pb::ImportCatalogResponse { created: s.created, updated: s.updated, unchanged: s.unchanged }))
    }
}
