//! The issuance service: issues licences of published types, checked against
//! the template version they name and signed through the signing service;
//! mirrors every lifecycle event (change and renewal as new versions); and
//! appends each event to the ordered change feed in the same transaction as
//! the state change it records.

#![forbid(unsafe_code)]

mod document;
pub mod error;
mod feed;
pub mod grpc;
pub mod import;
pub mod outage;
mod record;
pub mod translog;
mod write;

use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use sqlx::Row;
use time::{Date, OffsetDateTime};
use tokio::sync::Notify;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_clients::{CatalogClient, SigningClient};
use zhengzhao_core::date::{format_date, parse_date};
use zhengzhao_core::status::transition;
use zhengzhao_core::{
    BoundedText, LicenceDocument, LicenceDraft, LicenceId, LicenceState, LicenceStatus, LicenceTypeRecord,
    LifecycleAction, Reason, TypeCode,
};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, Migrations, StoreConfig, format_time, now};

pub use error::IssuanceError;
use feed::NewEvent;
pub use record::{EventDetails, EventRecord, FeedEntry, LastCheck, LicenceRecord, started};
pub use zhengzhao_clients::IssuanceClient;

static PG: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// This service's migrations.
pub static MIGRATIONS: Migrations = Migrations { postgres: &PG, sqlite: &SQLITE };

pub use zhengzhao_core::clock::{Clock, LIBRARY_OFFSET};
/// Longest reason accepted on a lifecycle event.
pub const MAX_REASON: usize = Reason::MAX;
/// Longest result of an annual review or inspection.
pub const MAX_CHECK_RESULT: usize = 50;
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// Largest batch of the feed read at once.
pub const MAX_FEED_BATCH: i64 = 1000;

/// The issuance service over its own tables.
pub struct Issuance {
    db: Db,
    catalog: CatalogClient,
    signing: SigningClient,
    /// Woken after every commit that appended to the feed.
    appended: Notify,
    /// Working days, for outage catch-up deadlines.
    calendar: zhengzhao_core::calendar::WorkingCalendar,
    /// How long before it is recorded an issuer's outage may have started.
    max_outage_backdate: time::Duration,
    /// Signs the transparency log's checkpoints.
    log: translog::LogSigner,
    /// "Today", for validity.
    clock: Clock,
}

impl std::fmt::Debug for Issuance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issuance(..)")
    }
}

/// Parses an identifier naming a held licence, as the named field
/// ([`LicenceId::parse_held`]).
pub fn parse_identifier(field: &str, s: &str) -> Result<LicenceId, ServiceError> {
    Ok(LicenceId::parse_held(field, s)?)
}

