//! The SQL of front ends, scenarios, holders' logins, presentations and
//! reminders. Every function runs on a connection or transaction the caller
//! holds.

use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, parse_time};

use crate::holders::FrontEnd;
use crate::scenarios::{Scenario, ScenarioRequest, ScenarioState};

fn bad(what: &str) -> ServiceError {
    ServiceError::internal(format!("unreadable {what} in the exchange database"))
}

fn json_of<T: serde::de::DeserializeOwned>(row: &sqlx::any::AnyRow, column: &str) -> Result<T, ServiceError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|_| bad(column))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, ServiceError> {
    serde_json::to_string(v).map_err(ServiceError::internal)
}

fn time_of(row: &sqlx::any::AnyRow, column: &str) -> Result<OffsetDateTime, ServiceError> {
    let text: String = row.try_get(column)?;
    parse_time(&text).ok_or_else(|| bad(column))
}

fn opt_time_of(row: &sqlx::any::AnyRow, column: &str) -> Result<Option<OffsetDateTime>, ServiceError> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| parse_time(&t).ok_or_else(|| bad(column))).transpose()
}

const FRONT_END_COLUMNS: &str =
    "id, name, agency_code, jwk_json, scenario_ids_json, webhook_url, state, registered_by, registered_at";

fn front_end_from_row(row: &sqlx::any::AnyRow) -> Result<FrontEnd, ServiceError> {
    let state: String = row.try_get("state")?;
    Ok(FrontEnd {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        agency_code: row.try_get("agency_code")?,
        jwk: json_of(row, "jwk_json")?,
        scenario_ids: json_of(row, "scenario_ids_json")?,
        webhook_url: row.try_get("webhook_url")?,
        active: state == "active",
        registered_by: row.try_get("registered_by")?,
        registered_at: time_of(row, "registered_at")?,
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_front_end(
    conn: &mut AnyConnection,
    name: &str,
    agency: &str,
    jwk: &serde_json::Value,
    scenario_ids: &[i64],
    webhook: &str,
    by: &str,
    at: OffsetDateTime,
) -> Result<FrontEnd, ServiceError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO front_ends (name, agency_code, jwk_json, scenario_ids_json, webhook_url, state, registered_by, registered_at)
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7) RETURNING id",
    )
    .bind(name)
    .bind(agency)
    .bind(to_json(jwk)?)
    .bind(to_json(&scenario_ids)?)
    .bind(webhook)
    .bind(by)
    .bind(format_time(at))
    .fetch_one(&mut *conn)
    .await?;
    load_front_end(conn, id).await?.ok_or_else(|| bad("front end"))
}

pub(crate) async fn load_front_end(conn: &mut AnyConnection, id: i64) -> Result<Option<FrontEnd>, ServiceError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {FRONT_END_COLUMNS} FROM front_ends WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(front_end_from_row).transpose()
}

