//! The change feed: every lifecycle event is appended in the same transaction
//! as the state change it records, under a feed lock so that sequence numbers
//! become visible in order (a reader at cursor N never misses a smaller
//! sequence committed later). Readers resume exactly from a cursor.

use sqlx::AnyConnection;
use time::OffsetDateTime;
use zhengzhao_core::{LicenceStatus, LifecycleAction};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Engine, format_time};

use crate::record::{EVENT_COLUMNS, EventDetails, FeedEntry, event_from_row};
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
}

/// Appends one event and its transparency-log leaf (the caller holds the
/// feed lock; the licence row is already written).
pub(crate) async fn append(conn: &mut AnyConnection, e: &NewEvent<'_>) -> Result<(), ServiceError> {
    let jws: String = sqlx::query_scalar("SELECT jws FROM licences WHERE identifier = $1")
        .bind(e.identifier)
        .fetch_one(&mut *conn)
        .await
        .map_err(ServiceError::internal)?;
    let index = translog::size(conn).await?;
    let leaf = LogLeaf {
        log_index: index,
        identifier: e.identifier.to_owned(),
        kind: e.action.name().to_owned(),
        status_after: e.status_after.name().to_owned(),
        actor: e.actor.to_owned(),
        reason: e.reason.to_owned(),
        details: e.details.clone(),
        backfill: e.backfill,
        occurred_at: format_time(e.occurred_at),
        recorded_at: format_time(e.recorded_at),
        jws_sha256: translog::jws_digest(&jws),
    };
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
    rows.iter()
        .map(|r| {
            use sqlx::Row;
            Ok(FeedEntry {
                event: event_from_row(r)?,
                type_code: r.try_get("type_code").map_err(ServiceError::internal)?,
                issuer_code: r.try_get("issuer_code").map_err(ServiceError::internal)?,
            })
        })
        .collect()
}
