//! The issuance service's gRPC edge.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use zhengzhao_auth::{Action, authorized, authorized_for_own, principal};
use zhengzhao_core::LicenceDraft;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::{action_from_wire, from_timestamp, timestamp};
use zhengzhao_proto::issuance::v1 as pb;
use zhengzhao_proto::issuance::v1::issuance_service_server::{IssuanceService, IssuanceServiceServer};

use crate::{EventRequest, FeedEntry, Issuance, LicenceRecord, MAX_FEED_BATCH};

/// How often a follower polls for appends made by other replicas.
const POLL: Duration = Duration::from_secs(1);

/// The tonic service over [`Issuance`].
#[derive(Debug, Clone)]
pub struct IssuanceGrpc(pub Arc<Issuance>);

impl IssuanceGrpc {
    pub fn into_server(self) -> IssuanceServiceServer<Self> {
        IssuanceServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

fn feed_to_wire(f: &FeedEntry) -> pb::WatchChangesResponse {
    pb::WatchChangesResponse {
        event: Some(pb::LicenceEvent::from(&f.event)),
        type_code: f.type_code.clone(),
        issuer_code: f.issuer_code.clone(),
    }
}

fn outage_to_wire(o: &crate::outage::OutageRecord) -> pb::Outage {
    use crate::outage::BacklogState as B;
    use zhengzhao_core::calendar::Coverage;
    pb::Outage {
        id: u64::try_from(o.id).unwrap_or_default(),
        issuer_code: o.issuer_code.clone(),
        started_at: Some(timestamp(o.started_at)),
        ended_at: o.ended_at.map(timestamp),
        cause: o.cause.clone(),
        recorded_by: o.recorded_by.clone(),
        recorded_at: Some(timestamp(o.recorded_at)),
        backlog_done_at: o.backlog_done_at.map(timestamp),
        deadline: o.deadline.map(zhengzhao_core::date::format_date).unwrap_or_default(),
        state: match o.state {
            B::Open => pb::BacklogState::Open,
            B::Pending => pb::BacklogState::Pending,
            B::DueSoon => pb::BacklogState::DueSoon,
            B::Overdue => pb::BacklogState::Overdue,
            B::Done => pb::BacklogState::Done,
            B::DoneLate => pb::BacklogState::DoneLate,
        } as i32,
        calendar: match o.coverage {
            Coverage::Confirmed => "confirmed",
            Coverage::Provisional => "provisional",
            Coverage::Missing => "missing",
        }
        .into(),
        backfill_events: u64::try_from(o.backfill_events).unwrap_or_default(),
    }
}

/// A lifecycle request without a review result.
fn event_request(
    reason: String,
    t: &Option<prost_types::Timestamp>,
    idempotency_key: String,
) -> Result<EventRequest, ServiceError> {
    Ok(EventRequest { reason, occurred_at: occurred(t)?, idempotency_key, ..Default::default() })
}

fn occurred(t: &Option<prost_types::Timestamp>) -> Result<Option<time::OffsetDateTime>, ServiceError> {
    t.as_ref().map(|t| from_timestamp("occurred_at", t)).transpose()
}

fn licence_reply(l: &LicenceRecord) -> Option<common::Licence> {
    Some(common::Licence::from(l))
}

#[tonic::async_trait]
impl IssuanceService for IssuanceGrpc {
    type WatchChangesStream = Pin<Box<dyn Stream<Item = Result<pb::WatchChangesResponse, Status>> + Send>>;

    async fn issue_licence(
        &self,
        req: Request<pb::IssueLicenceRequest>,
    ) -> Result<Response<pb::IssueLicenceResponse>, Status> {
        let who = authorized_for_own(&req, |issuer| Action::IssueLicence { issuer })?;
        let r = req.into_inner();
        let draft = r.draft.ok_or_else(|| ServiceError::invalid("draft", "required"))?;
        let l = self.0.issue(&who, LicenceDraft::from(draft), &r.idempotency_key).await?;
        Ok(Response::new(pb::IssueLicenceResponse { licence: licence_reply(&l) }))
    }

    async fn cancel_licence(
        &self,
        req: Request<pb::CancelLicenceRequest>,
    ) -> Result<Response<pb::CancelLicenceResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.authorize_event(&who, &r.identifier, false)?;
        let e = event_request(r.reason, &r.occurred_at, r.idempotency_key)?;
        let l = self.0.cancel(&who, &r.identifier, &e).await?;
        Ok(Response::new(pb::CancelLicenceResponse { licence: licence_reply(&l) }))
    }

    async fn get_licence(
        &self,
        req: Request<pb::GetLicenceRequest>,
    ) -> Result<Response<pb::GetLicenceResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let l = if r.may_lag {
            self.0.get_lagging(&who, &r.identifier).await?
        } else {
            self.0.get(&who, &r.identifier).await?
        };
        Ok(Response::new(pb::GetLicenceResponse { licence: licence_reply(&l) }))
    }

