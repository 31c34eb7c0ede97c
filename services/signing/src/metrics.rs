//! The signing service's metrics (`zhengzhao_telemetry::domain`): issuer
//! keys by status, the age of the oldest key still signing, when the first
//! CA certificate of a key still signing expires, and key events,
//! all read from the database on a timer, so only committed changes count
//! (and every replica counts those of the others too).

use std::sync::Arc;
use std::time::Duration;

use zhengzhao_proto::ServiceError;
use zhengzhao_store::{now, parse_time};
use zhengzhao_telemetry::domain::DOMAIN;

use crate::Signing;

/// How often the gauges are refreshed (a Prometheus scrape is every 15 s).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// The `event` labels, in the order [`event_of`] indexes them.
const EVENTS: [&str; 4] = ["created", "rotated", "retired", "compromised"];

/// The `event` label of a recorded key action: a rotation counts once (as
/// its new key), the retirement it implies not again.
fn event_of(action: &str) -> Option<usize> {
    if action.starts_with("compromised") {
        Some(3)
    } else if action == "create (rotation)" {
        Some(1)
    } else if action.starts_with("retire (rotation)") {
        None
    } else if action.starts_with("retire") {
        Some(2)
    } else if action.starts_with("create") {
        Some(0)
    } else {
        None
    }
}

/// Key events recorded in the database as of the last refresh (`None`
/// before the first, which sets the baseline: the counters count from the
/// process's start, as Prometheus counters do).
static SEEN: std::sync::Mutex<Option<[u64; 4]>> = std::sync::Mutex::new(None);

impl Signing {
    /// Refreshes the gauges now and every `every` until the process ends.
    pub fn spawn_metrics(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        zhengzhao_telemetry::domain::spawn_refresh("signing", every, move || {
            let this = self.clone();
            async move { this.refresh_metrics().await }
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
        // Certificates of the keys still signing: the first to expire, and
        // how many keys have none (or an unreadable one).
        let jwks: Vec<String> = sqlx::query_scalar("SELECT public_jwk FROM issuer_keys WHERE status = 'active'")
            .fetch_all(&self.db.pool)
            .await?;
        let (mut first, mut uncertified) = (f64::INFINITY, 0i64);
        for jwk in &jwks {
            let chain = serde_json::from_str::<serde_json::Value>(jwk)
                .ok()
                .and_then(|j| serde_json::from_value::<Vec<String>>(j.get("x5c")?.clone()).ok())
                .and_then(|x5c| zhengzhao_crypto::x509::Chain::from_x5c(&x5c).ok());
            match chain {
                Some(c) => first = first.min((c.expires() - now()).as_seconds_f64()),
                None => uncertified += 1,
            }
        }
        DOMAIN.active_key_certificate_expiry_seconds.set(first);
        DOMAIN.active_keys_uncertified.set(uncertified);
        let actions: Vec<(String, i64)> =
            sqlx::query_as("SELECT action, COUNT(*) FROM key_events GROUP BY action").fetch_all(&self.db.pool).await?;
        let mut totals = [0u64; 4];
        for (action, n) in &actions {
            if let Some(i) = event_of(action) {
                totals[i] += u64::try_from(*n).unwrap_or(0);
            }
        }
        let mut seen = SEEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(before) = seen.as_ref() {
            for (i, event) in EVENTS.iter().enumerate() {
                DOMAIN.key_events.with_label_values(&[event]).inc_by(totals[i].saturating_sub(before[i]));
            }
        }
        *seen = Some(totals);
        Ok(())
    }
}
