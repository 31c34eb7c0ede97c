//! Usage lists (用证清单, art. 13): administrators add, suspend, resume and
//! end entries; consumers — the city's, and provincial or ministry-level
//! agencies through the city (art. 10) — apply, and administrators approve
//! or refuse with a reason. Every change is recorded in the same
//! transaction (who, when, what), and lists are read back with their history.

use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::page::Page;
use zhengzhao_core::{FieldViolation, LicenceTypeRecord, Reason, TypeStatus, Uscc, Violations};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::now;

use crate::model::{
    Application, ApplicationState, Change, Entry, EntryState, Level, MAX_APPLICATION_ITEMS, Terms, TermsRequest,
    reference_invalid,
};
use crate::rows::{self, NewEntry};
use crate::{Exchange, ExchangeError};

/// Largest page of entries, applications or changes.
pub const MAX_PAGE_SIZE: u32 = 500;

/// An administrator's new entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryRequest {
    pub agency_code: String,
    /// None: city.
    pub level: Option<Level>,
    pub type_code: String,
    pub service_item_code: String,
    pub terms: TermsRequest,
}

/// A consumer's application.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplicationRequest {
    /// None: city.
    pub level: Option<Level>,
    pub type_codes: Vec<String>,
    pub service_item_codes: Vec<String>,
    pub terms: TermsRequest,
}

/// A state change of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryChange {
    Suspend,
    Resume,
    End,
}

impl EntryChange {
    fn action(self) -> &'static str {
        match self {
            EntryChange::Suspend => "suspended",
            EntryChange::Resume => "resumed",
            EntryChange::End => "ended",
        }
    }

    /// From which states, to which.
    fn moves(self) -> (&'static [EntryState], EntryState) {
        match self {
            EntryChange::Suspend => (&[EntryState::Active], EntryState::Suspended),
            EntryChange::Resume => (&[EntryState::Suspended], EntryState::Active),
            EntryChange::End => (&[EntryState::Active, EntryState::Suspended], EntryState::Ended),
        }
    }
}

fn entry_json(e: &Entry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id, "agency": e.agency_code, "level": e.level.as_str(), "type": e.type_code,
        "serviceItem": e.service_item_code, "purpose": e.terms.purpose, "fields": e.terms.fields,
        "allFields": e.terms.all_fields, "from": zhengzhao_core::date::format_date(e.terms.from),
        "until": e.terms.until.map(zhengzhao_core::date::format_date), "state": e.state.as_str(),
    })
}

fn application_json(a: &Application) -> serde_json::Value {
    serde_json::json!({
        "id": a.id, "agency": a.agency_code, "level": a.level.as_str(), "types": a.type_codes,
        "serviceItems": a.service_item_codes, "purpose": a.terms.purpose, "fields": a.terms.fields,
        "allFields": a.terms.all_fields, "from": zhengzhao_core::date::format_date(a.terms.from),
        "until": a.terms.until.map(zhengzhao_core::date::format_date), "state": a.state.as_str(),
        "entries": a.entry_ids,
    })
}

fn check_reason(field: &str, reason: &str, required: bool) -> Result<String, ServiceError> {
    let reason = reason.trim();
    if reason.is_empty() {
        if required {
            return Err(ServiceError::invalid(field, "required: say why"));
        }
        return Ok(String::new());
    }
    Ok(Reason::parse_field(field, reason)?.into_string())
}

fn check_codes(field: &str, codes: &[String], out: &mut Vec<FieldViolation>) {
    if codes.is_empty() {
        out.push(FieldViolation::new(field, "name at least one"));
    } else if codes.len() > MAX_APPLICATION_ITEMS {
        out.push(FieldViolation::new(field, format!("at most {MAX_APPLICATION_ITEMS}")));
    }
    for (i, c) in codes.iter().enumerate() {
        if c.is_empty() || reference_invalid(c) {
            out.push(FieldViolation::new(format!("{field}[{i}]"), "1 to 64 characters, no control characters"));
        } else if codes[..i].contains(c) {
            out.push(FieldViolation::new(format!("{field}[{i}]"), "listed twice"));
        }
    }
}

fn page(size: u32, token: &str) -> Result<Page, ServiceError> {
    Ok(Page::parse(size, token, MAX_PAGE_SIZE)?)
}

