//! The usage log: every use of a licence, granted or refused, written before
//! anything is returned, each record a leaf of the log's own RFC 6962 Merkle
//! tree (the storage issuance's transparency log uses, in the exchange's own
//! database), appended in the record's transaction. Checkpoints are signed by
//! the library's key in the signing service, so anyone holding the JWKS can
//! check them, and an auditor who kept one can prove later that no record
//! was deleted or altered (`zhengzhao audit --usage`).

use serde::{Deserialize, Serialize};
use sha2::Digest;
use sqlx::AnyConnection;
use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_crypto::merkle::{self, Hash};
use zhengzhao_crypto::{b64url, b64url_decode};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, now, parse_time};

use crate::{Exchange, rows};

/// Largest page of the usage log.
pub const MAX_PAGE_SIZE: u32 = 500;
/// The `typ` a usage-log checkpoint's payload carries.
pub const USAGE_CHECKPOINT_TYP: &str = "zhengzhao-usage-checkpoint";

/// One usage-log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub id: i64,
    pub consumer_code: String,
    pub consumer_role: String,
    pub token_id: String,
    pub operator: String,
    /// The gRPC method: FetchLicence, FindLicences or IssueCopy.
    pub method: String,
    pub client_address: String,
    pub identifier: String,
    pub type_code: String,
    pub holder_id_type: String,
    /// [`holder_digest`] of the holder's ID: what queries by holder match.
    pub holder_digest: String,
    pub holder_masked: String,
    pub use_cause: String,
    pub service_item_code: String,
    pub case_number: String,
    pub granted: bool,
    /// Which rule refused (see [`crate::Refusal`]); empty when granted.
    pub refusal_rule: String,
    pub refusal_reason: String,
    pub entry_id: Option<i64>,
    pub copy_id: String,
    pub accessed_at: OffsetDateTime,
    /// The record's leaf index; None only for records not yet logged (never
    /// returned: the service logs them when it starts).
    pub log_index: Option<u64>,
}

/// The leaf of a usage record: the RFC 8785 canonical JSON of every field
/// the record holds, its leaf index included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageLeaf {
    pub log_index: u64,
    pub id: i64,
    pub consumer_code: String,
    pub consumer_role: String,
    pub token_id: String,
    pub operator: String,
    pub method: String,
    pub client_address: String,
    pub identifier: String,
    pub type_code: String,
    pub holder_id_type: String,
    pub holder_digest: String,
    pub holder_masked: String,
    pub use_cause: String,
    pub service_item_code: String,
    pub case_number: String,
    pub decision: String,
    pub refusal_rule: String,
    pub refusal_reason: String,
    pub entry_id: Option<i64>,
    pub copy_id: String,
    pub accessed_at: String,
}

impl UsageLeaf {
    pub fn of(r: &UsageRecord, log_index: u64) -> Self {
        UsageLeaf {
            log_index,
            id: r.id,
            consumer_code: r.consumer_code.clone(),
            consumer_role: r.consumer_role.clone(),
            token_id: r.token_id.clone(),
            operator: r.operator.clone(),
            method: r.method.clone(),
            client_address: r.client_address.clone(),
            identifier: r.identifier.clone(),
            type_code: r.type_code.clone(),
            holder_id_type: r.holder_id_type.clone(),
            holder_digest: r.holder_digest.clone(),
            holder_masked: r.holder_masked.clone(),
            use_cause: r.use_cause.clone(),
            service_item_code: r.service_item_code.clone(),
            case_number: r.case_number.clone(),
            decision: if r.granted { "granted" } else { "refused" }.into(),
            refusal_rule: r.refusal_rule.clone(),
            refusal_reason: r.refusal_reason.clone(),
            entry_id: r.entry_id,
            copy_id: r.copy_id.clone(),
            accessed_at: format_time(r.accessed_at),
        }
    }

    /// The RFC 6962 leaf hash of the canonical JSON.
    pub fn hash(&self) -> Result<Hash, String> {
        let bytes = zhengzhao_core::canonical_json(self).map_err(|e| e.to_string())?;
        Ok(merkle::leaf_hash(&bytes))
    }
}

/// What a holder ID is matched by in the log: lower-case hex SHA-256 of
/// `type|number` (the number as the library stores it). The log never holds
/// the number itself.
pub fn holder_digest(id_type: &str, id_number: &str) -> String {
    hex::encode(sha2::Sha256::digest(format!("{id_type}|{id_number}").as_bytes()))
}

