//! The signing service's metrics (`zhengzhao_telemetry::domain`): issuer
//! keys by status and the age of the oldest key still signing, refreshed on
//! a timer; key events as they are recorded.

use std::sync::Arc;
use std::time::Duration;

use zhengzhao_proto::ServiceError;
use zhengzhao_store::{now, parse_time};
use zhengzhao_telemetry::domain::DOMAIN;

use crate::Signing;

/// How often the gauges are refreshed (a Prometheus scrape is every 15 s).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// The `event` label of a recorded key action: a rotation counts once (as
/// its new key), the retirement it implies not again.
pub(crate) fn count_key_event(action: &str) {
    let event = if action.starts_with("compromised") {
        "compromised"
    } else if action == "create (rotation)" {
        "rotated"
    } else if action.starts_with("retire (rotation)") {
        return;
    } else if action.starts_with("retire") {
        "retired"
    } else if action.starts_with("create") {
        "created"
    } else {
        return;
    };
    DOMAIN.key_events.with_label_values(&[event]).inc();
}

impl Signing {
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
                        tracing::warn!(error = %e, "cannot refresh the signing metrics");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    async fn refresh_metrics(&self) -> Result<(), ServiceError> {
        let by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM issuer_keys GROUP BY status").fetch_all(&self.db.pool).await?;
        for status in ["active", "retired", "compromised"] {
            let n = by_status.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            DOMAIN.keys.with_label_values(&[status]).set(n);
        }
        let oldest: Option<String> =
            sqlx::query_scalar("SELECT MIN(created_at) FROM issuer_keys WHERE status = 'active'")
                .fetch_one(&self.db.pool)
                .await?;
        let age = oldest.as_deref().and_then(parse_time).map_or(0.0, |t| (now() - t).as_seconds_f64().max(0.0));
        DOMAIN.oldest_active_key_age_seconds.set(age);
        Ok(())
    }
}
