//! The exchange service's gRPC edge: wire to model and back, nothing else.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::{Action, authorized, authorized_for_own, principal};
use zhengzhao_core::HolderQuery;
use zhengzhao_core::date::format_date;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::convert::{from_timestamp, status_filter, timestamp};
use zhengzhao_proto::exchange::v1 as pb;
use zhengzhao_proto::exchange::v1::exchange_service_server::{ExchangeService, ExchangeServiceServer};

use crate::Exchange;
use crate::copy::CopyOptions;
use crate::lists::{ApplicationRequest, EntryChange, EntryRequest};
use crate::model::{Application, ApplicationState, Change, Entry, EntryState, Level, TermsRequest, UseContext};
use crate::usage::{Caller, UsedLicence};
use crate::usagelog::{UsageFilter, UsageRecord, holder_digest};

/// The tonic service over [`Exchange`].
#[derive(Debug, Clone)]
pub struct ExchangeGrpc(pub Arc<Exchange>);

impl ExchangeGrpc {
    pub fn into_server(self) -> ExchangeServiceServer<Self> {
        ExchangeServiceServer::new(self)
    }
}

pub(crate) fn caller<T>(req: &Request<T>, method: &'static str) -> Result<Caller, Status> {
    let who = principal(req)?;
    let address = req.remote_addr().map(|a| a.to_string()).unwrap_or_default();
    Ok(Caller::new(who, method, address))
}

fn use_context(u: Option<pb::UseContext>) -> UseContext {
    let u = u.unwrap_or_default();
    UseContext { use_cause: u.use_cause, service_item_code: u.service_item_code, case_number: u.case_number }
}

pub(crate) fn id_of(field: &str, v: u64) -> Result<i64, ServiceError> {
    i64::try_from(v).ok().filter(|n| *n > 0).ok_or_else(|| ServiceError::invalid(field, "required: a positive id"))
}

fn level_from_wire(v: i32) -> Result<Option<Level>, ServiceError> {
    match pb::AgencyLevel::try_from(v) {
        Ok(pb::AgencyLevel::Unspecified) => Ok(None),
        Ok(pb::AgencyLevel::City) => Ok(Some(Level::City)),
        Ok(pb::AgencyLevel::Province) => Ok(Some(Level::Province)),
        Ok(pb::AgencyLevel::Ministry) => Ok(Some(Level::Ministry)),
        Err(_) => Err(ServiceError::invalid("level", format!("{v} is not an agency level"))),
    }
}

fn level_to_wire(l: Level) -> i32 {
    match l {
        Level::City => pb::AgencyLevel::City,
        Level::Province => pb::AgencyLevel::Province,
        Level::Ministry => pb::AgencyLevel::Ministry,
    }
    .into()
}

fn terms_from_wire(t: Option<pb::UsageTerms>) -> TermsRequest {
    let t = t.unwrap_or_default();
    TermsRequest {
        purpose: t.purpose,
        fields: t.fields,
        all_fields: t.all_fields,
        effective_from: t.effective_from,
        effective_until: t.effective_until,
    }
}

fn terms_to_wire(t: &crate::model::Terms) -> pb::UsageTerms {
    pb::UsageTerms {
        purpose: t.purpose.clone(),
        fields: t.fields.clone(),
        all_fields: t.all_fields,
        effective_from: format_date(t.from),
        effective_until: t.until.map(format_date).unwrap_or_default(),
    }
}

pub(crate) fn uid(id: i64) -> u64 {
    u64::try_from(id).unwrap_or_default()
}

fn entry_to_wire(e: &Entry, today: time::Date) -> pb::UsageEntry {
    let terms = terms_to_wire(&e.terms);
    pb::UsageEntry {
        id: uid(e.id),
        agency_code: e.agency_code.clone(),
        level: level_to_wire(e.level),
        type_code: e.type_code.clone(),
        service_item_code: e.service_item_code.clone(),
        purpose: terms.purpose,
        fields: terms.fields,
        all_fields: terms.all_fields,
        effective_from: terms.effective_from,
        effective_until: terms.effective_until,
        state: match e.state {
            EntryState::Active => pb::UsageEntryState::Active,
            EntryState::Suspended => pb::UsageEntryState::Suspended,
            EntryState::Ended => pb::UsageEntryState::Ended,
        }
        .into(),
        application_id: e.application_id.map(uid).unwrap_or_default(),
        created_at: Some(timestamp(e.created_at)),
        created_by: e.created_by.clone(),
        effective: e.effective(today),
    }
}