/// A query of the usage log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub identifier: String,
    pub agency_code: String,
    /// [`holder_digest`] of the holder, or empty.
    pub holder_digest: String,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    /// Only granted (true) or refused (false) uses.
    pub granted: Option<bool>,
    /// By log index, oldest first.
    pub oldest_first: bool,
    /// Only uses by agencies: not the holder's own acts through a front end.
    pub agencies_only: bool,
}

/// The body of a usage-log checkpoint, signed as canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageCheckpointBody {
    pub typ: String,
    pub origin: String,
    pub tree_size: u64,
    /// Base64url of the root hash.
    pub root_hash: String,
    pub timestamp: String,
}

/// A signed tree head of the usage log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCheckpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub timestamp: OffsetDateTime,
    pub jws: String,
}

impl UsageCheckpoint {
    /// Reads a checkpoint's payload, unverified: the caller checks the JWS
    /// against the library's key in the JWKS.
    pub fn read(jws: &str) -> Result<Self, String> {
        let parsed = zhengzhao_crypto::jws::parse(jws).map_err(|e| format!("not a checkpoint: {e}"))?;
        let body: UsageCheckpointBody =
            serde_json::from_slice(&parsed.payload).map_err(|e| format!("unreadable checkpoint: {e}"))?;
        if body.typ != USAGE_CHECKPOINT_TYP {
            return Err(format!("not a usage-log checkpoint: typ {:?}", body.typ));
        }
        let root_hash: Hash = b64url_decode(&body.root_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("unreadable checkpoint: root_hash is not 32 base64url bytes")?;
        Ok(UsageCheckpoint {
            origin: body.origin,
            tree_size: body.tree_size,
            root_hash,
            timestamp: parse_time(&body.timestamp).ok_or("unreadable checkpoint: timestamp")?,
            jws: jws.to_owned(),
        })
    }
}

/// What one caller asks the writer to make durable, in one piece.
#[derive(Debug)]
pub(crate) enum Job {
    /// Usage records (a lookup writes one per licence found).
    Records(Vec<UsageRecord>),
    /// An annotated copy's use, the copy, and its download link if asked for.
    Copy { record: Box<UsageRecord>, copy: rows::StoredCopy, link: Option<(String, OffsetDateTime)> },
}

struct Pending {
    job: Job,
    reply: tokio::sync::oneshot::Sender<Result<Vec<UsageRecord>, ServiceError>>,
}

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 256;

/// The usage log's one writer: jobs from concurrent uses are committed
/// together (group commit), each caller answered only once its records are
/// durable. On PostgreSQL the leaf order needs a lock on the tree anyway,
/// and on SQLite every commit waits for the disk: committing what queued
/// up meanwhile in one transaction keeps both off the request path.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: tokio::sync::mpsc::Sender<Pending>,
}

