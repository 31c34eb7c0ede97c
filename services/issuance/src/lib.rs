//! The issuance service: issues licences of published types, checked against
//! the template version they name and signed through the signing service;
//! mirrors every lifecycle event (change and renewal as new versions); and
//! appends each event to the ordered change feed in the same transaction as
//! the state change it records.

#![forbid(unsafe_code)]

mod document;
pub mod error;
mod expiry;
mod feed;
pub mod grpc;
mod holders;
mod idempotency;
mod metrics;
pub use metrics::METRICS_INTERVAL;
pub mod import;
pub mod outage;
mod record;
pub mod replica;
mod replica_rows;
pub mod translog;
mod versions;
mod write;

use std::sync::Arc;
use std::time::Duration;

use time::{Date, OffsetDateTime};
use tokio::sync::Notify;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_clients::{CatalogClient, SigningClient};
use zhengzhao_core::date::{format_date, parse_date};
use zhengzhao_core::status::transition;
use zhengzhao_core::{
    BoundedText, LicenceDocument, LicenceDraft, LicenceId, LicenceState, LicenceTypeRecord, LifecycleAction, Reason,
    TypeCode,
};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, Migrations, StoreConfig, format_time, now};

pub use error::IssuanceError;
use feed::NewEvent;
use idempotency::{check_idempotency_key, digest, remember, remember_state};
pub use record::{EventDetails, EventRecord, FeedEntry, LastCheck, LicenceRecord, started};
use versions::refuse_replaced;
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
    /// This library's name (`serve --library`): the city or a district.
    library: String,
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

/// Whether `who` may read the licence `identifier` names (outside the
/// exchange): the role first, before the identifier is even read, then its issuer.
fn authorize_read(who: &Principal, identifier: &str) -> Result<(), ServiceError> {
    authorize(who, &Action::ReadLicence { issuer: &who.agency })?;
    let id = parse_identifier("identifier", identifier)?;
    authorize(who, &Action::ReadLicence { issuer: id.issuer().as_str() })?;
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

/// A time as messages show it: China Standard Time, to the second.
pub(crate) fn shown(t: OffsetDateTime) -> String {
    let t = t.checked_to_offset(LIBRARY_OFFSET).unwrap_or(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
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
        library: String,
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
            library,
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
        self.refuse_district_issuer(&who.agency).await?;
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
        let mut tx = self.db.begin().await?;
        feed::lock(&mut tx, self.db.engine).await?;
        insert_licence(&mut tx, &doc, &canonical, &signed, state, at).await?;
        let appended = write::append_events(
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
        appended.committed();
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
    /// Whether `who` may record an event on the licence `identifier` names
    /// (its issuer; with `force`, an administrator forcing a cancellation):
    /// asked before anything else of the request is read, so a caller the
    /// policy refuses learns nothing but the refusal.
    pub fn authorize_event(&self, who: &Principal, identifier: &str, force: bool) -> Result<LicenceId, ServiceError> {
        let action = |issuer| if force { Action::ForceCancel { issuer } } else { Action::ChangeLicence { issuer } };
        authorize(who, &action(&who.agency))?;
        let id = parse_identifier("identifier", identifier)?;
        authorize(who, &action(id.issuer().as_str()))?;
        Ok(id)
    }

    pub async fn record_event(
        &self,
        who: &Principal,
        identifier: &str,
        action: LifecycleAction,
        req: &EventRequest,
    ) -> Result<LicenceRecord, ServiceError> {
        self.authorize_event(who, identifier, req.force)?;
        if req.force && action != LifecycleAction::Cancel {
            return Err(ServiceError::invalid("force", "only a cancellation can be forced"));
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
        self.refuse_replica(&current.identifier).await?;
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
        let mut tx = self.db.begin().await?;
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
        let appended = write::append_events(
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
        appended.committed();
        self.appended.notify_waiters();
        tracing::info!(identifier = %identifier, actor = %who.actor(), action = action.name(), "lifecycle event recorded");
        self.fetch(identifier).await
    }

    /// Reads a licence (status as of today).
    pub async fn get(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        authorize_read(who, identifier)?;
        self.fetch(identifier).await
    }

    /// As [`Issuance::get`], from the read replica when one is configured
    /// and within its maximum lag: may miss the last seconds' changes (a
    /// licence the replica does not hold yet is read from the primary).
    /// For answers to callers only, never for what a write depends on.
    pub async fn get_lagging(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        authorize_read(who, identifier)?;
        match self.fetch_from(self.db.replica_reader(), identifier).await {
            Err(ServiceError::NotFound(_)) if self.db.has_replica() => self.fetch(identifier).await,
            other => other,
        }
    }

    /// A licence's events, oldest first.
    pub async fn history(&self, who: &Principal, identifier: &str) -> Result<Vec<EventRecord>, ServiceError> {
        authorize_read(who, identifier)?;
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
        self.fetch_from(self.db.reader(), identifier).await
    }

    async fn fetch_from(&self, pool: &sqlx::AnyPool, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        // On SQLite, one short read by key on this thread.
        let today = self.clock.today();
        let direct = self.db.sqlite_read(|c| {
            use zhengzhao_store::rusqlite::OptionalExtension;
            c.prepare_cached(&LICENCE_BY_ID)?
                .query_row([identifier], |row| Ok(record::licence_from_row(row, today)))
                .optional()
        });
        if let Some(read) = direct {
            return read
                .map_err(ServiceError::internal)?
                .unwrap_or_else(|| Err(IssuanceError::NoLicence(identifier.to_owned()).into()));
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(LICENCE_BY_ID.as_str()))
            .bind(identifier)
            .fetch_optional(pool)
            .await?
            .ok_or_else(|| IssuanceError::NoLicence(identifier.to_owned()))?;
        record::licence_from_row(&row, self.clock.today())
    }

    /// Where lagging reads are served from and how far behind (administrators and auditors).
    pub async fn read_status(&self, who: &Principal) -> Result<zhengzhao_store::ReadStatus, ServiceError> {
        authorize(who, &Action::ReadServiceStatus)?;
        self.db.read_status().await.map_err(|e| ServiceError::Unavailable(format!("read replica: {e}")))
    }
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

/// A licence by identifier.
static LICENCE_BY_ID: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("SELECT {} FROM licences WHERE identifier = $1", record::LICENCE_COLUMNS));

/// Issuance as other services call it in-process.
#[tonic::async_trait]
impl zhengzhao_clients::IssuanceApi for Issuance {
    async fn get(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        Issuance::get(self, who, identifier).await
    }

    async fn get_lagging(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        Issuance::get_lagging(self, who, identifier).await
    }

    async fn checkpoint(&self, who: &Principal) -> Result<translog::Checkpoint, ServiceError> {
        Issuance::checkpoint(self, who).await
    }

    async fn history(&self, who: &Principal, identifier: &str) -> Result<Vec<EventRecord>, ServiceError> {
        Issuance::history(self, who, identifier).await
    }

    async fn feed(
        &self,
        who: &Principal,
        after: i64,
        limit: i64,
    ) -> Result<Vec<zhengzhao_core::FeedEntry>, ServiceError> {
        Issuance::feed(self, who, after, limit).await
    }

    async fn holder_licences(
        &self,
        who: &Principal,
        query: &zhengzhao_core::HolderQuery,
    ) -> Result<(Vec<LicenceRecord>, String), ServiceError> {
        Issuance::holder_licences(self, who, query).await
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