fn application_state_to_wire(s: ApplicationState) -> i32 {
    match s {
        ApplicationState::Pending => pb::ApplicationState::Pending,
        ApplicationState::Approved => pb::ApplicationState::Approved,
        ApplicationState::Refused => pb::ApplicationState::Refused,
    }
    .into()
}

fn application_to_wire(a: &Application) -> pb::UsageApplication {
    pb::UsageApplication {
        id: uid(a.id),
        agency_code: a.agency_code.clone(),
        level: level_to_wire(a.level),
        type_codes: a.type_codes.clone(),
        service_item_codes: a.service_item_codes.clone(),
        terms: Some(terms_to_wire(&a.terms)),
        state: application_state_to_wire(a.state),
        applied_by: a.applied_by.clone(),
        applied_at: Some(timestamp(a.applied_at)),
        decided_by: a.decided_by.clone(),
        decided_at: a.decided_at.map(timestamp),
        decision_reason: a.decision_reason.clone(),
        entry_ids: a.entry_ids.iter().copied().map(uid).collect(),
    }
}

fn change_to_wire(c: &Change) -> pb::UsageListChange {
    pb::UsageListChange {
        id: uid(c.id),
        action: c.action.clone(),
        entry_id: c.entry_id.map(uid).unwrap_or_default(),
        application_id: c.application_id.map(uid).unwrap_or_default(),
        agency_code: c.agency_code.clone(),
        actor: c.actor.clone(),
        operator: c.operator.clone(),
        reason: c.reason.clone(),
        details_json: c.details_json.clone(),
        at: Some(timestamp(c.at)),
    }
}

/// A usage record on the wire (also what `zhengzhao audit` reads back).
pub fn record_to_wire(r: &UsageRecord) -> pb::UsageRecord {
    pb::UsageRecord {
        id: uid(r.id),
        consumer_code: r.consumer_code.clone(),
        consumer_role: r.consumer_role.clone(),
        identifier: r.identifier.clone(),
        use_cause: r.use_cause.clone(),
        service_item_code: r.service_item_code.clone(),
        case_number: r.case_number.clone(),
        decision: if r.granted { pb::UsageDecision::Granted } else { pb::UsageDecision::Refused }.into(),
        refusal_reason: r.refusal_reason.clone(),
        accessed_at: Some(timestamp(r.accessed_at)),
        operator: r.operator.clone(),
        method: r.method.clone(),
        client_address: r.client_address.clone(),
        type_code: r.type_code.clone(),
        holder_id_type: r.holder_id_type.clone(),
        holder_id_masked: r.holder_masked.clone(),
        refusal_rule: r.refusal_rule.clone(),
        entry_id: r.entry_id.map(uid).unwrap_or_default(),
        copy_id: r.copy_id.clone(),
        log_index: r.log_index.unwrap_or_default(),
        token_id: r.token_id.clone(),
        holder_digest: r.holder_digest.clone(),
    }
}

/// A usage record read back from the wire, for rebuilding its leaf.
pub fn record_from_wire(r: &pb::UsageRecord) -> Result<UsageRecord, ServiceError> {
    let at = r.accessed_at.as_ref().ok_or_else(|| ServiceError::internal("usage record without a time"))?;
    Ok(UsageRecord {
        id: i64::try_from(r.id).map_err(ServiceError::internal)?,
        consumer_code: r.consumer_code.clone(),
        consumer_role: r.consumer_role.clone(),
        token_id: r.token_id.clone(),
        operator: r.operator.clone(),
        method: r.method.clone(),
        client_address: r.client_address.clone(),
        identifier: r.identifier.clone(),
        type_code: r.type_code.clone(),
        holder_id_type: r.holder_id_type.clone(),
        holder_digest: r.holder_digest.clone(),
        holder_masked: r.holder_id_masked.clone(),
        use_cause: r.use_cause.clone(),
        service_item_code: r.service_item_code.clone(),
        case_number: r.case_number.clone(),
        granted: r.decision == i32::from(pb::UsageDecision::Granted),
        refusal_rule: r.refusal_rule.clone(),
        refusal_reason: r.refusal_reason.clone(),
        entry_id: (r.entry_id != 0).then(|| i64::try_from(r.entry_id).unwrap_or_default()),
        copy_id: r.copy_id.clone(),
        accessed_at: zhengzhao_proto::convert::stored_timestamp("accessed_at", at)?,
        log_index: Some(r.log_index),
    })
}

