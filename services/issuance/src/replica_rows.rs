//! The SQL of district-to-city sync (see `replica`).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use zhengzhao_crypto::merkle::CompactRange;
use zhengzhao_crypto::translog::{Checkpoint, LogLeaf};
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::convert::{stored_timestamp, timestamp};
use zhengzhao_proto::issuance::v1::ReplicaLicence;
use zhengzhao_store::{format_time, parse_time};

use crate::record::event_from_row;
use crate::replica::{
    Replica, ReplicaEvent, ReplicaState, checkpoint_time, event_columns, frontier_text, replica_from_row,
};
use crate::translog;
use crate::write::{MAX_ROWS_PER_STATEMENT, values_list};

fn big(v: u64, what: &str) -> Result<i64, ServiceError> {
    i64::try_from(v).map_err(|_| ServiceError::invalid(what, "too large"))
}

/// Feed entries after `after` (own feed), or the replica of `library` after
/// its origin sequence `after`. An unreadable row ends the batch before it:
/// replication never skips an entry (the city would see a gap and stop).
pub(crate) async fn replica_events(
    conn: &mut AnyConnection,
    library: Option<&str>,
    after: i64,
    limit: i64,
) -> Result<Vec<ReplicaEvent>, ServiceError> {
    let columns = event_columns(library);
    let rows = match library {
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {columns} FROM licence_events e WHERE e.sequence > $1 ORDER BY e.sequence LIMIT $2"
            )))
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(l) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {columns} FROM licence_events e WHERE e.origin_library = $3 AND e.origin_sequence > $1
                 ORDER BY e.origin_sequence LIMIT $2"
            )))
            .bind(after)
            .bind(limit)
            .bind(l)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let index: Option<i64> = row.try_get("replica_log_index").map_err(ServiceError::internal)?;
        match (event_from_row(row), index.and_then(|i| u64::try_from(i).ok())) {
            (Ok(event), Some(log_index)) => out.push(ReplicaEvent { event, log_index }),
            (Err(e), _) => {
                tracing::error!(error = %e, "an unreadable feed entry ends the replication batch");
                break;
            }
            (Ok(event), None) => {
                tracing::error!(
                    sequence = event.sequence,
                    "a feed entry without a log index ends the replication batch"
                );
                break;
            }
        }
    }
    Ok(out)
}

const REPLICA_COLUMNS: &str = "identifier, type_code, issuer_code, serial, version, template_version, holder_id_type, \
    holder_id_number, status, valid_until, document_json, jws, key_id, recorded_at, updated_at, replaces, \
    superseded_by, successor_from, reported_lost, mortgaged, source_key, legacy_identifier, standard_check, \
    last_check_kind, last_check_result, last_check_invalidates";
const REPLICA_COLUMN_COUNT: usize = 26;

fn licence_from_row(row: &sqlx::any::AnyRow) -> Result<ReplicaLicence, ServiceError> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::internal);
    let o =
        |c: &str| row.try_get::<Option<String>, _>(c).map_err(ServiceError::internal).map(Option::unwrap_or_default);
    let i = |c: &str| row.try_get::<i64, _>(c).map_err(ServiceError::internal);
    let t = |c: &str| {
        s(c).and_then(|v| parse_time(&v).ok_or_else(|| ServiceError::internal(format!("unreadable {c}"))))
            .map(timestamp)
    };
    Ok(ReplicaLicence {
        identifier: s("identifier")?,
        type_code: s("type_code")?,
        issuer_code: s("issuer_code")?,
        serial: s("serial")?,
        version: u64::try_from(i("version")?).map_err(ServiceError::internal)?,
        template_version: u32::try_from(i("template_version")?).map_err(ServiceError::internal)?,
        holder_id_type: s("holder_id_type")?,
        holder_id_number: s("holder_id_number")?,
        status: s("status")?,
        valid_until: o("valid_until")?,
        document_json: s("document_json")?,
        jws: s("jws")?,
        key_id: s("key_id")?,
        recorded_at: Some(t("recorded_at")?),
        updated_at: Some(t("updated_at")?),
        replaces: o("replaces")?,
        superseded_by: o("superseded_by")?,
        successor_from: o("successor_from")?,
        reported_lost: i("reported_lost")? != 0,
        mortgaged: i("mortgaged")? != 0,
        source_key: o("source_key")?,
        legacy_identifier: i("legacy_identifier")? != 0,
        standard_check: o("standard_check")?,
        last_check_kind: o("last_check_kind")?,
        last_check_result: o("last_check_result")?,
        last_check_invalidates: i("last_check_invalidates")? != 0,
    })
}

