//! The exchange's SQL: usage lists, the usage log, copies and their links.
//! Every function runs on a connection or transaction the caller holds, so
//! one operation is one transaction on both engines.

use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use zhengzhao_auth::Principal;
use zhengzhao_core::date::{format_date, read_date};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Columns, format_time, parse_time};

use crate::model::{Application, ApplicationState, Change, Entry, EntryState, Level, Terms};
use crate::usagelog::{UsageFilter, UsageRecord};

fn bad(what: &str) -> ServiceError {
    ServiceError::internal(format!("unreadable {what} in the exchange database"))
}

fn json_list<T: serde::de::DeserializeOwned>(row: &impl Columns, column: &str) -> Result<Vec<T>, ServiceError> {
    let text = row.text(column)?;
    serde_json::from_str(&text).map_err(|_| bad(column))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, ServiceError> {
    serde_json::to_string(v).map_err(ServiceError::internal)
}

fn time_of(row: &impl Columns, column: &str) -> Result<OffsetDateTime, ServiceError> {
    parse_time(&row.text(column)?).ok_or_else(|| bad(column))
}

fn terms_of(row: &impl Columns) -> Result<Terms, ServiceError> {
    let from = row.text("effective_from")?;
    let until = row.opt_text("effective_until")?;
    Ok(Terms {
        purpose: row.text("purpose")?,
        fields: json_list(row, "fields_json")?,
        all_fields: row.int("all_fields")? != 0,
        from: read_date(&from).map_err(|_| bad("effective_from"))?,
        until: until.map(|u| read_date(&u).map_err(|_| bad("effective_until"))).transpose()?,
    })
}

fn level_of(row: &impl Columns) -> Result<Level, ServiceError> {
    Level::parse(&row.text("level")?).ok_or_else(|| bad("level"))
}

const ENTRY_COLUMNS: &str = "id, agency_code, level, type_code, service_item_code, purpose, fields_json, all_fields, \
    effective_from, effective_until, state, application_id, created_at, created_by";

fn entry_from_row(row: &impl Columns) -> Result<Entry, ServiceError> {
    Ok(Entry {
        id: row.int("id")?,
        agency_code: row.text("agency_code")?,
        level: level_of(row)?,
        type_code: row.text("type_code")?,
        service_item_code: row.text("service_item_code")?,
        terms: terms_of(row)?,
        state: EntryState::parse(&row.text("state")?).ok_or_else(|| bad("state"))?,
        application_id: row.opt_int("application_id")?,
        created_at: time_of(row, "created_at")?,
        created_by: row.text("created_by")?,
    })
}

/// A new entry, before it has an id.
#[derive(Debug, Clone)]
pub(crate) struct NewEntry<'a> {
    pub agency_code: &'a str,
    pub level: Level,
    pub type_code: &'a str,
    pub service_item_code: &'a str,
    pub terms: &'a Terms,
    pub application_id: Option<i64>,
}

pub(crate) async fn insert_entry(
    conn: &mut AnyConnection,
    e: &NewEntry<'_>,
    by: &Principal,
    at: OffsetDateTime,
) -> Result<Entry, ServiceError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO usage_entries (agency_code, level, type_code, service_item_code, purpose, fields_json, all_fields,
            effective_from, effective_until, state, application_id, created_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $12) RETURNING id",
    )
    .bind(e.agency_code)
    .bind(e.level.as_str())
    .bind(e.type_code)
    .bind(e.service_item_code)
    .bind(&e.terms.purpose)
    .bind(to_json(&e.terms.fields)?)
    .bind(i64::from(e.terms.all_fields))
    .bind(format_date(e.terms.from))
    .bind(e.terms.until.map(format_date))
    .bind(e.application_id)
    .bind(format_time(at))
    .bind(by.actor())
    .fetch_one(&mut *conn)
    .await?;
    load_entry(conn, id).await?.ok_or_else(|| ServiceError::internal("inserted entry vanished"))
}

pub(crate) async fn load_entry(conn: &mut AnyConnection, id: i64) -> Result<Option<Entry>, ServiceError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ENTRY_COLUMNS} FROM usage_entries WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(entry_from_row).transpose()
}

