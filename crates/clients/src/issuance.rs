//! How other services reach issuance: in-process, or over gRPC.

use std::sync::Arc;

use tonic::transport::Channel;
use zhengzhao_auth::{Principal, ServiceCredentials};
use zhengzhao_core::{HolderQuery, LicenceRecord};
use zhengzhao_crypto::translog::{Checkpoint, LoggedEvent};
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::issuance::v1 as pb;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_telemetry::trace::Traced;

/// What other services ask of issuance in-process; the issuance service
/// implements it.
#[tonic::async_trait]
pub trait IssuanceApi: Send + Sync {
    /// Reads a licence (status as of today).
    async fn get(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError>;

    /// As `get`, possibly from a read replica that lags (see `GetLicenceRequest.may_lag`).
    async fn get_lagging(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError>;

    /// One page of a holder's licences, and the next page's token.
    async fn holder_licences(
        &self,
        who: &Principal,
        query: &HolderQuery,
    ) -> Result<(Vec<LicenceRecord>, String), ServiceError>;

    /// Up to `limit` change-feed entries after sequence `after`.
    async fn feed(
        &self,
        who: &Principal,
        after: i64,
        limit: i64,
    ) -> Result<Vec<zhengzhao_core::FeedEntry>, ServiceError>;

    /// A licence's lifecycle events, oldest first.
    async fn history(
        &self,
        who: &Principal,
        identifier: &str,
    ) -> Result<Vec<zhengzhao_core::EventRecord>, ServiceError>;

    /// The transparency log's latest checkpoint.
    async fn checkpoint(&self, who: &Principal) -> Result<Checkpoint, ServiceError>;

    /// The public key that signs checkpoints, as a JWK.
    fn log_public_jwk(&self) -> serde_json::Value;

    /// Every logged event of `identifier` within the first `tree_size`
    /// leaves, with its audit path.
    async fn inclusion_proof(
        &self,
        who: &Principal,
        identifier: &str,
        tree_size: u64,
    ) -> Result<Vec<LoggedEvent>, ServiceError>;
}

/// Issuance as another service sees it.
#[derive(Clone)]
pub enum IssuanceClient {
    Local(Arc<dyn IssuanceApi>, Principal),
    Remote(IssuanceServiceClient<crate::Transport>),
}

impl IssuanceClient {
    pub fn remote(channel: Channel, credentials: ServiceCredentials) -> Self {
        IssuanceClient::Remote(IssuanceServiceClient::with_interceptor(Traced::new(channel), credentials))
    }

    /// Reads a licence on the calling service's own account, from the primary.
    pub async fn get(&self, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        self.read(identifier, false).await
    }

    /// As [`IssuanceClient::get`], possibly from a read replica that lags
    /// behind by seconds: for verification's answers, never for writes.
    pub async fn get_lagging(&self, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        self.read(identifier, true).await
    }

    async fn read(&self, identifier: &str, may_lag: bool) -> Result<LicenceRecord, ServiceError> {
        match self {
            IssuanceClient::Local(i, who) if may_lag => i.get_lagging(who, identifier).await,
            IssuanceClient::Local(i, who) => i.get(who, identifier).await,
            IssuanceClient::Remote(c) => {
                let r = c
                    .clone()
                    .get_licence(pb::GetLicenceRequest { identifier: identifier.to_owned(), may_lag })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                LicenceRecord::try_from(
                    r.licence.ok_or_else(|| ServiceError::internal("issuance returned no licence"))?,
                )
            }
        }
    }

    /// Up to `limit` change-feed entries after sequence `after`, in order.
    pub async fn feed(&self, after: i64, limit: i64) -> Result<Vec<zhengzhao_core::FeedEntry>, ServiceError> {
        match self {
            IssuanceClient::Local(i, who) => i.feed(who, after, limit).await,
            IssuanceClient::Remote(c) => {
                let mut stream = c
                    .clone()
                    .watch_changes(pb::WatchChangesRequest {
                        after_sequence: u64::try_from(after.max(0)).unwrap_or_default(),
                        until_caught_up: true,
                    })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                let mut out = Vec::new();
                while out.len() < usize::try_from(limit.max(1)).unwrap_or(1) {
                    match stream.message().await.map_err(|s| ServiceError::from_status(&s))? {
                        Some(m) => {
                            out.push(zhengzhao_core::FeedEntry {
                                event: zhengzhao_core::EventRecord::try_from(m.event.ok_or_else(|| {
                                    ServiceError::internal("issuance sent a feed entry without event")
                                })?)?,
                                type_code: m.type_code,
                                issuer_code: m.issuer_code,
                            })
                        }
                        None => break,
                    }
                }
                Ok(out)
            }
        }
    }

    /// A licence's lifecycle events, oldest first.
    pub async fn history(&self, identifier: &str) -> Result<Vec<zhengzhao_core::EventRecord>, ServiceError> {
        match self {
            IssuanceClient::Local(i, who) => i.history(who, identifier).await,
            IssuanceClient::Remote(c) => {
                let r = c
                    .clone()
                    .get_licence_history(pb::GetLicenceHistoryRequest { identifier: identifier.to_owned() })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                r.events.into_iter().map(zhengzhao_core::EventRecord::try_from).collect()
            }
        }
    }

    /// One page of a holder's licences, and the next page's token.
    pub async fn holder_licences(&self, query: &HolderQuery) -> Result<(Vec<LicenceRecord>, String), ServiceError> {
        match self {
            IssuanceClient::Local(i, who) => i.holder_licences(who, query).await,
            IssuanceClient::Remote(c) => {
                let r = c
                    .clone()
                    .list_holder_licences(pb::ListHolderLicencesRequest {
                        holder_id_type: query.holder_id_type.clone(),
                        holder_id_number: query.holder_id_number.clone(),
                        type_codes: query.type_codes.clone(),
                        status: query.status.map_or(0, |s| zhengzhao_proto::convert::status_to_wire(s) as i32),
                        page_size: query.page_size,
                        page_token: query.page_token.clone(),
                    })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                let licences = r.licences.into_iter().map(LicenceRecord::try_from).collect::<Result<_, _>>()?;
                Ok((licences, r.next_page_token))
            }
        }
    }

    /// The transparency log's latest checkpoint and the library's public key.
    pub async fn checkpoint(&self) -> Result<(String, serde_json::Value), ServiceError> {
        match self {
            IssuanceClient::Local(i, who) => Ok((i.checkpoint(who).await?.jws, i.log_public_jwk())),
            IssuanceClient::Remote(c) => {
                let r = c
                    .clone()
                    .get_checkpoint(pb::GetCheckpointRequest {})
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                let jwk = serde_json::from_str(&r.library_jwk_json).map_err(ServiceError::internal)?;
                Ok((r.checkpoint.map(|c| c.jws).unwrap_or_default(), jwk))
            }
        }
    }

    /// A licence's logged events with audit paths against `tree_size`.
    pub async fn inclusion_proof(&self, identifier: &str, tree_size: u64) -> Result<Vec<LoggedEvent>, ServiceError> {
        match self {
            IssuanceClient::Local(i, who) => i.inclusion_proof(who, identifier, tree_size).await,
            IssuanceClient::Remote(c) => {
                let r = c
                    .clone()
                    .get_inclusion_proof(pb::GetInclusionProofRequest { identifier: identifier.to_owned(), tree_size })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                r.events.into_iter().map(LoggedEvent::try_from).collect()
            }
        }
    }
}