/// The licence rows named, as held.
pub(crate) async fn replica_licences(
    conn: &mut AnyConnection,
    ids: &BTreeSet<&str>,
) -> Result<Vec<ReplicaLicence>, ServiceError> {
    let ids: Vec<&str> = ids.iter().copied().collect();
    let mut out = Vec::with_capacity(ids.len());
    for part in ids.chunks(MAX_ROWS_PER_STATEMENT) {
        let marks: Vec<String> = (1..=part.len()).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT {REPLICA_COLUMNS} FROM licences WHERE identifier IN ({})", marks.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in part {
            q = q.bind(*id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            out.push(licence_from_row(&row)?);
        }
    }
    Ok(out)
}

/// The feed's head, and when the first entry after `last` was recorded.
pub(crate) async fn feed_head(
    conn: &mut AnyConnection,
    library: Option<&str>,
    last: i64,
) -> Result<(i64, Option<OffsetDateTime>), ServiceError> {
    let (head, next): (Option<i64>, Option<String>) = match library {
        None => {
            sqlx::query_as(
                "SELECT (SELECT MAX(sequence) FROM licence_events),
                        (SELECT recorded_at FROM licence_events WHERE sequence > $1 ORDER BY sequence LIMIT 1)",
            )
            .bind(last)
            .fetch_one(&mut *conn)
            .await?
        }
        Some(l) => {
            sqlx::query_as(
                "SELECT (SELECT MAX(origin_sequence) FROM licence_events WHERE origin_library = $2),
                        (SELECT recorded_at FROM licence_events WHERE origin_library = $2 AND origin_sequence > $1
                         ORDER BY origin_sequence LIMIT 1)",
            )
            .bind(last)
            .bind(l)
            .fetch_one(&mut *conn)
            .await?
        }
    };
    Ok((head.unwrap_or(0), next.and_then(|t| parse_time(&t))))
}

const REPLICA_STATE_COLUMNS: &str = "library, cursor, tree_size, frontier, library_jwk, checkpoint_origin, checkpoint_size, \
    checkpoint_root, checkpoint_jws, checkpoint_at, cosignature, state, reason, head_sequence, behind_since, \
    events_applied, updated_at";

pub(crate) async fn replicas(conn: &mut AnyConnection, library: Option<&str>) -> Result<Vec<Replica>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {REPLICA_STATE_COLUMNS} FROM replicas WHERE ($1 = '' OR library = $1) ORDER BY library"
    )))
    .bind(library.unwrap_or(""))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(replica_from_row).collect()
}

pub(crate) async fn replica(conn: &mut AnyConnection, library: &str) -> Result<Option<Replica>, ServiceError> {
    Ok(replicas(conn, Some(library)).await?.into_iter().next())
}

