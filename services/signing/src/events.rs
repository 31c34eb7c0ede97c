//! Key events: the generation every key change moves on, for the public-key
//! caches of verifying processes (see `zhengzhao_clients::keys`).
//!
//! In-process caches read the generation directly. Remote ones watch it
//! over `WatchKeyEvents` and acknowledge what they have adopted; a key
//! change returns to its caller only once every watcher has acknowledged
//! it, or after [`ACK_WAIT`] with the silent ones cut off (their lease
//! has run out by then, so they are not using their caches either).
//!
//! Several signing processes may share one database: each change also
//! bumps a stored counter (`key_generation`) in its own transaction, and
//! every process polls it every [`STORED_POLL`], so a change made by one
//! reaches the watchers of the others within that time (without the
//! acknowledgement wait). Caches also drop what they hold after
//! `zhengzhao_clients::keys::MAX_AGE` whatever they hear.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use zhengzhao_clients::KeyGeneration;
use zhengzhao_clients::keys::{HEARTBEAT, LEASE};
use zhengzhao_proto::signing::v1 as pb;

/// How long a key change waits for watchers to acknowledge it.
pub const ACK_WAIT: Duration = Duration::from_secs(2);
/// How often the stored counter is read (changes by other replicas).
pub const STORED_POLL: Duration = Duration::from_millis(250);
/// Most remote watchers at once (each verification or exchange process is one).
pub const MAX_WATCHERS: usize = 256;

/// Counts a key change in the stored counter, in the change's transaction.
pub async fn bump_stored(conn: &mut sqlx::AnyConnection) -> Result<(), zhengzhao_proto::ServiceError> {
    sqlx::query("UPDATE key_generation SET counter = counter + 1 WHERE id = 1").execute(&mut *conn).await?;
    Ok(())
}
const _: () = assert!(LEASE.as_millis() < ACK_WAIT.as_millis());

/// What a remote watcher receives.
pub type KeyEventStream = ReceiverStream<Result<pb::WatchKeyEventsResponse, tonic::Status>>;

/// The key generation and the watchers of it.
#[derive(Debug)]
pub struct KeyEvents {
    current: watch::Sender<KeyGeneration>,
    /// Each connected watcher's acknowledged counter.
    watchers: Mutex<HashMap<u64, u64>>,
    next_watcher: AtomicU64,
    acknowledged: Notify,
    started: Instant,
    /// The stored counter as last taken into account (-1: not yet read),
    /// and the pool to read it from.
    stored_seen: std::sync::atomic::AtomicI64,
    stored: std::sync::OnceLock<sqlx::AnyPool>,
}

impl Default for KeyEvents {
    fn default() -> Self {
        let epoch = u64::from_be_bytes(zhengzhao_crypto::random_bytes::<8>());
        KeyEvents {
            current: watch::Sender::new(KeyGeneration { epoch, counter: 0 }),
            watchers: Mutex::default(),
            next_watcher: AtomicU64::new(1),
            acknowledged: Notify::new(),
            started: Instant::now(),
            stored_seen: std::sync::atomic::AtomicI64::new(-1),
            stored: std::sync::OnceLock::new(),
        }
    }
}

impl KeyEvents {
    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.watchers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counter of the generation now.
    pub fn counter(&self) -> u64 {
        self.current.borrow().counter
    }

    /// The generation, for in-process caches.
    pub fn subscribe(&self) -> watch::Receiver<KeyGeneration> {
        self.current.subscribe()
    }