/// Moves an entry from `from` to `to`; false when it was not in `from`
/// (someone else changed it first).
pub(crate) async fn set_entry_state(
    conn: &mut AnyConnection,
    id: i64,
    from: EntryState,
    to: EntryState,
) -> Result<bool, ServiceError> {
    let done = sqlx::query("UPDATE usage_entries SET state = $1 WHERE id = $2 AND state = $3")
        .bind(to.as_str())
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The state of entry `id` (`active`, `suspended`, `ended`), if it exists.
pub(crate) async fn entry_state(conn: &mut AnyConnection, id: i64) -> Result<Option<String>, ServiceError> {
    Ok(sqlx::query_scalar("SELECT state FROM usage_entries WHERE id = $1").bind(id).fetch_optional(&mut *conn).await?)
}

/// The entries of an agency for a service item (and type), any state.
static ENTRIES_FOR_USE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {ENTRY_COLUMNS} FROM usage_entries
         WHERE agency_code = $1 AND service_item_code = $2 AND ($3 = '' OR type_code = $3) ORDER BY id DESC"
    )
});

/// Every entry of `agency` for `service_item` (and `type_code`, when
/// given), any state, newest first; on SQLite read directly on this thread
/// (the hot path of every use).
pub(crate) async fn entries_for_use(
    db: &zhengzhao_store::Db,
    agency: &str,
    service_item: &str,
    type_code: Option<&str>,
) -> Result<Vec<Entry>, ServiceError> {
    let type_code = type_code.unwrap_or_default();
    let direct = db.sqlite_read(|c| {
        let mut statement = c.prepare_cached(&ENTRIES_FOR_USE)?;
        // By name: SQLite takes `$N` as a name, not a position.
        let mut rows = statement.query(&[("$1", agency), ("$2", service_item), ("$3", type_code)][..])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            entries.push(entry_from_row(row));
        }
        Ok(entries)
    });
    if let Some(read) = direct {
        return read.map_err(ServiceError::internal)?.into_iter().collect();
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(ENTRIES_FOR_USE.as_str()))
        .bind(agency)
        .bind(service_item)
        .bind(type_code)
        .fetch_all(db.reader())
        .await?;
    rows.iter().map(entry_from_row).collect()
}

pub(crate) async fn list_entries(
    conn: &mut AnyConnection,
    agency: &str,
    before: i64,
    limit: i64,
) -> Result<Vec<Entry>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {ENTRY_COLUMNS} FROM usage_entries WHERE id < $1 AND ($2 = '' OR agency_code = $2)
         ORDER BY id DESC LIMIT $3"
    )))
    .bind(before)
    .bind(agency)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

const APPLICATION_COLUMNS: &str = "id, agency_code, level, type_codes_json, service_items_json, purpose, fields_json, \
    all_fields, effective_from, effective_until, state, applied_by, applied_at, decided_by, decided_at, \
    decision_reason, entry_ids_json";

fn application_from_row(row: &sqlx::any::AnyRow) -> Result<Application, ServiceError> {
    let state: String = row.try_get("state")?;
    let decided_at: Option<String> = row.try_get("decided_at")?;
    Ok(Application {
        id: row.try_get("id")?,
        agency_code: row.try_get("agency_code")?,
        level: level_of(row)?,
        type_codes: json_list(row, "type_codes_json")?,
        service_item_codes: json_list(row, "service_items_json")?,
        terms: terms_of(row)?,
        state: ApplicationState::parse(&state).ok_or_else(|| bad("state"))?,
        applied_by: row.try_get("applied_by")?,
        applied_at: time_of(row, "applied_at")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: decided_at.map(|t| parse_time(&t).ok_or_else(|| bad("decided_at"))).transpose()?,
        decision_reason: row.try_get("decision_reason")?,
        entry_ids: json_list(row, "entry_ids_json")?,
    })
}

