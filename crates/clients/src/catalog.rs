//! How other services reach the catalogue: in-process, or over gRPC.

use std::sync::Arc;

use tonic::transport::Channel;
use zhengzhao_auth::{Principal, ServiceCredentials};
use zhengzhao_core::LicenceTypeRecord;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::catalog::v1 as pb;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_telemetry::trace::Traced;

/// What other services ask of the catalogue in-process; the catalogue
/// service implements it.
#[tonic::async_trait]
pub trait CatalogApi: Send + Sync {
    /// A type with template `version` (0 = current), as `who` may read it.
    async fn get(&self, who: &Principal, code: &str, version: u32) -> Result<LicenceTypeRecord, ServiceError>;
}

/// The catalogue as another service sees it.
#[derive(Clone)]
pub enum CatalogClient {
    /// Same process: direct calls on the service's own account.
    Local(Arc<dyn CatalogApi>, Principal),
    /// Split deployment: gRPC with service credentials.
    Remote(CatalogServiceClient<crate::Transport>),
}

impl CatalogClient {
    pub fn remote(channel: Channel, credentials: ServiceCredentials) -> Self {
        CatalogClient::Remote(CatalogServiceClient::with_interceptor(Traced::new(channel), credentials))
    }

    /// A type with template `version` (0 = current).
    pub async fn get(&self, code: &str, version: u32) -> Result<LicenceTypeRecord, ServiceError> {
        match self {
            CatalogClient::Local(c, who) => c.get(who, code, version).await,
            CatalogClient::Remote(client) => {
                let resp = client
                    .clone()
                    .get_licence_type(pb::GetLicenceTypeRequest { code: code.to_owned(), template_version: version })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?;
                let t =
                    resp.into_inner().licence_type.ok_or_else(|| ServiceError::internal("catalog returned no type"))?;
                LicenceTypeRecord::try_from(t)
            }
        }
    }
}
