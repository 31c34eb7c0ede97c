//! District-to-city sync, both ends of it.
//!
//! A district serves its feed for replication ([`Issuance::read_replica_feed`]):
//! entries after a cursor, each with its transparency-log index, and the
//! licence rows they concern exactly as held (documents and issuer
//! signatures unchanged). The city applies a batch ([`Issuance::apply_replica`])
//! only after checking it against the district's log: the entries, rebuilt
//! into leaves with the one leaf constructor ([`LogLeaf::of`]), must extend
//! the tree the city has verified so far ([`CompactRange`], kept per
//! district) and be a prefix of the district's signed checkpoint, which must
//! be consistent with the last checkpoint accepted. Then, in one transaction
//! under the feed lock, the licence rows are upserted (marked with the
//! district's name), the events are appended to the city's own feed and log
//! (with the district's sequence, unique, so an event applies once), the
//! cursor advances and the city's cosignature of the checkpoint is stored (a
//! witness anyone can read with [`Issuance::replicas`]). A failed check stops
//! that district's sync, with the reason, until an administrator resumes it;
//! other districts are untouched.
//!
//! Licence rows carry their state as the district holds it when read (a row
//! may be ahead of the batch's events; it converges when the feed is caught
//! up). The events and documents are what the log covers; the derived state
//! columns are not, so the city takes them on the district's word.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row;
use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::{EventRecord, LicenceDocument, LicenceId, LicenceStatus};
use zhengzhao_crypto::Es256PublicKey;
use zhengzhao_crypto::merkle::{CompactRange, Hash, verify_consistency};
use zhengzhao_crypto::translog::{Checkpoint, LogLeaf, verify_checkpoint};
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::convert::stored_timestamp;
use zhengzhao_proto::issuance::v1::ReplicaLicence;
use zhengzhao_store::{format_time, now, parse_time};

use crate::record::EVENT_COLUMNS;
use crate::{Issuance, feed, replica_rows as rows};

/// Most entries read or applied at once.
pub const MAX_REPLICA_BATCH: u32 = 5000;
/// Longest a read waits for a first entry.
pub const MAX_REPLICA_WAIT_SECONDS: u32 = 30;

/// One feed entry with its log index.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaEvent {
    pub event: EventRecord,
    pub log_index: u64,
}

/// A batch of a feed, for replication.
#[derive(Debug, Clone, Default)]
pub struct ReplicaBatch {
    /// The library answering.
    pub library: String,
    pub events: Vec<ReplicaEvent>,
    pub licences: Vec<ReplicaLicence>,
    pub head_sequence: u64,
    /// When the first entry after the batch was recorded (lag).
    pub next_recorded_at: Option<OffsetDateTime>,
}

/// A batch to apply on the city, with the district log's evidence.
#[derive(Debug, Clone, Default)]
pub struct ApplyBatch {
    pub library: String,
    pub remote_library: String,
    pub after_sequence: u64,
    pub events: Vec<ReplicaEvent>,
    pub licences: Vec<ReplicaLicence>,
    /// The checkpoint JWS (absent: a report of lag only, with no entries).
    pub checkpoint_jws: Option<String>,
    pub library_jwk_json: String,
    pub proof_from_batch: Vec<Hash>,
    pub proof_from_last: Vec<Hash>,
    /// The checkpoint size `proof_from_last` starts from (0: not said).
    pub last_checkpoint_size: u64,
    pub head_sequence: u64,
    pub next_recorded_at: Option<OffsetDateTime>,
}

/// Whether a district's sync runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    Ok,
    Stopped,
}

/// One district as the city replicates it.
#[derive(Debug, Clone)]
pub struct Replica {
    pub library: String,
    pub cursor: u64,
    pub range: CompactRange,
    pub library_jwk: String,
    pub checkpoint: Option<Checkpoint>,
    pub cosignature: Option<String>,
    pub state: ReplicaState,
    pub reason: String,
    pub head_sequence: u64,
    pub behind_since: Option<OffsetDateTime>,
    pub events_applied: u64,
    pub updated_at: OffsetDateTime,
}