fn used_to_wire(u: &UsedLicence) -> pb::UsedLicence {
    pb::UsedLicence {
        licence: Some((&u.licence).into()),
        withheld_fields: u.withheld.clone(),
        whole_licence: u.whole,
        usage_id: uid(u.usage_id),
        entry_id: uid(u.entry.id),
    }
}

fn entry_reply(e: &Entry, x: &Exchange) -> Option<pb::UsageEntry> {
    Some(entry_to_wire(e, x.today()))
}

#[tonic::async_trait]
impl ExchangeService for ExchangeGrpc {
    async fn fetch_licence(
        &self,
        req: Request<pb::FetchLicenceRequest>,
    ) -> Result<Response<pb::FetchLicenceResponse>, Status> {
        let caller = caller(&req, "FetchLicence")?;
        let r = req.into_inner();
        let used = self.0.fetch(&caller, &r.identifier, &use_context(r.r#use)).await?;
        Ok(Response::new(pb::FetchLicenceResponse { used: Some(used_to_wire(&used)) }))
    }

    async fn find_licences(
        &self,
        req: Request<pb::FindLicencesRequest>,
    ) -> Result<Response<pb::FindLicencesResponse>, Status> {
        authorized(&req, &Action::UseLicence)?;
        let caller = caller(&req, "FindLicences")?;
        let r = req.into_inner();
        let query = HolderQuery {
            holder_id_type: r.holder_id_type,
            holder_id_number: r.holder_id_number,
            type_codes: r.type_codes,
            status: status_filter("status", r.status)?,
            page_size: r.page_size,
            page_token: r.page_token,
        };
        let found = self.0.find(&caller, &query, &use_context(r.r#use)).await?;
        Ok(Response::new(pb::FindLicencesResponse {
            licences: found.licences.iter().map(used_to_wire).collect(),
            uncovered_type_codes: found.uncovered,
            next_page_token: found.next_page_token,
        }))
    }

    async fn issue_copy(&self, req: Request<pb::IssueCopyRequest>) -> Result<Response<pb::IssueCopyResponse>, Status> {
        authorized(&req, &Action::UseLicence)?;
        let caller = caller(&req, "IssueCopy")?;
        let r = req.into_inner();
        let options = CopyOptions { valid_days: r.valid_days, pdf: r.pdf, link: r.link };
        let c = self.0.copy(&caller, &r.identifier, &use_context(r.r#use), options).await?;
        Ok(Response::new(pb::IssueCopyResponse {
            copy_id: c.copy_id,
            jws: c.jws,
            good_until: Some(timestamp(c.good_until)),
            pdf: c.pdf.unwrap_or_default(),
            download_url: c.download_path.map(|p| format!("{}{p}", self.0.public_url())).unwrap_or_default(),
            link_expires_at: c.link_expires_at.map(timestamp),
            verify_url: c.verify_url,
            usage_id: uid(c.usage_id),
        }))
    }

    async fn create_usage_entry(
        &self,
        req: Request<pb::CreateUsageEntryRequest>,
    ) -> Result<Response<pb::CreateUsageEntryResponse>, Status> {
        let who = authorized(&req, &Action::ManageUsageList)?;
        let r = req.into_inner();
        let request = EntryRequest {
            agency_code: r.agency_code,
            level: level_from_wire(r.level)?,
            type_code: r.type_code,
            service_item_code: r.service_item_code,
            terms: terms_from_wire(r.terms),
        };
        let e = self.0.create_entry(&who, &request).await?;
        Ok(Response::new(pb::CreateUsageEntryResponse { entry: entry_reply(&e, &self.0) }))
    }

    async fn apply_for_usage(
        &self,
        req: Request<pb::ApplyForUsageRequest>,
    ) -> Result<Response<pb::ApplyForUsageResponse>, Status> {
        let who = authorized(&req, &Action::ApplyForUsage)?;
        let r = req.into_inner();
        let request = ApplicationRequest {
            level: level_from_wire(r.level)?,
            type_codes: r.type_codes,
            service_item_codes: r.service_item_codes,
            terms: terms_from_wire(r.terms),
        };
        let a = self.0.apply(&who, &request).await?;
        Ok(Response::new(pb::ApplyForUsageResponse { application: Some(application_to_wire(&a)) }))
    }

    async fn approve_application(
        &self,
        req: Request<pb::ApproveApplicationRequest>,
    ) -> Result<Response<pb::ApproveApplicationResponse>, Status> {
        let who = authorized(&req, &Action::ManageUsageList)?;
        let r = req.into_inner();
        let (a, entries) = self.0.approve(&who, id_of("application_id", r.application_id)?, &r.reason).await?;
        let today = self.0.today();
        Ok(Response::new(pb::ApproveApplicationResponse {
            application: Some(application_to_wire(&a)),
            entries: entries.iter().map(|e| entry_to_wire(e, today)).collect(),
        }))
    }

    async fn refuse_application(
        &self,
        req: Request<pb::RefuseApplicationRequest>,
    ) -> Result<Response<pb::RefuseApplicationResponse>, Status> {
        let who = authorized(&req, &Action::ManageUsageList)?;
        let r = req.into_inner();
        let a = self.0.refuse(&who, id_of("application_id", r.application_id)?, &r.reason).await?;
        Ok(Response::new(pb::RefuseApplicationResponse { application: Some(application_to_wire(&a)) }))
    }

    async fn suspend_usage_entry(
        &self,
        req: Request<pb::SuspendUsageEntryRequest>,
    ) -> Result<Response<pb::SuspendUsageEntryResponse>, Status> {
        let who = authorized(&req, &Action::ManageUsageList)?;
        let r = req.into_inner();
        let e = self.0.change_entry(&who, id_of("entry_id", r.entry_id)?, EntryChange::Suspend, &r.reason).await?;
        Ok(Response::new(pb::SuspendUsageEntryResponse { entry: entry_reply(&e, &self.0) }))
    }

    async fn resume_usage_entry(
        &self,
        req: Request<pb::ResumeUsageEntryRequest>,
    ) -> Result<Response<pb::ResumeUsageEntryResponse>, Status> {
        let who = authorized(&req, &Action::ManageUsageList)?;
        let r = req.into_inner();
        let e = self.0.change_entry(&who, id_of("entry_id", r.entry_id)?, EntryChange::Resume, &r.reason).await?;
        Ok(Response::new(pb::ResumeUsageEntryResponse { entry: entry_reply(&e, &self.0) }))
    }

    async fn end_usage_entry(
        &self,
        req: Request<pb::EndUsageEntryRequest>,
    ) -> Result<Response<pb::EndUsageEntryResponse>, Status> {
        let who = authorized(&req, &Action::ManageUsageList)?;
        let r = req.into_inner();
        let e = self.0.change_entry(&who, id_of("entry_id", r.entry_id)?, EntryChange::End, &r.reason).await?;
        Ok(Response::new(pb::EndUsageEntryResponse { entry: entry_reply(&e, &self.0) }))
    }

    async fn list_usage_entries(
        &self,
        req: Request<pb::ListUsageEntriesRequest>,
    ) -> Result<Response<pb::ListUsageEntriesResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (entries, next) = self.0.entries(&who, &r.agency_code, r.page_size, &r.page_token).await?;
        let today = self.0.today();
        Ok(Response::new(pb::ListUsageEntriesResponse {
            entries: entries.iter().map(|e| entry_to_wire(e, today)).collect(),
            next_page_token: next,
        }))
    }

    async fn list_applications(
        &self,
        req: Request<pb::ListApplicationsRequest>,
    ) -> Result<Response<pb::ListApplicationsResponse>, Status> {
        let who = authorized_for_own(&req, |agency| Action::ReadUsageList { agency })?;
        let r = req.into_inner();
        let state = match pb::ApplicationState::try_from(r.state) {
            Ok(pb::ApplicationState::Unspecified) => None,
            Ok(pb::ApplicationState::Pending) => Some(ApplicationState::Pending),
            Ok(pb::ApplicationState::Approved) => Some(ApplicationState::Approved),
            Ok(pb::ApplicationState::Refused) => Some(ApplicationState::Refused),
            Err(_) => {
                return Err(ServiceError::invalid("state", format!("{} is not an application state", r.state)).into());
            }
        };
        let (applications, next) = self.0.applications(&who, &r.agency_code, state, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListApplicationsResponse {
            applications: applications.iter().map(application_to_wire).collect(),
            next_page_token: next,
        }))
    }

    async fn list_usage_list_changes(
        &self,
        req: Request<pb::ListUsageListChangesRequest>,
    ) -> Result<Response<pb::ListUsageListChangesResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (changes, next) = self.0.changes(&who, &r.agency_code, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListUsageListChangesResponse {
            changes: changes.iter().map(change_to_wire).collect(),
            next_page_token: next,
        }))
    }

    async fn list_usage_log(
        &self,
        req: Request<pb::ListUsageLogRequest>,
    ) -> Result<Response<pb::ListUsageLogResponse>, Status> {
        let who = authorized(&req, &Action::ReadUsageLog)?;
        let r = req.into_inner();
        let holder = match (r.holder_id_type.as_str(), r.holder_id_number.as_str()) {
            ("", "") => String::new(),
            (t, n) => {
                let number = zhengzhao_core::parse_holder_id("holder_id_type", "holder_id_number", t, n)
                    .map_err(ServiceError::from)?;
                holder_digest(t, &number)
            }
        };
        // Filters are matched exactly: anything no identifier or code could
        // be (a control character, say, which PostgreSQL refuses outright)
        // is a bad request, not a server error.
        for (field, value) in [("identifier", &r.identifier), ("agency_code", &r.agency_code)] {
            if value.len() > 200 || value.chars().any(char::is_control) {
                return Err(ServiceError::invalid(field, "at most 200 characters, no control characters").into());
            }
        }
        let decision = match pb::UsageDecision::try_from(r.decision) {
            Ok(pb::UsageDecision::Unspecified) => None,
            Ok(pb::UsageDecision::Granted) => Some(true),
            Ok(pb::UsageDecision::Refused) => Some(false),
            Err(_) => return Err(ServiceError::invalid("decision", format!("{} is not a decision", r.decision)).into()),
        };
        let filter = UsageFilter {
            identifier: r.identifier,
            agency_code: r.agency_code,
            holder_digest: holder,
            since: r.since.as_ref().map(|t| from_timestamp("since", t)).transpose()?,
            until: r.until.as_ref().map(|t| from_timestamp("until", t)).transpose()?,
            granted: decision,
            oldest_first: r.oldest_first,
            agencies_only: false,
        };
        let (records, next) = self.0.usage_log(&who, &filter, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListUsageLogResponse {
            records: records.iter().map(record_to_wire).collect(),
            next_page_token: next,
        }))
    }

    async fn get_usage_checkpoint(
        &self,
        req: Request<pb::GetUsageCheckpointRequest>,
    ) -> Result<Response<pb::GetUsageCheckpointResponse>, Status> {
        let who = principal(&req)?;
        let c = self.0.usage_checkpoint(&who).await?;
        Ok(Response::new(pb::GetUsageCheckpointResponse {
            checkpoint: Some(pb::UsageCheckpoint {
                origin: c.origin,
                tree_size: c.tree_size,
                root_hash: c.root_hash.to_vec(),
                timestamp: Some(timestamp(c.timestamp)),
                jws: c.jws,
            }),
        }))
    }

    async fn get_usage_consistency_proof(
        &self,
        req: Request<pb::GetUsageConsistencyProofRequest>,
    ) -> Result<Response<pb::GetUsageConsistencyProofResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let proof = self.0.usage_consistency_proof(&who, r.first_tree_size, r.second_tree_size).await?;
        Ok(Response::new(pb::GetUsageConsistencyProofResponse { hashes: proof.iter().map(|h| h.to_vec()).collect() }))
    }
}
