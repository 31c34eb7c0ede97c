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
//! the library key and kept in `log_checkpoints`. That storage and signing
//! is `zhengzhao_translog` (shared with the exchange's usage log), its
//! functions re-exported here; this module adds what is issuance's own: the
//! catch-up of events older than the log, inclusion proofs over
//! `licence_events`, and authorisation. The leaf and the checks anyone can
//! run (checkpoint signature, inclusion) are `zhengzhao_crypto::translog`,
//! re-exported here.

use sqlx::Row;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_crypto::merkle::Hash;
pub use zhengzhao_crypto::translog::{
    CHECKPOINT_TYP, Checkpoint, CheckpointBody, LogLeaf, LoggedEvent, check_inclusion, jws_digest, verify_checkpoint,
};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::Engine;
// Appends here hold the feed lock, so they read `size` rather than
// `zhengzhao_translog::lock_for_append`.
pub use zhengzhao_translog::{LogSigner, append, audit_path, root, size};

use crate::Issuance;
use crate::record::{EVENT_COLUMNS, event_from_row};

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

/// The log's origin: `zhengzhao/<administrator>` for the city (as before
/// federation), `zhengzhao/<administrator>/<library>` for a district, so
/// that each library's log has its own name.
pub fn origin(agency: &str, library: &str) -> String {
    if library == "city" { format!("zhengzhao/{agency}") } else { format!("zhengzhao/{agency}/{library}") }
}

impl Issuance {
    /// The library's public key, which signs checkpoints, as a JWK.
    pub fn log_public_jwk(&self) -> serde_json::Value {
        self.log.public_jwk()
    }

    /// The latest checkpoint, signing a new one when the log has grown.
    pub async fn checkpoint(&self, who: &Principal) -> Result<Checkpoint, ServiceError> {
        authorize(who, &Action::ReadLog)?;
        let mut conn = self.db.pool.acquire().await.map_err(ServiceError::internal)?;
        zhengzhao_translog::checkpoint(&mut conn, &self.log).await
    }

    /// The consistency proof from size `first` to size `second`.
    pub async fn consistency_proof(&self, who: &Principal, first: u64, second: u64) -> Result<Vec<Hash>, ServiceError> {
        authorize(who, &Action::ReadLog)?;
        let mut conn = self.db.pool.acquire().await.map_err(ServiceError::internal)?;
        zhengzhao_translog::consistency_proof(&mut conn, first, second).await
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

#[cfg(test)]
mod tests {
    /// The log's tables in the issuance migration are the shared crate's.
    #[test]
    fn the_migration_creates_the_shared_tables() {
        assert!(
            include_str!("../migrations/sqlite/0005_transparency_log.sql").contains(zhengzhao_translog::SQLITE_SCHEMA)
        );
        assert!(
            include_str!("../migrations/postgres/0005_transparency_log.sql")
                .contains(zhengzhao_translog::POSTGRES_SCHEMA)
        );
    }
}