impl Replica {
    /// Events behind the district's feed, as of the last report.
    pub fn lag_events(&self) -> u64 {
        self.head_sequence.saturating_sub(self.cursor)
    }

    /// Seconds behind: since the oldest entry not yet applied was recorded.
    pub fn lag_seconds(&self, at: OffsetDateTime) -> f64 {
        match self.behind_since {
            Some(t) if self.lag_events() > 0 => (at - t).as_seconds_f64().max(0.0),
            _ => 0.0,
        }
    }
}

/// Refuses what is not a library name.
pub fn check_library_name(field: &str, name: &str) -> Result<(), ServiceError> {
    use zhengzhao_core::library::{LIBRARY_NAME_RULE, is_library_name};
    if is_library_name(name) {
        Ok(())
    } else {
        Err(ServiceError::invalid(field, format!("a library name: {LIBRARY_NAME_RULE}")))
    }
}

/// Why a batch is not applied: the district's evidence is refused (its
/// sync stops, with the reason) or the city could not apply it now (the
/// job retries; nothing about the district is concluded).
enum Refusal {
    Rejected(String),
    Failed(ServiceError),
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Self {
        match e {
            // A constraint of the city's database refused the district's data.
            ServiceError::AlreadyExists(m) => Refusal::Rejected(m),
            other => Refusal::Failed(other),
        }
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Refusal::Failed(e.into())
    }
}

fn rejected<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Rejected(reason.into()))
}

/// What a verified batch leaves.
struct Verified {
    range: CompactRange,
    checkpoint: Checkpoint,
}

impl Issuance {
    /// This library's name (`serve --library`).
    pub fn library(&self) -> &str {
        &self.library
    }

    /// Refuses a write to a licence this library holds as a district's replica.
    pub(crate) async fn refuse_replica(&self, identifier: &str) -> Result<(), ServiceError> {
        let origin: Option<Option<String>> =
            sqlx::query_scalar("SELECT origin_library FROM licences WHERE identifier = $1")
                .bind(identifier)
                .fetch_optional(&self.db.pool)
                .await?;
        match origin.flatten() {
            Some(district) => Err(ServiceError::FailedPrecondition(format!(
                "licence {identifier} is kept by district {district}; this library holds a replica: record it there"
            ))),
            None => Ok(()),
        }
    }

    /// Refuses issuing here for an issuer whose licences a district keeps.
    pub(crate) async fn refuse_district_issuer(&self, issuer: &str) -> Result<(), ServiceError> {
        let mut conn = self.db.pool.acquire().await?;
        match rows::issuer_keeper(&mut conn, issuer).await? {
            Some(d) => Err(ServiceError::FailedPrecondition(format!(
                "issuer {issuer}'s licences are kept by district {d}: issue there"
            ))),
            None => Ok(()),
        }
    }

