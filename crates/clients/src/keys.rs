//! The issuer public keys a verifying process holds: read from the signing
//! service once and kept until a key changes.
//!
//! Every cached entry is tagged with the signing service's key generation
//! it was read under, and is used only while that is still the generation:
//! - in-process (the all-in-one), the generation is the signing service's
//!   own counter, moved on before a key-changing call returns;
//! - over gRPC, a watcher task follows `WatchKeyEvents` and acknowledges
//!   each generation after adopting it; the signing service holds a key
//!   change's reply until every watcher has acknowledged (or cut it off),
//!   and a watcher that has heard nothing for [`LEASE`] treats the
//!   generation as unknown. While it is unknown (not yet connected,
//!   disconnected, signing too old to offer the stream) nothing is cached.
//!
//! So a compromise recorded shows in the next verification, in either
//! deployment; a change another replica of the signing service made shows
//! within its poll of the stored counter (a quarter second), and anything
//! cached is read again after [`MAX_AGE`] regardless.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use zhengzhao_crypto::IssuerPublicKey;
use zhengzhao_crypto::published::PublicKeyRecord;
use zhengzhao_proto::signing::v1 as pb;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;

/// How often the signing service repeats the generation to a watcher.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// How long a watcher trusts the last generation it heard: shorter than the
/// time the signing service waits for acknowledgements (2 s), so a watcher
/// cut off for silence has already stopped using its cache.
pub const LEASE: Duration = Duration::from_millis(1500);
/// Most issuers (and the all-issuer list) kept.
const CAPACITY: usize = 4096;
/// However quiet the key events, keys are read again after this long: a
/// backstop for changes nobody announced (a database edited by hand).
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// Where a signing process is in its key changes: a random epoch per run and
/// a counter of the changes it has recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyGeneration {
    pub epoch: u64,
    pub counter: u64,
}

impl From<KeyGeneration> for pb::KeyGeneration {
    fn from(g: KeyGeneration) -> Self {
        pb::KeyGeneration { epoch: g.epoch, counter: g.counter }
    }
}

impl From<pb::KeyGeneration> for KeyGeneration {
    fn from(g: pb::KeyGeneration) -> Self {
        KeyGeneration { epoch: g.epoch, counter: g.counter }
    }
}

/// One issuer key as a verifier uses it: its published record and, parsed
/// once, the key itself (or why its JWK is unusable).
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    pub record: PublicKeyRecord,
    pub public: Result<IssuerPublicKey, String>,
}

/// The keys of one issuer (or of all), in the signing service's order.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyingKey>,
}

impl KeySet {
    pub fn new(records: Vec<PublicKeyRecord>) -> Self {
        let keys = records
            .into_iter()
            .map(|record| {
                let public = IssuerPublicKey::from_jwk(&record.jwk).map_err(|e| e.to_string());
                VerifyingKey { record, public }
            })
            .collect();
        KeySet { keys }
    }

    /// The key named `key_id`.
    pub fn find(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.record.key_id == key_id)
    }

    pub fn records(&self) -> Vec<PublicKeyRecord> {
        self.keys.iter().map(|k| k.record.clone()).collect()
    }
}

/// Where the current generation comes from.
enum Source {
    /// The signing service in this process.
    Local(watch::Receiver<KeyGeneration>),
    /// A watcher task over gRPC, started on the first read; `None` while it
    /// does not know.
    Remote {
        client: Box<SigningServiceClient<crate::Transport>>,
        heard: OnceLock<watch::Receiver<Option<(KeyGeneration, Instant)>>>,
    },
}

/// Issuer keys, cached per issuer under the generation they were read at.
pub struct KeyCache {
    source: Source,
    entries: Mutex<HashMap<String, Cached>>,
}

/// Keys as read, under which generation and when.
type Cached = (KeyGeneration, Instant, Arc<KeySet>);

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache(..)")
    }
}

impl KeyCache {
    pub fn local(generation: watch::Receiver<KeyGeneration>) -> Self {
        KeyCache { source: Source::Local(generation), entries: Mutex::default() }
    }

    pub fn remote(client: SigningServiceClient<crate::Transport>) -> Self {
        KeyCache {
            source: Source::Remote { client: Box::new(client), heard: OnceLock::new() },
            entries: Mutex::default(),
        }
    }

    /// The generation now, if this process knows it.
    pub fn generation(&self) -> Option<KeyGeneration> {
        match &self.source {
            Source::Local(rx) => Some(*rx.borrow()),
            Source::Remote { client, heard } => {
                let rx = heard.get_or_init(|| {
                    let (tx, rx) = watch::channel(None);
                    tokio::spawn(watch_keys(client.as_ref().clone(), tx));
                    rx
                });
                rx.borrow().filter(|(_, at)| at.elapsed() < LEASE).map(|(g, _)| g)
            }
        }
    }

    /// The cached keys of `issuer` ("" for all), if read under `generation`
    /// less than [`MAX_AGE`] ago.
    pub fn get(&self, issuer: &str, generation: KeyGeneration) -> Option<Arc<KeySet>> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(issuer).filter(|(g, at, _)| *g == generation && at.elapsed() < MAX_AGE).map(|(_, _, k)| k.clone())
    }

    /// Keeps `keys`, read under `generation` (read before the keys were),
    /// unless the generation has moved on since.
    pub fn put(&self, issuer: &str, generation: KeyGeneration, keys: Arc<KeySet>) {
        if self.generation() != Some(generation) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY && !entries.contains_key(issuer) {
            entries.retain(|_, (g, at, _)| *g == generation && at.elapsed() < MAX_AGE);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(issuer.to_owned(), (generation, Instant::now(), keys));
    }
}

/// Follows the signing service's key events for as long as the process
/// runs, reconnecting with a backoff; publishes what it hears (with when)
/// and acknowledges each generation after publishing it.
async fn watch_keys(
    client: SigningServiceClient<crate::Transport>,
    heard: watch::Sender<Option<(KeyGeneration, Instant)>>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let (acks, outbound) = mpsc::channel(4);
        match client.clone().watch_key_events(tokio_stream::wrappers::ReceiverStream::new(outbound)).await {
            Ok(response) => {
                let mut events = response.into_inner();
                loop {
                    let next = tokio::select! {
                        m = tokio::time::timeout(LEASE, events.message()) => m,
                        () = heard.closed() => return,
                    };
                    match next {
                        Ok(Ok(Some(m))) => {
                            let Some(g) = m.generation.map(KeyGeneration::from) else { break };
                            heard.send_replace(Some((g, Instant::now())));
                            backoff = Duration::from_millis(100);
                            let ack = pb::WatchKeyEventsRequest { applied: Some(g.into()) };
                            if acks.send(ack).await.is_err() {
                                break;
                            }
                        }
                        Ok(Ok(None)) => break,
                        Ok(Err(status)) => {
                            tracing::warn!(%status, "key events from the signing service ended: issuer keys read uncached");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!("no key events from the signing service: issuer keys read uncached");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(%status, "cannot watch the signing service's key events: issuer keys read uncached");
            }
        }
        heard.send_replace(None);
        if heard.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
