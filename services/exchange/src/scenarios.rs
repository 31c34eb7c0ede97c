//! Presentation scenarios (art. 16): where a holder may show a licence on an
//! approved mobile end. A consumer proposes one for its own agency (licence
//! types, the claims its counter needs, the purpose); the management body
//! (an administrator) approves or refuses it. Only an approved scenario
//! produces presentations, and they disclose exactly its claims.

use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, Role, authorize};
use zhengzhao_core::{FieldViolation, TypeStatus, Violations};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::now;

use crate::holders::check_name;
use crate::model::MAX_PURPOSE;
use crate::{Exchange, holder_rows as rows};

/// The holder claims a scenario may name beside face fields (what every
/// selective-disclosure licence can disclose).
pub const HOLDER_CLAIMS: [&str; 4] = ["licence_number", "holder_name", "holder_id_type", "holder_id_number"];
/// Most types or claims one scenario names.
pub const MAX_ITEMS: usize = 20;

/// Where a scenario stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioState {
    Proposed,
    Approved,
    Refused,
}

impl ScenarioState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioState::Proposed => "proposed",
            ScenarioState::Approved => "approved",
            ScenarioState::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "proposed" => Some(ScenarioState::Proposed),
            "approved" => Some(ScenarioState::Approved),
            "refused" => Some(ScenarioState::Refused),
            _ => None,
        }
    }
}

/// A presentation scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub id: i64,
    pub agency_code: String,
    pub name: String,
    pub type_codes: Vec<String>,
    pub fields: Vec<String>,
    pub purpose: String,
    pub state: ScenarioState,
    pub proposed_by: String,
    pub proposed_at: OffsetDateTime,
    pub decided_by: String,
    pub decided_at: Option<OffsetDateTime>,
    pub decision_reason: String,
}

impl Scenario {
    /// The audience a presentation in this scenario is bound to.
    pub fn audience(&self) -> String {
        format!("zhengzhao-scenario:{}", self.id)
    }

    /// What the selective-disclosure licence carries about its scenario.
    pub fn claim(&self) -> serde_json::Value {
        serde_json::json!({ "id": self.id, "name": self.name, "agency": self.agency_code, "fields": self.fields })
    }
}

/// What a consumer proposes.
#[derive(Debug, Clone, Default)]
pub struct ScenarioRequest {
    pub name: String,
    pub type_codes: Vec<String>,
    pub fields: Vec<String>,
    pub purpose: String,
}

fn check_list(field: &str, items: &[String], out: &mut Vec<FieldViolation>) {
    if items.is_empty() {
        out.push(FieldViolation::new(field, "name at least one"));
    } else if items.len() > MAX_ITEMS {
        out.push(FieldViolation::new(field, format!("at most {MAX_ITEMS}")));
    }
    for (i, c) in items.iter().enumerate() {
        if c.is_empty() || c.len() > 64 || c.chars().any(char::is_control) {
            out.push(FieldViolation::new(format!("{field}[{i}]"), "1 to 64 characters, no control characters"));
        } else if items[..i].contains(c) {
            out.push(FieldViolation::new(format!("{field}[{i}]"), format!("{c:?} is named twice")));
        }
    }
}