    /// Up to `limit` feed entries after `after` with the licences they
    /// concern; with `library`, the city's replica of that district instead
    /// (sequences and log indexes as the district gave them).
    pub async fn read_replica_feed(
        &self,
        who: &Principal,
        after: u64,
        limit: u32,
        wait_seconds: u32,
        library: Option<&str>,
        max_bytes: usize,
    ) -> Result<ReplicaBatch, ServiceError> {
        authorize(who, &Action::ReadReplicaFeed)?;
        if let Some(l) = library {
            check_library_name("library", l)?;
        }
        if limit > MAX_REPLICA_BATCH {
            return Err(ServiceError::invalid("limit", format!("at most {MAX_REPLICA_BATCH}")));
        }
        if wait_seconds > MAX_REPLICA_WAIT_SECONDS {
            return Err(ServiceError::invalid("wait_seconds", format!("at most {MAX_REPLICA_WAIT_SECONDS}")));
        }
        let after = i64::try_from(after).map_err(|_| ServiceError::invalid("after_sequence", "too large"))?;
        let limit = if limit == 0 { 1000 } else { i64::from(limit) };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(wait_seconds));
        loop {
            let mut conn = self.db.reader().acquire().await?;
            let events = rows::replica_events(&mut conn, library, after, limit).await?;
            if events.is_empty() && library.is_none() && tokio::time::Instant::now() < deadline {
                drop(conn);
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                self.wait_for_appends(left.min(std::time::Duration::from_millis(500))).await;
                continue;
            }
            let (events, licences, cut_at) = within_bytes(&mut conn, events, max_bytes).await?;
            let last = events.last().map_or(after, |e| e.event.sequence);
            let (head, mut next_recorded_at) = rows::feed_head(&mut conn, library, last).await?;
            if cut_at.is_some() {
                next_recorded_at = cut_at;
            }
            return Ok(ReplicaBatch {
                library: library.unwrap_or(&self.library).to_owned(),
                events,
                licences,
                head_sequence: u64::try_from(head).unwrap_or_default(),
                next_recorded_at,
            });
        }
    }

    /// The districts replicated here (or one).
    pub async fn replicas(&self, who: &Principal, library: Option<&str>) -> Result<Vec<Replica>, ServiceError> {
        authorize(who, &Action::ReadLog)?;
        if let Some(l) = library {
            check_library_name("library", l)?;
        }
        let mut conn = self.db.reader().acquire().await?;
        rows::replicas(&mut conn, library).await
    }

    /// Resumes a stopped district's sync from its cursor.
    /// With `repin_log_key`, the next batch pins the log key it comes with.
    pub async fn resume_replica(
        &self,
        who: &Principal,
        library: &str,
        repin_log_key: bool,
    ) -> Result<Replica, ServiceError> {
        authorize(who, &Action::ResumeReplica)?;
        check_library_name("library", library)?;
        let mut tx = self.db.begin().await?;
        if !rows::set_state(&mut tx, library, ReplicaState::Ok, "", now()).await? {
            return Err(ServiceError::NotFound(format!("no replica of library {library}")));
        }
        if repin_log_key {
            rows::forget_log_key(&mut tx, library).await?;
        }
        tx.commit().await?;
        let mut conn = self.db.pool.acquire().await?;
        tracing::warn!(library, actor = %who.actor(), repin_log_key, "district sync resumed");
        rows::replica(&mut conn, library).await?.ok_or_else(|| ServiceError::internal("replica vanished"))
    }

    /// Applies a district's batch as a replica (see the module docs).
    pub async fn apply_replica(&self, who: &Principal, batch: ApplyBatch) -> Result<Replica, ServiceError> {
        authorize(who, &Action::ApplyReplica)?;
        check_library_name("library", &batch.library)?;
        if batch.library == self.library {
            return Err(ServiceError::invalid("library", "names this library itself"));
        }
        if !batch.remote_library.is_empty() && batch.remote_library != batch.library {
            return Err(ServiceError::invalid(
                "remote_library",
                format!("the library at that address calls itself {:?}, not {:?}", batch.remote_library, batch.library),
            ));
        }
        if batch.events.len() > MAX_REPLICA_BATCH as usize || batch.licences.len() > MAX_REPLICA_BATCH as usize {
            return Err(ServiceError::invalid("events", format!("at most {MAX_REPLICA_BATCH} per batch")));
        }
        let at = now();
        let mut conn = self.db.pool.acquire().await?;
        let mut current = rows::replica(&mut conn, &batch.library).await?;
        // Only a batch with the district's checkpoint pins its key (a report
        // of lag carries none).
        if batch.checkpoint_jws.is_some() && current.as_ref().is_none_or(|r| r.library_jwk.is_empty()) {
            // First contact, or an administrator had the key re-pinned.
            log_key(&batch.library_jwk_json)
                .map_err(|e| ServiceError::invalid("library_jwk_json", format!("not an ES256 public JWK: {e}")))?;
            if current.is_none() {
                rows::insert_replica(&mut conn, &batch.library, &batch.library_jwk_json, at).await?;
            } else {
                rows::pin_log_key(&mut conn, &batch.library, &batch.library_jwk_json).await?;
            }
            tracing::info!(library = %batch.library, "district log key pinned");
            current = rows::replica(&mut conn, &batch.library).await?;
        }
        drop(conn);
        let current = current.ok_or_else(|| ServiceError::internal("replica vanished"))?;
        if current.state == ReplicaState::Stopped {
            return Err(ServiceError::FailedPrecondition(format!(
                "sync of {} is stopped: {}",
                current.library, current.reason
            )));
        }
        if current.cursor != batch.after_sequence {
            return Err(ServiceError::FailedPrecondition(format!(
                "the city's cursor for {} is {}, not {}: read on from there",
                current.library, current.cursor, batch.after_sequence
            )));
        }
        let last_size = current.checkpoint.as_ref().map_or(0, |c| c.tree_size);
        if batch.last_checkpoint_size != 0 && batch.last_checkpoint_size != last_size {
            return Err(ServiceError::FailedPrecondition(format!(
                "the city's last accepted checkpoint of {} has {last_size} leaves, not {}: read on from there",
                current.library, batch.last_checkpoint_size
            )));
        }
        let Some(checkpoint_jws) = batch.checkpoint_jws.clone() else {
            if !batch.events.is_empty() {
                return Err(ServiceError::invalid("checkpoint", "required with entries"));
            }
            let mut conn = self.db.pool.acquire().await?;
            rows::report_lag(&mut conn, &current, batch.head_sequence, batch.next_recorded_at, at).await?;
            return rows::replica(&mut conn, &current.library)
                .await?
                .ok_or_else(|| ServiceError::internal("replica vanished"));
        };
        // The documents of entries whose licence the batch does not carry
        // (held documents never change; checked again under the feed lock).
        let missing: BTreeSet<&str> = {
            let sent: BTreeSet<&str> = batch.licences.iter().map(|l| l.identifier.as_str()).collect();
            batch.events.iter().map(|e| e.event.identifier.as_str()).filter(|id| !sent.contains(id)).collect()
        };
        let mut conn = self.db.pool.acquire().await?;
        let held = std::sync::Arc::new(rows::held_jws(&mut conn, &current.library, &missing).await?);
        drop(conn);
        // The checks against the district's log run on a blocking thread
        // while the rows are written in a transaction, which commits only
        // if they pass.
        let batch = std::sync::Arc::new(batch);
        let checks = tokio::task::spawn_blocking({
            let (current, batch, held) = (current.clone(), batch.clone(), held.clone());
            move || verify_batch(&current, &batch, &checkpoint_jws, &held)
        });
        let mut tx = self.db.begin().await?;
        feed::lock(&mut tx, self.db.engine).await?;
        let written = self.write_batch(&mut tx, &current, &batch, &held, at).await;
        let verified = checks.await.map_err(ServiceError::internal)?;
        let verified = match (verified, written) {
            (Err(Refusal::Rejected(reason)), _) | (Ok(_), Err(Refusal::Rejected(reason))) => {
                drop(tx);
                return self.stop(&current, reason).await;
            }
            (Err(Refusal::Failed(e)), _) | (Ok(_), Err(Refusal::Failed(e))) => return Err(e),
            (Ok(verified), Ok(())) => verified,
        };
        let cosignature = self.log.cosign(&verified.checkpoint);
        rows::record_verified(&mut tx, &current.library, &verified.range, &verified.checkpoint, &cosignature).await?;
        tx.commit().await?;
        if !batch.events.is_empty() {
            self.appended.notify_waiters();
        }
        let mut conn = self.db.pool.acquire().await?;
        rows::replica(&mut conn, &current.library).await?.ok_or_else(|| ServiceError::internal("replica vanished"))
    }

    /// Stops a district's sync with `reason` (its history or data refused).
    async fn stop(&self, current: &Replica, reason: String) -> Result<Replica, ServiceError> {
        let mut conn = self.db.pool.acquire().await?;
        rows::set_state(&mut conn, &current.library, ReplicaState::Stopped, &reason, now()).await?;
        tracing::error!(library = %current.library, %reason, "district batch refused: sync of this district stopped");
        Err(ServiceError::FailedPrecondition(format!(
            "district {} batch refused, its sync is stopped: {reason}",
            current.library
        )))
    }

    /// Writes a batch in the caller's transaction (under the feed lock):
    /// the cursor claimed first (a batch applied twice at once is refused),
    /// the rows (only over this district's own, and never a different
    /// document for a held identifier), the issuers it keeps, and the
    /// entries in the city's feed and log.
    async fn write_batch(
        &self,
        tx: &mut sqlx::AnyConnection,
        current: &Replica,
        batch: &ApplyBatch,
        held_jws: &BTreeMap<String, String>,
        at: OffsetDateTime,
    ) -> Result<(), Refusal> {
        let claimed = rows::claim(
            tx,
            current,
            &rows::Claim {
                cursor: batch.events.last().map_or(current.cursor, |e| u64::try_from(e.event.sequence).unwrap_or(0)),
                head_sequence: batch.head_sequence,
                behind_since: batch.next_recorded_at,
                applied: batch.events.len() as u64,
                at,
            },
        )
        .await?;
        if !claimed {
            return Err(Refusal::Failed(ServiceError::FailedPrecondition(format!(
                "{} was applied or stopped concurrently: read the cursor again",
                current.library
            ))));
        }
        let library = current.library.as_str();
        let sent: BTreeMap<&str, &str> =
            batch.licences.iter().map(|l| (l.identifier.as_str(), l.jws.as_str())).collect();
        let mut held = BTreeSet::new();
        for (id, owner, jws) in rows::held(tx, &sent.keys().copied().collect()).await? {
            if owner.as_deref() != Some(library) {
                let whose = owner.as_deref().map_or("the city's own".to_owned(), |o| format!("district {o}'s"));
                return rejected(format!("licence {id} is {whose} here"));
            }
            if sent.get(id.as_str()).is_some_and(|j| *j != jws) {
                return rejected(format!("licence {id} comes with another document than the one held"));
            }
            held.insert(id);
        }
        let issuers: BTreeSet<&str> = batch.licences.iter().map(|l| l.issuer_code.as_str()).collect();
        for issuer in issuers {
            match rows::issuer_keeper(tx, issuer).await? {
                Some(d) if d == library => {}
                Some(d) => return rejected(format!("issuer {issuer}'s licences are kept by district {d}")),
                None if rows::holds_own_licences_of(tx, issuer).await? => {
                    return rejected(format!("issuer {issuer}'s licences are the city's own here"));
                }
                None => rows::register_issuer(tx, issuer, library, at).await?,
            }
        }
        let written = rows::upsert_licences(tx, library, &batch.licences, &held).await?;
        if written != batch.licences.len() as u64 {
            return rejected(format!(
                "{} of {} licence rows could not be written over what the city holds",
                batch.licences.len() as u64 - written.min(batch.licences.len() as u64),
                batch.licences.len()
            ));
        }
        rows::append_replica_events(tx, library, &batch.events, &batch.licences, held_jws).await?;
        Ok(())
    }
}

