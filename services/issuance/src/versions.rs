//! New versions of a licence: change (变更), renewal (延续) and replacement
//! (补发) each make the next version, with the rules that keep exactly one
//! version in force; events on a replaced version reach the current one.

use time::Date;
use zhengzhao_auth::Principal;
use zhengzhao_core::date::{format_date, parse_date};
use zhengzhao_core::status::transition;
use zhengzhao_core::{LicenceDocument, LicenceDraft, LicenceStatus, LifecycleAction, Reason};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, now};

use crate::feed::{self, NewEvent};
use crate::idempotency::{check_idempotency_key, digest, remember, remember_state};
use crate::{
    EventDetails, EventRequest, Issuance, IssuanceError, LicenceRecord, check_occurred, document, insert_licence,
    parse_identifier, refused, update_state, write,
};

/// The day a renewal of `current` starts: the day after its end date, or
/// today for a licence that has expired (within its type's renewal window of
/// `window` days after the end).
pub(crate) fn renewal_start(current: &LicenceRecord, today: Date, window: u32) -> Result<Date, ServiceError> {
    let Some(end) = current.valid_until else {
        return Err(IssuanceError::LongTerm(current.identifier.clone()).into());
    };
    if current.status == LicenceStatus::Expired {
        let closes = end + time::Duration::days(i64::from(window));
        if today > closes {
            return Err(IssuanceError::RenewalClosed {
                identifier: current.identifier.clone(),
                ended: format_date(end),
                closed: format_date(closes),
                window,
            }
            .into());
        }
        return Ok(today);
    }
    end.next_day().ok_or_else(|| IssuanceError::EndOfTime.into())
}

/// Events go to the current version: a replaced one takes none, even while
/// it stays in force awaiting its successor.
pub(crate) fn refuse_replaced(current: &LicenceRecord) -> Result<(), ServiceError> {
    match &current.superseded_by {
        Some(next) => {
            Err(IssuanceError::Superseded { identifier: current.identifier.clone(), next: next.clone() }.into())
        }
        None => Ok(()),
    }
}

impl Issuance {
    /// The version at the end of `licence`'s chain of replacements.
    pub(crate) async fn current_version(&self, mut licence: LicenceRecord) -> Result<LicenceRecord, ServiceError> {
        for _ in 0..=999 {
            match licence.superseded_by.clone() {
                Some(next) => licence = self.fetch(&next).await?,
                None => return Ok(licence),
            }
        }
        Err(ServiceError::internal(format!("licence {} has a cycle of replacements", licence.identifier)))
    }

    /// Replaces (补发) a licence reported lost: the next version, with the
    /// same content and validity and today's issue date; the lost version
    /// is superseded (and so no longer verifies), a mortgage carries over.
    pub(crate) async fn replace(
        &self,
        who: &Principal,
        identifier: &str,
        req: &EventRequest,
    ) -> Result<LicenceRecord, ServiceError> {
        if !req.result.is_empty() || !req.next_due_date.is_empty() {
            return Err(ServiceError::invalid(
                "result",
                "only reviews and inspections carry a result and a next due date",
            ));
        }
        let current = self.fetch(identifier).await?;
        let old = LicenceDocument::from_json(current.document_json.as_bytes()).map_err(ServiceError::internal)?;
        let mut draft = document::draft_of(&old);
        draft.issue_date = format_date(self.clock.today());
        self.new_version(who, current, draft, LifecycleAction::Replace, req).await
    }

    /// Changes (变更) a licence: `draft` becomes the next version.
    pub async fn change(
        &self,
        who: &Principal,
        identifier: &str,
        mut draft: LicenceDraft,
        req: &EventRequest,
    ) -> Result<LicenceRecord, ServiceError> {
        self.authorize_event(who, identifier, false)?;
        let current = self.fetch(identifier).await?;
        let old = LicenceDocument::from_json(current.document_json.as_bytes()).map_err(ServiceError::internal)?;
        if draft.type_code != old.type_code {
            return Err(ServiceError::invalid("draft.type_code", "a change keeps the licence type"));
        }
        if draft.serial.is_empty() {
            draft.serial = old.licence_number.clone();
        } else if draft.serial != old.licence_number {
            return Err(ServiceError::invalid("draft.serial", "a change keeps the licence number"));
        }
        // A change keeps who holds the licence, when it was issued and how
        // long it is valid: a transfer or a new period is not a change.
        let holder = draft.holder.clone();
        if holder.id_type_code != old.holder.id_type_code || holder.id_number != old.holder.id_number {
            return Err(ServiceError::invalid(
                "draft.holder",
                "a change keeps the holder's identity (ID type and number); a transfer to another holder is not a change",
            ));
        }
        for (name, field, value) in [
            ("draft.issue_date", &mut draft.issue_date, old.issue_date.clone()),
            ("draft.valid_from", &mut draft.valid_from, old.valid_from.clone()),
            ("draft.valid_until", &mut draft.valid_until, old.valid_until.clone().unwrap_or_default()),
        ] {
            if field.is_empty() {
                field.clone_from(&value);
            } else if *field != value {
                return Err(ServiceError::invalid(
                    name,
                    format!(
                        "a change keeps it ({}); renew the licence for a new period",
                        if value.is_empty() { "long-term" } else { &value }
                    ),
                ));
            }
        }
        self.new_version(who, current, draft, LifecycleAction::Change, req).await
    }

