//! The change feed: every lifecycle event is appended in the same transaction
//! as the state change it records, under a feed lock so that sequence numbers
//! become visible in order (a reader at cursor N never misses a smaller
//! sequence committed later). Readers resume exactly from a cursor. Events
//! are written by `write::append_events`, one or many.

use sqlx::AnyConnection;
use time::OffsetDateTime;
use zhengzhao_core::EventRecord;
use zhengzhao_core::{LicenceStatus, LifecycleAction};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::Engine;

use crate::record::{EVENT_COLUMNS, EventDetails, FeedEntry, event_from_row, readable};
use crate::translog::LogLeaf;

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
    /// The event as a record (before the feed gives it a sequence).
    fn record(&self) -> EventRecord {
        EventRecord {
            sequence: 0,
            identifier: self.identifier.to_owned(),
            kind: self.action,
            status_after: self.status_after,
            actor: self.actor.to_owned(),
            reason: self.reason.to_owned(),
            details: self.details.clone(),
            backfill: self.backfill,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
        }
    }

    /// The event's transparency-log leaf at `log_index`: built by the one
    /// constructor every checker uses ([`LogLeaf::of`]).
    pub(crate) fn leaf(&self, log_index: u64) -> LogLeaf {
        LogLeaf::of(&self.record(), log_index, self.jws)
    }
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