/// Checks a batch against the district's log (see the module docs).
fn verify_batch(
    current: &Replica,
    batch: &ApplyBatch,
    jws: &str,
    held: &BTreeMap<String, String>,
) -> Result<Verified, Refusal> {
    let key = match log_key(&current.library_jwk) {
        Ok(k) => k,
        Err(e) => return rejected(format!("the pinned log key is unreadable: {e}")),
    };
    if log_key(&batch.library_jwk_json).ok().as_ref() != Some(&key) {
        return rejected(
            "the district's log key is not the one pinned (an administrator re-pins it with `zhengzhao sync resume --repin-log-key`)",
        );
    }
    let checkpoint = verify_checkpoint(jws, &key).or_else(|e| rejected(format!("checkpoint: {e}")))?;
    if let Some(last) = &current.checkpoint
        && last.origin != checkpoint.origin
    {
        return rejected(format!("the checkpoint names log {:?}, not {:?}", checkpoint.origin, last.origin));
    }
    // Licences the batch concerns: from the batch, else already replicated.
    let mut jws_of: BTreeMap<&str, &str> = BTreeMap::new();
    let concerned: BTreeSet<&str> = batch.events.iter().map(|e| e.event.identifier.as_str()).collect();
    for l in &batch.licences {
        // Only rows the log vouches for: each concerned by an entry of
        // the batch, its document exactly what its logged signature
        // signed, and the columns the city indexes and answers from
        // what that document says.
        if !concerned.contains(l.identifier.as_str()) {
            return rejected(format!("licence row {} comes with no entry of the batch", l.identifier));
        }
        if let Err(why) = check_licence_row(l) {
            return rejected(format!("licence row {}: {why}", l.identifier));
        }
        if jws_of.insert(&l.identifier, &l.jws).is_some() {
            return rejected(format!("licence row {} sent twice", l.identifier));
        }
    }
    let mut range = current.range.clone();
    let mut cursor = current.cursor;
    for e in &batch.events {
        let seq = u64::try_from(e.event.sequence).unwrap_or(0);
        if seq <= cursor {
            return rejected(format!("entry {seq} does not follow {cursor}: the feed went back"));
        }
        cursor = seq;
        if e.log_index != range.size() {
            return rejected(format!(
                "entry {seq} has log index {} where the rebuilt log has {} leaves: an entry is missing or out of order",
                e.log_index,
                range.size()
            ));
        }
        let jws = jws_of
            .get(e.event.identifier.as_str())
            .copied()
            .or_else(|| held.get(&e.event.identifier).map(String::as_str))
            .ok_or_else(|| {
                Refusal::Rejected(format!("entry {seq} concerns licence {} that was never sent", e.event.identifier))
            })?;
        range.push(LogLeaf::of(&e.event, e.log_index, jws).hash());
    }
    if checkpoint.tree_size < range.size() {
        return rejected(format!(
            "the checkpoint covers {} leaves but the entries reach {}",
            checkpoint.tree_size,
            range.size()
        ));
    }
    let prefix_ok = if checkpoint.tree_size == range.size() {
        checkpoint.root_hash == range.root()
    } else {
        range.size() == 0
            || verify_consistency(
                range.size(),
                checkpoint.tree_size,
                &range.root(),
                &checkpoint.root_hash,
                &batch.proof_from_batch,
            )
    };
    if !prefix_ok {
        return rejected(format!(
            "the entries up to leaf {} do not rebuild the district's signed log (checkpoint of {} leaves): its history differs from what it logged",
            range.size(),
            checkpoint.tree_size
        ));
    }
    if let Some(last) = &current.checkpoint {
        let consistent = if checkpoint.tree_size < last.tree_size {
            false
        } else if checkpoint.tree_size == last.tree_size {
            checkpoint.root_hash == last.root_hash
        } else {
            verify_consistency(
                last.tree_size,
                checkpoint.tree_size,
                &last.root_hash,
                &checkpoint.root_hash,
                &batch.proof_from_last,
            )
        };
        if !consistent {
            return rejected(format!(
                "the district's checkpoint of {} leaves is not consistent with the one of {} leaves the city accepted",
                checkpoint.tree_size, last.tree_size
            ));
        }
    }
    Ok(Verified { range, checkpoint })
}