    /// Renews (延续) a licence: the next version, with a new validity period.
    pub async fn renew(
        &self,
        who: &Principal,
        identifier: &str,
        valid_from: &str,
        valid_until: &str,
        req: &EventRequest,
    ) -> Result<LicenceRecord, ServiceError> {
        self.authorize_event(who, identifier, false)?;
        let current = self.fetch(identifier).await?;
        let old = LicenceDocument::from_json(current.document_json.as_bytes()).map_err(ServiceError::internal)?;
        let mut draft = document::draft_of(&old);
        let day = self.clock.today();
        draft.issue_date = format_date(day);
        let window =
            self.licence_type(&current.type_code, current.template_version).await?.definition.renewal_window_days;
        let start = renewal_start(&current, day, window)?;
        if !valid_from.is_empty() {
            let given = parse_date(valid_from).map_err(|e| ServiceError::invalid("valid_from", e))?;
            if given != start {
                return Err(ServiceError::invalid(
                    "valid_from",
                    format!(
                        "a renewal starts on {} ({}): it extends the licence, without a gap or an overlap",
                        format_date(start),
                        if current.status == LicenceStatus::Expired {
                            "today, for an expired licence"
                        } else {
                            "the day after the current end date"
                        }
                    ),
                ));
            }
        }
        draft.valid_from = format_date(start);
        valid_until.clone_into(&mut draft.valid_until);
        self.new_version(who, current, draft, LifecycleAction::Renew, req).await
    }

    async fn new_version(
        &self,
        who: &Principal,
        current: LicenceRecord,
        mut draft: LicenceDraft,
        action: LifecycleAction,
        req: &EventRequest,
    ) -> Result<LicenceRecord, ServiceError> {
        check_idempotency_key(&req.idempotency_key)?;
        let reason = Reason::parse_field("reason", &req.reason)?;
        let at = now();
        let occurred_at = check_occurred(req.occurred_at, at)?;
        let request_digest = digest(&[
            action.name(),
            &current.identifier,
            &reason,
            &req.occurred_at.map(format_time).unwrap_or_default(),
            &serde_json::to_string(&draft).map_err(ServiceError::internal)?,
        ]);
        if let Some(done) = self.replay(who, &req.idempotency_key, action.name(), &request_digest).await? {
            return Ok(done);
        }
        refuse_replaced(&current)?;
        self.refuse_replica(&current.identifier).await?;
        let next = transition(Some(current.state()), action).map_err(refused)?;
        self.check_after_last_event(&current, occurred_at).await?;
        let backfill = self.classify_business_time(&current.issuer_code, occurred_at, at).await?;
        let id = parse_identifier("identifier", &current.identifier)?;
        let version = id
            .version()
            .checked_add(1)
            .filter(|v| *v <= 999)
            .ok_or_else(|| IssuanceError::LastVersion(current.identifier.clone()))?;
        let t = self.licence_type(&draft.type_code, draft.template_version).await?;
        document::check_issuable(&t, &current.issuer_code)?;
        let doc = document::build(
            &t,
            &mut draft,
            &current.issuer_code,
            version,
            Some(&current.identifier),
            self.clock.today(),
        )?;
        if action == LifecycleAction::Change {
            let before =
                LicenceDocument::from_json(current.document_json.as_bytes()).map_err(ServiceError::internal)?;
            let as_if_unchanged = LicenceDocument {
                identifier: doc.identifier.clone(),
                replaces: doc.replaces.clone(),
                template_version: doc.template_version,
                ..before
            };
            if as_if_unchanged == doc {
                return Err(IssuanceError::NothingChanged(current.identifier.clone()).into());
            }
        }
        let (canonical, signed) = self.sign(&current.issuer_code, &doc).await?;
        // A mortgage carries over to the new version (the pledge is on the
        // licence, not on one version of it).
        let mut fresh = transition(None, LifecycleAction::Issue).map_err(refused)?;
        fresh.mortgaged = current.mortgaged;
        let mut tx = self.db.begin().await?;
        feed::lock(&mut tx, self.db.engine).await?;
        let successor_from = parse_date(&doc.valid_from).map_err(ServiceError::internal)?;
        update_state(&mut tx, &current, next, Some((&doc.identifier, successor_from)), at).await?;
        insert_licence(&mut tx, &doc, &canonical, &signed, fresh, at).await?;
        let actor = who.actor();
        let events: Vec<NewEvent<'_>> = [
            (current.identifier.as_str(), next.status, &doc.identifier, current.jws.as_str()),
            (doc.identifier.as_str(), fresh.status, &current.identifier, signed.jws.as_str()),
        ]
        .into_iter()
        .map(|(identifier, status_after, related, jws)| NewEvent {
            identifier,
            action,
            status_after,
            actor: &actor,
            reason: &reason,
            details: EventDetails { related_identifier: Some(related.clone()), ..Default::default() },
            backfill,
            occurred_at,
            recorded_at: at,
            jws,
        })
        .collect();
        let appended = write::append_events(&mut tx, &events).await?;
        remember(&mut tx, who, &req.idempotency_key, action.name(), &request_digest, &doc.identifier, at).await?;
        remember_state(&mut tx, who, &req.idempotency_key, fresh).await?;
        tx.commit().await?;
        appended.committed();
        self.appended.notify_waiters();
        tracing::info!(old = %current.identifier, new = %doc.identifier, actor = %actor, action = action.name(), "new licence version");
        self.fetch(&doc.identifier).await
    }
}
