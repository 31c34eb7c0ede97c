//! The one write path of licences and their events: single issue, change,
//! renewal, replacement and bulk import all insert licences with
//! [`insert_licences`] and append their feed events (each with its
//! transparency-log leaf) with [`append_events`], one row or many, in the
//! caller's transaction under the feed lock.

use std::collections::BTreeSet;

use sqlx::AnyConnection;
use time::OffsetDateTime;
use zhengzhao_core::{LicenceDocument, LicenceId, LicenceState};
use zhengzhao_crypto::published::Signed;
use zhengzhao_proto::ServiceError;
use zhengzhao_store::format_time;

use crate::feed::NewEvent;
use crate::translog;

/// Rows per INSERT statement (PostgreSQL allows 65,535 bound values).
pub(crate) const MAX_ROWS_PER_STATEMENT: usize = 1000;

/// A licence to insert.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewLicence<'a> {
    pub doc: &'a LicenceDocument,
    /// The document's canonical JSON (what was signed).
    pub canonical: &'a [u8],
    pub signed: &'a Signed,
    pub state: LicenceState,
    /// An aggregated historical licence: its source system's key.
    pub source_key: Option<&'a str>,
    /// An identifier kept verbatim with a non-standard check character: the standard one.
    pub standard_check: Option<char>,
}

const LICENCE_COLUMNS: &str = "identifier, type_code, issuer_code, serial, version, template_version, holder_id_type, \
    holder_id_number, status, valid_until, document_json, jws, key_id, recorded_at, updated_at, replaces, \
    reported_lost, mortgaged, source_key, legacy_identifier, standard_check";
const LICENCE_COLUMN_COUNT: usize = 21;

/// Inserts `licences`, skipping any that collides with one already held
/// (same identifier, serial and version, or source key); returns the
/// identifiers inserted.
pub(crate) async fn insert_licences(
    conn: &mut AnyConnection,
    licences: &[NewLicence<'_>],
    at: OffsetDateTime,
) -> Result<BTreeSet<String>, ServiceError> {
    let at = format_time(at);
    let mut inserted = BTreeSet::new();
    for part in licences.chunks(MAX_ROWS_PER_STATEMENT / 2) {
        let sql = format!(
            "INSERT INTO licences ({LICENCE_COLUMNS}) VALUES {} ON CONFLICT DO NOTHING RETURNING identifier",
            values_list(part.len(), LICENCE_COLUMN_COUNT)
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for l in part {
            let version = LicenceId::parse_allowing_legacy(&l.doc.identifier)
                .map(|id| i64::from(id.version()))
                .map_err(|e| ServiceError::internal(format!("identifier {}: {e}", l.doc.identifier)))?;
            q = q
                .bind(l.doc.identifier.clone())
                .bind(l.doc.type_code.clone())
                .bind(l.doc.issuer.code.clone())
                .bind(l.doc.licence_number.clone())
                .bind(version)
                .bind(i64::from(l.doc.template_version))
                .bind(l.doc.holder.id_type_code.clone())
                .bind(l.doc.holder.id_number.clone())
                .bind(l.state.status.name())
                .bind(l.doc.valid_until.clone())
                .bind(String::from_utf8(l.canonical.to_vec()).map_err(ServiceError::internal)?)
                .bind(l.signed.jws.clone())
                .bind(l.signed.key_id.clone())
                .bind(at.clone())
                .bind(at.clone())
                .bind(l.doc.replaces.clone())
                .bind(i64::from(l.state.lost))
                .bind(i64::from(l.state.mortgaged))
                .bind(l.source_key.map(str::to_owned))
                .bind(i64::from(l.standard_check.is_some()))
                .bind(l.standard_check.map(String::from));
        }
        inserted.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(inserted)
}

const EVENT_COLUMNS: &str =
    "identifier, kind, status_after, actor, reason, details_json, backfill, occurred_at, recorded_at, log_index";
const EVENT_COLUMN_COUNT: usize = 10;

/// Events appended in a transaction, counted in the metrics
/// (`zhengzhao_licence_events_total`) once it commits.
#[must_use = "count the events once the transaction commits"]
pub(crate) struct Appended(Vec<(&'static str, String, String)>);

impl Appended {
    /// Counts the events: call after the commit.
    pub(crate) fn committed(self) {
        for (event, licence_type, issuer) in self.0 {
            zhengzhao_telemetry::domain::DOMAIN
                .licence_events
                .with_label_values(&[event, licence_type.as_str(), issuer.as_str()])
                .inc();
        }
    }
}

/// Appends `events` to the feed, in order, each with its transparency-log
/// leaf (the caller holds the feed lock).
pub(crate) async fn append_events(conn: &mut AnyConnection, events: &[NewEvent<'_>]) -> Result<Appended, ServiceError> {
    let tally = events
        .iter()
        .map(|e| {
            let (licence_type, issuer) = LicenceId::parse_allowing_legacy(e.identifier).map_or_else(
                |_| ("unknown".to_owned(), "unknown".to_owned()),
                |id| (id.type_code().as_str().to_owned(), id.issuer().as_str().to_owned()),
            );
            (e.action.name(), licence_type, issuer)
        })
        .collect();
    let start = translog::size(conn).await?;
    let mut leaves = Vec::with_capacity(events.len());
    for (i, part) in events.chunks(MAX_ROWS_PER_STATEMENT).enumerate() {
        let sql = format!(
            "INSERT INTO licence_events ({EVENT_COLUMNS}) VALUES {}",
            values_list(part.len(), EVENT_COLUMN_COUNT)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (j, e) in part.iter().enumerate() {
            let index = start + (i * MAX_ROWS_PER_STATEMENT + j) as u64;
            leaves.push(e.leaf(index).hash());
            q = q
                .bind(e.identifier.to_owned())
                .bind(e.action.name())
                .bind(e.status_after.name())
                .bind(e.actor.to_owned())
                .bind(e.reason.to_owned())
                .bind(serde_json::to_string(&e.details).map_err(ServiceError::internal)?)
                .bind(i64::from(e.backfill))
                .bind(format_time(e.occurred_at))
                .bind(format_time(e.recorded_at))
                .bind(i64::try_from(index).map_err(ServiceError::internal)?);
        }
        q.execute(&mut *conn).await?;
    }
    translog::append(conn, start, &leaves).await?;
    Ok(Appended(tally))
}

/// `($1, ..., $c), ($c+1, ...)`: placeholders for `rows` rows of `columns` values.
pub(crate) fn values_list(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let marks: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
            format!("({})", marks.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