/// The entries, in order, and the licences they concern, up to about
/// `max_bytes` on the wire (at least one entry): licences are read a chunk
/// at a time, so a batch cut short reads no more rows than it sends. Also
/// when the first entry left out was recorded.
async fn within_bytes(
    conn: &mut sqlx::AnyConnection,
    mut events: Vec<ReplicaEvent>,
    max_bytes: usize,
) -> Result<(Vec<ReplicaEvent>, Vec<ReplicaLicence>, Option<OffsetDateTime>), ServiceError> {
    use prost::Message as _;
    const CHUNK: usize = 256;
    let mut seen = BTreeSet::new();
    let order: Vec<String> =
        events.iter().map(|e| e.event.identifier.clone()).filter(|id| seen.insert(id.clone())).collect();
    let mut fetched: std::collections::HashMap<String, ReplicaLicence> = std::collections::HashMap::new();
    let mut fetched_upto = 0;
    let mut licences = Vec::new();
    let mut sent = BTreeSet::new();
    let mut size = 0;
    for (i, e) in events.iter().enumerate() {
        let id = e.event.identifier.as_str();
        if !sent.contains(id) && !fetched.contains_key(id) && fetched_upto < order.len() {
            let end = (fetched_upto + CHUNK).min(order.len());
            let chunk: BTreeSet<&str> = order[fetched_upto..end].iter().map(String::as_str).collect();
            fetched.extend(rows::replica_licences(conn, &chunk).await?.into_iter().map(|l| (l.identifier.clone(), l)));
            fetched_upto = end;
        }
        let licence = if sent.contains(id) { None } else { fetched.remove(id) };
        let wire =
            zhengzhao_proto::issuance::v1::ReplicaEvent { event: Some((&e.event).into()), log_index: e.log_index };
        let add = wire.encoded_len() + licence.as_ref().map_or(0, |l| l.encoded_len()) + 16;
        if i > 0 && size + add > max_bytes {
            let cut_at = Some(e.event.recorded_at);
            events.truncate(i);
            return Ok((events, licences, cut_at));
        }
        size += add;
        if let Some(l) = licence {
            sent.insert(l.identifier.clone());
            licences.push(l);
        }
    }
    Ok((events, licences, None))
}

