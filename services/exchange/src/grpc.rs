//! The exchange service's gRPC edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::principal;
use zhengzhao_proto::convert::timestamp;
use zhengzhao_proto::exchange::v1 as pb;
use zhengzhao_proto::exchange::v1::exchange_service_server::{ExchangeService, ExchangeServiceServer};

use crate::{Exchange, UsageRecord, UseRequest};

/// The tonic service over [`Exchange`].
#[derive(Debug, Clone)]
pub struct ExchangeGrpc(pub Arc<Exchange>);

impl ExchangeGrpc {
    pub fn into_server(self) -> ExchangeServiceServer<Self> {
        ExchangeServiceServer::new(self)
    }
}

fn record_to_wire(r: &UsageRecord) -> pb::UsageRecord {
    pb::UsageRecord {
        id: u64::try_from(r.id).unwrap_or_default(),
        consumer_code: r.consumer_code.clone(),
        consumer_role: r.consumer_role.clone(),
        identifier: r.identifier.clone(),
        use_cause: r.use_cause.clone(),
        service_item_code: r.service_item_code.clone(),
        case_number: r.case_number.clone(),
        decision: if r.granted { pb::UsageDecision::Granted } else { pb::UsageDecision::Refused } as i32,
        refusal_reason: r.refusal_reason.clone(),
        accessed_at: Some(timestamp(r.accessed_at)),
    }
}

#[tonic::async_trait]
impl ExchangeService for ExchangeGrpc {
    async fn fetch_licence(
        &self,
        req: Request<pb::FetchLicenceRequest>,
    ) -> Result<Response<pb::FetchLicenceResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let use_request = UseRequest {
            identifier: r.identifier,
            use_cause: r.use_cause,
            service_item_code: r.service_item_code,
            case_number: r.case_number,
        };
        let l = self.0.fetch(&who, &use_request).await?;
        Ok(Response::new(pb::FetchLicenceResponse { licence: Some((&l).into()) }))
    }

    async fn list_usage_log(
        &self,
        req: Request<pb::ListUsageLogRequest>,
    ) -> Result<Response<pb::ListUsageLogResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (records, next) = self.0.usage_log(&who, &r.identifier, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListUsageLogResponse {
            records: records.iter().map(record_to_wire).collect(),
            next_page_token: next,
        }))
    }
}