    async fn list_holder_licences(
        &self,
        req: Request<pb::ListHolderLicencesRequest>,
    ) -> Result<Response<pb::ListHolderLicencesResponse>, Status> {
        let who = authorized(&req, &Action::FindHolderLicences)?;
        let r = req.into_inner();
        let query = zhengzhao_core::HolderQuery {
            holder_id_type: r.holder_id_type,
            holder_id_number: r.holder_id_number,
            type_codes: r.type_codes,
            status: zhengzhao_proto::convert::status_filter("status", r.status)?,
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let (licences, next) = self.0.holder_licences(&who, &query).await?;
        Ok(Response::new(pb::ListHolderLicencesResponse {
            licences: licences.iter().map(Into::into).collect(),
            next_page_token: next,
        }))
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
            events: events.iter().map(pb::LicenceEvent::from).collect(),
        }))
    }

    async fn record_event(
        &self,
        req: Request<pb::RecordEventRequest>,
    ) -> Result<Response<pb::RecordEventResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.authorize_event(&who, &r.identifier, r.force)?;
        let action = action_from_wire(r.kind).ok_or_else(|| ServiceError::invalid("kind", "required"))?;
        let e = EventRequest {
            reason: r.reason,
            occurred_at: occurred(&r.occurred_at)?,
            result: r.result,
            next_due_date: r.next_due_date,
            idempotency_key: r.idempotency_key,
            force: r.force,
        };
        let l = self.0.record_event(&who, &r.identifier, action, &e).await?;
        Ok(Response::new(pb::RecordEventResponse { licence: licence_reply(&l) }))
    }

    async fn change_licence(
        &self,
        req: Request<pb::ChangeLicenceRequest>,
    ) -> Result<Response<pb::ChangeLicenceResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.authorize_event(&who, &r.identifier, false)?;
        let draft = r.draft.ok_or_else(|| ServiceError::invalid("draft", "required"))?;
        let e = event_request(r.reason, &r.occurred_at, r.idempotency_key)?;
        let l = self.0.change(&who, &r.identifier, LicenceDraft::from(draft), &e).await?;
        Ok(Response::new(pb::ChangeLicenceResponse { licence: licence_reply(&l) }))
    }

    async fn renew_licence(
        &self,
        req: Request<pb::RenewLicenceRequest>,
    ) -> Result<Response<pb::RenewLicenceResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.authorize_event(&who, &r.identifier, false)?;
        let e = event_request(r.reason, &r.occurred_at, r.idempotency_key)?;
        let l = self.0.renew(&who, &r.identifier, &r.valid_from, &r.valid_until, &e).await?;
        Ok(Response::new(pb::RenewLicenceResponse { licence: licence_reply(&l) }))
    }

    async fn import_licences(
        &self,
        req: Request<tonic::Streaming<pb::ImportLicencesRequest>>,
    ) -> Result<Response<pb::ImportLicencesResponse>, Status> {
        let who = authorized_for_own(&req, |issuer| Action::IssueLicence { issuer })?;
        let batches = req.into_inner().map(|msg| {
            let msg = msg.map_err(|s| ServiceError::from_status(&s))?;
            let rows = msg
                .rows
                .into_iter()
                .map(|r| crate::import::ImportRow {
                    row_number: r.row_number,
                    source_key: r.source_key,
                    identifier: r.identifier,
                    draft: LicenceDraft::from(r.draft.unwrap_or_default()),
                })
                .collect();
            Ok(crate::import::ImportBatch { rows, allow_legacy: msg.allow_legacy })
        });
        let total = self.0.clone().import(&who, batches).await?;
        tracing::info!(actor = %who.actor(), received = total.received, imported = total.imported,
            already_present = total.already_present, errors = total.errors.len(), "import finished");
        Ok(Response::new(pb::ImportLicencesResponse {
            received: total.received,
            imported: total.imported,
            already_present: total.already_present,
            legacy: total.legacy,
            errors: total
                .errors
                .into_iter()
                .map(|e| pb::ImportRowError {
                    row_number: e.row_number,
                    source_key: e.source_key,
                    field: e.field,
                    reason: e.reason,
                })
                .collect(),
        }))
    }

    async fn record_outage(
        &self,
        req: Request<pb::RecordOutageRequest>,
    ) -> Result<Response<pb::RecordOutageResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        self.0.outage_issuer(&who, &r.issuer_code)?;
        let started = r.started_at.as_ref().ok_or_else(|| ServiceError::invalid("started_at", "required"))?;
        let started = from_timestamp("started_at", started)?;
        let ended = r.ended_at.as_ref().map(|t| from_timestamp("ended_at", t)).transpose()?;
        let o = self.0.record_outage(&who, &r.issuer_code, started, ended, &r.cause, &r.idempotency_key).await?;
        Ok(Response::new(pb::RecordOutageResponse { outage: Some(outage_to_wire(&o)) }))
    }

    async fn end_outage(&self, req: Request<pb::EndOutageRequest>) -> Result<Response<pb::EndOutageResponse>, Status> {
        let who = authorized_for_own(&req, |issuer| Action::ManageOutage { issuer })?;
        let r = req.into_inner();
        let id = i64::try_from(r.id).map_err(|_| ServiceError::invalid("id", "too large"))?;
        let ended = r.ended_at.as_ref().map(|t| from_timestamp("ended_at", t)).transpose()?;
        let o = self.0.end_outage(&who, id, ended).await?;
        Ok(Response::new(pb::EndOutageResponse { outage: Some(outage_to_wire(&o)) }))
    }

    async fn complete_outage_backlog(
        &self,
        req: Request<pb::CompleteOutageBacklogRequest>,
    ) -> Result<Response<pb::CompleteOutageBacklogResponse>, Status> {
        let who = authorized_for_own(&req, |issuer| Action::ManageOutage { issuer })?;
        let id = i64::try_from(req.into_inner().id).map_err(|_| ServiceError::invalid("id", "too large"))?;
        let o = self.0.complete_backlog(&who, id).await?;
        Ok(Response::new(pb::CompleteOutageBacklogResponse { outage: Some(outage_to_wire(&o)) }))
    }

    async fn list_outages(
        &self,
        req: Request<pb::ListOutagesRequest>,
    ) -> Result<Response<pb::ListOutagesResponse>, Status> {
        let who = principal(&req)?;
        let list = self.0.outages(&who, &req.into_inner().issuer_code).await?;
        Ok(Response::new(pb::ListOutagesResponse { outages: list.iter().map(outage_to_wire).collect() }))
    }

    async fn get_checkpoint(
        &self,
        req: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::GetCheckpointResponse>, Status> {
        let who = principal(&req)?;
        let c = self.0.checkpoint(&who).await?;
        Ok(Response::new(pb::GetCheckpointResponse {
            checkpoint: Some(pb::Checkpoint::from(&c)),
            library_jwk_json: self.0.log_public_jwk().to_string(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::GetConsistencyProofResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let hashes = self.0.consistency_proof(&who, r.first_tree_size, r.second_tree_size).await?;
        Ok(Response::new(pb::GetConsistencyProofResponse { hashes: hashes.iter().map(|h| h.to_vec()).collect() }))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::GetInclusionProofResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let events = self.0.inclusion_proof(&who, &r.identifier, r.tree_size).await?;
        Ok(Response::new(pb::GetInclusionProofResponse {
            tree_size: r.tree_size,
            events: events.iter().map(pb::LoggedEvent::from).collect(),
        }))
    }

    async fn watch_changes(
        &self,
        req: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let who = authorized(&req, &Action::WatchChanges)?;
        let r = req.into_inner();
        let mut cursor =
            i64::try_from(r.after_sequence).map_err(|_| ServiceError::invalid("after_sequence", "too large"))?;
        // Fail fast on a refused caller, before the stream starts.
        let first = self.0.feed(&who, cursor, MAX_FEED_BATCH).await?;
        let end = feed_end(&self.0).await?;
        let issuance = self.0.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            let mut batch = first;
            loop {
                if batch.is_empty() {
                    if r.until_caught_up {
                        return;
                    }
                    tokio::select! {
                        () = issuance.wait_for_appends(POLL) => {}
                        () = tx.closed() => return, // the client went away, or the server is stopping
                    }
                } else {
                    for entry in &batch {
                        cursor = entry.event.sequence;
                        if tx.send(Ok(feed_to_wire(entry))).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
                batch = match issuance.feed(&who, cursor, MAX_FEED_BATCH).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
            }
        });
        let mut response: Response<Self::WatchChangesStream> =
            Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)));
        // Where the feed ends as the stream starts, so a caller with a cursor
        // past it can be told (the CLI says so).
        response.metadata_mut().insert(FEED_END, tonic::metadata::MetadataValue::from(end));
        Ok(response)
    }

    async fn read_replica_feed(
        &self,
        req: Request<pb::ReadReplicaFeedRequest>,
    ) -> Result<Response<pb::ReadReplicaFeedResponse>, Status> {
        let who = authorized(&req, &Action::ReadReplicaFeed)?;
        let r = req.into_inner();
        let library = (!r.library.is_empty()).then_some(r.library.as_str());
        let max_bytes = match r.max_bytes {
            0 => DEFAULT_REPLICA_BYTES,
            n if n as usize > MAX_REPLICA_BYTES => {
                return Err(ServiceError::invalid("max_bytes", format!("at most {MAX_REPLICA_BYTES}")).into());
            }
            n => n as usize,
        };
        let b = self.0.read_replica_feed(&who, r.after_sequence, r.limit, r.wait_seconds, library, max_bytes).await?;
        Ok(Response::new(pb::ReadReplicaFeedResponse {
            library: b.library,
            events: b.events.iter().map(replica_event_to_wire).collect(),
            licences: b.licences,
            head_sequence: b.head_sequence,
            next_recorded_at: b.next_recorded_at.map(timestamp),
        }))
    }

    async fn apply_replica(
        &self,
        req: Request<pb::ApplyReplicaRequest>,
    ) -> Result<Response<pb::ApplyReplicaResponse>, Status> {
        let who = authorized(&req, &Action::ApplyReplica)?;
        let r = req.into_inner();
        let hashes = |field: &str, v: Vec<Vec<u8>>| -> Result<Vec<zhengzhao_crypto::merkle::Hash>, ServiceError> {
            v.into_iter()
                .map(|h| h.try_into().map_err(|_| ServiceError::invalid(field, "hashes are 32 bytes")))
                .collect()
        };
        let events = r
            .events
            .into_iter()
            .map(|e| {
                let event = e.event.ok_or_else(|| ServiceError::invalid("events", "an entry without its event"))?;
                let event = crate::EventRecord::try_from(event)
                    .map_err(|e| ServiceError::invalid("events", format!("unreadable entry: {e}")))?;
                Ok(crate::replica::ReplicaEvent { event, log_index: e.log_index })
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        let batch = crate::replica::ApplyBatch {
            library: r.library,
            remote_library: r.remote_library,
            after_sequence: r.after_sequence,
            events,
            licences: r.licences,
            checkpoint_jws: r.checkpoint.map(|c| c.jws),
            library_jwk_json: r.library_jwk_json,
            proof_from_batch: hashes("proof_from_batch", r.proof_from_batch)?,
            proof_from_last: hashes("proof_from_last", r.proof_from_last)?,
            last_checkpoint_size: r.last_checkpoint_size,
            head_sequence: r.head_sequence,
            next_recorded_at: r
                .next_recorded_at
                .map(|t| zhengzhao_proto::convert::stored_timestamp("next_recorded_at", &t))
                .transpose()?,
        };
        let replica = self.0.apply_replica(&who, batch).await?;
        Ok(Response::new(pb::ApplyReplicaResponse { replica: Some(replica_to_wire(&replica)) }))
    }

    async fn list_replicas(
        &self,
        req: Request<pb::ListReplicasRequest>,
    ) -> Result<Response<pb::ListReplicasResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let library = (!r.library.is_empty()).then_some(r.library.as_str());
        let replicas = self.0.replicas(&who, library).await?;
        Ok(Response::new(pb::ListReplicasResponse {
            replicas: replicas.iter().map(replica_to_wire).collect(),
            library_jwk_json: self.0.log_public_jwk().to_string(),
        }))
    }

    async fn resume_replica(
        &self,
        req: Request<pb::ResumeReplicaRequest>,
    ) -> Result<Response<pb::ResumeReplicaResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let replica = self.0.resume_replica(&who, &r.library, r.repin_log_key).await?;
        Ok(Response::new(pb::ResumeReplicaResponse { replica: Some(replica_to_wire(&replica)) }))
    }

    async fn get_read_status(
        &self,
        req: Request<pb::GetReadStatusRequest>,
    ) -> Result<Response<pb::GetReadStatusResponse>, Status> {
        let who = principal(&req)?;
        let s = self.0.read_status(&who).await?;
        Ok(Response::new(pb::GetReadStatusResponse {
            replica: s.replica,
            in_use: s.in_use,
            lag_bytes: s.lag_bytes,
            lag_seconds: s.lag_seconds,
        }))
    }
}

fn replica_event_to_wire(e: &crate::replica::ReplicaEvent) -> pb::ReplicaEvent {
    pb::ReplicaEvent { event: Some(pb::LicenceEvent::from(&e.event)), log_index: e.log_index }
}

fn replica_to_wire(r: &crate::replica::Replica) -> pb::Replica {
    use crate::replica::ReplicaState;
    pb::Replica {
        library: r.library.clone(),
        cursor: r.cursor,
        tree_size: r.range.size(),
        state: match r.state {
            ReplicaState::Ok => pb::ReplicaState::Ok,
            ReplicaState::Stopped => pb::ReplicaState::Stopped,
        } as i32,
        reason: r.reason.clone(),
        checkpoint: r.checkpoint.as_ref().map(pb::Checkpoint::from),
        cosignature: r.cosignature.clone().unwrap_or_default(),
        head_sequence: r.head_sequence,
        lag_events: r.lag_events(),
        lag_seconds: r.lag_seconds(zhengzhao_store::now()),
        updated_at: Some(timestamp(r.updated_at)),
        library_jwk_json: r.library_jwk.clone(),
        events_applied: r.events_applied,
    }
}

/// Largest request the issuance service takes (an import batch, a replica batch).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Default and largest size of a `ReadReplicaFeed` answer.
pub const DEFAULT_REPLICA_BYTES: usize = 8 * 1024 * 1024;
pub const MAX_REPLICA_BYTES: usize = 12 * 1024 * 1024;

/// Response metadata of `WatchChanges`: the sequence the feed ends at (0 for
/// an empty feed) when the stream starts.
pub const FEED_END: &str = "zhengzhao-feed-end";

/// The last sequence of the feed, 0 when it is empty.
async fn feed_end(issuance: &Issuance) -> Result<i64, ServiceError> {
    let end: (i64,) = sqlx::query_as("SELECT COALESCE(MAX(sequence), 0) FROM licence_events")
        .fetch_one(&issuance.db.pool)
        .await
        .map_err(ServiceError::internal)?;
    Ok(end.0)
}
