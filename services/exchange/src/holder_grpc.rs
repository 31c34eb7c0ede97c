//! The holder service's gRPC edge: wire to model and back, nothing else.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::{Action, authorized, principal};
use zhengzhao_core::date::format_date;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::{status_filter, status_to_wire, timestamp};
use zhengzhao_proto::exchange::v1 as pb;
use zhengzhao_proto::exchange::v1::holder_service_server::{HolderService, HolderServiceServer};
use zhengzhao_proto::issuance::v1 as issuance;

use crate::Exchange;
use crate::grpc::{caller, id_of, record_to_wire, uid};
use crate::holders::{FrontEnd, FrontEndRequest, FrontEndUpdate};
use crate::presentations::PresentationVerdict;
use crate::scenarios::{Scenario, ScenarioRequest, ScenarioState};

/// The tonic service over [`Exchange`]'s holder side.
#[derive(Debug, Clone)]
pub struct HolderGrpc(pub Arc<Exchange>);

impl HolderGrpc {
    pub fn into_server(self) -> HolderServiceServer<Self> {
        HolderServiceServer::new(self)
    }
}

fn ids_of(field: &str, ids: &[u64]) -> Result<Vec<i64>, ServiceError> {
    ids.iter().enumerate().map(|(i, v)| id_of(&format!("{field}[{i}]"), *v)).collect()
}

fn front_end_to_wire(f: &FrontEnd) -> pb::FrontEnd {
    pb::FrontEnd {
        id: uid(f.id),
        name: f.name.clone(),
        agency_code: f.agency_code.clone(),
        jwk_json: f.jwk.to_string(),
        scenario_ids: f.scenario_ids.iter().map(|i| uid(*i)).collect(),
        webhook_url: f.webhook_url.clone(),
        state: if f.active { pb::FrontEndState::Active } else { pb::FrontEndState::Suspended } as i32,
        registered_by: f.registered_by.clone(),
        registered_at: Some(timestamp(f.registered_at)),
    }
}

fn scenario_state_to_wire(s: ScenarioState) -> i32 {
    (match s {
        ScenarioState::Proposed => pb::ScenarioState::Proposed,
        ScenarioState::Approved => pb::ScenarioState::Approved,
        ScenarioState::Refused => pb::ScenarioState::Refused,
    }) as i32
}

fn scenario_to_wire(s: &Scenario) -> pb::Scenario {
    pb::Scenario {
        id: uid(s.id),
        agency_code: s.agency_code.clone(),
        name: s.name.clone(),
        type_codes: s.type_codes.clone(),
        fields: s.fields.clone(),
        purpose: s.purpose.clone(),
        state: scenario_state_to_wire(s.state),
        proposed_by: s.proposed_by.clone(),
        proposed_at: Some(timestamp(s.proposed_at)),
        decided_by: s.decided_by.clone(),
        decided_at: s.decided_at.map(timestamp),
        decision_reason: s.decision_reason.clone(),
    }
}

/// The wire form of a presentation verdict (the counter page shows it too).
pub fn verdict_to_wire(v: &PresentationVerdict) -> pb::VerifyPresentationResponse {
    pb::VerifyPresentationResponse {
        valid: v.valid,
        reason: v.reason.clone(),
        failed_check: v.failed.map(|f| f.as_str().to_owned()).unwrap_or_default(),
        identifier: v.identifier.clone(),
        licence_name: v.licence_name.clone(),
        issuer_name: v.issuer_name.clone(),
        scenario_id: uid(v.scenario_id),
        scenario_name: v.scenario_name.clone(),
        disclosed: v.disclosed.clone().into_iter().collect(),
        status: v.status.map_or(0, |s| status_to_wire(s) as i32),
        front_end_id: uid(v.front_end_id),
        presented_at: v.presented_at.map(timestamp),
    }
}

#[tonic::async_trait]
impl HolderService for HolderGrpc {
    async fn register_front_end(
        &self,
        req: Request<pb::RegisterFrontEndRequest>,
    ) -> Result<Response<pb::RegisterFrontEndResponse>, Status> {
        let who = authorized(&req, &Action::ManageFrontEnds)?;
        let r = req.into_inner();
        let fe = self
            .0
            .register_front_end(
                &who,
                &FrontEndRequest {
                    name: r.name,
                    agency_code: r.agency_code,
                    jwk_json: r.jwk_json,
                    scenario_ids: ids_of("scenario_ids", &r.scenario_ids)?,
                    webhook_url: r.webhook_url,
                },
            )
            .await?;
        Ok(Response::new(pb::RegisterFrontEndResponse { front_end: Some(front_end_to_wire(&fe)) }))
    }