impl Exchange {
    /// The published types named, each with the service items it lists that
    /// were asked for: every type must pair with an item, every item with a
    /// type, and every field named must be a face field of every type.
    async fn check_pairs(
        &self,
        type_field: &str,
        item_field: &str,
        type_codes: &[String],
        items: &[String],
        terms: &Terms,
    ) -> Result<Vec<(String, String)>, ServiceError> {
        let mut out = Vec::new();
        let mut types: Vec<LicenceTypeRecord> = Vec::new();
        for (i, code) in type_codes.iter().enumerate() {
            let field = if type_codes.len() == 1 && type_field == "type_code" {
                type_field.to_owned()
            } else {
                format!("{type_field}[{i}]")
            };
            if let Err(e) = zhengzhao_core::TypeCode::parse(code) {
                out.push(FieldViolation::new(field, e));
                continue;
            }
            match self.catalog.get(code, 0).await {
                Ok(t) if t.status == TypeStatus::Published => types.push(t),
                Ok(t) => out.push(FieldViolation::new(field, format!("licence type {code} is {}", t.status.as_str()))),
                Err(ServiceError::NotFound(_)) => {
                    out.push(FieldViolation::new(field, format!("no licence type {code} in the catalogue")))
                }
                Err(e) => return Err(e),
            }
        }
        if !out.is_empty() {
            return Err(Violations(out).into());
        }
        let mut pairs = Vec::new();
        let mut lonely_types = Vec::new();
        for t in &types {
            let listed: Vec<&str> = t.definition.service_items.iter().map(|s| s.code.as_str()).collect();
            let mine: Vec<&String> = items.iter().filter(|i| listed.contains(&i.as_str())).collect();
            if mine.is_empty() {
                lonely_types.push(FieldViolation::new(
                    type_field,
                    format!(
                        "licence type {} lists none of the service items named (it lists: {})",
                        t.code(),
                        if listed.is_empty() { "none".to_owned() } else { listed.join(", ") }
                    ),
                ));
            }
            pairs.extend(mine.into_iter().map(|i| (t.code().to_owned(), i.clone())));
            for (i, f) in terms.fields.iter().enumerate() {
                if !t.definition.template.fields.iter().any(|d| &d.key == f) {
                    out.push(FieldViolation::new(
                        format!("terms.fields[{i}]"),
                        format!("{f:?} is not a face field of licence type {}", t.code()),
                    ));
                }
            }
        }
        let mut lonely_items = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if !pairs.iter().any(|(_, it)| it == item) {
                let field = if items.len() == 1 && item_field == "service_item_code" {
                    item_field.to_owned()
                } else {
                    format!("{item_field}[{i}]")
                };
                lonely_items.push(FieldViolation::new(
                    field,
                    format!("{item} is not a service item of the licence type(s) named"),
                ));
            }
        }
        // An item no type lists says it all; a type left without items is
        // worth saying only when every item found its type.
        if lonely_items.is_empty() {
            out.extend(lonely_types);
        } else {
            out.extend(lonely_items);
        }
        if out.is_empty() { Ok(pairs) } else { Err(Violations(out).into()) }
    }

    /// Adds an entry to an agency's usage list.
    pub async fn create_entry(&self, who: &Principal, req: &EntryRequest) -> Result<Entry, ServiceError> {
        authorize(who, &Action::ManageUsageList)?;
        let mut out = Vec::new();
        if let Err(e) = Uscc::parse(&req.agency_code) {
            out.push(FieldViolation::new("agency_code", e.to_string()));
        }
        if req.service_item_code.is_empty() || reference_invalid(&req.service_item_code) {
            out.push(FieldViolation::new("service_item_code", "1 to 64 characters, no control characters"));
        }
        let terms = match req.terms.check(self.clock.today()) {
            Ok(t) => Some(t),
            Err(v) => {
                out.extend(v.0);
                None
            }
        };
        let Some(terms) = terms.filter(|_| out.is_empty()) else {
            return Err(Violations(out).into());
        };
        let types = [req.type_code.clone()];
        let items = [req.service_item_code.clone()];
        self.check_pairs("type_code", "service_item_code", &types, &items, &terms).await?;
        let at = now();
        let mut tx = self.db.begin().await?;
        let new = NewEntry {
            agency_code: &req.agency_code,
            level: req.level.unwrap_or(Level::City),
            type_code: &req.type_code,
            service_item_code: &req.service_item_code,
            terms: &terms,
            application_id: None,
        };
        let entry = rows::insert_entry(&mut tx, &new, who, at).await?;
        rows::insert_change(
            &mut tx,
            "created",
            Some(entry.id),
            None,
            &entry.agency_code,
            who,
            "",
            &entry_json(&entry),
            at,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(entry = entry.id, agency = %entry.agency_code, actor = %who.actor(), "usage-list entry created");
        Ok(entry)
    }

    /// Applies for entries for the caller's own agency.
    pub async fn apply(&self, who: &Principal, req: &ApplicationRequest) -> Result<Application, ServiceError> {
        authorize(who, &Action::ApplyForUsage)?;
        let mut out = Vec::new();
        check_codes("type_codes", &req.type_codes, &mut out);
        check_codes("service_item_codes", &req.service_item_codes, &mut out);
        let terms = match req.terms.check(self.clock.today()) {
            Ok(t) => Some(t),
            Err(v) => {
                out.extend(v.0);
                None
            }
        };
        let Some(terms) = terms.filter(|_| out.is_empty()) else {
            return Err(Violations(out).into());
        };
        self.check_pairs("type_codes", "service_item_codes", &req.type_codes, &req.service_item_codes, &terms).await?;
        let at = now();
        let level = req.level.unwrap_or(Level::City);
        let mut tx = self.db.begin().await?;
        let new = rows::NewApplication {
            agency_code: &who.agency,
            level,
            type_codes: &req.type_codes,
            service_items: &req.service_item_codes,
            terms: &terms,
        };
        let a = rows::insert_application(&mut tx, &new, who, at).await?;
        rows::insert_change(&mut tx, "applied", None, Some(a.id), &a.agency_code, who, "", &application_json(&a), at)
            .await?;
        tx.commit().await?;
        tracing::info!(application = a.id, agency = %a.agency_code, level = level.as_str(), "usage-list application filed");
        Ok(a)
    }

    /// Approves a pending application: one entry per type and service item
    /// it lists, all in one transaction with the decision.
    pub async fn approve(
        &self,
        who: &Principal,
        id: i64,
        reason: &str,
    ) -> Result<(Application, Vec<Entry>), ServiceError> {
        authorize(who, &Action::ManageUsageList)?;
        let reason = check_reason("reason", reason, false)?;
        let pending = self.pending(id).await?;
        // The catalogue may have changed since the application: check again.
        let pairs = self
            .check_pairs(
                "type_codes",
                "service_item_codes",
                &pending.type_codes,
                &pending.service_item_codes,
                &pending.terms,
            )
            .await
            .map_err(|e| match e {
                ServiceError::Invalid(v) => ServiceError::FailedPrecondition(format!(
                    "application {id} no longer matches the catalogue: {v}; refuse it and have the agency apply again"
                )),
                e => e,
            })?;
        let mut terms = pending.terms.clone();
        // An application approved after its start date starts today.
        terms.from = terms.from.max(self.clock.today());
        if terms.until.is_some_and(|u| u < terms.from) {
            return Err(ServiceError::FailedPrecondition(format!(
                "application {id} asked for a period that has already ended: refuse it"
            )));
        }
        let at = now();
        let mut tx = self.db.begin().await?;
        let mut entries = Vec::with_capacity(pairs.len());
        for (type_code, item) in &pairs {
            let new = NewEntry {
                agency_code: &pending.agency_code,
                level: pending.level,
                type_code,
                service_item_code: item,
                terms: &terms,
                application_id: Some(id),
            };
            entries.push(rows::insert_entry(&mut tx, &new, who, at).await?);
        }
        let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
        if !rows::decide_application(&mut tx, id, ApplicationState::Approved, who, at, &reason, &ids).await? {
            tx.rollback().await?;
            return Err(self.decided(id).await);
        }
        let a = rows::load_application(&mut tx, id).await?.ok_or(ExchangeError::NoSuchApplication(id))?;
        rows::insert_change(
            &mut tx,
            "approved",
            None,
            Some(id),
            &a.agency_code,
            who,
            &reason,
            &application_json(&a),
            at,
        )
        .await?;
        for e in &entries {
            rows::insert_change(
                &mut tx,
                "created",
                Some(e.id),
                Some(id),
                &e.agency_code,
                who,
                &reason,
                &entry_json(e),
                at,
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(application = id, entries = entries.len(), actor = %who.actor(), "usage-list application approved");
        Ok((a, entries))
    }

    /// Refuses a pending application, with a reason.
    pub async fn refuse(&self, who: &Principal, id: i64, reason: &str) -> Result<Application, ServiceError> {
        authorize(who, &Action::ManageUsageList)?;
        let reason = check_reason("reason", reason, true)?;
        self.pending(id).await?;
        let at = now();
        let mut tx = self.db.begin().await?;
        if !rows::decide_application(&mut tx, id, ApplicationState::Refused, who, at, &reason, &[]).await? {
            tx.rollback().await?;
            return Err(self.decided(id).await);
        }
        let a = rows::load_application(&mut tx, id).await?.ok_or(ExchangeError::NoSuchApplication(id))?;
        rows::insert_change(
            &mut tx,
            "refused",
            None,
            Some(id),
            &a.agency_code,
            who,
            &reason,
            &application_json(&a),
            at,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(application = id, actor = %who.actor(), "usage-list application refused");
        Ok(a)
    }

    async fn pending(&self, id: i64) -> Result<Application, ServiceError> {
        let mut conn = self.db.pool.acquire().await?;
        let a = rows::load_application(&mut conn, id).await?.ok_or(ExchangeError::NoSuchApplication(id))?;
        if a.state != ApplicationState::Pending {
            return Err(ExchangeError::AlreadyDecided { id, state: a.state.as_str() }.into());
        }
        Ok(a)
    }

    async fn decided(&self, id: i64) -> ServiceError {
        match self.pending(id).await {
            Err(e) => e,
            Ok(_) => ServiceError::internal(format!("application {id} could not be decided")),
        }
    }

    /// Suspends, resumes or ends an entry; a reason is required.
    pub async fn change_entry(
        &self,
        who: &Principal,
        id: i64,
        change: EntryChange,
        reason: &str,
    ) -> Result<Entry, ServiceError> {
        authorize(who, &Action::ManageUsageList)?;
        let reason = check_reason("reason", reason, true)?;
        let (from, to) = change.moves();
        let at = now();
        let mut tx = self.db.begin().await?;
        let entry = rows::load_entry(&mut tx, id).await?.ok_or(ExchangeError::NoSuchEntry(id))?;
        let verb = match change {
            EntryChange::Suspend => "suspended",
            EntryChange::Resume => "resumed",
            EntryChange::End => "ended",
        };
        if !from.contains(&entry.state) || !rows::set_entry_state(&mut tx, id, entry.state, to).await? {
            return Err(ExchangeError::EntryState { id, state: entry.state.as_str(), action: verb }.into());
        }
        let entry = rows::load_entry(&mut tx, id).await?.ok_or(ExchangeError::NoSuchEntry(id))?;
        rows::insert_change(
            &mut tx,
            change.action(),
            Some(id),
            entry.application_id,
            &entry.agency_code,
            who,
            &reason,
            &entry_json(&entry),
            at,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(entry = id, state = entry.state.as_str(), actor = %who.actor(), "usage-list entry changed");
        Ok(entry)
    }

    /// The agency a listing is for: a consumer's own always; others' as asked.
    fn listing_agency<'a>(&self, who: &'a Principal, agency: &'a str) -> Result<&'a str, ServiceError> {
        let agency = if who.role == zhengzhao_auth::Role::Consumer && agency.is_empty() { &who.agency } else { agency };
        // Empty (all agencies) passes only for administrators and auditors.
        authorize(who, &Action::ReadUsageList { agency })?;
        if !agency.is_empty() && zhengzhao_core::Uscc::parse(agency).is_err() {
            return Err(ServiceError::invalid(
                "agency_code",
                "a unified social credit code, or empty for every agency",
            ));
        }
        Ok(agency)
    }

    /// One page of usage-list entries, newest first.
    pub async fn entries(
        &self,
        who: &Principal,
        agency: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Entry>, String), ServiceError> {
        let agency = self.listing_agency(who, agency)?;
        let page = page(page_size, page_token)?;
        let mut conn = self.db.pool.acquire().await?;
        let mut out = rows::list_entries(&mut conn, agency, page.before, page.fetch_limit()).await?;
        let next = page.finish(&mut out, |e| e.id);
        Ok((out, next))
    }

    /// One page of applications, newest first.
    pub async fn applications(
        &self,
        who: &Principal,
        agency: &str,
        state: Option<ApplicationState>,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Application>, String), ServiceError> {
        let agency = self.listing_agency(who, agency)?;
        let page = page(page_size, page_token)?;
        let mut conn = self.db.pool.acquire().await?;
        let mut out = rows::list_applications(&mut conn, agency, state, page.before, page.fetch_limit()).await?;
        let next = page.finish(&mut out, |a| a.id);
        Ok((out, next))
    }

    /// One page of usage-list changes, newest first.
    pub async fn changes(
        &self,
        who: &Principal,
        agency: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Change>, String), ServiceError> {
        let agency = self.listing_agency(who, agency)?;
        let page = page(page_size, page_token)?;
        let mut conn = self.db.pool.acquire().await?;
        let mut out = rows::list_changes(&mut conn, agency, page.before, page.fetch_limit()).await?;
        let next = page.finish(&mut out, |c| c.id);
        Ok((out, next))
    }
}
