//! The issuance service's state gauges (`zhengzhao_telemetry::domain`):
//! the feed head, the log's size and how long it has grown past its
//! latest checkpoint, open and overdue outages, refreshed on a timer.

use std::sync::Arc;
use std::time::Duration;

use zhengzhao_proto::ServiceError;
use zhengzhao_store::{now, parse_time};
use zhengzhao_telemetry::domain::DOMAIN;

use crate::Issuance;
use crate::outage::BacklogState;

/// How often the gauges are refreshed (a Prometheus scrape is every 15 s).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(10);

impl Issuance {
    /// Refreshes the gauges now and every `every` until the process ends.
    pub fn spawn_metrics(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                match self.refresh_metrics().await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot refresh the issuance metrics");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    async fn refresh_metrics(&self) -> Result<(), ServiceError> {
        let reader = self.db.reader();
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM licence_events")
            .fetch_one(reader)
            .await
            .map_err(ServiceError::internal)?;
        DOMAIN.feed_head.set(head);
        let mut conn = reader.acquire().await.map_err(ServiceError::internal)?;
        let size = zhengzhao_translog::size(&mut conn).await?;
        DOMAIN.log_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        let latest: Option<(i64, String)> =
            sqlx::query_as("SELECT tree_size, created_at FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1")
                .fetch_optional(&mut *conn)
                .await
                .map_err(ServiceError::internal)?;
        drop(conn);
        let age = match latest {
            Some((covered, at)) if u64::try_from(covered).unwrap_or(0) < size => {
                parse_time(&at).map_or(0.0, |at| (now() - at).as_seconds_f64().max(0.0))
            }
            _ => 0.0,
        };
        DOMAIN.checkpoint_age_seconds.set(age);
        let outages = self.outages_of("").await?;
        let open = outages.iter().filter(|o| o.ended_at.is_none()).count();
        let overdue = outages.iter().filter(|o| o.state == BacklogState::Overdue).count();
        DOMAIN.outages_open.set(i64::try_from(open).unwrap_or(i64::MAX));
        DOMAIN.outages_overdue.set(i64::try_from(overdue).unwrap_or(i64::MAX));
        Ok(())
    }
}