fn digest(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

fn check_idempotency_key(key: &str) -> Result<(), ServiceError> {
    if key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(|c| c.is_control()) {
        return Err(ServiceError::invalid(
            "idempotency_key",
            format!("at most {MAX_IDEMPOTENCY_KEY} bytes, no control characters"),
        ));
    }
    Ok(())
}

fn check_occurred(occurred_at: Option<OffsetDateTime>, at: OffsetDateTime) -> Result<OffsetDateTime, ServiceError> {
    let t = occurred_at.unwrap_or(at);
    if t > at + time::Duration::minutes(5) {
        return Err(ServiceError::invalid("occurred_at", "in the future"));
    }
    Ok(t)
}

fn refused(e: zhengzhao_core::TransitionError) -> ServiceError {
    IssuanceError::from(e).into()
}

/// The day a renewal of `current` starts: the day after its end date, or
/// today for a licence that has expired (within its type's renewal window of
/// `window` days after the end).
fn renewal_start(current: &LicenceRecord, today: Date, window: u32) -> Result<Date, ServiceError> {
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

/// A time as messages show it: China Standard Time, to the second.
pub(crate) fn shown(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(LIBRARY_OFFSET).unwrap_or(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Events go to the current version: a replaced one takes none, even while
/// it stays in force awaiting its successor.
fn refuse_replaced(current: &LicenceRecord) -> Result<(), ServiceError> {
    match &current.superseded_by {
        Some(next) => {
            Err(IssuanceError::Superseded { identifier: current.identifier.clone(), next: next.clone() }.into())
        }
        None => Ok(()),
    }
}

/// What a lifecycle request asks for, beyond its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRequest {
    pub reason: String,
    pub occurred_at: Option<OffsetDateTime>,
    /// Review and inspection: the result.
    pub result: String,
    /// Review and inspection: the next due date, `YYYY-MM-DD`.
    pub next_due_date: String,
    pub idempotency_key: String,
    /// Cancellation by an administrator although the licence is encumbered
    /// (recorded as forced).
    pub force: bool,
}

impl Issuance {
    pub async fn open(
        store: &StoreConfig,
        catalog: CatalogClient,
        signing: SigningClient,
        outages: outage::OutageRules,
        log: translog::LogSigner,
        clock: Clock,
    ) -> Result<Arc<Self>, ServiceError> {
        let db = zhengzhao_store::open(store, "issuance", &MIGRATIONS).await.map_err(ServiceError::internal)?;
        translog::catch_up(&db.pool, db.engine).await?;
        Ok(Arc::new(Issuance {
            db,
            catalog,
            signing,
            appended: Notify::new(),
            calendar: outages.calendar,
            max_outage_backdate: outages.max_backdate,
            log,
            clock,
        }))
    }

    async fn licence_type(&self, code: &str, version: u32) -> Result<LicenceTypeRecord, ServiceError> {
        TypeCode::parse(code).map_err(|e| ServiceError::invalid("type_code", e))?;
        match self.catalog.get(code, version).await {
            // Say which is missing: the type, or only that version of it.
            Err(ServiceError::NotFound(m)) if version != 0 => match self.catalog.get(code, 0).await {
                Ok(_) => Err(ServiceError::invalid("template_version", m)),
                Err(ServiceError::NotFound(m)) => Err(ServiceError::invalid("type_code", m)),
                Err(e) => Err(e),
            },
            Err(ServiceError::NotFound(m)) => Err(ServiceError::invalid("type_code", m)),
            other => other,
        }
    }

    async fn sign(
        &self,
        issuer: &str,
        doc: &LicenceDocument,
    ) -> Result<(String, zhengzhao_crypto::published::Signed), ServiceError> {
        let canonical = doc.canonical_bytes().map_err(ServiceError::internal)?;
        let signed = self.signing.sign(issuer, &canonical).await?;
        Ok((String::from_utf8(canonical).map_err(ServiceError::internal)?, signed))
    }

    /// Issues a licence from `draft` on the caller's own account.
    pub async fn issue(
        &self,
        who: &Principal,
        mut draft: LicenceDraft,
        idempotency_key: &str,
    ) -> Result<LicenceRecord, ServiceError> {
        authorize(who, &Action::IssueLicence { issuer: &who.agency })?;
        check_idempotency_key(idempotency_key)?;
        let request_digest = digest(&[&serde_json::to_string(&draft).map_err(ServiceError::internal)?]);
        if let Some(done) = self.replay(who, idempotency_key, "issue", &request_digest).await? {
            return Ok(done);
        }
        let t = self.licence_type(&draft.type_code, draft.template_version).await?;
        document::check_issuable(&t, &who.agency)?;
        let doc = document::build(&t, &mut draft, &who.agency, 1, None, self.clock.today())?;
        if let Some(end) = doc.valid_until.as_deref().and_then(|d| parse_date(d).ok())
            && end < self.clock.today()
        {
            return Err(ServiceError::invalid(
                "valid_until",
                format!(
                    "{} is already past: an expired licence enters only as a historical licence (licence import)",
                    format_date(end)
                ),
            ));
        }
        let (canonical, signed) = self.sign(&who.agency, &doc).await?;
        let state = transition(None, LifecycleAction::Issue).map_err(refused)?;
        let at = now();
        let mut tx = self.db.pool.begin().await?;
        feed::lock(&mut tx, self.db.engine).await?;
        insert_licence(&mut tx, &doc, &canonical, &signed, state, at).await?;
        write::append_events(
            &mut tx,
            &[NewEvent {
                identifier: &doc.identifier,
                action: LifecycleAction::Issue,
                status_after: state.status,
                actor: &who.actor(),
                reason: "",
                details: EventDetails::default(),
                backfill: false,
                occurred_at: at,
                recorded_at: at,
                jws: &signed.jws,
            }],
        )
        .await?;
        remember(&mut tx, who, idempotency_key, "issue", &request_digest, &doc.identifier, at).await?;
        tx.commit().await?;
        self.appended.notify_waiters();
        tracing::info!(identifier = %doc.identifier, actor = %who.actor(), holder = %zhengzhao_core::mask_id_number(&doc.holder.id_number), "licence issued");
        self.fetch(&doc.identifier).await
    }

    /// Cancels (注销) a licence.
    pub async fn cancel(
        &self,
        who: &Principal,
        identifier: &str,
        req: &EventRequest,
    ) -> Result<LicenceRecord, ServiceError> {
        self.record_event(who, identifier, LifecycleAction::Cancel, req).await
    }

    /// Records an event that keeps the licence's version.
    pub async fn record_event(
        &self,
        who: &Principal,
        identifier: &str,
        action: LifecycleAction,
        req: &EventRequest,
    ) -> Result<LicenceRecord, ServiceError> {
        let id = parse_identifier("identifier", identifier)?;
        if req.force {
            if action != LifecycleAction::Cancel {
                return Err(ServiceError::invalid("force", "only a cancellation can be forced"));
            }
            authorize(who, &Action::ForceCancel { issuer: id.issuer().as_str() })?;
        } else {
            authorize(who, &Action::ChangeLicence { issuer: id.issuer().as_str() })?;
        }
        if action == LifecycleAction::Replace {
            return self.replace(who, identifier, req).await;
        }
        if matches!(action, LifecycleAction::Issue | LifecycleAction::Expire) || action.makes_new_version() {
            return Err(ServiceError::invalid("kind", format!("{} is not recorded this way", action.name())));
        }
        check_idempotency_key(&req.idempotency_key)?;
        let reason = Reason::parse_field("reason", &req.reason)?;
        let at = now();
        let occurred_at = check_occurred(req.occurred_at, at)?;
        let mut details = EventDetails::default();
        if action.is_periodic_check() {
            let result = BoundedText::<MAX_CHECK_RESULT>::parse_field("result", &req.result)?;
            let due = parse_date(&req.next_due_date).map_err(|e| ServiceError::invalid("next_due_date", e))?;
            if due <= occurred_at.to_offset(LIBRARY_OFFSET).date() {
                return Err(ServiceError::invalid("next_due_date", "must be after the review"));
            }
            details.result = Some(result.into_string());
            details.next_due_date = Some(format_date(due));
        } else if !req.result.is_empty() || !req.next_due_date.is_empty() {
            return Err(ServiceError::invalid(
                "result",
                "only reviews and inspections carry a result and a next due date",
            ));
        }
        details.forced = req.force.then_some(true);
        let asked_time = req.occurred_at.map(format_time).unwrap_or_default();
        let forced = if req.force { "forced" } else { "" };
        let request_digest =
            digest(&[action.name(), identifier, &reason, &asked_time, &req.result, &req.next_due_date, forced]);
        if let Some(done) = self.replay(who, &req.idempotency_key, action.name(), &request_digest).await? {
            return Ok(done);
        }
        let mut current = self.fetch(identifier).await?;
        if action.lifts_encumbrance() {
            // The pledge, seizure or loss was registered on a version the
            // licence has since moved past: lift it on the current version.
            current = self.current_version(current).await?;
        }
        refuse_replaced(&current)?;
        let identifier = current.identifier.clone();
        let identifier = identifier.as_str();
        let next = if req.force {
            zhengzhao_core::transition_forced(Some(current.state()), action).map_err(refused)?
        } else {
            transition(Some(current.state()), action).map_err(refused)?
        };
        self.check_after_last_event(&current, occurred_at).await?;
        let failed_check_invalidates = if action.is_periodic_check() {
            self.licence_type(&current.type_code, current.template_version).await?.definition.failed_check_invalidates
        } else {
            false
        };
        let backfill = self.classify_business_time(&current.issuer_code, occurred_at, at).await?;
        let mut tx = self.db.pool.begin().await?;
        feed::lock(&mut tx, self.db.engine).await?;
        update_state(&mut tx, &current, next, None, at).await?;
        if let Some(result) = &details.result {
            sqlx::query(
                "UPDATE licences SET last_check_kind = $1, last_check_result = $2, last_check_invalidates = $3
                 WHERE identifier = $4",
            )
            .bind(action.name())
            .bind(result)
            .bind(i64::from(zhengzhao_core::check_failed(result) && failed_check_invalidates))
            .bind(identifier)
            .execute(&mut *tx)
            .await?;
        }
        write::append_events(
            &mut tx,
            &[NewEvent {
                identifier,
                action,
                status_after: next.status,
                actor: &who.actor(),
                reason: &reason,
                details,
                backfill,
                occurred_at,
                recorded_at: at,
                jws: &current.jws,
            }],
        )
        .await?;
        remember(&mut tx, who, &req.idempotency_key, action.name(), &request_digest, identifier, at).await?;
        remember_state(&mut tx, who, &req.idempotency_key, next).await?;
        tx.commit().await?;
        self.appended.notify_waiters();
        tracing::info!(identifier = %identifier, actor = %who.actor(), action = action.name(), "lifecycle event recorded");
        self.fetch(identifier).await
    }

    /// The version at the end of `licence`'s chain of replacements.
    async fn current_version(&self, mut licence: LicenceRecord) -> Result<LicenceRecord, ServiceError> {
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
    async fn replace(
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
        let id = parse_identifier("identifier", identifier)?;
        authorize(who, &Action::ChangeLicence { issuer: id.issuer().as_str() })?;
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
        let id = parse_identifier("identifier", identifier)?;
        authorize(who, &Action::ChangeLicence { issuer: id.issuer().as_str() })?;
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
        let mut tx = self.db.pool.begin().await?;
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
        write::append_events(&mut tx, &events).await?;
        remember(&mut tx, who, &req.idempotency_key, action.name(), &request_digest, &doc.identifier, at).await?;
        remember_state(&mut tx, who, &req.idempotency_key, fresh).await?;
        tx.commit().await?;
        self.appended.notify_waiters();
        tracing::info!(old = %current.identifier, new = %doc.identifier, actor = %actor, action = action.name(), "new licence version");
        self.fetch(&doc.identifier).await
    }

    /// Reads a licence (status as of today).
    pub async fn get(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        let id = parse_identifier("identifier", identifier)?;
        authorize(who, &Action::ReadLicence { issuer: id.issuer().as_str() })?;
        self.fetch(identifier).await
    }

    /// A licence's events, oldest first.
    pub async fn history(&self, who: &Principal, identifier: &str) -> Result<Vec<EventRecord>, ServiceError> {
        let id = parse_identifier("identifier", identifier)?;
        authorize(who, &Action::ReadLicence { issuer: id.issuer().as_str() })?;
        self.fetch(identifier).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM licence_events e WHERE e.identifier = $1 ORDER BY e.sequence",
            record::EVENT_COLUMNS
        )))
        .bind(identifier)
        .fetch_all(&self.db.pool)
        .await?;
        Ok(record::readable(&rows, record::event_from_row))
    }

    /// Up to `limit` feed entries after `after`.
    pub async fn feed(&self, who: &Principal, after: i64, limit: i64) -> Result<Vec<FeedEntry>, ServiceError> {
        authorize(who, &Action::WatchChanges)?;
        let mut conn = self.db.pool.acquire().await?;
        feed::read(&mut conn, after.max(0), limit.clamp(1, MAX_FEED_BATCH)).await
    }

    /// Completes when something is appended to the feed by this process, or
    /// after `wait` (appends by other replicas are seen by polling).
    pub async fn wait_for_appends(&self, wait: Duration) {
        let _ = tokio::time::timeout(wait, self.appended.notified()).await;
    }

    /// Records expiry for every valid licence whose validity ended before
    /// `day`, as `who`; returns how many. Status is right at read time
    /// without this; the events make the expiry visible in the feed.
    pub async fn record_expiries(&self, who: &Principal, day: Date) -> Result<usize, ServiceError> {
        let mut total = 0;
        loop {
            let ids: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT identifier, jws, valid_until FROM licences WHERE status = 'valid' AND valid_until IS NOT NULL AND valid_until < $1
                 ORDER BY identifier LIMIT 200",
            )
            .bind(format_date(day))
            .fetch_all(&self.db.pool)
            .await
            ?;
            if ids.is_empty() {
                return Ok(total);
            }
            let at = now();
            let actor = who.actor();
            let mut expired = Vec::with_capacity(ids.len());
            let mut tx = self.db.pool.begin().await?;
            feed::lock(&mut tx, self.db.engine).await?;
            for (identifier, jws, valid_until) in &ids {
                // The business time of expiry: the end of the last valid day (CST).
                let ended = zhengzhao_core::date::read_date(valid_until)
                    .ok()
                    .and_then(Date::next_day)
                    .map(|d| d.midnight().assume_offset(LIBRARY_OFFSET) - time::Duration::microseconds(1))
                    .unwrap_or(at);
                let done = sqlx::query("UPDATE licences SET status = 'expired', updated_at = $2 WHERE identifier = $1 AND status = 'valid'")
                    .bind(identifier)
                    .bind(format_time(at))
                    .execute(&mut *tx)
                    .await
                    ?;
                if done.rows_affected() == 1 {
                    expired.push(NewEvent {
                        identifier,
                        action: LifecycleAction::Expire,
                        status_after: LicenceStatus::Expired,
                        actor: &actor,
                        reason: "validity period ended",
                        details: EventDetails::default(),
                        backfill: false,
                        occurred_at: ended,
                        recorded_at: at,
                        jws,
                    });
                }
            }
            write::append_events(&mut tx, &expired).await?;
            total += expired.len();
            tx.commit().await?;
            self.appended.notify_waiters();
        }
    }

    /// Runs [`Issuance::record_expiries`] every `every` until the process ends.
    pub fn spawn_expiry_job(self: Arc<Self>, who: Principal, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match self.record_expiries(&who, self.clock.today()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "expiries recorded"),
                    Err(e) => tracing::warn!(error = %e, "expiry job failed; will retry"),
                }
            }
        })
    }

    /// Refuses a business time before the licence's last recorded event —
    /// its issue (as recorded: an import records the issue date, 00:00
    /// China Standard Time), or anything since: a licence's history runs
    /// forward, and no outage lets an event go behind it.
    async fn check_after_last_event(
        &self,
        current: &LicenceRecord,
        occurred_at: OffsetDateTime,
    ) -> Result<(), ServiceError> {
        let last: Option<(String, String)> = sqlx::query_as(
            "SELECT occurred_at, kind FROM licence_events WHERE identifier = $1 ORDER BY sequence DESC LIMIT 1",
        )
        .bind(&current.identifier)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some((last, kind)) = last else { return Ok(()) };
        let Some(last) = zhengzhao_store::parse_time(&last) else {
            return Err(IssuanceError::UnreadableHistory(current.identifier.clone()).into());
        };
        if occurred_at < last {
            let what = if kind == "issue" { "its issue" } else { "its last recorded event" };
            return Err(ServiceError::invalid(
                "occurred_at",
                format!(
                    "{} is before {what} ({}): a licence's business times may not go back",
                    shown(occurred_at),
                    shown(last)
                ),
            ));
        }
        Ok(())
    }

    async fn fetch(&self, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM licences WHERE identifier = $1",
            record::LICENCE_COLUMNS
        )))
        .bind(identifier)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| IssuanceError::NoLicence(identifier.to_owned()))?;
        record::licence_from_row(&row, self.clock.today())
    }

    async fn replay(
        &self,
        who: &Principal,
        key: &str,
        operation: &str,
        request_digest: &str,
    ) -> Result<Option<LicenceRecord>, ServiceError> {
        let Some((identifier, state)) = self.first_result(who, key, operation, request_digest).await? else {
            return Ok(None);
        };
        let mut licence = self.fetch(&identifier).await?;
        // Answer as the first request was answered, whatever happened since.
        if let Some(state) = state.as_deref().and_then(decode_state) {
            licence.status = state.status;
            licence.stored_status = state.status;
            licence.reported_lost = state.lost;
            licence.mortgaged = state.mortgaged;
        }
        Ok(Some(licence))
    }

    /// What the first request with idempotency `key` produced (an identifier),
    /// if there was one; refuses a key reused for a different request.
    pub(crate) async fn first_result(
        &self,
        who: &Principal,
        key: &str,
        operation: &str,
        request_digest: &str,
    ) -> Result<Option<(String, Option<String>)>, ServiceError> {
        if key.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query("SELECT operation, request_digest, identifier, result_state FROM idempotency_keys WHERE agency = $1 AND idempotency_key = $2")
            .bind(&who.agency)
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await
            ?;
        let Some(row) = row else { return Ok(None) };
        let op: String = row.try_get("operation")?;
        let d: String = row.try_get("request_digest")?;
        if op != operation || d != request_digest {
            return Err(IssuanceError::KeyReused(key.to_owned()).into());
        }
        let identifier: String = row.try_get("identifier")?;
        let state: Option<String> = row.try_get("result_state")?;
        Ok(Some((identifier, state)))
    }
}

