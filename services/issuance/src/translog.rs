//! The transparency log of issuance: every lifecycle event (issue, change,
//! renewal, every status change) is a leaf of an append-only RFC 6962/9162
//! Merkle tree, appended in the same transaction as the event under the feed
//! lock, so there is no event without its leaf and leaf order is feed order.
//!
//! A leaf is the RFC 8785 canonical JSON of [`LogLeaf`]: the event as stored
//! plus the SHA-256 of the licence's JWS, so rewriting an event, a licence's
//! signed document or its recorded status behind the service's back no longer
//! matches the log. The tree is stored as complete subtrees (`log_nodes`, see
//! `zhengzhao_crypto::merkle`); checkpoints (size, root, time) are signed by
//! the library key and kept in `log_checkpoints`. The leaf and the checks
//! anyone can run (checkpoint signature, inclusion) are
//! `zhengzhao_crypto::translog`, re-exported here.

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_crypto::jws;
use zhengzhao_crypto::merkle::{self, Hash, NodeId};
pub use zhengzhao_crypto::translog::{
    CHECKPOINT_TYP, Checkpoint, CheckpointBody, LogLeaf, LoggedEvent, check_inclusion, jws_digest, verify_checkpoint,
};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Engine, format_time, now, parse_time};

use crate::Issuance;
use crate::record::{EVENT_COLUMNS, event_from_row};

/// The log's size (the caller holds the feed lock when appending).
pub async fn size(conn: &mut AnyConnection) -> Result<u64, ServiceError> {
    let n: i64 = sqlx::query_scalar("SELECT tree_size FROM log_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await
        .map_err(ServiceError::internal)?;
    u64::try_from(n).map_err(ServiceError::internal)
}

/// Stored nodes by ID.
async fn nodes(conn: &mut AnyConnection, ids: &[NodeId]) -> Result<HashMap<NodeId, Hash>, ServiceError> {
    let mut out = HashMap::with_capacity(ids.len());
    for part in ids.chunks(500) {
        let marks: Vec<String> = (1..=part.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT node_key, hash FROM log_nodes WHERE node_key IN ({})", marks.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for id in part {
            q = q.bind(id.key());
        }
        for row in q.fetch_all(&mut *conn).await.map_err(ServiceError::internal)? {
            let key: i64 = row.try_get("node_key").map_err(ServiceError::internal)?;
            let hash: Vec<u8> = row.try_get("hash").map_err(ServiceError::internal)?;
            let hash: Hash = hash.try_into().map_err(|_| ServiceError::internal("stored log node is not 32 bytes"))?;
            out.insert(NodeId::from_key(key), hash);
        }
    }
    Ok(out)
}

/// Appends `leaves` at `size` (the current size; the caller holds the feed
/// lock). Only the event appends call this; public for the benchmark.
pub async fn append(conn: &mut AnyConnection, size: u64, leaves: &[Hash]) -> Result<(), ServiceError> {
    if leaves.is_empty() {
        return Ok(());
    }
    let edge = nodes(conn, &merkle::frontier(size)).await?;
    let made = merkle::append(size, &edge, leaves)
        .ok_or_else(|| ServiceError::internal("the transparency log's right edge is missing nodes"))?;
    for part in made.chunks(1000) {
        let marks: Vec<String> = (0..part.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
        let sql = format!("INSERT INTO log_nodes (node_key, hash) VALUES {}", marks.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, h) in part {
            q = q.bind(id.key()).bind(h.to_vec());
        }
        q.execute(&mut *conn).await.map_err(ServiceError::internal)?;
    }
    let new_size = i64::try_from(size + leaves.len() as u64).map_err(ServiceError::internal)?;
    sqlx::query("UPDATE log_state SET tree_size = $1 WHERE id = 1")
        .bind(new_size)
        .execute(&mut *conn)
        .await
        .map_err(ServiceError::internal)?;
    Ok(())
}

/// The hashes of `ranges` (proof order) from the stored nodes.
async fn range_hashes(conn: &mut AnyConnection, ranges: &[(u64, u64)]) -> Result<Vec<Hash>, ServiceError> {
    let stored = nodes(conn, &merkle::nodes_for(ranges)).await?;
    let get = |id: NodeId| stored.get(&id).copied();
    ranges
        .iter()
        .map(|&(lo, hi)| {
            merkle::range_hash(lo, hi, &get)
                .ok_or_else(|| ServiceError::internal("the transparency log is missing nodes"))
        })
        .collect()
}

/// The audit path of leaf `index` in the tree of the first `tree_size` leaves.
pub async fn audit_path(conn: &mut AnyConnection, index: u64, tree_size: u64) -> Result<Vec<Hash>, ServiceError> {
    range_hashes(conn, &merkle::inclusion_ranges(index, tree_size)).await
}

/// The root hash of the first `tree_size` leaves.
pub async fn root(conn: &mut AnyConnection, tree_size: u64) -> Result<Hash, ServiceError> {
    range_hashes(conn, &[(0, tree_size)]).await?.pop().ok_or_else(|| ServiceError::internal("no root"))
}

/// Logs every event that has no leaf yet (events recorded before the log
/// existed), in feed order, in batches.
pub(crate) async fn catch_up(pool: &sqlx::AnyPool, engine: Engine) -> Result<u64, ServiceError> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await.map_err(ServiceError::internal)?;
        crate::feed::lock(&mut tx, engine).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS}, l.jws FROM licence_events e JOIN licences l ON l.identifier = e.identifier
             WHERE e.log_index IS NULL ORDER BY e.sequence LIMIT 1000"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(ServiceError::internal)?;
        if rows.is_empty() {
            return Ok(total);
        }
        let start = size(&mut tx).await?;
        let mut leaves = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let event = event_from_row(row)?;
            let jws: String = row.try_get("jws").map_err(ServiceError::internal)?;
            let index = start + i as u64;
            sqlx::query("UPDATE licence_events SET log_index = $1 WHERE sequence = $2")
                .bind(i64::try_from(index).map_err(ServiceError::internal)?)
                .bind(event.sequence)
                .execute(&mut *tx)
                .await
                .map_err(ServiceError::internal)?;
            leaves.push(LogLeaf::of(&event, index, &jws).hash());
        }
        append(&mut tx, start, &leaves).await?;
        tx.commit().await.map_err(ServiceError::internal)?;
        total += rows.len() as u64;
        tracing::info!(events = total, "existing events entered into the transparency log");
    }
}