/// A new application, before it has an id.
#[derive(Debug, Clone)]
pub(crate) struct NewApplication<'a> {
    pub agency_code: &'a str,
    pub level: Level,
    pub type_codes: &'a [String],
    pub service_items: &'a [String],
    pub terms: &'a Terms,
}

pub(crate) async fn insert_application(
    conn: &mut AnyConnection,
    a: &NewApplication<'_>,
    by: &Principal,
    at: OffsetDateTime,
) -> Result<Application, ServiceError> {
    let (agency, level, type_codes, service_items, terms) =
        (a.agency_code, a.level, a.type_codes, a.service_items, a.terms);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO usage_applications (agency_code, level, type_codes_json, service_items_json, purpose, fields_json,
            all_fields, effective_from, effective_until, state, applied_by, applied_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $11) RETURNING id",
    )
    .bind(agency)
    .bind(level.as_str())
    .bind(to_json(&type_codes)?)
    .bind(to_json(&service_items)?)
    .bind(&terms.purpose)
    .bind(to_json(&terms.fields)?)
    .bind(i64::from(terms.all_fields))
    .bind(format_date(terms.from))
    .bind(terms.until.map(format_date))
    .bind(by.actor())
    .bind(format_time(at))
    .fetch_one(&mut *conn)
    .await?;
    load_application(conn, id).await?.ok_or_else(|| ServiceError::internal("inserted application vanished"))
}

pub(crate) async fn load_application(conn: &mut AnyConnection, id: i64) -> Result<Option<Application>, ServiceError> {
    let row =
        sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {APPLICATION_COLUMNS} FROM usage_applications WHERE id = $1")))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.as_ref().map(application_from_row).transpose()
}

/// Decides a pending application; false when it was no longer pending.
pub(crate) async fn decide_application(
    conn: &mut AnyConnection,
    id: i64,
    state: ApplicationState,
    by: &Principal,
    at: OffsetDateTime,
    reason: &str,
    entry_ids: &[i64],
) -> Result<bool, ServiceError> {
    let done = sqlx::query(
        "UPDATE usage_applications SET state = $1, decided_by = $2, decided_at = $3, decision_reason = $4,
            entry_ids_json = $5
         WHERE id = $6 AND state = 'pending'",
    )
    .bind(state.as_str())
    .bind(by.actor())
    .bind(format_time(at))
    .bind(reason)
    .bind(to_json(&entry_ids)?)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn list_applications(
    conn: &mut AnyConnection,
    agency: &str,
    state: Option<ApplicationState>,
    before: i64,
    limit: i64,
) -> Result<Vec<Application>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {APPLICATION_COLUMNS} FROM usage_applications
         WHERE id < $1 AND ($2 = '' OR agency_code = $2) AND ($3 = '' OR state = $3) ORDER BY id DESC LIMIT $4"
    )))
    .bind(before)
    .bind(agency)
    .bind(state.map(ApplicationState::as_str).unwrap_or_default())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(application_from_row).collect()
}