    async fn update_front_end(
        &self,
        req: Request<pb::UpdateFrontEndRequest>,
    ) -> Result<Response<pb::UpdateFrontEndResponse>, Status> {
        let who = authorized(&req, &Action::ManageFrontEnds)?;
        let r = req.into_inner();
        let active = match pb::FrontEndState::try_from(r.state) {
            Ok(pb::FrontEndState::Unspecified) => None,
            Ok(pb::FrontEndState::Active) => Some(true),
            Ok(pb::FrontEndState::Suspended) => Some(false),
            Err(_) => {
                return Err(ServiceError::invalid("state", format!("{} is not a front-end state", r.state)).into());
            }
        };
        let update = FrontEndUpdate {
            scenario_ids: r.set_scenarios.then(|| ids_of("scenario_ids", &r.scenario_ids)).transpose()?,
            webhook_url: r.set_webhook.then_some(r.webhook_url),
            active,
        };
        let fe = self.0.update_front_end(&who, id_of("id", r.id)?, &update).await?;
        Ok(Response::new(pb::UpdateFrontEndResponse { front_end: Some(front_end_to_wire(&fe)) }))
    }

    async fn list_front_ends(
        &self,
        req: Request<pb::ListFrontEndsRequest>,
    ) -> Result<Response<pb::ListFrontEndsResponse>, Status> {
        let who = principal(&req)?;
        let all = self.0.front_ends(&who).await?;
        Ok(Response::new(pb::ListFrontEndsResponse { front_ends: all.iter().map(front_end_to_wire).collect() }))
    }

    async fn holder_login(
        &self,
        req: Request<pb::HolderLoginRequest>,
    ) -> Result<Response<pb::HolderLoginResponse>, Status> {
        authorized(&req, &Action::HolderLogin)?;
        let c = caller(&req, "HolderLogin")?;
        let r = req.into_inner();
        let front_end = if r.front_end_id == 0 { None } else { Some(id_of("front_end_id", r.front_end_id)?) };
        let ttl = match r.ttl_seconds {
            0 => crate::holders::HOLDER_TOKEN_TTL,
            n => std::time::Duration::from_secs(u64::from(n)),
        };
        let l = self.0.holder_login(&c, &r.holder_id_type, &r.holder_id_number, front_end, ttl).await?;
        Ok(Response::new(pb::HolderLoginResponse {
            token: l.token,
            token_id: l.token_id,
            expires_at: Some(timestamp(l.expires_at)),
            front_end_id: uid(l.front_end_id),
        }))
    }