impl Writer {
    pub(crate) fn spawn(db: zhengzhao_store::Db) -> Self {
        let (jobs, mut queue) = tokio::sync::mpsc::channel::<Pending>(4 * MAX_BATCH);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                // Wait for the database first, then take everything that
                // queued up meanwhile (on SQLite the one connection is also
                // what the requests' reads wait for).
                let tx = db.begin().await;
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let jobs: Vec<&Job> = batch.iter().map(|p| &p.job).collect();
                let committed = match tx {
                    Ok(tx) => commit(tx, db.engine, &jobs).await,
                    Err(e) => Err(e.into()),
                };
                match committed {
                    Ok(results) => {
                        for (p, r) in batch.into_iter().zip(results) {
                            let _ = p.reply.send(Ok(r));
                        }
                    }
                    // One bad job must not fail the others: each alone.
                    Err(e) if batch.len() > 1 => {
                        tracing::warn!(error = %e, jobs = batch.len(), "usage-log batch failed; writing its jobs one by one");
                        for p in batch {
                            let r = match db.begin().await {
                                Ok(tx) => {
                                    commit(tx, db.engine, &[&p.job]).await.map(|mut r| r.pop().unwrap_or_default())
                                }
                                Err(e) => Err(e.into()),
                            };
                            let _ = p.reply.send(r);
                        }
                    }
                    Err(e) => {
                        for p in batch {
                            let _ = p.reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Writer { jobs }
    }

    /// Writes `job` durably; returns its records with their ids and leaf indexes.
    pub(crate) async fn write(&self, job: Job) -> Result<Vec<UsageRecord>, ServiceError> {
        let stopped = || ServiceError::internal("the usage-log writer has stopped");
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs.send(Pending { job, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Commits `jobs` in one transaction: every record a leaf, in order.
async fn commit(
    mut tx: zhengzhao_store::Tx,
    engine: zhengzhao_store::Engine,
    jobs: &[&Job],
) -> Result<Vec<Vec<UsageRecord>>, ServiceError> {
    let start = zhengzhao_translog::lock_for_append(&mut tx, engine).await?;
    let mut index = start;
    let mut leaves = Vec::new();
    let mut out = Vec::with_capacity(jobs.len());
    // Each entry's state, read once per commit (a group is mostly one caller's).
    let mut states: std::collections::HashMap<i64, Option<String>> = std::collections::HashMap::new();
    for job in jobs {
        let records: Vec<&UsageRecord> = match job {
            Job::Records(r) => r.iter().collect(),
            Job::Copy { record, .. } => vec![&**record],
        };
        let mut written = Vec::with_capacity(records.len());
        for r in records {
            let mut r = r.clone();
            if let (true, Some(entry)) = (r.granted, r.entry_id) {
                // The entry was effective when the use was decided; if it was
                // suspended or ended since, the use is refused, not granted.
                let state = match states.get(&entry) {
                    Some(known) => known.clone(),
                    None => {
                        let read = rows::entry_state(&mut tx, entry).await?;
                        states.insert(entry, read.clone());
                        read
                    }
                };
                if let Some(state) = state
                    && state != "active"
                {
                    r.granted = false;
                    r.refusal_rule = crate::Refusal::EntryNotEffective.as_str().to_owned();
                    r.refusal_reason = format!("usage-list entry {entry} was {state} while the use was being decided");
                }
            }
            r.id = rows::insert_usage(&mut tx, &r, index).await?;
            r.log_index = Some(index);
            leaves.push(UsageLeaf::of(&r, index).hash().map_err(ServiceError::internal)?);
            index += 1;
            written.push(r);
        }
        if let (Job::Copy { copy, link, .. }, true) = (job, written.iter().all(|r| r.granted)) {
            let usage_id = written.first().map(|r| r.id).unwrap_or_default();
            rows::insert_copy(&mut tx, copy, usage_id, now()).await?;
            if let Some((digest, expires)) = link {
                rows::insert_link(&mut tx, digest, &copy.copy_id, *expires).await?;
            }
        }
        out.push(written);
    }
    zhengzhao_translog::append(&mut tx, start, &leaves).await?;
    tx.commit().await?;
    let uses = &zhengzhao_telemetry::domain::DOMAIN.uses;
    // Uses of licences only: not holders reading their own.
    for r in out.iter().flatten().filter(|r| matches!(r.method.as_str(), "FetchLicence" | "FindLicences" | "IssueCopy"))
    {
        let (decision, rule) = if r.granted { ("granted", "none") } else { ("refused", r.refusal_rule.as_str()) };
        uses.with_label_values(&[r.consumer_code.as_str(), decision, rule]).inc();
    }
    Ok(out)
}

impl Exchange {
    /// Logs every record written before the usage log was a Merkle tree, in
    /// id order, in batches.
    pub(crate) async fn catch_up_log(&self) -> Result<u64, ServiceError> {
        let mut total = 0;
        loop {
            let mut tx = self.db.begin().await?;
            let start = zhengzhao_translog::lock_for_append(&mut tx, self.db.engine).await?;
            let records = rows::unlogged_usage(&mut tx, 1000).await?;
            if records.is_empty() {
                return Ok(total);
            }
            let mut leaves = Vec::with_capacity(records.len());
            for (i, r) in records.iter().enumerate() {
                let index = start + i as u64;
                rows::set_usage_index(&mut tx, r.id, index).await?;
                leaves.push(UsageLeaf::of(r, index).hash().map_err(ServiceError::internal)?);
            }
            zhengzhao_translog::append(&mut tx, start, &leaves).await?;
            tx.commit().await?;
            total += records.len() as u64;
            tracing::info!(records = total, "earlier usage records entered into the usage log");
        }
    }

    /// One page of the usage log and the next page's token.
    pub async fn usage_log(
        &self,
        who: &Principal,
        filter: &UsageFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<UsageRecord>, String), ServiceError> {
        authorize(who, &Action::ReadUsageLog)?;
        self.usage_page(filter, page_size, page_token).await
    }

    /// One page of the usage log (the caller has been authorized).
    pub(crate) async fn usage_page(
        &self,
        filter: &UsageFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<UsageRecord>, String), ServiceError> {
        let size = match page_size {
            0 => 100,
            n if n > MAX_PAGE_SIZE => {
                return Err(ServiceError::invalid("page_size", format!("at most {MAX_PAGE_SIZE}")));
            }
            n => n,
        };
        let cursor = match (page_token, filter.oldest_first) {
            ("", true) => 0,
            ("", false) => i64::MAX,
            (t, _) => t
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ServiceError::invalid("page_token", "not a token this listing returned"))?,
        };
        let mut conn = self.db.pool.acquire().await?;
        let mut records = rows::list_usage(&mut conn, filter, cursor, i64::from(size) + 1).await?;
        let next = if records.len() > size as usize {
            records.truncate(size as usize);
            match records.last() {
                Some(r) if filter.oldest_first => (r.log_index.unwrap_or_default() + 1).to_string(),
                Some(r) => r.id.to_string(),
                None => String::new(),
            }
        } else {
            String::new()
        };
        Ok((records, next))
    }

    /// The usage log's latest checkpoint, signing a new one (with the
    /// library's key, through the signing service) when the log has grown.
    pub async fn usage_checkpoint(&self, who: &Principal) -> Result<UsageCheckpoint, ServiceError> {
        authorize(who, &Action::ReadLog)?;
        let mut conn = self.db.pool.acquire().await?;
        let n = zhengzhao_translog::size(&mut conn).await?;
        if let Some(c) = stored_checkpoint(&mut conn, n).await? {
            return Ok(c);
        }
        let root = zhengzhao_translog::root(&mut conn, n).await?;
        // Not held while the signing service answers: on SQLite it is the
        // connection every writer waits for.
        drop(conn);
        let at = now();
        let body = UsageCheckpointBody {
            typ: USAGE_CHECKPOINT_TYP.into(),
            origin: format!("zhengzhao-usage/{}", self.agency),
            tree_size: n,
            root_hash: b64url(&root),
            timestamp: format_time(at),
        };
        let payload = zhengzhao_core::canonical_json(&body).map_err(ServiceError::internal)?;
        let signed = self.signing.sign(&self.agency, &payload).await?;
        let mut conn = self.db.pool.acquire().await?;
        let inserted =
            sqlx::query("INSERT INTO log_checkpoints (tree_size, root_hash, jws, created_at) VALUES ($1, $2, $3, $4)")
                .bind(i64::try_from(n).map_err(ServiceError::internal)?)
                .bind(root.to_vec())
                .bind(&signed.jws)
                .bind(format_time(at))
                .execute(&mut *conn)
                .await;
        match inserted {
            Ok(_) => UsageCheckpoint::read(&signed.jws).map_err(ServiceError::internal),
            Err(e) if zhengzhao_store::is_unique_violation(&e) => {
                stored_checkpoint(&mut conn, n).await?.ok_or_else(|| ServiceError::internal("checkpoint vanished"))
            }
            Err(e) => Err(ServiceError::internal(e)),
        }
    }

    /// The consistency proof between two sizes of the usage log.
    pub async fn usage_consistency_proof(
        &self,
        who: &Principal,
        first: u64,
        second: u64,
    ) -> Result<Vec<Hash>, ServiceError> {
        authorize(who, &Action::ReadLog)?;
        let mut conn = self.db.pool.acquire().await?;
        zhengzhao_translog::consistency_proof(&mut conn, first, second).await
    }
}

async fn stored_checkpoint(conn: &mut AnyConnection, n: u64) -> Result<Option<UsageCheckpoint>, ServiceError> {
    let jws: Option<String> = sqlx::query_scalar("SELECT jws FROM log_checkpoints WHERE tree_size = $1")
        .bind(i64::try_from(n).map_err(ServiceError::internal)?)
        .fetch_optional(&mut *conn)
        .await?;
    jws.map(|j| UsageCheckpoint::read(&j).map_err(ServiceError::internal)).transpose()
}
