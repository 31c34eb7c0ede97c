//! The library's own metrics, beside the per-call ones: what was issued
//! and changed, how verifications and uses ended, reminders, imports, and
//! the state gauges each service refreshes (feed head, log size and
//! checkpoint age, outages, keys). Labels are bounded: event and outcome
//! names from fixed lists, licence types and issuers from the catalogue,
//! agencies from authenticated callers; never a holder.
//!
//! Every metric here is registered in [`crate::METRICS`]'s registry on first
//! use of [`DOMAIN`]; [`touch`] registers them all at start-up so that
//! each series family shows on `/metrics` before its first event.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// The domain metrics of this process.
pub struct Domain {
    /// Licence events committed, by event, licence type and issuer.
    pub licence_events: IntCounterVec,
    /// Verifications answered, by outcome.
    pub verifications: IntCounterVec,
    /// Uses decided, by consuming agency, decision (granted, refused) and
    /// the rule that refused (`none` when granted).
    pub uses: IntCounterVec,
    /// Expiry reminders, by state (queued, sent, retried, dead, cancelled:
    /// a delivery given up because its licence changed).
    pub reminders: IntCounterVec,
    /// Historical rows imported, by outcome (imported, already_present, refused).
    pub import_rows: IntCounterVec,
    /// Issuer-key lifecycle events, by event (created, rotated, retired, compromised).
    pub key_events: IntCounterVec,
    /// The change feed's last sequence number.
    pub feed_head: IntGauge,
    /// Leaves in the transparency log.
    pub log_size: IntGauge,
    /// Seconds the oldest log leaf no signed checkpoint covers has waited
    /// (0 when the latest checkpoint covers the whole log).
    pub checkpoint_age_seconds: Gauge,
    /// Outages recorded and not yet ended.
    pub outages_open: IntGauge,
    /// Outages whose backlog is not complete past art. 11's 3 working days.
    pub outages_overdue: IntGauge,
    /// Issuer keys by status (active, retired, compromised).
    pub keys: IntGaugeVec,
    /// Age of the oldest key still signing.
    pub oldest_active_key_age_seconds: Gauge,
    /// Seconds until the first CA certificate of a key still signing
    /// expires (negative once one has; +Inf when no active key is certified).
    pub active_key_certificate_expiry_seconds: Gauge,
    /// Active issuer keys without a CA certificate.
    pub active_keys_uncertified: IntGauge,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    crate::METRICS.registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

fn int_gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    crate::METRICS.registry.register(Box::new(g.clone())).expect("metric registered once");
    g
}

fn gauge(name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("static metric definition");
    crate::METRICS.registry.register(Box::new(g.clone())).expect("metric registered once");
    g
}

/// The domain metrics, registered on first use.
pub static DOMAIN: LazyLock<Domain> = LazyLock::new(|| {
    let keys = IntGaugeVec::new(Opts::new("zhengzhao_keys", "Issuer keys by status"), &["status"])
        .expect("static metric definition");
    crate::METRICS.registry.register(Box::new(keys.clone())).expect("metric registered once");
    Domain {
        licence_events: counter(
            "zhengzhao_licence_events_total",
            "Licence events committed (issued, changed, cancelled, ...), by licence type and issuer",
            &["event", "licence_type", "issuer"],
        ),
        verifications: counter("zhengzhao_verifications_total", "Verifications answered, by outcome", &["outcome"]),
        uses: counter(
            "zhengzhao_uses_total",
            "Licence uses decided, by consuming agency, decision (granted, refused) and refusing rule",
            &["agency", "decision", "rule"],
        ),
        reminders: counter(
            "zhengzhao_reminders_total",
            "Expiry reminders by state: queued, sent, retried, dead (dead-lettered), cancelled",
            &["state"],
        ),
        import_rows: counter(
            "zhengzhao_import_rows_total",
            "Historical licence rows imported, by outcome (imported, already_present, refused)",
            &["outcome"],
        ),
        key_events: counter(
            "zhengzhao_key_events_total",
            "Issuer-key events: created, rotated, retired, compromised",
            &["event"],
        ),
        feed_head: int_gauge("zhengzhao_feed_head", "The change feed's last sequence number"),
        log_size: int_gauge("zhengzhao_log_size", "Leaves in the transparency log"),
        checkpoint_age_seconds: gauge(
            "zhengzhao_checkpoint_age_seconds",
            "Seconds the oldest log leaf not covered by a signed checkpoint has waited (0 when covered)",
        ),
        outages_open: int_gauge("zhengzhao_outages_open", "Outages recorded and not yet ended"),
        outages_overdue: int_gauge(
            "zhengzhao_outages_overdue",
            "Outages whose backlog is not complete past the 3-working-day deadline (art. 11)",
        ),
        keys,
        oldest_active_key_age_seconds: gauge(
            "zhengzhao_oldest_active_key_age_seconds",
            "Age in seconds of the oldest issuer key still signing",
        ),
        active_key_certificate_expiry_seconds: {
            let g = gauge(
                "zhengzhao_active_key_certificate_expiry_seconds",
                "Seconds until the first CA certificate of an issuer key still signing expires (+Inf: none certified, or not a signing process)",
            );
            // Processes without the signing service export +Inf, so the
            // alert's minimum over all of them is the signing service's.
            g.set(f64::INFINITY);
            g
        },
        active_keys_uncertified: int_gauge(
            "zhengzhao_active_keys_uncertified",
            "Issuer keys still signing that carry no certificate from a CA",
        ),
    }
});

/// Registers every domain metric and gives each series whose labels come
/// from a fixed list a 0, so it is on `/metrics` before its first event
/// (series labelled by licence type, issuer or agency appear with theirs).
pub fn touch() {
    let d = &*DOMAIN;
    for state in ["queued", "sent", "retried", "dead", "cancelled"] {
        d.reminders.with_label_values(&[state]);
    }
    for outcome in ["imported", "already_present", "refused"] {
        d.import_rows.with_label_values(&[outcome]);
    }
    for event in ["created", "rotated", "retired", "compromised"] {
        d.key_events.with_label_values(&[event]);
    }
    for status in ["active", "retired", "compromised"] {
        d.keys.with_label_values(&[status]);
    }
    for reason in ["shed", "timeout"] {
        crate::METRICS.limited.with_label_values(&[reason]);
    }
}

/// Runs `refresh` now and every `every` until the process ends: the state
/// gauges a service reads from its database. A failure is logged once,
/// until a refresh succeeds again.
pub fn spawn_refresh<F, Fut, E>(service: &'static str, every: Duration, mut refresh: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match refresh().await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(service, error = %e, "cannot refresh the metrics");
                }
                Err(_) => {}
            }
        }
    })
}
