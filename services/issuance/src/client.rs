//! How other services reach issuance: in-process, or over gRPC.

use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::{Principal, ServiceCredentials};
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::issuance::v1 as pb;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;

use crate::{Issuance, LicenceRecord};

/// Issuance as another service sees it.
#[derive(Clone)]
pub enum IssuanceClient {
    Local(Arc<Issuance>, Principal),
    Remote(IssuanceServiceClient<InterceptedService<Channel, ServiceCredentials>>),
}

impl IssuanceClient {
    pub fn remote(channel: Channel, credentials: ServiceCredentials) -> Self {
        IssuanceClient::Remote(IssuanceServiceClient::with_interceptor(channel, credentials))
    }

    /// Reads a licence on the calling service's own account.
    pub async fn get(&self, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        match self {
            IssuanceClient::Local(i, who) => i.get(who, identifier).await,
            IssuanceClient::Remote(c) => {
                let r = c
                    .clone()
                    .get_licence(pb::GetLicenceRequest { identifier: identifier.to_owned() })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                crate::grpc::licence_from_wire(
                    r.licence.ok_or_else(|| ServiceError::internal("issuance returned no licence"))?,
                )
            }
        }
    }
}