/// Records one change to a usage list.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_change(
    conn: &mut AnyConnection,
    action: &str,
    entry_id: Option<i64>,
    application_id: Option<i64>,
    agency: &str,
    by: &Principal,
    reason: &str,
    details: &serde_json::Value,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO usage_list_changes (action, entry_id, application_id, agency_code, actor, operator, reason,
            details_json, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(action)
    .bind(entry_id)
    .bind(application_id)
    .bind(agency)
    .bind(by.actor())
    .bind(&by.operator)
    .bind(reason)
    .bind(details.to_string())
    .bind(format_time(at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn list_changes(
    conn: &mut AnyConnection,
    agency: &str,
    before: i64,
    limit: i64,
) -> Result<Vec<Change>, ServiceError> {
    let rows = sqlx::query(
        "SELECT id, action, entry_id, application_id, agency_code, actor, operator, reason, details_json, at
         FROM usage_list_changes WHERE id < $1 AND ($2 = '' OR agency_code = $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(before)
    .bind(agency)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Change {
                id: row.try_get("id")?,
                action: row.try_get("action")?,
                entry_id: row.try_get("entry_id")?,
                application_id: row.try_get("application_id")?,
                agency_code: row.try_get("agency_code")?,
                actor: row.try_get("actor")?,
                operator: row.try_get("operator")?,
                reason: row.try_get("reason")?,
                details_json: row.try_get("details_json")?,
                at: time_of(row, "at")?,
            })
        })
        .collect()
}

pub(crate) const USAGE_COLUMNS: &str = "id, consumer_code, consumer_role, token_id, operator, method, client_address, \
    identifier, type_code, holder_id_type, holder_digest, holder_masked, use_cause, service_item_code, case_number, \
    decision, refusal_rule, refusal_reason, entry_id, copy_id, accessed_at, log_index";

pub(crate) fn usage_from_row(row: &sqlx::any::AnyRow) -> Result<UsageRecord, ServiceError> {
    let decision: String = row.try_get("decision")?;
    let log_index: Option<i64> = row.try_get("log_index")?;
    Ok(UsageRecord {
        id: row.try_get("id")?,
        consumer_code: row.try_get("consumer_code")?,
        consumer_role: row.try_get("consumer_role")?,
        token_id: row.try_get("token_id")?,
        operator: row.try_get("operator")?,
        method: row.try_get("method")?,
        client_address: row.try_get("client_address")?,
        identifier: row.try_get("identifier")?,
        type_code: row.try_get("type_code")?,
        holder_id_type: row.try_get("holder_id_type")?,
        holder_digest: row.try_get("holder_digest")?,
        holder_masked: row.try_get("holder_masked")?,
        use_cause: row.try_get("use_cause")?,
        service_item_code: row.try_get("service_item_code")?,
        case_number: row.try_get("case_number")?,
        granted: decision == "granted",
        refusal_rule: row.try_get("refusal_rule")?,
        refusal_reason: row.try_get("refusal_reason")?,
        entry_id: row.try_get("entry_id")?,
        copy_id: row.try_get("copy_id")?,
        accessed_at: time_of(row, "accessed_at")?,
        log_index: log_index.map(u64::try_from).transpose().map_err(|_| bad("log_index"))?,
    })
}

/// Writes a usage record at leaf `log_index`; returns its id.
pub(crate) async fn insert_usage(
    conn: &mut AnyConnection,
    r: &UsageRecord,
    log_index: u64,
) -> Result<i64, ServiceError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO usage_log (consumer_code, consumer_role, token_id, operator, method, client_address, identifier,
            type_code, holder_id_type, holder_digest, holder_masked, use_cause, service_item_code, case_number,
            decision, refusal_rule, refusal_reason, entry_id, copy_id, accessed_at, log_index)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
         RETURNING id",
    )
    .bind(&r.consumer_code)
    .bind(&r.consumer_role)
    .bind(&r.token_id)
    .bind(&r.operator)
    .bind(&r.method)
    .bind(&r.client_address)
    .bind(&r.identifier)
    .bind(&r.type_code)
    .bind(&r.holder_id_type)
    .bind(&r.holder_digest)
    .bind(&r.holder_masked)
    .bind(&r.use_cause)
    .bind(&r.service_item_code)
    .bind(&r.case_number)
    .bind(if r.granted { "granted" } else { "refused" })
    .bind(&r.refusal_rule)
    .bind(&r.refusal_reason)
    .bind(r.entry_id)
    .bind(&r.copy_id)
    .bind(format_time(r.accessed_at))
    .bind(i64::try_from(log_index).map_err(ServiceError::internal)?)
    .fetch_one(&mut *conn)
    .await?;
    Ok(id)
}

/// Records written before the usage log was a Merkle tree, oldest first.
pub(crate) async fn unlogged_usage(conn: &mut AnyConnection, limit: i64) -> Result<Vec<UsageRecord>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {USAGE_COLUMNS} FROM usage_log WHERE log_index IS NULL ORDER BY id LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(usage_from_row).collect()
}

