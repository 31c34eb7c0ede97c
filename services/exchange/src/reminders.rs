//! Expiry reminders (art. 17).
//!
//! Each licence type has reminder windows (default 90, 30 and 7 days before
//! `valid_until`). The reminder job follows issuance's change feed from a
//! cursor kept here: whenever a licence changes it schedules that licence's
//! reminders (or cancels them, when it is no longer in force or has a
//! successor), in the same transaction as the cursor moves. On every tick it
//! moves due reminders to the outbox — one delivery per front end the
//! holder has logged in through — in the same transaction as the reminder
//! becomes due, and delivers the outbox by webhook: a JSON body, signed by
//! the library's key (`Zhengzhao-Signature`, a JWS whose payload is the
//! body), its stable id in `Zhengzhao-Reminder-Id`. A delivery is marked
//! sent only after a 2xx answer, so a crash re-sends with the same id
//! (at-least-once; receivers de-duplicate by id); failures back off
//! (5 s doubling to an hour) and are dead-lettered after the configured
//! number of attempts.
//!
//! A reminder whose windows have all passed when it is first computed is
//! sent once, for the nearest window only.

use std::sync::Arc;

use sha2::Digest;
use sqlx::{AnyConnection, Row};
use time::{Date, OffsetDateTime};
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::{LicenceRecord, LicenceStatus};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, now, parse_time};

use crate::holders::holder_of_token;
use crate::usage::{Caller, document_of};
use crate::usagelog::{Job, holder_digest};
use crate::{Exchange, holder_rows};

/// Windows used for a type with none set.
pub const DEFAULT_WINDOWS: [u32; 3] = [90, 30, 7];
/// Most windows one type may have.
pub const MAX_WINDOWS: usize = 5;
/// The feed cursor's name.
const CURSOR: &str = "reminders";
/// Feed entries read per step.
const FEED_BATCH: i64 = 200;
/// Deliveries attempted per tick.
const DELIVERY_BATCH: i64 = 50;
/// The hour (China Standard Time) a reminder falls due on its day.
const DUE_HOUR: u8 = 9;

/// Where a reminder stands, as the holder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReminderState {
    Scheduled,
    Pending,
    Sent,
    Cancelled,
    Dead,
}

impl ReminderState {
    pub fn to_wire(self) -> i32 {
        use zhengzhao_proto::exchange::v1::ReminderState as W;
        (match self {
            ReminderState::Scheduled => W::Scheduled,
            ReminderState::Pending => W::Pending,
            ReminderState::Sent => W::Sent,
            ReminderState::Cancelled => W::Cancelled,
            ReminderState::Dead => W::Dead,
        }) as i32
    }
}

/// A holder's reminder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub id: String,
    pub identifier: String,
    pub type_code: String,
    pub days_before: u32,
    pub valid_until: Date,
    pub due_at: OffsetDateTime,
    pub state: ReminderState,
    pub sent_at: Option<OffsetDateTime>,
}

/// The stable id of the reminder of `identifier` expiring `valid_until`, `days` before.
pub fn reminder_id(identifier: &str, valid_until: Date, days: u32) -> String {
    let h = sha2::Sha256::digest(format!("{identifier}|{}|{days}", zhengzhao_core::date::format_date(valid_until)));
    format!("rem-{}", &hex::encode(h)[..32])
}

/// When the reminder `days` before `valid_until` falls due (09:00 CST).
fn due_at(valid_until: Date, days: u32) -> Option<OffsetDateTime> {
    let day = valid_until.checked_sub(time::Duration::days(i64::from(days)))?;
    let cst = time::UtcOffset::from_hms(8, 0, 0).ok()?;
    Some(day.with_hms(DUE_HOUR, 0, 0).ok()?.assume_offset(cst).to_offset(time::UtcOffset::UTC))
}

/// The reminders to schedule for a licence valid until `until` with `windows`, as of `at`:
/// every window still ahead, and of those already passed only the nearest.
pub fn windows_due(until: Date, windows: &[u32], at: OffsetDateTime) -> Vec<(u32, OffsetDateTime)> {
    let mut ahead = Vec::new();
    let mut passed: Option<(u32, OffsetDateTime)> = None;
    for d in windows {
        let Some(t) = due_at(until, *d) else { continue };
        if t > at {
            ahead.push((*d, t));
        } else if passed.is_none_or(|(p, _)| *d < p) {
            passed = Some((*d, t));
        }
    }
    ahead.extend(passed);
    ahead
}

