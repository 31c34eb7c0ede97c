//! A transparency log kept in a service's own database: an append-only
//! RFC 6962/9162 Merkle tree stored as complete subtrees (see
//! `zhengzhao_crypto::merkle`), its size, and checkpoints (signed tree heads)
//! signed by a [`LogSigner`]. Storage and signing only: what a leaf is, who
//! may read the log and when leaves are appended are the service's business.
//!
//! Every function works on an `AnyConnection` (a pooled connection or a
//! transaction) of a database whose schema holds three tables:
//!
//! - `log_nodes`: every complete subtree, keyed by `NodeId::key`
//!   (`level << 48 | index`), with its hash;
//! - `log_state`: one row (`id = 1`), the tree's size;
//! - `log_checkpoints`: the signed checkpoints, one per size.
//!
//! A service creates them in one of its own migrations, with exactly this
//! SQL ([`SQLITE_SCHEMA`] and [`POSTGRES_SCHEMA`] hold the same text). On
//! SQLite:
//!
//! ```sql
#![doc = include_str!("../schema/sqlite.sql")]
//! ```
//!
//! On PostgreSQL:
//!
//! ```sql
#![doc = include_str!("../schema/postgres.sql")]
//! ```
//!
//! Appending: in one transaction, take the log's size ([`lock_for_append`],
//! unless the service already serialises its appends under a lock of its
//! own and reads [`size`]), write whatever the leaves record, then
//! [`append`] the leaf hashes at that size, and commit. Reading: [`root`],
//! [`audit_path`], [`consistency_proof`], and [`checkpoint`], which signs a
//! new checkpoint only when the log has grown since the last one (a JWS of
//! type `zhengzhao_crypto::translog::CHECKPOINT_TYP`, which
//! `zhengzhao_crypto::translog::verify_checkpoint` checks under
//! [`LogSigner::public_jwk`]'s key).

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};
use zhengzhao_crypto::jws;
use zhengzhao_crypto::merkle::{self, NodeId};
use zhengzhao_crypto::translog::{CHECKPOINT_TYP, CheckpointBody};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Engine, format_time, now, parse_time};

pub use zhengzhao_crypto::merkle::Hash;
pub use zhengzhao_crypto::translog::Checkpoint;

/// The log's tables on SQLite, for a service's migration (see the crate docs).
pub const SQLITE_SCHEMA: &str = include_str!("../schema/sqlite.sql");

/// The log's tables on PostgreSQL, for a service's migration (see the crate docs).
pub const POSTGRES_SCHEMA: &str = include_str!("../schema/postgres.sql");

/// The log's tables for `engine`: [`SQLITE_SCHEMA`] or [`POSTGRES_SCHEMA`].
pub fn schema(engine: Engine) -> &'static str {
    match engine {
        Engine::Postgres => POSTGRES_SCHEMA,
        Engine::Sqlite => SQLITE_SCHEMA,
    }
}

/// The log's size (a caller about to append holds a lock that serialises
/// appends: its own, or [`lock_for_append`]'s).
pub async fn size(conn: &mut AnyConnection) -> Result<u64, ServiceError> {
    let n: i64 = sqlx::query_scalar("SELECT tree_size FROM log_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await
        .map_err(ServiceError::internal)?;
    u64::try_from(n).map_err(ServiceError::internal)
}

/// Locks the log for appending until the end of the transaction `conn` is
/// in, and returns its size: where the caller's leaves go.
///
/// For a service that has no lock of its own serialising appends. The
/// caller must be inside a transaction and must [`append`] in that same
/// transaction, at the size returned: the lock ends with the transaction.
/// On PostgreSQL this locks the `log_state` row (`SELECT … FOR UPDATE`), so a
/// concurrent appender waits for the commit and then reads the new size. On
/// SQLite it is a plain read: a write transaction there is already
/// exclusive (and a `zhengzhao_store` pool has one connection).
pub async fn lock_for_append(conn: &mut AnyConnection, engine: Engine) -> Result<u64, ServiceError> {
    match engine {
        Engine::Postgres => {
            let n: i64 = sqlx::query_scalar("SELECT tree_size FROM log_state WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *conn)
                .await
                .map_err(ServiceError::internal)?;
            u64::try_from(n).map_err(ServiceError::internal)
        }
        Engine::Sqlite => size(conn).await,
    }
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

/// Appends `leaves` (leaf hashes) at `size`, the log's current size, read
/// in the same transaction under a lock that serialises appends (see
/// [`lock_for_append`]).
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

/// The consistency proof from size `first` to size `second`: INVALID_ARGUMENT
/// (`second_tree_size`) past the log's size, (`first_tree_size`) when
/// `first` exceeds `second`.
pub async fn consistency_proof(conn: &mut AnyConnection, first: u64, second: u64) -> Result<Vec<Hash>, ServiceError> {
    let n = size(conn).await?;
    if second > n {
        return Err(ServiceError::invalid("second_tree_size", format!("the log has {n} leaves")));
    }
    if first > second {
        return Err(ServiceError::invalid("first_tree_size", "must not exceed second_tree_size"));
    }
    range_hashes(conn, &merkle::consistency_ranges(first, second)).await
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
            x5c: None,
        };
        let input = jws::signing_input(&header, payload);
        jws::assemble(&input, &self.key.sign(input.as_bytes()))
    }

    /// This log's cosignature of another log's verified checkpoint (a
    /// witness): a JWS of type [`zhengzhao_crypto::translog::COSIGNATURE_TYP`]
    /// over [`zhengzhao_crypto::translog::Cosignature`].
    pub fn cosign(&self, checkpoint: &zhengzhao_crypto::translog::Checkpoint) -> String {
        let body = zhengzhao_crypto::translog::Cosignature::of(checkpoint, &self.origin, now());
        let payload = zhengzhao_core::canonical_json(&body).unwrap_or_default();
        self.sign(zhengzhao_crypto::translog::COSIGNATURE_TYP, &payload)
    }

    /// The public key that verifies the checkpoints, as a JWK under `kid`.
    pub fn public_jwk(&self) -> serde_json::Value {
        self.key.public_key().to_jwk(&self.kid)
    }
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner").field("origin", &self.origin).finish()
    }
}

/// The latest checkpoint, signing (with `signer`) and storing a new one when
/// the log has grown since the last. Two callers signing the same size at
/// once both return the one stored first.
pub async fn checkpoint(conn: &mut AnyConnection, signer: &LogSigner) -> Result<Checkpoint, ServiceError> {
    let n = size(conn).await?;
    if let Some(c) = stored_checkpoint(conn, n).await? {
        return Ok(c);
    }
    let root = root(conn, n).await?;
    let at = now();
    let body = CheckpointBody::new(&signer.origin, n, &root, at);
    let payload = zhengzhao_core::canonical_json(&body).map_err(ServiceError::internal)?;
    let signed = signer.sign(CHECKPOINT_TYP, &payload);
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
            stored_checkpoint(conn, n).await?.ok_or_else(|| ServiceError::internal("checkpoint vanished"))
        }
        Err(e) => Err(ServiceError::internal(e)),
    }
}

/// The stored checkpoint at size `n`, if one was signed.
pub async fn stored_checkpoint(conn: &mut AnyConnection, n: u64) -> Result<Option<Checkpoint>, ServiceError> {
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

#[cfg(test)]
mod tests;