    async fn list_my_licences(
        &self,
        req: Request<pb::ListMyLicencesRequest>,
    ) -> Result<Response<pb::ListMyLicencesResponse>, Status> {
        authorized(&req, &Action::ActAsHolder)?;
        let c = caller(&req, "ListMyLicences")?;
        let r = req.into_inner();
        let status = status_filter("status", r.status)?;
        let (licences, next) = self.0.my_licences(&c, status, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListMyLicencesResponse {
            licences: licences.iter().map(common::Licence::from).collect(),
            next_page_token: next,
        }))
    }

    async fn get_my_licence(
        &self,
        req: Request<pb::GetMyLicenceRequest>,
    ) -> Result<Response<pb::GetMyLicenceResponse>, Status> {
        let c = caller(&req, "GetMyLicence")?;
        let r = req.into_inner();
        let mine = self.0.my_licence(&c, &r.identifier).await?;
        Ok(Response::new(pb::GetMyLicenceResponse {
            licence: Some(common::Licence::from(&mine.licence)),
            events: mine.events.iter().map(issuance::LicenceEvent::from).collect(),
        }))
    }

    async fn list_my_usage(
        &self,
        req: Request<pb::ListMyUsageRequest>,
    ) -> Result<Response<pb::ListMyUsageResponse>, Status> {
        let c = caller(&req, "ListMyUsage")?;
        let r = req.into_inner();
        let (records, next) = self.0.my_usage(&c, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListMyUsageResponse {
            records: records.iter().map(record_to_wire).collect(),
            next_page_token: next,
        }))
    }

    async fn list_my_reminders(
        &self,
        req: Request<pb::ListMyRemindersRequest>,
    ) -> Result<Response<pb::ListMyRemindersResponse>, Status> {
        let c = caller(&req, "ListMyReminders")?;
        let reminders = self.0.my_reminders(&c).await?;
        Ok(Response::new(pb::ListMyRemindersResponse {
            reminders: reminders
                .iter()
                .map(|r| pb::Reminder {
                    id: r.id.clone(),
                    identifier: r.identifier.clone(),
                    type_code: r.type_code.clone(),
                    days_before: r.days_before,
                    valid_until: format_date(r.valid_until),
                    due_at: Some(timestamp(r.due_at)),
                    state: r.state.to_wire(),
                    sent_at: r.sent_at.map(timestamp),
                })
                .collect(),
        }))
    }

    async fn present_licence(
        &self,
        req: Request<pb::PresentLicenceRequest>,
    ) -> Result<Response<pb::PresentLicenceResponse>, Status> {
        authorized(&req, &Action::ActAsHolder)?;
        let c = caller(&req, "PresentLicence")?;
        let r = req.into_inner();
        let p = self.0.present(&c, &r.identifier, id_of("scenario_id", r.scenario_id)?).await?;
        Ok(Response::new(pb::PresentLicenceResponse {
            sd_jwt: p.sd_jwt,
            nonce: p.nonce,
            audience: p.audience,
            expires_at: Some(timestamp(p.expires_at)),
            disclosed: p.disclosed,
        }))
    }

    async fn propose_scenario(
        &self,
        req: Request<pb::ProposeScenarioRequest>,
    ) -> Result<Response<pb::ProposeScenarioResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let s = self
            .0
            .propose_scenario(
                &who,
                &ScenarioRequest { name: r.name, type_codes: r.type_codes, fields: r.fields, purpose: r.purpose },
            )
            .await?;
        Ok(Response::new(pb::ProposeScenarioResponse { scenario: Some(scenario_to_wire(&s)) }))
    }

    async fn approve_scenario(
        &self,
        req: Request<pb::ApproveScenarioRequest>,
    ) -> Result<Response<pb::ApproveScenarioResponse>, Status> {
        let who = authorized(&req, &Action::DecideScenario)?;
        let r = req.into_inner();
        let s = self.0.decide_scenario(&who, id_of("id", r.id)?, true, &r.reason).await?;
        Ok(Response::new(pb::ApproveScenarioResponse { scenario: Some(scenario_to_wire(&s)) }))
    }

    async fn refuse_scenario(
        &self,
        req: Request<pb::RefuseScenarioRequest>,
    ) -> Result<Response<pb::RefuseScenarioResponse>, Status> {
        let who = authorized(&req, &Action::DecideScenario)?;
        let r = req.into_inner();
        let s = self.0.decide_scenario(&who, id_of("id", r.id)?, false, &r.reason).await?;
        Ok(Response::new(pb::RefuseScenarioResponse { scenario: Some(scenario_to_wire(&s)) }))
    }

    async fn list_scenarios(
        &self,
        req: Request<pb::ListScenariosRequest>,
    ) -> Result<Response<pb::ListScenariosResponse>, Status> {
        let who = authorized(&req, &Action::ReadScenarios)?;
        let state = match pb::ScenarioState::try_from(req.into_inner().state) {
            Ok(pb::ScenarioState::Unspecified) => None,
            Ok(pb::ScenarioState::Proposed) => Some(ScenarioState::Proposed),
            Ok(pb::ScenarioState::Approved) => Some(ScenarioState::Approved),
            Ok(pb::ScenarioState::Refused) => Some(ScenarioState::Refused),
            Err(_) => return Err(ServiceError::invalid("state", "not a scenario state").into()),
        };
        let all = self.0.scenarios(&who, state).await?;
        Ok(Response::new(pb::ListScenariosResponse { scenarios: all.iter().map(scenario_to_wire).collect() }))
    }

    async fn verify_presentation(
        &self,
        req: Request<pb::VerifyPresentationRequest>,
    ) -> Result<Response<pb::VerifyPresentationResponse>, Status> {
        let who = principal(&req)?;
        let v = self.0.verify_presentation(&who, &req.into_inner().presentation).await?;
        Ok(Response::new(verdict_to_wire(&v)))
    }

    async fn set_reminder_windows(
        &self,
        req: Request<pb::SetReminderWindowsRequest>,
    ) -> Result<Response<pb::SetReminderWindowsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let days = self.0.set_reminder_windows(&who, &r.type_code, &r.days).await?;
        Ok(Response::new(pb::SetReminderWindowsResponse { type_code: r.type_code, days }))
    }
}
