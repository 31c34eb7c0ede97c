//! Outages and the 3-working-day catch-up rule. An issuer (or an
//! administrator) records an outage; events whose business time falls inside
//! an open or recent outage of their issuer are accepted as backfill and
//! marked so. An event whose business time is more than a day old and not
//! covered by such an outage is refused: the outage must be recorded first.
//! The deadline is the third working day after the day the outage ended
//! (China Standard Time, on the configured working-day calendar).

use sqlx::Row;
use time::{Date, OffsetDateTime};
use zhengzhao_auth::{Action, Principal, Role, authorize};
use zhengzhao_core::calendar::Coverage;
use zhengzhao_core::{Cause, Uscc};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, now, parse_time};

use crate::{Issuance, IssuanceError, LIBRARY_OFFSET};

/// How old an event's business time may be without an outage covering it.
pub const BACKFILL_GRACE: time::Duration = time::Duration::days(1);
/// Longest outage cause.
pub const MAX_CAUSE: usize = Cause::MAX;

/// The rules outages are held to.
#[derive(Debug, Clone)]
pub struct OutageRules {
    /// Working days, for catch-up deadlines.
    pub calendar: zhengzhao_core::calendar::WorkingCalendar,
    /// How long before it is recorded an issuer's outage may have started
    /// (administrators may record older ones).
    pub max_backdate: time::Duration,
}

impl OutageRules {
    /// The shipped calendar's rules with `days` of backdating.
    pub fn new(calendar: zhengzhao_core::calendar::WorkingCalendar, days: u32) -> Self {
        OutageRules { calendar, max_backdate: time::Duration::days(i64::from(days)) }
    }
}

/// Where an outage's catch-up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacklogState {
    Open,
    Pending,
    DueSoon,
    Overdue,
    Done,
    DoneLate,
}

/// An outage with its deadline and state as of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct OutageRecord {
    pub id: i64,
    pub issuer_code: String,
    pub started_at: OffsetDateTime,
    pub ended_at: Option<OffsetDateTime>,
    pub cause: String,
    pub recorded_by: String,
    pub recorded_at: OffsetDateTime,
    pub backlog_done_at: Option<OffsetDateTime>,
    /// Last day to catch up, once ended.
    pub deadline: Option<Date>,
    pub coverage: Coverage,
    pub state: BacklogState,
    pub backfill_events: i64,
}

fn local_date(t: OffsetDateTime) -> Date {
    // An instant an older version stored near year 9999 has no CST date.
    t.checked_to_offset(LIBRARY_OFFSET).map_or(t.date(), OffsetDateTime::date)
}

/// The first instant after the deadline day ends.
fn after_deadline(deadline: Date) -> OffsetDateTime {
    deadline.next_day().unwrap_or(deadline).midnight().assume_offset(LIBRARY_OFFSET)
}

const COLUMNS: &str = "id, issuer_code, started_at, ended_at, cause, recorded_by, recorded_at, backlog_done_at";