/// Starts a district's replica (a concurrent start is harmless).
pub(crate) async fn insert_replica(
    conn: &mut AnyConnection,
    library: &str,
    jwk: &str,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO replicas (library, cursor, tree_size, frontier, library_jwk, state, reason, head_sequence,
            events_applied, updated_at)
         VALUES ($1, 0, 0, '', $2, 'ok', '', 0, 0, $3) ON CONFLICT (library) DO NOTHING",
    )
    .bind(library)
    .bind(jwk)
    .bind(format_time(at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets a district's state; false if there is no such replica.
pub(crate) async fn set_state(
    conn: &mut AnyConnection,
    library: &str,
    state: ReplicaState,
    reason: &str,
    at: OffsetDateTime,
) -> Result<bool, ServiceError> {
    let name = match state {
        ReplicaState::Ok => "ok",
        ReplicaState::Stopped => "stopped",
    };
    let done = sqlx::query("UPDATE replicas SET state = $1, reason = $2, updated_at = $3 WHERE library = $4")
        .bind(name)
        .bind(reason)
        .bind(format_time(at))
        .bind(library)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Records how far the district's feed has gone (no entries applied).
pub(crate) async fn report_lag(
    conn: &mut AnyConnection,
    current: &Replica,
    head: u64,
    behind_since: Option<OffsetDateTime>,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "UPDATE replicas SET head_sequence = $1, behind_since = $2, updated_at = $3 WHERE library = $4 AND cursor = $5",
    )
    .bind(big(head, "head_sequence")?)
    .bind(behind_since.map(format_time))
    .bind(format_time(at))
    .bind(&current.library)
    .bind(big(current.cursor, "cursor")?)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How far a batch moves a replica's cursor.
pub(crate) struct Claim {
    pub cursor: u64,
    pub head_sequence: u64,
    pub behind_since: Option<OffsetDateTime>,
    pub applied: u64,
    pub at: OffsetDateTime,
}

/// Moves the cursor from where `current` read it; false if it moved meanwhile
/// (another sync job) or the replica stopped. First in a batch's transaction,
/// so that a batch applied twice at once is refused before it writes.
pub(crate) async fn claim(conn: &mut AnyConnection, current: &Replica, c: &Claim) -> Result<bool, ServiceError> {
    let done = sqlx::query(
        "UPDATE replicas SET cursor = $1, head_sequence = $2, behind_since = $3,
            events_applied = events_applied + $4, updated_at = $5
         WHERE library = $6 AND cursor = $7 AND state = 'ok' AND COALESCE(checkpoint_size, 0) = $8
            AND tree_size = $9 AND library_jwk = $10",
    )
    .bind(big(c.cursor, "cursor")?)
    .bind(big(c.head_sequence.max(c.cursor), "head_sequence")?)
    .bind(c.behind_since.map(format_time))
    .bind(big(c.applied, "events")?)
    .bind(format_time(c.at))
    .bind(&current.library)
    .bind(big(current.cursor, "cursor")?)
    .bind(big(current.checkpoint.as_ref().map_or(0, |c| c.tree_size), "checkpoint_size")?)
    .bind(big(current.range.size(), "tree_size")?)
    .bind(&current.library_jwk)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the district log the city has verified up to the claimed cursor:
/// the rebuilt tree, the checkpoint and the city's cosignature of it.
pub(crate) async fn record_verified(
    conn: &mut AnyConnection,
    library: &str,
    range: &CompactRange,
    checkpoint: &Checkpoint,
    cosignature: &str,
) -> Result<(), ServiceError> {
    sqlx::query(
        "UPDATE replicas SET tree_size = $1, frontier = $2, checkpoint_origin = $3, checkpoint_size = $4,
            checkpoint_root = $5, checkpoint_jws = $6, checkpoint_at = $7, cosignature = $8
         WHERE library = $9",
    )
    .bind(big(range.size(), "tree_size")?)
    .bind(frontier_text(range))
    .bind(&checkpoint.origin)
    .bind(big(checkpoint.tree_size, "tree_size")?)
    .bind(hex::encode(checkpoint.root_hash))
    .bind(&checkpoint.jws)
    .bind(checkpoint_time(checkpoint))
    .bind(cosignature)
    .bind(library)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The JWS of licences `library` already replicated here.
pub(crate) async fn held_jws(
    conn: &mut AnyConnection,
    library: &str,
    ids: &BTreeSet<&str>,
) -> Result<BTreeMap<String, String>, sqlx::Error> {
    let ids: Vec<&str> = ids.iter().copied().collect();
    let mut out = BTreeMap::new();
    for part in ids.chunks(MAX_ROWS_PER_STATEMENT) {
        let marks: Vec<String> = (2..part.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT identifier, jws FROM licences WHERE origin_library = $1 AND identifier IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql)).bind(library);
        for id in part {
            q = q.bind(*id);
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// The licences named that this library holds at all: identifier, who
/// keeps it (`None`: this library's own; `Some(district)`: a replica) and
/// its JWS.
pub(crate) async fn held(
    conn: &mut AnyConnection,
    ids: &BTreeSet<&str>,
) -> Result<Vec<(String, Option<String>, String)>, sqlx::Error> {
    let ids: Vec<&str> = ids.iter().copied().collect();
    let mut out = Vec::new();
    for part in ids.chunks(MAX_ROWS_PER_STATEMENT) {
        let marks: Vec<String> = (1..=part.len()).map(|i| format!("${i}")).collect();
        let sql =
            format!("SELECT identifier, origin_library, jws FROM licences WHERE identifier IN ({})", marks.join(", "));
        let mut q = sqlx::query_as::<_, (String, Option<String>, String)>(sqlx::AssertSqlSafe(sql));
        for id in part {
            q = q.bind(*id);
        }
        out.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// The district that keeps `issuer`'s licences here, if one does.
pub(crate) async fn issuer_keeper(conn: &mut AnyConnection, issuer: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT library FROM replica_issuers WHERE issuer_code = $1")
        .bind(issuer)
        .fetch_optional(&mut *conn)
        .await
}

/// Whether this library holds licences of `issuer` as its own.
pub(crate) async fn holds_own_licences_of(conn: &mut AnyConnection, issuer: &str) -> Result<bool, sqlx::Error> {
    let any: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM licences WHERE issuer_code = $1 AND origin_library IS NULL LIMIT 1")
            .bind(issuer)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(any.is_some())
}

/// Records that `library` keeps `issuer`'s licences.
pub(crate) async fn register_issuer(
    conn: &mut AnyConnection,
    issuer: &str,
    library: &str,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query("INSERT INTO replica_issuers (issuer_code, library, since) VALUES ($1, $2, $3)")
        .bind(issuer)
        .bind(library)
        .bind(format_time(at))
        .execute(&mut *conn)
        .await
        .map_err(refused)?;
    Ok(())
}

/// Pins `jwk` as a district's log key where none is pinned (after a re-pin).
pub(crate) async fn pin_log_key(conn: &mut AnyConnection, library: &str, jwk: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE replicas SET library_jwk = $1 WHERE library = $2 AND library_jwk = ''")
        .bind(jwk)
        .bind(library)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets a district's pinned log key (the next batch pins its own).
pub(crate) async fn forget_log_key(conn: &mut AnyConnection, library: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE replicas SET library_jwk = '' WHERE library = $1").bind(library).execute(&mut *conn).await?;
    Ok(())
}

/// A constraint the city's database enforces refused the batch: the
/// district's data clashes with what is held here (ALREADY_EXISTS, which
/// the apply turns into a stop), as distinct from a failure to retry.
fn refused(e: sqlx::Error) -> ServiceError {
    // A constraint (unique, foreign key, not null, check), or on PostgreSQL
    // a value it cannot store (SQLSTATE class 22, e.g. a NUL in a text).
    let refusal = e.as_database_error().is_some_and(|d| {
        !matches!(d.kind(), sqlx::error::ErrorKind::Other) || d.code().is_some_and(|c| c.starts_with("22"))
    });
    if refusal || zhengzhao_store::is_unique_violation(&e) {
        ServiceError::AlreadyExists(format!("the city's database refuses it: {e}"))
    } else {
        e.into()
    }
}

/// Inserts or updates `library`'s licence rows as sent (only rows of that
/// library); the number of rows written. Rows not in `held` are plain
/// inserts (most rows, catching up); the others update the state columns.
pub(crate) async fn upsert_licences(
    conn: &mut AnyConnection,
    library: &str,
    licences: &[ReplicaLicence],
    held: &BTreeSet<String>,
) -> Result<u64, ServiceError> {
    let (old, new): (Vec<&ReplicaLicence>, Vec<&ReplicaLicence>) =
        licences.iter().partition(|l| held.contains(&l.identifier));
    let columns = REPLICA_COLUMN_COUNT + 1;
    let mut written = 0;
    for (rows, on_conflict) in [
        (new, ""),
        (
            old,
            " ON CONFLICT (identifier) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at,
                superseded_by = excluded.superseded_by, successor_from = excluded.successor_from,
                reported_lost = excluded.reported_lost, mortgaged = excluded.mortgaged,
                last_check_kind = excluded.last_check_kind, last_check_result = excluded.last_check_result,
                last_check_invalidates = excluded.last_check_invalidates
             WHERE licences.origin_library = excluded.origin_library",
        ),
    ] {
        for part in rows.chunks(MAX_ROWS_PER_STATEMENT / 2) {
            let sql = format!(
                "INSERT INTO licences ({REPLICA_COLUMNS}, origin_library) VALUES {}{on_conflict}",
                values_list(part.len(), columns)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for l in part {
                q = bind_licence(q, l)?.bind(library.to_owned());
            }
            written += q.execute(&mut *conn).await.map_err(refused)?.rows_affected();
        }
    }
    Ok(written)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds a licence row's columns in [`REPLICA_COLUMNS`] order.
fn bind_licence<'q>(q: AnyQuery<'q>, l: &ReplicaLicence) -> Result<AnyQuery<'q>, ServiceError> {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let time = |t: &Option<prost_types::Timestamp>, f: &str| -> Result<String, ServiceError> {
        Ok(format_time(stored_timestamp(f, &t.unwrap_or_default())?))
    };
    Ok(q.bind(l.identifier.clone())
        .bind(l.type_code.clone())
        .bind(l.issuer_code.clone())
        .bind(l.serial.clone())
        .bind(big(l.version, "version")?)
        .bind(i64::from(l.template_version))
        .bind(l.holder_id_type.clone())
        .bind(l.holder_id_number.clone())
        .bind(l.status.clone())
        .bind(opt(&l.valid_until))
        .bind(l.document_json.clone())
        .bind(l.jws.clone())
        .bind(l.key_id.clone())
        .bind(time(&l.recorded_at, "recorded_at")?)
        .bind(time(&l.updated_at, "updated_at")?)
        .bind(opt(&l.replaces))
        .bind(opt(&l.superseded_by))
        .bind(opt(&l.successor_from))
        .bind(i64::from(l.reported_lost))
        .bind(i64::from(l.mortgaged))
        .bind(opt(&l.source_key))
        .bind(i64::from(l.legacy_identifier))
        .bind(opt(&l.standard_check))
        .bind(opt(&l.last_check_kind))
        .bind(opt(&l.last_check_result))
        .bind(i64::from(l.last_check_invalidates)))
}

/// Appends `library`'s entries to this library's feed and log, in order,
/// with their origin sequence and log index (the caller holds the feed lock).
/// Each entry's licence document comes from the batch, else from `held`
/// (the documents of `library`'s licences already here that entries name).
pub(crate) async fn append_replica_events(
    conn: &mut AnyConnection,
    library: &str,
    events: &[ReplicaEvent],
    licences: &[ReplicaLicence],
    held: &BTreeMap<String, String>,
) -> Result<(), ServiceError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut jws_of: BTreeMap<&str, &str> = held.iter().map(|(id, jws)| (id.as_str(), jws.as_str())).collect();
    jws_of.extend(licences.iter().map(|l| (l.identifier.as_str(), l.jws.as_str())));
    const COLUMNS: &str = "identifier, kind, status_after, actor, reason, details_json, backfill, occurred_at, \
        recorded_at, log_index, origin_library, origin_sequence, origin_log_index";
    const COUNT: usize = 13;
    let start = translog::size(conn).await?;
    let mut leaves = Vec::with_capacity(events.len());
    for (i, part) in events.chunks(MAX_ROWS_PER_STATEMENT / 2).enumerate() {
        let sql = format!("INSERT INTO licence_events ({COLUMNS}) VALUES {}", values_list(part.len(), COUNT));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (j, r) in part.iter().enumerate() {
            let e = &r.event;
            let index = start + (i * (MAX_ROWS_PER_STATEMENT / 2) + j) as u64;
            let jws = jws_of
                .get(e.identifier.as_str())
                .ok_or_else(|| ServiceError::internal(format!("no licence {} for a replicated entry", e.identifier)))?;
            leaves.push(LogLeaf::of(e, index, jws).hash());
            q = q
                .bind(e.identifier.clone())
                .bind(e.kind.name())
                .bind(e.status_after.name())
                .bind(e.actor.clone())
                .bind(e.reason.clone())
                .bind(serde_json::to_string(&e.details).map_err(ServiceError::internal)?)
                .bind(i64::from(e.backfill))
                .bind(format_time(e.occurred_at))
                .bind(format_time(e.recorded_at))
                .bind(big(index, "log_index")?)
                .bind(library.to_owned())
                .bind(e.sequence)
                .bind(big(r.log_index, "log_index")?);
        }
        q.execute(&mut *conn).await.map_err(refused)?;
    }
    translog::append(conn, start, &leaves).await
}