impl Exchange {
    /// A consumer proposes a scenario for its own agency.
    pub async fn propose_scenario(&self, who: &Principal, req: &ScenarioRequest) -> Result<Scenario, ServiceError> {
        authorize(who, &Action::ProposeScenario)?;
        let name = check_name("name", &req.name)?;
        let purpose = req.purpose.trim();
        let mut out = Vec::new();
        if purpose.is_empty() || zhengzhao_core::text::BoundedText::<MAX_PURPOSE>::check(purpose).is_err() {
            out.push(FieldViolation::new("purpose", format!("1 to {MAX_PURPOSE} characters, no control characters")));
        }
        check_list("type_codes", &req.type_codes, &mut out);
        check_list("fields", &req.fields, &mut out);
        if !out.is_empty() {
            return Err(Violations(out).into());
        }
        for (i, code) in req.type_codes.iter().enumerate() {
            let field = format!("type_codes[{i}]");
            let t = match self.catalog.get(code, 0).await {
                Ok(t) if t.status == TypeStatus::Published => t,
                Ok(t) => {
                    out.push(FieldViolation::new(field, format!("licence type {code} is {}", t.status.as_str())));
                    continue;
                }
                Err(ServiceError::NotFound(_) | ServiceError::Invalid(_)) => {
                    out.push(FieldViolation::new(field, format!("no licence type {code} in the catalogue")));
                    continue;
                }
                Err(e) => return Err(e),
            };
            for (j, f) in req.fields.iter().enumerate() {
                if !HOLDER_CLAIMS.contains(&f.as_str()) && !t.definition.template.fields.iter().any(|d| &d.key == f) {
                    out.push(FieldViolation::new(
                        format!("fields[{j}]"),
                        format!(
                            "{f:?} is neither a face field of licence type {code} nor one of {}",
                            HOLDER_CLAIMS.join(", ")
                        ),
                    ));
                }
            }
        }
        if !out.is_empty() {
            return Err(Violations(out).into());
        }
        let mut conn = self.db.pool.acquire().await?;
        let s = rows::insert_scenario(&mut conn, &who.agency, &name, req, purpose, &who.actor(), now()).await?;
        tracing::info!(scenario = s.id, agency = %s.agency_code, "presentation scenario proposed");
        Ok(s)
    }

    /// The management body approves (`approve`) or refuses a proposed scenario.
    pub async fn decide_scenario(
        &self,
        who: &Principal,
        id: i64,
        approve: bool,
        reason: &str,
    ) -> Result<Scenario, ServiceError> {
        authorize(who, &Action::DecideScenario)?;
        let reason = reason.trim();
        if !approve && reason.is_empty() {
            return Err(ServiceError::invalid("reason", "required: say why"));
        }
        if !reason.is_empty() && zhengzhao_core::text::BoundedText::<MAX_PURPOSE>::check(reason).is_err() {
            return Err(ServiceError::invalid(
                "reason",
                format!("at most {MAX_PURPOSE} characters, no control characters"),
            ));
        }
        let to = if approve { ScenarioState::Approved } else { ScenarioState::Refused };
        let mut conn = self.db.pool.acquire().await?;
        if !rows::decide_scenario(&mut conn, id, to, &who.actor(), reason, now()).await? {
            return Err(match rows::load_scenario(&mut conn, id).await? {
                None => ServiceError::NotFound(format!("no scenario {id}")),
                Some(s) => ServiceError::FailedPrecondition(format!("scenario {id} is already {}", s.state.as_str())),
            });
        }
        let s = rows::load_scenario(&mut conn, id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no scenario {id}")))?;
        tracing::info!(scenario = id, state = s.state.as_str(), by = %who.actor(), "presentation scenario decided");
        Ok(s)
    }

    /// Scenarios: administrators and auditors see all, a consumer its own,
    /// front ends and holders the approved ones.
    pub async fn scenarios(
        &self,
        who: &Principal,
        state: Option<ScenarioState>,
    ) -> Result<Vec<Scenario>, ServiceError> {
        authorize(who, &Action::ReadScenarios)?;
        let mut conn = self.db.pool.acquire().await?;
        let all = rows::list_scenarios(&mut conn).await?;
        Ok(all
            .into_iter()
            .filter(|s| state.is_none_or(|st| s.state == st))
            .filter(|s| match who.role {
                Role::Admin | Role::Auditor | Role::Service(_) => true,
                Role::Consumer => s.agency_code == who.agency || s.state == ScenarioState::Approved,
                _ => s.state == ScenarioState::Approved,
            })
            .collect())
    }
}