    /// Records that keys changed (call after the change is committed):
    /// moves the generation on, then waits until every remote watcher has
    /// acknowledged it, cutting off those still silent after [`ACK_WAIT`].
    pub async fn changed(&self) {
        // Watchers of an earlier run of this process may still hold a
        // lease on their caches: one lease after start they have let go.
        if let Some(rest) = LEASE.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        // Our own change is in the stored counter: take it (and anything
        // before it) into account here, so the poll does not count it again;
        // what it absorbs is covered by the move below, made after reading.
        if let Some(now) = self.read_stored().await {
            self.stored_seen.fetch_max(now, Ordering::SeqCst);
        }
        let mut counter = 0;
        self.current.send_modify(|g| {
            g.counter += 1;
            counter = g.counter;
        });
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        loop {
            let notified = self.acknowledged.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.watchers().values().all(|acked| *acked >= counter) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut watchers = self.watchers();
                let before = watchers.len();
                watchers.retain(|_, acked| *acked >= counter);
                tracing::warn!(
                    cut_off = before - watchers.len(),
                    "key-event watchers did not acknowledge a key change in time: cut off"
                );
                return;
            }
        }
    }

    /// A change another process made (seen in the stored counter): moves
    /// the generation on without waiting.
    pub fn changed_elsewhere(&self) {
        self.current.send_modify(|g| g.counter += 1);
    }

    async fn read_stored(&self) -> Option<i64> {
        let pool = self.stored.get()?;
        match sqlx::query_scalar::<_, i64>("SELECT counter FROM key_generation WHERE id = 1").fetch_one(pool).await {
            Ok(now) => Some(now),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored key generation");
                None
            }
        }
    }

    /// Polls the stored counter for as long as the pool is open: a value
    /// beyond what this process has taken into account is another
    /// replica's change. The first value is read before it returns.
    pub async fn follow_stored(self: std::sync::Arc<Self>, pool: sqlx::AnyPool) {
        let _ = self.stored.set(pool.clone());
        if let Some(now) = self.read_stored().await {
            self.stored_seen.fetch_max(now, Ordering::SeqCst);
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(STORED_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !pool.is_closed() {
                tick.tick().await;
                if let Some(now) = self.read_stored().await {
                    let before = self.stored_seen.fetch_max(now, Ordering::SeqCst);
                    if before >= 0 && now > before {
                        self.changed_elsewhere();
                    }
                }
            }
        });
    }

    fn acknowledge(&self, watcher: u64, applied: KeyGeneration) {
        let current = *self.current.borrow();
        if applied.epoch != current.epoch {
            return;
        }
        if let Some(acked) = self.watchers().get_mut(&watcher) {
            *acked = (*acked).max(applied.counter.min(current.counter));
        }
        self.acknowledged.notify_waiters();
    }

    /// A new remote watcher: its stream of generations; `acks` are what it
    /// sends back. A watcher holds nothing cached from this run until it has
    /// heard the first generation, so it starts as having acknowledged the
    /// current one.
    pub fn watch(
        self: &std::sync::Arc<Self>,
        mut acks: tonic::Streaming<pb::WatchKeyEventsRequest>,
    ) -> Result<KeyEventStream, tonic::Status> {
        let id = self.next_watcher.fetch_add(1, Ordering::Relaxed);
        let mut generation = self.current.subscribe();
        {
            let mut watchers = self.watchers();
            if watchers.len() >= MAX_WATCHERS {
                return Err(tonic::Status::resource_exhausted(format!("at most {MAX_WATCHERS} key-event watchers")));
            }
            watchers.insert(id, generation.borrow().counter);
        }
        let (tx, rx) = mpsc::channel(4);
        let events = self.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::interval(HEARTBEAT);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut send = true;
            loop {
                if send {
                    if !events.watchers().contains_key(&id) {
                        let _ = tx
                            .send(Err(tonic::Status::unavailable("too slow acknowledging key events: reconnect")))
                            .await;
                        break;
                    }
                    let g = *generation.borrow_and_update();
                    let message = pb::WatchKeyEventsResponse { generation: Some(g.into()) };
                    // A watcher that stops reading is let go.
                    if !matches!(tokio::time::timeout(LEASE, tx.send(Ok(message))).await, Ok(Ok(()))) {
                        break;
                    }
                }
                tokio::select! {
                    changed = generation.changed() => {
                        if changed.is_err() { break; }
                        send = true;
                    }
                    _ = beat.tick() => send = true,
                    ack = acks.message() => match ack {
                        Ok(Some(m)) => {
                            if let Some(applied) = m.applied {
                                events.acknowledge(id, applied.into());
                            }
                            send = false;
                        }
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            events.watchers().remove(&id);
            events.acknowledged.notify_waiters();
        });
        Ok(ReceiverStream::new(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_change_in_the_first_lease_after_start_waits_it_out() {
        let events = KeyEvents::default();
        let started = tokio::time::Instant::now();
        events.changed().await;
        assert!(started.elapsed() >= LEASE - Duration::from_millis(10), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_change_without_watchers_returns_at_once_and_moves_the_generation() {
        let events = KeyEvents { started: Instant::now() - LEASE, ..KeyEvents::default() };
        let rx = events.subscribe();
        let before = *rx.borrow();
        let started = std::time::Instant::now();
        events.changed().await;
        assert!(started.elapsed() < ACK_WAIT);
        let after = *rx.borrow();
        assert_eq!((after.epoch, after.counter), (before.epoch, before.counter + 1));
        assert_ne!(KeyEvents::default().subscribe().borrow().epoch, before.epoch, "each run has its own epoch");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_watcher_is_cut_off_and_an_acknowledging_one_releases_the_change() {
        let events = std::sync::Arc::new(KeyEvents { started: Instant::now() - LEASE, ..KeyEvents::default() });
        events.watchers().insert(7, 0);
        events.watchers().insert(8, 0);
        let waiting = {
            let events = events.clone();
            tokio::spawn(async move { events.changed().await })
        };
        tokio::task::yield_now().await;
        let g = *events.subscribe().borrow();
        events.acknowledge(7, g);
        // 8 stays silent: the change returns after ACK_WAIT with 8 cut off.
        waiting.await.unwrap();
        assert_eq!(events.watchers().get(&7), Some(&1));
        assert!(!events.watchers().contains_key(&8));
        // An acknowledgement beyond the current generation counts as the current one.
        events.acknowledge(7, KeyGeneration { epoch: g.epoch, counter: 99 });
        assert_eq!(events.watchers().get(&7), Some(&1));
        // An acknowledgement of another run's generation counts for nothing.
        events.acknowledge(7, KeyGeneration { epoch: g.epoch ^ 1, counter: 99 });
        assert_eq!(events.watchers().get(&7), Some(&1));
    }
}