/// Whether a district's licence row is what its signed document says: the
/// identifier's parts, the document's fields the city indexes and answers
/// from, and numbers and times the city can store.
fn check_licence_row(l: &ReplicaLicence) -> Result<(), String> {
    let id = LicenceId::parse_allowing_legacy(&l.identifier).map_err(|e| format!("malformed identifier: {e}"))?;
    if id.issuer().as_str() != l.issuer_code
        || id.type_code().as_str() != l.type_code
        || id.serial() != l.serial
        || u64::from(id.version()) != l.version
    {
        return Err("its issuer, type, serial or version is not its identifier's".into());
    }
    let signed = zhengzhao_crypto::jws::parse(&l.jws).map_err(|e| format!("unreadable signature: {e}"))?;
    if signed.payload != l.document_json.as_bytes() {
        return Err("the document is not what its signature signed".into());
    }
    let doc: LicenceDocument =
        serde_json::from_str(&l.document_json).map_err(|e| format!("unreadable document: {e}"))?;
    // Held documents are canonical (verification relies on it).
    if doc.canonical_bytes().ok().as_deref() != Some(l.document_json.as_bytes()) {
        return Err("its document is not in canonical form (RFC 8785)".into());
    }
    if doc.identifier != l.identifier
        || doc.type_code != l.type_code
        || doc.issuer.code != l.issuer_code
        || doc.template_version != l.template_version
        || doc.holder.id_type_code != l.holder_id_type
        || doc.holder.id_number != l.holder_id_number
        || doc.valid_until.as_deref().unwrap_or_default() != l.valid_until
        || doc.replaces.as_deref().unwrap_or_default() != l.replaces
    {
        return Err("its columns are not what its signed document says".into());
    }
    if LicenceStatus::from_name(&l.status).is_none() {
        return Err(format!("unknown status {:?}", l.status));
    }
    for (field, t) in [("recorded_at", &l.recorded_at), ("updated_at", &l.updated_at)] {
        stored_timestamp(field, &t.unwrap_or_default()).map_err(|e| format!("{field}: {e}"))?;
    }
    for (field, other) in [("superseded_by", &l.superseded_by), ("successor_from", &l.successor_from)] {
        if !other.is_empty() && LicenceId::parse_allowing_legacy(other).is_err() {
            return Err(format!("{field} is not an identifier"));
        }
    }
    Ok(())
}

