//! The expiry job: records the end of validity of licences whose end date
//! has passed, as feed events whose business time is the end of the last
//! valid day (China Standard Time). Status is right at read time without it.

use std::sync::Arc;
use std::time::Duration;

use time::Date;
use zhengzhao_auth::Principal;
use zhengzhao_core::date::format_date;
use zhengzhao_core::{LicenceStatus, LifecycleAction};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, now};

use crate::feed::{self, NewEvent};
use crate::{EventDetails, Issuance, LIBRARY_OFFSET, write};

impl Issuance {
    /// Records expiry for every valid licence whose validity ended before
    /// `day`, as `who`; returns how many. Status is right at read time
    /// without this; the events make the expiry visible in the feed.
    pub async fn record_expiries(&self, who: &Principal, day: Date) -> Result<usize, ServiceError> {
        let mut total = 0;
        loop {
            let ids: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT identifier, jws, valid_until FROM licences WHERE status = 'valid' AND valid_until IS NOT NULL AND valid_until < $1 AND origin_library IS NULL
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
            let mut tx = self.db.begin().await?;
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
            let appended = write::append_events(&mut tx, &expired).await?;
            total += expired.len();
            tx.commit().await?;
            appended.committed();
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
}