pub(crate) async fn set_usage_index(conn: &mut AnyConnection, id: i64, index: u64) -> Result<(), ServiceError> {
    sqlx::query("UPDATE usage_log SET log_index = $1 WHERE id = $2")
        .bind(i64::try_from(index).map_err(ServiceError::internal)?)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// One page of the usage log. Newest first by id (`cursor` is the id the
/// page starts below), or oldest first by log index (`cursor` is the index
/// the page starts at).
pub(crate) async fn list_usage(
    conn: &mut AnyConnection,
    f: &UsageFilter,
    cursor: i64,
    limit: i64,
) -> Result<Vec<UsageRecord>, ServiceError> {
    let (position, order) = if f.oldest_first { ("log_index >= $1", "log_index") } else { ("id < $1", "id DESC") };
    let sql = format!(
        "SELECT {USAGE_COLUMNS} FROM usage_log WHERE {position}
           AND ($2 = '' OR identifier = $2) AND ($3 = '' OR consumer_code = $3) AND ($4 = '' OR holder_digest = $4)
           AND ($5 = '' OR accessed_at >= $5) AND ($6 = '' OR accessed_at < $6) AND ($7 = '' OR decision = $7)
           AND ($9 = 0 OR consumer_role NOT IN ('holder', 'portal'))
         ORDER BY {order} LIMIT $8"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(cursor)
        .bind(&f.identifier)
        .bind(&f.agency_code)
        .bind(&f.holder_digest)
        .bind(f.since.map(format_time).unwrap_or_default())
        .bind(f.until.map(format_time).unwrap_or_default())
        .bind(f.granted.map(|g| if g { "granted" } else { "refused" }).unwrap_or_default())
        .bind(limit)
        .bind(i64::from(f.agencies_only))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(usage_from_row).collect()
}

/// A stored annotated copy.
#[derive(Debug, Clone)]
pub(crate) struct StoredCopy {
    pub copy_id: String,
    pub identifier: String,
    pub agency_code: String,
    pub jws: String,
    pub good_until: OffsetDateTime,
}

pub(crate) async fn insert_copy(
    conn: &mut AnyConnection,
    c: &StoredCopy,
    usage_id: i64,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO copies (copy_id, usage_id, identifier, agency_code, jws, good_until, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&c.copy_id)
    .bind(usage_id)
    .bind(&c.identifier)
    .bind(&c.agency_code)
    .bind(&c.jws)
    .bind(format_time(c.good_until))
    .bind(format_time(at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn load_copy(conn: &mut AnyConnection, copy_id: &str) -> Result<Option<StoredCopy>, ServiceError> {
    let row = sqlx::query("SELECT copy_id, identifier, agency_code, jws, good_until FROM copies WHERE copy_id = $1")
        .bind(copy_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| {
        Ok(StoredCopy {
            copy_id: r.try_get("copy_id")?,
            identifier: r.try_get("identifier")?,
            agency_code: r.try_get("agency_code")?,
            jws: r.try_get("jws")?,
            good_until: time_of(&r, "good_until")?,
        })
    })
    .transpose()
}

pub(crate) async fn insert_link(
    conn: &mut AnyConnection,
    token_digest: &str,
    copy_id: &str,
    expires_at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query("INSERT INTO copy_links (token_digest, copy_id, expires_at) VALUES ($1, $2, $3)")
        .bind(token_digest)
        .bind(copy_id)
        .bind(format_time(expires_at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Uses a download link once: the copy it names, if the link exists, has
/// not been used and has not expired at `now`. A used link stays used.
pub(crate) async fn take_link(
    conn: &mut AnyConnection,
    token_digest: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, ServiceError> {
    let row = sqlx::query("SELECT copy_id, expires_at FROM copy_links WHERE token_digest = $1 AND used_at IS NULL")
        .bind(token_digest)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    if time_of(&row, "expires_at")? <= now {
        return Ok(None);
    }
    let taken = sqlx::query("UPDATE copy_links SET used_at = $1 WHERE token_digest = $2 AND used_at IS NULL")
        .bind(format_time(now))
        .bind(token_digest)
        .execute(&mut *conn)
        .await?;
    if taken.rows_affected() == 1 { Ok(Some(row.try_get("copy_id")?)) } else { Ok(None) }
}
