//! The issuance service's state gauges (`zhengzhao_telemetry::domain`):
//! the feed head, the log's size and how long its oldest leaf has waited
//! for a signed checkpoint, open and overdue outages, refreshed on a timer
//! that also signs a checkpoint whenever the log has grown.

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
        zhengzhao_telemetry::domain::spawn_refresh("issuance", every, move || {
            let this = self.clone();
            async move { this.refresh_metrics().await }
        })
    }

    async fn refresh_metrics(&self) -> Result<(), ServiceError> {
        let reader = self.db.reader();
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM licence_events")
            .fetch_one(reader)
            .await
            .map_err(ServiceError::internal)?;
        DOMAIN.feed_head.set(head);
        // A checkpoint is signed whenever the log has grown (readers ask
        // for one too), so the log never waits long for a signed head.
        let mut conn = self.db.pool.acquire().await.map_err(ServiceError::internal)?;
        let signed = zhengzhao_translog::checkpoint(&mut conn, &self.log).await;
        let size = zhengzhao_translog::size(&mut conn).await?;
        DOMAIN.log_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        let covered: Option<i64> = sqlx::query_scalar("SELECT MAX(tree_size) FROM log_checkpoints")
            .fetch_one(&mut *conn)
            .await
            .map_err(ServiceError::internal)?;
        // How long the oldest leaf no checkpoint covers has waited.
        let waiting: Option<String> =
            sqlx::query_scalar("SELECT MIN(recorded_at) FROM licence_events WHERE log_index >= $1")
                .bind(covered.unwrap_or(0))
                .fetch_one(&mut *conn)
                .await
                .map_err(ServiceError::internal)?;
        drop(conn);
        let age = waiting.as_deref().and_then(parse_time).map_or(0.0, |t| (now() - t).as_seconds_f64().max(0.0));
        DOMAIN.checkpoint_age_seconds.set(age);
        signed?;
        let outages = self.outages_of("").await?;
        let open = outages.iter().filter(|o| o.ended_at.is_none()).count();
        let overdue = outages.iter().filter(|o| o.state == BacklogState::Overdue).count();
        DOMAIN.outages_open.set(i64::try_from(open).unwrap_or(i64::MAX));
        DOMAIN.outages_overdue.set(i64::try_from(overdue).unwrap_or(i64::MAX));
        Ok(())
    }
}