fn encode_state(s: LicenceState) -> String {
    format!("{},{},{}", s.status.name(), u8::from(s.lost), u8::from(s.mortgaged))
}

fn decode_state(text: &str) -> Option<LicenceState> {
    let mut parts = text.split(',');
    let status = LicenceStatus::from_name(parts.next()?)?;
    let lost = parts.next()? == "1";
    let mortgaged = parts.next()? == "1";
    Some(LicenceState { status, lost, mortgaged })
}

/// Records the state a request left its licence in, under its idempotency key.
async fn remember_state(
    conn: &mut sqlx::AnyConnection,
    who: &Principal,
    key: &str,
    state: LicenceState,
) -> Result<(), ServiceError> {
    if key.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE idempotency_keys SET result_state = $3 WHERE agency = $1 AND idempotency_key = $2")
        .bind(&who.agency)
        .bind(key)
        .bind(encode_state(state))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_licence(
    conn: &mut sqlx::AnyConnection,
    doc: &LicenceDocument,
    canonical: &str,
    signed: &zhengzhao_crypto::published::Signed,
    state: LicenceState,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    let canonical = canonical.as_bytes();
    let licence = write::NewLicence { doc, canonical, signed, state, source_key: None, standard_check: None };
    if write::insert_licences(conn, &[licence], at).await?.contains(&doc.identifier) {
        return Ok(());
    }
    let id = parse_identifier("identifier", &doc.identifier)?;
    Err(IssuanceError::AlreadyIssued {
        number: doc.licence_number.clone(),
        version: id.version(),
        type_code: doc.type_code.clone(),
        issuer: doc.issuer.code.clone(),
    }
    .into())
}

/// Writes a new state, guarded by the state read (a concurrent change fails).
async fn update_state(
    conn: &mut sqlx::AnyConnection,
    current: &LicenceRecord,
    next: LicenceState,
    successor: Option<(&str, Date)>,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    let updated = sqlx::query(
        "UPDATE licences SET status = $1, reported_lost = $2, mortgaged = $3, superseded_by = $4, updated_at = $5,
            successor_from = $10
         WHERE identifier = $6 AND status = $7 AND reported_lost = $8 AND mortgaged = $9 AND superseded_by IS NULL",
    )
    .bind(next.status.name())
    .bind(i64::from(next.lost))
    .bind(i64::from(next.mortgaged))
    .bind(successor.map(|(id, _)| id))
    .bind(format_time(at))
    .bind(&current.identifier)
    .bind(current.stored_status.name())
    .bind(i64::from(current.reported_lost))
    .bind(i64::from(current.mortgaged))
    .bind(successor.map(|(_, from)| format_date(from)))
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(IssuanceError::ChangedConcurrently(current.identifier.clone()).into());
    }
    Ok(())
}

