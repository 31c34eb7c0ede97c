//! The change feed: every lifecycle event is appended in the same transaction
//! as the state change it records, under a feed lock so that sequence numbers
//! become visible in order (a reader at cursor N never misses a smaller
//! sequence committed later). Readers resume exactly from a cursor.

use sqlx::AnyConnection;
use time::OffsetDateTime;
use zhengzhao_core::{LicenceStatus, LifecycleAction};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Engine, format_time};

use crate::record::{EVENT_COLUMNS, EventDetails, FeedEntry, event_from_row, readable};
use crate::translog::{self, LogLeaf};

/// Advisory lock key serialising feed appends on PostgreSQL ("ZZFEED").
const FEED_LOCK: i64 = 0x5A5A_4645_4544;

/// Takes the feed lock for the rest of the transaction (PostgreSQL; SQLite
/// has a single writer already).
pub(crate) async fn lock(conn: &mut AnyConnection, engine: Engine) -> Result<(), ServiceError> {
    if engine == Engine::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FEED_LOCK)
            .execute(&mut *conn)
            .await
            .map_err(ServiceError::internal)?;
    }
    Ok(())
}

/// An event to append.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent<'a> {
    pub identifier: &'a str,
    pub action: LifecycleAction,
    pub status_after: LicenceStatus,
    pub actor: &'a str,
    pub reason: &'a str,
    pub details: EventDetails,
    pub backfill: bool,
    pub occurred_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
    /// The licence's JWS, whose digest the event's log leaf carries.
    pub jws: &'a str,
}

impl NewEvent<'_> {
    /// The event's transparency-log leaf at `log_index`.
    pub(crate) fn leaf(&self, log_index: u64) -> LogLeaf {
        LogLeaf {
            log_index,
            identifier: self.identifier.to_owned(),
            kind: self.action.name().to_owned(),
            status_after: self.status_after.name().to_owned(),
            actor: self.actor.to_owned(),
            reason: self.reason.to_owned(),
            details: self.details.clone(),
            backfill: self.backfill,
            occurred_at: format_time(self.occurred_at),
            recorded_at: format_time(self.recorded_at),
            jws_sha256: translog::jws_digest(self.jws),
        }
    }
}

/// Appends one event and its transparency-log leaf (the caller holds the
/// feed lock).
pub(crate) async fn append(conn: &mut AnyConnection, e: &NewEvent<'_>) -> Result<(), ServiceError> {
    let index = translog::size(conn).await?;
    let leaf = e.leaf(index);
    sqlx::query(
        "INSERT INTO licence_events (identifier, kind, status_after, actor, reason, details_json, backfill, occurred_at, recorded_at, log_index)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(e.identifier)
    .bind(e.action.name())
    .bind(e.status_after.name())
    .bind(e.actor)
    .bind(e.reason)
    .bind(serde_json::to_string(&e.details).map_err(ServiceError::internal)?)
    .bind(i64::from(e.backfill))
    .bind(format_time(e.occurred_at))
    .bind(format_time(e.recorded_at))
    .bind(i64::try_from(index).map_err(ServiceError::internal)?)
    .execute(&mut *conn)
    .await
    .map_err(ServiceError::internal)?;
    translog::append(conn, index, &[leaf.hash()]).await
}

/// Up to `limit` feed entries after `after`, in order.
pub(crate) async fn read(conn: &mut AnyConnection, after: i64, limit: i64) -> Result<Vec<FeedEntry>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {EVENT_COLUMNS}, l.type_code, l.issuer_code FROM licence_events e
         JOIN licences l ON l.identifier = e.identifier
         WHERE e.sequence > $1 ORDER BY e.sequence LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await
    .map_err(ServiceError::internal)?;
    Ok(readable(&rows, |r| {
        use sqlx::Row;
        Ok(FeedEntry {
            event: event_from_row(r)?,
            type_code: r.try_get("type_code").map_err(ServiceError::internal)?,
            issuer_code: r.try_get("issuer_code").map_err(ServiceError::internal)?,
        })
    }))
}