/// A library's log key from its JWK.
fn log_key(jwk: &str) -> Result<Es256PublicKey, String> {
    let value: serde_json::Value = serde_json::from_str(jwk).map_err(|e| e.to_string())?;
    Es256PublicKey::from_jwk(&value).map_err(|e| e.to_string())
}

/// A replica row read back.
pub(crate) fn replica_from_row(row: &sqlx::any::AnyRow) -> Result<Replica, ServiceError> {
    let bad = |c: &str| ServiceError::internal(format!("unreadable replica {c} in database"));
    let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::internal);
    let o = |c: &str| row.try_get::<Option<String>, _>(c).map_err(ServiceError::internal);
    let u = |c: &str| {
        row.try_get::<i64, _>(c).map_err(ServiceError::internal).and_then(|v| u64::try_from(v).map_err(|_| bad(c)))
    };
    let size = u("tree_size")?;
    let hashes = s("frontier")?
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| hex::decode(h).ok().and_then(|b| <Hash>::try_from(b).ok()).ok_or_else(|| bad("frontier")))
        .collect::<Result<Vec<_>, _>>()?;
    let range = CompactRange::from_parts(size, hashes).ok_or_else(|| bad("frontier"))?;
    let checkpoint = match (o("checkpoint_origin")?, o("checkpoint_root")?, o("checkpoint_jws")?, o("checkpoint_at")?) {
        (Some(origin), Some(root), Some(jws), Some(at)) => Some(Checkpoint {
            origin,
            tree_size: u("checkpoint_size")?,
            root_hash: hex::decode(root).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| bad("checkpoint_root"))?,
            timestamp: parse_time(&at).ok_or_else(|| bad("checkpoint_at"))?,
            jws,
        }),
        _ => None,
    };
    Ok(Replica {
        library: s("library")?,
        cursor: u("cursor")?,
        range,
        library_jwk: s("library_jwk")?,
        checkpoint,
        cosignature: o("cosignature")?,
        state: if s("state")? == "stopped" { ReplicaState::Stopped } else { ReplicaState::Ok },
        reason: s("reason")?,
        head_sequence: u("head_sequence")?,
        behind_since: o("behind_since")?.and_then(|t| parse_time(&t)),
        events_applied: u("events_applied")?,
        updated_at: parse_time(&s("updated_at")?).ok_or_else(|| bad("updated_at"))?,
    })
}

/// The frontier column: subtree roots, hex, comma-separated.
pub(crate) fn frontier_text(range: &CompactRange) -> String {
    range.hashes().iter().map(hex::encode).collect::<Vec<_>>().join(",")
}

/// The time column of a checkpoint.
pub(crate) fn checkpoint_time(c: &Checkpoint) -> String {
    format_time(c.timestamp)
}

/// Event columns with the log index (and, for a replica, the origin's).
pub(crate) fn event_columns(library: Option<&str>) -> String {
    match library {
        None => format!("{EVENT_COLUMNS}, e.log_index AS replica_log_index"),
        Some(_) => {
            EVENT_COLUMNS.replace("e.sequence", "e.origin_sequence AS sequence")
                + ", e.origin_log_index AS replica_log_index"
        }
    }
}