impl Issuance {
    fn outage_from_row(
        &self,
        row: &sqlx::any::AnyRow,
        at: OffsetDateTime,
        backfill_events: i64,
    ) -> Result<OutageRecord, ServiceError> {
        let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::from);
        // NULL is "not yet"; a value that does not parse makes the row unreadable.
        let t = |c: &str| -> Result<Option<OffsetDateTime>, ServiceError> {
            match row.try_get::<Option<String>, _>(c)? {
                None => Ok(None),
                Some(v) => parse_time(&v).map(Some).ok_or_else(|| ServiceError::internal(format!("unreadable {c}"))),
            }
        };
        let bad = || ServiceError::internal("unreadable outage in database");
        let ended_at = t("ended_at")?;
        let backlog_done_at = t("backlog_done_at")?;
        let (deadline, coverage) = match ended_at {
            Some(e) => {
                let (d, c) = self.calendar.catch_up_deadline(local_date(e));
                (Some(d), c)
            }
            None => (None, Coverage::Confirmed),
        };
        let state = match (deadline, backlog_done_at) {
            (None, _) => BacklogState::Open,
            (Some(d), Some(done)) if done < after_deadline(d) => BacklogState::Done,
            (Some(_), Some(_)) => BacklogState::DoneLate,
            (Some(d), None) if at >= after_deadline(d) => BacklogState::Overdue,
            (Some(d), None) => {
                let today = local_date(at);
                let next_working = self.calendar.add_working_days(today, 1).0;
                if d <= next_working { BacklogState::DueSoon } else { BacklogState::Pending }
            }
        };
        Ok(OutageRecord {
            id: row.try_get("id")?,
            issuer_code: s("issuer_code")?,
            started_at: parse_time(&s("started_at")?).ok_or_else(bad)?,
            ended_at,
            cause: s("cause")?,
            recorded_by: s("recorded_by")?,
            recorded_at: parse_time(&s("recorded_at")?).ok_or_else(bad)?,
            backlog_done_at,
            deadline,
            coverage,
            state,
            backfill_events,
        })
    }

    async fn outage(&self, id: i64) -> Result<OutageRecord, ServiceError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM outages WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or(IssuanceError::NoOutage(id))?;
        let count = self.backfill_count(&row).await?;
        self.outage_from_row(&row, now(), count)
    }

    /// An outage `who` may manage. Another issuer's outage answers exactly
    /// as a missing one does, so outage numbers reveal nothing.
    async fn managed_outage(&self, who: &Principal, id: i64) -> Result<OutageRecord, ServiceError> {
        let unknown = || ServiceError::from(IssuanceError::NoManageableOutage(id));
        // Whose it is decides first; nothing else of another's row is read.
        let issuer: Option<String> = sqlx::query_scalar("SELECT issuer_code FROM outages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?;
        match issuer {
            Some(issuer) if authorize(who, &Action::ManageOutage { issuer: &issuer }).is_ok() => self.outage(id).await,
            _ => Err(unknown()),
        }
    }

    async fn backfill_count(&self, row: &sqlx::any::AnyRow) -> Result<i64, ServiceError> {
        let issuer: String = row.try_get("issuer_code")?;
        let started: String = row.try_get("started_at")?;
        let ended: Option<String> = row.try_get("ended_at")?;
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM licence_events e JOIN licences l ON l.identifier = e.identifier
             WHERE l.issuer_code = $1 AND e.backfill = 1 AND e.occurred_at >= $2 AND ($3 = '' OR e.occurred_at <= $3)",
        )
        .bind(issuer)
        .bind(started)
        .bind(ended.unwrap_or_default())
        .fetch_one(&self.db.pool)
        .await
        .map_err(ServiceError::from)
    }

    /// Whose outage `who` records (an issuer's own when `issuer` is empty),
    /// once the policy allows it: asked before anything else of the request.
    pub fn outage_issuer<'a>(&self, who: &'a Principal, issuer: &'a str) -> Result<&'a str, ServiceError> {
        outage_issuer(who, issuer)
    }

    /// Records an outage of `issuer` (empty: the caller's own).
    pub async fn record_outage(
        &self,
        who: &Principal,
        issuer: &str,
        started_at: OffsetDateTime,
        ended_at: Option<OffsetDateTime>,
        cause: &str,
        idempotency_key: &str,
    ) -> Result<OutageRecord, ServiceError> {
        let issuer = outage_issuer(who, issuer)?;
        let cause = Cause::parse_field("cause", cause)?;
        let cause = cause.as_str();
        let at = now();
        if started_at > at {
            return Err(ServiceError::invalid("started_at", "in the future"));
        }
        let window_start = at.checked_sub(self.max_outage_backdate).unwrap_or(at);
        if started_at < window_start && who.role != Role::Admin {
            return Err(ServiceError::invalid(
                "started_at",
                format!(
                    "more than {} days ago: an issuer records an outage within that window; an administrator may record an older one",
                    self.max_outage_backdate.whole_days()
                ),
            ));
        }
        if let Some(e) = ended_at {
            if e < started_at {
                return Err(ServiceError::invalid("ended_at", "before started_at"));
            }
            if e > at + time::Duration::minutes(5) {
                return Err(ServiceError::invalid("ended_at", "in the future"));
            }
        }
        crate::idempotency::check_idempotency_key(idempotency_key)?;
        let request_digest = crate::idempotency::digest(&[
            issuer,
            &format_time(started_at),
            &ended_at.map(format_time).unwrap_or_default(),
            cause,
        ]);
        if let Some((first, _)) = self.first_result(who, idempotency_key, "record_outage", &request_digest).await? {
            return self.outage(first.parse().map_err(ServiceError::internal)?).await;
        }
        let mut tx = self.db.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outages (issuer_code, started_at, ended_at, cause, recorded_by, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(issuer)
        .bind(format_time(started_at))
        .bind(ended_at.map(format_time))
        .bind(cause)
        .bind(who.actor())
        .bind(format_time(at))
        .fetch_one(&mut *tx)
        .await?;
        crate::idempotency::remember(
            &mut tx,
            who,
            idempotency_key,
            "record_outage",
            &request_digest,
            &id.to_string(),
            at,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(outage = id, issuer_code = %issuer, actor = %who.actor(), "outage recorded");
        self.outage(id).await
    }

    /// Records when an open outage ended.
    pub async fn end_outage(
        &self,
        who: &Principal,
        id: i64,
        ended_at: Option<OffsetDateTime>,
    ) -> Result<OutageRecord, ServiceError> {
        let current = self.managed_outage(who, id).await?;
        if current.ended_at.is_some() {
            return Err(IssuanceError::OutageEnded(id).into());
        }
        let at = now();
        let ended = ended_at.unwrap_or(at);
        if ended < current.started_at {
            return Err(ServiceError::invalid("ended_at", "before the outage started"));
        }
        if ended > at + time::Duration::minutes(5) {
            return Err(ServiceError::invalid("ended_at", "in the future"));
        }
        sqlx::query("UPDATE outages SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL")
            .bind(id)
            .bind(format_time(ended))
            .execute(&self.db.pool)
            .await?;
        self.outage(id).await
    }

    /// Marks an ended outage's backlog as caught up.
    pub async fn complete_backlog(&self, who: &Principal, id: i64) -> Result<OutageRecord, ServiceError> {
        let current = self.managed_outage(who, id).await?;
        if current.ended_at.is_none() {
            return Err(IssuanceError::OutageOpen(id).into());
        }
        if current.backlog_done_at.is_some() {
            return Ok(current);
        }
        sqlx::query("UPDATE outages SET backlog_done_at = $2 WHERE id = $1 AND backlog_done_at IS NULL")
            .bind(id)
            .bind(format_time(now()))
            .execute(&self.db.pool)
            .await?;
        self.outage(id).await
    }

    /// Outages (of one issuer, or all), newest first, as of now.
    pub async fn outages(&self, who: &Principal, issuer: &str) -> Result<Vec<OutageRecord>, ServiceError> {
        authorize(who, &Action::ReadOutages { issuer: &who.agency })?;
        let issuer = if issuer.is_empty() && who.role == Role::Issuer { who.agency.as_str() } else { issuer };
        if issuer.is_empty() {
            if !matches!(who.role, Role::Admin | Role::Auditor) {
                return Err(ServiceError::PermissionDenied(format!("{} may only read its own outages", who.actor())));
            }
        } else {
            Uscc::parse(issuer).map_err(|e| ServiceError::invalid("issuer_code", e.to_string()))?;
            authorize(who, &Action::ReadOutages { issuer })?;
        }
        self.outages_of(issuer).await
    }

    /// Outages of `issuer` (all when empty), newest first, as of now: for
    /// callers already authorized, and the metrics.
    pub(crate) async fn outages_of(&self, issuer: &str) -> Result<Vec<OutageRecord>, ServiceError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outages WHERE ($1 = '' OR issuer_code = $1) ORDER BY started_at DESC, id DESC LIMIT 1000"
        )))
        .bind(issuer)
        .fetch_all(&self.db.pool)
        .await
        ?;
        let at = now();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let count = self.backfill_count(row).await?;
            // One unreadable row (written by hand, or by a version that
            // stored what it could not read back) must not hide the others.
            match self.outage_from_row(row, at, count) {
                Ok(o) => out.push(o),
                Err(e) => {
                    let id: Option<i64> = row.try_get("id").ok();
                    tracing::error!(outage = ?id, error = %e, "unreadable outage row left out of the list");
                }
            }
        }
        Ok(out)
    }

    /// Whether an event of `issuer` with business time `occurred_at` is
    /// backfill; refuses one more than a day old that no open or recent outage covers.
    pub(crate) async fn classify_business_time(
        &self,
        issuer: &str,
        occurred_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool, ServiceError> {
        if occurred_at >= at - BACKFILL_GRACE {
            let covered = self.covering_outage(issuer, occurred_at, at).await?;
            return Ok(covered);
        }
        if self.covering_outage(issuer, occurred_at, at).await? {
            return Ok(true);
        }
        Err(ServiceError::FailedPrecondition(format!(
            "the business time {} is more than a day ago and no open or recent outage of {issuer} covers it; record the outage first",
            crate::shown(occurred_at)
        )))
    }

    async fn covering_outage(
        &self,
        issuer: &str,
        occurred_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<bool, ServiceError> {
        let rows = sqlx::query(
            "SELECT ended_at FROM outages WHERE issuer_code = $1 AND started_at <= $2 AND (ended_at IS NULL OR ended_at >= $2)",
        )
        .bind(issuer)
        .bind(format_time(occurred_at))
        .fetch_all(&self.db.pool)
        .await
        ?;
        for row in rows {
            let ended: Option<String> = row.try_get("ended_at")?;
            let ended = match ended.as_deref().map(|v| (v, parse_time(v))) {
                None => None,
                Some((_, Some(e))) => Some(e),
                Some((v, None)) => {
                    // An unreadable end never counts as "still open".
                    tracing::error!(issuer_code = %issuer, ended_at = %v, "outage with an unreadable end ignored");
                    continue;
                }
            };
            match ended {
                None => return Ok(true),
                Some(e) => {
                    let (deadline, _) = self.calendar.catch_up_deadline(local_date(e));
                    if at < after_deadline(deadline) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

fn outage_issuer<'a>(who: &'a Principal, issuer: &'a str) -> Result<&'a str, ServiceError> {
    authorize(who, &Action::ManageOutage { issuer: &who.agency })?;
    let issuer = if issuer.is_empty() && who.role == Role::Issuer { who.agency.as_str() } else { issuer };
    Uscc::parse(issuer).map_err(|e| ServiceError::invalid("issuer_code", e.to_string()))?;
    authorize(who, &Action::ManageOutage { issuer })?;
    Ok(issuer)
}