/// Signs and stores checkpoints with the log's own key (its own `kid`,
/// distinct from any token key: a checkpoint is never a token, nor a token a
/// checkpoint).
pub struct LogSigner {
    pub key: std::sync::Arc<zhengzhao_crypto::Es256KeyPair>,
    /// The key's `kid` in checkpoint headers (`log-…`).
    pub kid: String,
    /// Names the log in its checkpoints, e.g. `zhengzhao/<agency>`.
    pub origin: String,
}

impl LogSigner {
    /// `payload` as a JWS of type `typ`, signed with the log key.
    fn sign(&self, typ: &str, payload: &[u8]) -> String {
        let header = zhengzhao_crypto::JwsHeader {
            alg: "ES256".into(),
            kid: Some(self.kid.clone()),
            typ: Some(typ.into()),
            iat: None,
        };
        let input = jws::signing_input(&header, payload);
        jws::assemble(&input, &self.key.sign(input.as_bytes()))
    }
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner").field("origin", &self.origin).finish()
    }
}

impl Issuance {
    /// The library's public key, which signs checkpoints, as a JWK.
    pub fn log_public_jwk(&self) -> serde_json::Value {
        self.log.key.public_key().to_jwk(&self.log.kid)
    }

    /// The latest checkpoint, signing a new one when the log has grown.
    pub async fn checkpoint(&self, who: &Principal) -> Result<Checkpoint, ServiceError> {
        authorize(who, &Action::ReadLog)?;
        let mut conn = self.db.pool.acquire().await.map_err(ServiceError::internal)?;
        let n = size(&mut conn).await?;
        if let Some(c) = stored_checkpoint(&mut conn, n).await? {
            return Ok(c);
        }
        let root = root(&mut conn, n).await?;
        let at = now();
        let body = CheckpointBody::new(&self.log.origin, n, &root, at);
        let payload = zhengzhao_core::canonical_json(&body).map_err(ServiceError::internal)?;
        let signed = self.log.sign(CHECKPOINT_TYP, &payload);
        let inserted =
            sqlx::query("INSERT INTO log_checkpoints (tree_size, root_hash, jws, created_at) VALUES ($1, $2, $3, $4)")
                .bind(i64::try_from(n).map_err(ServiceError::internal)?)
                .bind(root.to_vec())
                .bind(&signed)
                .bind(format_time(at))
                .execute(&mut *conn)
                .await;
        match inserted {
            Ok(_) => Ok(Checkpoint { origin: body.origin, tree_size: n, root_hash: root, timestamp: at, jws: signed }),
            // Another caller signed this size first: theirs is the checkpoint.
            Err(e) if zhengzhao_store::is_unique_violation(&e) => {
                stored_checkpoint(&mut conn, n).await?.ok_or_else(|| ServiceError::internal("checkpoint vanished"))
            }
            Err(e) => Err(ServiceError::internal(e)),
        }
    }