impl Exchange {
    /// Sets a type's reminder windows (empty: back to the default).
    pub async fn set_reminder_windows(
        &self,
        who: &Principal,
        type_code: &str,
        days: &[u32],
    ) -> Result<Vec<u32>, ServiceError> {
        authorize(who, &Action::ManageFrontEnds)?;
        zhengzhao_core::TypeCode::parse(type_code).map_err(|e| ServiceError::invalid("type_code", e.to_string()))?;
        if days.len() > MAX_WINDOWS || days.iter().any(|d| !(1..=366).contains(d)) {
            return Err(ServiceError::invalid("days", format!("at most {MAX_WINDOWS} windows of 1 to 366 days")));
        }
        let mut days = days.to_vec();
        days.sort_unstable_by(|a, b| b.cmp(a));
        days.dedup();
        match self.catalog.get(type_code, 0).await {
            Ok(_) => {}
            Err(ServiceError::NotFound(_)) => {
                return Err(ServiceError::invalid(
                    "type_code",
                    format!("no licence type {type_code} in the catalogue"),
                ));
            }
            Err(e) => return Err(e),
        }
        let mut conn = self.db.pool.acquire().await?;
        if days.is_empty() {
            sqlx::query("DELETE FROM reminder_windows WHERE type_code = $1")
                .bind(type_code)
                .execute(&mut *conn)
                .await?;
            return Ok(DEFAULT_WINDOWS.to_vec());
        }
        sqlx::query(
            "INSERT INTO reminder_windows (type_code, days_json, set_by, set_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (type_code) DO UPDATE SET days_json = excluded.days_json, set_by = excluded.set_by, set_at = excluded.set_at",
        )
        .bind(type_code)
        .bind(serde_json::to_string(&days).map_err(ServiceError::internal)?)
        .bind(who.actor())
        .bind(format_time(now()))
        .execute(&mut *conn)
        .await?;
        tracing::info!(type_code, ?days, by = %who.actor(), "reminder windows set");
        Ok(days)
    }

    async fn windows_of(&self, conn: &mut AnyConnection, type_code: &str) -> Result<Vec<u32>, ServiceError> {
        let json: Option<String> = sqlx::query_scalar("SELECT days_json FROM reminder_windows WHERE type_code = $1")
            .bind(type_code)
            .fetch_optional(&mut *conn)
            .await?;
        match json {
            Some(j) => serde_json::from_str(&j).map_err(ServiceError::internal),
            None => Ok(DEFAULT_WINDOWS.to_vec()),
        }
    }