async fn remember(
    conn: &mut sqlx::AnyConnection,
    who: &Principal,
    key: &str,
    operation: &str,
    request_digest: &str,
    identifier: &str,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    if key.is_empty() {
        return Ok(());
    }
    let r = sqlx::query(
        "INSERT INTO idempotency_keys (agency, idempotency_key, operation, request_digest, identifier, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&who.agency)
    .bind(key)
    .bind(operation)
    .bind(request_digest)
    .bind(identifier)
    .bind(format_time(at))
    .execute(&mut *conn)
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if zhengzhao_store::is_unique_violation(&e) => Err(IssuanceError::KeyInUse(key.to_owned()).into()),
        Err(e) => Err(ServiceError::from(e)),
    }
}

/// Issuance as other services call it in-process.
#[tonic::async_trait]
impl zhengzhao_clients::IssuanceApi for Issuance {
    async fn get(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        Issuance::get(self, who, identifier).await
    }

    async fn checkpoint(&self, who: &Principal) -> Result<translog::Checkpoint, ServiceError> {
        Issuance::checkpoint(self, who).await
    }

    fn log_public_jwk(&self) -> serde_json::Value {
        Issuance::log_public_jwk(self)
    }

    async fn inclusion_proof(
        &self,
        who: &Principal,
        identifier: &str,
        tree_size: u64,
    ) -> Result<Vec<translog::LoggedEvent>, ServiceError> {
        Issuance::inclusion_proof(self, who, identifier, tree_size).await
    }
}