pub(crate) async fn update_front_end(conn: &mut AnyConnection, fe: &FrontEnd) -> Result<(), ServiceError> {
    sqlx::query("UPDATE front_ends SET scenario_ids_json = $1, webhook_url = $2, state = $3 WHERE id = $4")
        .bind(to_json(&fe.scenario_ids)?)
        .bind(&fe.webhook_url)
        .bind(if fe.active { "active" } else { "suspended" })
        .bind(fe.id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn list_front_ends(conn: &mut AnyConnection) -> Result<Vec<FrontEnd>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {FRONT_END_COLUMNS} FROM front_ends ORDER BY id")))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(front_end_from_row).collect()
}

/// Records that a holder logged in through a front end (where reminders go).
pub(crate) async fn remember_login(
    conn: &mut AnyConnection,
    holder_digest: &str,
    front_end: i64,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO holder_front_ends (holder_digest, front_end_id, last_login_at) VALUES ($1, $2, $3)
         ON CONFLICT (holder_digest, front_end_id) DO UPDATE SET last_login_at = excluded.last_login_at",
    )
    .bind(holder_digest)
    .bind(front_end)
    .bind(format_time(at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The front ends a holder has logged in through.
pub(crate) async fn holder_front_ends(conn: &mut AnyConnection, holder_digest: &str) -> Result<Vec<i64>, ServiceError> {
    Ok(sqlx::query_scalar("SELECT front_end_id FROM holder_front_ends WHERE holder_digest = $1 ORDER BY front_end_id")
        .bind(holder_digest)
        .fetch_all(&mut *conn)
        .await?)
}

const SCENARIO_COLUMNS: &str = "id, agency_code, name, type_codes_json, fields_json, purpose, state, proposed_by, \
    proposed_at, decided_by, decided_at, decision_reason";

fn scenario_from_row(row: &sqlx::any::AnyRow) -> Result<Scenario, ServiceError> {
    let state: String = row.try_get("state")?;
    Ok(Scenario {
        id: row.try_get("id")?,
        agency_code: row.try_get("agency_code")?,
        name: row.try_get("name")?,
        type_codes: json_of(row, "type_codes_json")?,
        fields: json_of(row, "fields_json")?,
        purpose: row.try_get("purpose")?,
        state: ScenarioState::parse(&state).ok_or_else(|| bad("scenario state"))?,
        proposed_by: row.try_get("proposed_by")?,
        proposed_at: time_of(row, "proposed_at")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: opt_time_of(row, "decided_at")?,
        decision_reason: row.try_get("decision_reason")?,
    })
}

pub(crate) async fn insert_scenario(
    conn: &mut AnyConnection,
    agency: &str,
    name: &str,
    req: &ScenarioRequest,
    purpose: &str,
    by: &str,
    at: OffsetDateTime,
) -> Result<Scenario, ServiceError> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO scenarios (agency_code, name, type_codes_json, fields_json, purpose, state, proposed_by, proposed_at)
         VALUES ($1, $2, $3, $4, $5, 'proposed', $6, $7) RETURNING id",
    )
    .bind(agency)
    .bind(name)
    .bind(to_json(&req.type_codes)?)
    .bind(to_json(&req.fields)?)
    .bind(purpose)
    .bind(by)
    .bind(format_time(at))
    .fetch_one(&mut *conn)
    .await?;
    load_scenario(conn, id).await?.ok_or_else(|| bad("scenario"))
}

pub(crate) async fn load_scenario(conn: &mut AnyConnection, id: i64) -> Result<Option<Scenario>, ServiceError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SCENARIO_COLUMNS} FROM scenarios WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(scenario_from_row).transpose()
}

pub(crate) async fn list_scenarios(conn: &mut AnyConnection) -> Result<Vec<Scenario>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SCENARIO_COLUMNS} FROM scenarios ORDER BY id")))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(scenario_from_row).collect()
}

/// Decides a proposed scenario; false when it is not (or no longer) proposed.
pub(crate) async fn decide_scenario(
    conn: &mut AnyConnection,
    id: i64,
    to: ScenarioState,
    by: &str,
    reason: &str,
    at: OffsetDateTime,
) -> Result<bool, ServiceError> {
    let done = sqlx::query(
        "UPDATE scenarios SET state = $1, decided_by = $2, decided_at = $3, decision_reason = $4
         WHERE id = $5 AND state = 'proposed'",
    )
    .bind(to.as_str())
    .bind(by)
    .bind(format_time(at))
    .bind(reason)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A presentation the library handed a nonce out for.
#[derive(Debug, Clone)]
pub(crate) struct StoredPresentation {
    pub identifier: String,
    pub scenario_id: i64,
    pub front_end_id: i64,
    pub used_at: Option<OffsetDateTime>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_presentation(
    conn: &mut AnyConnection,
    nonce: &str,
    identifier: &str,
    scenario_id: i64,
    front_end_id: i64,
    holder_digest: &str,
    at: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO presentations (nonce, identifier, scenario_id, front_end_id, holder_digest, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(nonce)
    .bind(identifier)
    .bind(scenario_id)
    .bind(front_end_id)
    .bind(holder_digest)
    .bind(format_time(at))
    .bind(format_time(expires_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn load_presentation(
    conn: &mut AnyConnection,
    nonce: &str,
) -> Result<Option<StoredPresentation>, ServiceError> {
    let row = sqlx::query("SELECT identifier, scenario_id, front_end_id, used_at FROM presentations WHERE nonce = $1")
        .bind(nonce)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| {
        Ok(StoredPresentation {
            identifier: r.try_get("identifier")?,
            scenario_id: r.try_get("scenario_id")?,
            front_end_id: r.try_get("front_end_id")?,
            used_at: opt_time_of(&r, "used_at")?,
        })
    })
    .transpose()
}

/// Uses a presentation up; false when it was used already.
pub(crate) async fn use_presentation(
    conn: &mut AnyConnection,
    nonce: &str,
    by: &str,
    at: OffsetDateTime,
) -> Result<bool, ServiceError> {
    let done = sqlx::query("UPDATE presentations SET used_at = $1, used_by = $2 WHERE nonce = $3 AND used_at IS NULL")
        .bind(format_time(at))
        .bind(by)
        .bind(nonce)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}