    /// The holder's reminders, soonest first.
    pub async fn my_reminders(&self, caller: &Caller) -> Result<Vec<Reminder>, ServiceError> {
        let h = holder_of_token(&caller.principal)?;
        self.vouching_front_end(h).await?;
        let digest = holder_digest(&h.id_type, &h.id_number);
        let mut conn = self.db.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT r.id, r.identifier, r.type_code, r.days_before, r.valid_until, r.due_at, r.state,
                    (SELECT MIN(d.sent_at) FROM reminder_deliveries d WHERE d.reminder_id = r.id AND d.state = 'sent') AS sent_at,
                    (SELECT COUNT(*) FROM reminder_deliveries d WHERE d.reminder_id = r.id) AS deliveries,
                    (SELECT COUNT(*) FROM reminder_deliveries d WHERE d.reminder_id = r.id AND d.state = 'dead') AS dead
               FROM reminders r WHERE r.holder_digest = $1 ORDER BY r.due_at, r.id LIMIT 500",
        )
        .bind(&digest)
        .fetch_all(&mut *conn)
        .await?;
        drop(conn);
        let bad = || ServiceError::internal("unreadable reminder in the exchange database");
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let state: String = r.try_get("state")?;
            let sent_at: Option<String> = r.try_get("sent_at")?;
            let sent_at = sent_at.and_then(|t| parse_time(&t));
            let deliveries: i64 = r.try_get("deliveries")?;
            let dead: i64 = r.try_get("dead")?;
            let state = match state.as_str() {
                "scheduled" => ReminderState::Scheduled,
                "cancelled" => ReminderState::Cancelled,
                _ if sent_at.is_some() => ReminderState::Sent,
                _ if deliveries > 0 && dead == deliveries => ReminderState::Dead,
                _ => ReminderState::Pending,
            };
            let until: String = r.try_get("valid_until")?;
            let due: String = r.try_get("due_at")?;
            let days: i64 = r.try_get("days_before")?;
            out.push(Reminder {
                id: r.try_get("id")?,
                identifier: r.try_get("identifier")?,
                type_code: r.try_get("type_code")?,
                days_before: u32::try_from(days).map_err(|_| bad())?,
                valid_until: zhengzhao_core::date::read_date(&until).map_err(|_| bad())?,
                due_at: parse_time(&due).ok_or_else(bad)?,
                state,
                sent_at,
            });
        }
        let r = crate::holders::holder_record(caller, h, "my reminders");
        self.writer.write(Job::Records(vec![r])).await?;
        Ok(out)
    }

    /// Starts the reminder job as `config` says.
    pub fn spawn_jobs(self: &Arc<Self>, config: &zhengzhao_config::ExchangeConfig) {
        let every = std::time::Duration::from_secs(match config.reminder_interval_seconds {
            0 => 60,
            n => n,
        });
        let attempts = match config.reminder_max_attempts {
            0 => 12,
            n => n,
        };
        self.clone().spawn_reminder_job(every, attempts);
    }

    /// Starts the reminder job: every `every`, follow the feed, move due
    /// reminders to the outbox, deliver it. Errors are logged and retried
    /// on the next tick; nothing is lost (the cursor and the outbox are in
    /// the database).
    pub fn spawn_reminder_job(self: Arc<Self>, every: std::time::Duration, max_attempts: u32) {
        tokio::spawn(async move {
            let http = match reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "the reminder job cannot build its HTTP client; reminders are not delivered");
                    return;
                }
            };
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.reminder_step(&http, max_attempts).await {
                    tracing::warn!(error = %e, "reminder job step failed; retrying next tick");
                }
            }
        });
    }

    /// One pass of the reminder job.
    pub async fn reminder_step(&self, http: &reqwest::Client, max_attempts: u32) -> Result<(), ServiceError> {
        while self.follow_feed().await? {}
        self.queue_due().await?;
        self.deliver(http, max_attempts).await
    }

    /// Applies one batch of the change feed; true when there may be more.
    async fn follow_feed(&self) -> Result<bool, ServiceError> {
        let after: i64 = {
            let mut conn = self.db.pool.acquire().await?;
            sqlx::query_scalar("SELECT position FROM feed_cursors WHERE name = $1")
                .bind(CURSOR)
                .fetch_optional(&mut *conn)
                .await?
                .unwrap_or(0)
        };
        let entries = self.issuance.feed(after, FEED_BATCH).await?;
        let Some(last) = entries.last().map(|e| e.event.sequence) else { return Ok(false) };
        // The licences as they are now (one read each), outside the transaction.
        let mut licences: Vec<LicenceRecord> = Vec::new();
        for e in &entries {
            if licences.iter().any(|l| l.identifier == e.event.identifier) {
                continue;
            }
            match self.issuance.get(&e.event.identifier).await {
                Ok(l) => licences.push(l),
                Err(ServiceError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let at = now();
        let mut tx = self.db.begin().await?;
        for l in &licences {
            self.schedule(&mut tx, l, at).await?;
        }
        let moved = sqlx::query("UPDATE feed_cursors SET position = $1 WHERE name = $2 AND position = $3")
            .bind(last)
            .bind(CURSOR)
            .bind(after)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() == 0 {
            let inserted =
                sqlx::query("INSERT INTO feed_cursors (name, position) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(CURSOR)
                    .bind(last)
                    .execute(&mut *tx)
                    .await?;
            if inserted.rows_affected() == 0 {
                // Another process moved the cursor meanwhile: its work stands.
                tx.rollback().await?;
                return Ok(true);
            }
        }
        tx.commit().await?;
        Ok(entries.len() as i64 == FEED_BATCH)
    }

    /// Schedules (or cancels) the reminders of one licence as it is now.
    async fn schedule(
        &self,
        conn: &mut AnyConnection,
        l: &LicenceRecord,
        at: OffsetDateTime,
    ) -> Result<(), ServiceError> {
        let in_force = l.status == LicenceStatus::Valid && l.superseded_by.is_none();
        let Some(until) = l.valid_until.filter(|_| in_force) else {
            sqlx::query(
                "UPDATE reminders SET state = 'cancelled' WHERE identifier = $1 AND state IN ('scheduled', 'due')",
            )
            .bind(&l.identifier)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        };
        let doc = document_of(l)?;
        let digest = holder_digest(&doc.holder.id_type_code, &doc.holder.id_number);
        let windows = self.windows_of(conn, &l.type_code).await?;
        for (days, due) in windows_due(until, &windows, at) {
            let id = reminder_id(&l.identifier, until, days);
            let body = serde_json::json!({
                "id": id,
                "type": "licence-expiry-reminder",
                "identifier": l.identifier,
                "typeCode": l.type_code,
                "licenceName": doc.name,
                "issuerName": doc.issuer.name,
                "holderIdType": doc.holder.id_type_code,
                "holderIdNumber": doc.holder.id_number,
                "validUntil": zhengzhao_core::date::format_date(until),
                "daysBefore": days,
            });
            sqlx::query(
                "INSERT INTO reminders (id, identifier, type_code, holder_digest, days_before, valid_until, due_at, state, body_json, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'scheduled', $8, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&id)
            .bind(&l.identifier)
            .bind(&l.type_code)
            .bind(&digest)
            .bind(i64::from(days))
            .bind(zhengzhao_core::date::format_date(until))
            .bind(format_time(due))
            .bind(body.to_string())
            .bind(format_time(at))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Moves due reminders to the outbox: each becomes due in the same
    /// transaction as its deliveries are written.
    async fn queue_due(&self) -> Result<(), ServiceError> {
        let at = now();
        let mut tx = self.db.begin().await?;
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, holder_digest FROM reminders WHERE state = 'scheduled' AND due_at <= $1 ORDER BY due_at LIMIT 500",
        )
        .bind(format_time(at))
        .fetch_all(&mut *tx)
        .await?;
        for (id, digest) in &due {
            sqlx::query("UPDATE reminders SET state = 'due' WHERE id = $1 AND state = 'scheduled'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for fe in holder_rows::holder_front_ends(&mut tx, digest).await? {
                queue_delivery(&mut tx, id, fe, at).await?;
            }
        }
        tx.commit().await?;
        zhengzhao_telemetry::domain::DOMAIN.reminders.with_label_values(&["queued"]).inc_by(due.len() as u64);
        if !due.is_empty() {
            tracing::info!(reminders = due.len(), "expiry reminders due");
        }
        Ok(())
    }

    /// Delivers what the outbox holds that is due for an attempt.
    async fn deliver(&self, http: &reqwest::Client, max_attempts: u32) -> Result<(), ServiceError> {
        let at = now();
        let pending: Vec<(String, i64, i64, String, String)> = {
            let mut conn = self.db.pool.acquire().await?;
            sqlx::query_as(
                "SELECT d.reminder_id, d.front_end_id, d.attempts, r.body_json, r.state FROM reminder_deliveries d
                   JOIN reminders r ON r.id = d.reminder_id
                  WHERE d.state = 'pending' AND d.next_attempt_at <= $1 ORDER BY d.next_attempt_at LIMIT $2",
            )
            .bind(format_time(at))
            .bind(DELIVERY_BATCH)
            .fetch_all(&mut *conn)
            .await?
        };
        for (reminder, fe_id, attempts, body, state) in pending {
            let fe = {
                let mut conn = self.db.pool.acquire().await?;
                holder_rows::load_front_end(&mut conn, fe_id).await?
            };
            let outcome = match (&fe, state.as_str()) {
                (_, "cancelled") => Err("the reminder was cancelled (the licence changed)".to_owned()),
                (Some(f), _) if !f.active => Err(format!("front end {fe_id} is suspended")),
                (Some(f), _) if f.webhook_url.is_empty() => Err(format!("front end {fe_id} has no webhook")),
                (None, _) => Err(format!("no front end {fe_id}")),
                (Some(f), _) => self.post(http, &f.webhook_url, &reminder, &body).await,
            };
            let attempts = attempts + 1;
            let mut conn = self.db.pool.acquire().await?;
            match outcome {
                Ok(()) => {
                    sqlx::query(
                        "UPDATE reminder_deliveries SET state = 'sent', attempts = $1, sent_at = $2, last_error = ''
                         WHERE reminder_id = $3 AND front_end_id = $4",
                    )
                    .bind(attempts)
                    .bind(format_time(now()))
                    .bind(&reminder)
                    .bind(fe_id)
                    .execute(&mut *conn)
                    .await?;
                    zhengzhao_telemetry::domain::DOMAIN.reminders.with_label_values(&["sent"]).inc();
                    tracing::info!(reminder = %reminder, front_end = fe_id, "expiry reminder delivered");
                }
                Err(why) => {
                    let final_ = state == "cancelled" || attempts >= i64::from(max_attempts);
                    let backoff = 5i64.saturating_mul(1i64 << (attempts - 1).clamp(0, 20)).min(3600);
                    sqlx::query(
                        "UPDATE reminder_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, last_error = $4
                         WHERE reminder_id = $5 AND front_end_id = $6",
                    )
                    .bind(if final_ { "dead" } else { "pending" })
                    .bind(attempts)
                    .bind(format_time(now() + time::Duration::seconds(backoff)))
                    .bind(why.chars().take(500).collect::<String>())
                    .bind(&reminder)
                    .bind(fe_id)
                    .execute(&mut *conn)
                    .await?;
                    let state = match (final_, state.as_str()) {
                        (true, "cancelled") => "cancelled",
                        (true, _) => "dead",
                        (false, _) => "retried",
                    };
                    zhengzhao_telemetry::domain::DOMAIN.reminders.with_label_values(&[state]).inc();
                    if final_ {
                        tracing::warn!(reminder = %reminder, front_end = fe_id, error = %why, "expiry reminder dead-lettered");
                    } else {
                        tracing::info!(reminder = %reminder, front_end = fe_id, error = %why, retry_in = backoff, "expiry reminder delivery failed");
                    }
                }
            }
        }
        Ok(())
    }

    async fn post(&self, http: &reqwest::Client, url: &str, id: &str, body: &str) -> Result<(), String> {
        let signed = self.signing.sign(&self.agency, body.as_bytes()).await.map_err(|e| format!("cannot sign: {e}"))?;
        let answer = http
            .post(url)
            .header("content-type", "application/json")
            .header("zhengzhao-reminder-id", id)
            .header("zhengzhao-signature", signed.jws)
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {url}: HTTP {}", answer.status().as_u16()))
        }
    }
}

/// Writes one delivery to the outbox (nothing if it is there already).
pub(crate) async fn queue_delivery(
    conn: &mut AnyConnection,
    reminder: &str,
    front_end: i64,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO reminder_deliveries (reminder_id, front_end_id, state, attempts, next_attempt_at)
         VALUES ($1, $2, 'pending', 0, $3) ON CONFLICT (reminder_id, front_end_id) DO NOTHING",
    )
    .bind(reminder)
    .bind(front_end)
    .bind(format_time(at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Due reminders of a holder not yet queued for `front_end` (a new login).
pub(crate) async fn queue_for_new_front_end(
    conn: &mut AnyConnection,
    holder_digest: &str,
    front_end: i64,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM reminders WHERE holder_digest = $1 AND state = 'due'")
        .bind(holder_digest)
        .fetch_all(&mut *conn)
        .await?;
    for id in ids {
        queue_delivery(conn, &id, front_end, at).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_ahead_and_only_the_nearest_passed_one() {
        let until = time::macros::date!(2027 - 03 - 31);
        let at = time::macros::datetime!(2027-03-10 00:00 UTC);
        let due = windows_due(until, &DEFAULT_WINDOWS, at);
        assert_eq!(due.iter().map(|(d, _)| *d).collect::<Vec<_>>(), vec![7, 30]);
        let far = time::macros::datetime!(2026-01-01 00:00 UTC);
        assert_eq!(windows_due(until, &DEFAULT_WINDOWS, far).len(), 3);
        assert_eq!(reminder_id("X", until, 7), reminder_id("X", until, 7));
        assert_ne!(reminder_id("X", until, 7), reminder_id("X", until, 30));
    }
}