    /// The consistency proof from size `first` to size `second`.
    pub async fn consistency_proof(&self, who: &Principal, first: u64, second: u64) -> Result<Vec<Hash>, ServiceError> {
        authorize(who, &Action::ReadLog)?;
        let mut conn = self.db.pool.acquire().await.map_err(ServiceError::internal)?;
        let n = size(&mut conn).await?;
        if second > n {
            return Err(ServiceError::invalid("second_tree_size", format!("the log has {n} leaves")));
        }
        if first > second {
            return Err(ServiceError::invalid("first_tree_size", "must not exceed second_tree_size"));
        }
        range_hashes(&mut conn, &merkle::consistency_ranges(first, second)).await
    }

    /// Every logged event of `identifier` within the first `tree_size`
    /// leaves, each rebuilt from what the library holds now, with its audit path.
    pub async fn inclusion_proof(
        &self,
        who: &Principal,
        identifier: &str,
        tree_size: u64,
    ) -> Result<Vec<LoggedEvent>, ServiceError> {
        let licence = self.get(who, identifier).await?;
        let mut conn = self.db.pool.acquire().await.map_err(ServiceError::internal)?;
        let n = size(&mut conn).await?;
        if tree_size > n || tree_size == 0 {
            return Err(ServiceError::invalid("tree_size", format!("1 to the log's {n} leaves")));
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS}, e.log_index FROM licence_events e
             WHERE e.identifier = $1 AND e.log_index < $2 ORDER BY e.log_index"
        )))
        .bind(identifier)
        .bind(i64::try_from(tree_size).map_err(ServiceError::internal)?)
        .fetch_all(&mut *conn)
        .await
        .map_err(ServiceError::internal)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let event = event_from_row(row)?;
            let index: i64 = row.try_get("log_index").map_err(ServiceError::internal)?;
            let index = u64::try_from(index).map_err(ServiceError::internal)?;
            let audit_path = audit_path(&mut conn, index, tree_size).await?;
            out.push(LoggedEvent { leaf: LogLeaf::of(&event, index, &licence.jws), audit_path });
        }
        Ok(out)
    }
}

async fn stored_checkpoint(conn: &mut AnyConnection, n: u64) -> Result<Option<Checkpoint>, ServiceError> {
    let row = sqlx::query("SELECT root_hash, jws, created_at FROM log_checkpoints WHERE tree_size = $1")
        .bind(i64::try_from(n).map_err(ServiceError::internal)?)
        .fetch_optional(&mut *conn)
        .await
        .map_err(ServiceError::internal)?;
    let Some(row) = row else { return Ok(None) };
    let root: Vec<u8> = row.try_get("root_hash").map_err(ServiceError::internal)?;
    let signed: String = row.try_get("jws").map_err(ServiceError::internal)?;
    let at: String = row.try_get("created_at").map_err(ServiceError::internal)?;
    let body = CheckpointBody::read_unverified(&signed)
        .ok_or_else(|| ServiceError::internal("unreadable stored checkpoint"))?;
    Ok(Some(Checkpoint {
        origin: body.origin,
        tree_size: n,
        root_hash: root.try_into().map_err(|_| ServiceError::internal("stored root is not 32 bytes"))?,
        timestamp: parse_time(&at).ok_or_else(|| ServiceError::internal("bad checkpoint time"))?,
        jws: signed,
    }))
}
