//! The catalogue's SQL, shared by the operations, export and import. Every
//! function runs on a connection or transaction the caller holds, so one
//! operation is one transaction on both engines.

use sqlx::{AnyConnection, Row};
use zhengzhao_auth::Principal;
use zhengzhao_core::{FaceTemplate, LicenceTypeDefinition};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, now, parse_time};

use crate::{CatalogError, ChangeRecord, LicenceTypeRecord, TemplateVersionRecord, TypeFilter, TypeStatus};

fn bad(what: &str) -> ServiceError {
    ServiceError::internal(format!("unreadable {what} in the catalogue database"))
}

const TYPE_COLUMNS: &str = "code, status, definition_json, template_version, created_at, published_at, retired_at";

fn type_from_row(row: &sqlx::any::AnyRow) -> Result<LicenceTypeRecord, ServiceError> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::from);
    let opt_time = |c: &str| -> Result<Option<time::OffsetDateTime>, ServiceError> {
        let v: Option<String> = row.try_get(c)?;
        Ok(v.as_deref().and_then(parse_time))
    };
    let definition: LicenceTypeDefinition =
        serde_json::from_str(&s("definition_json")?).map_err(ServiceError::internal)?;
    let current: i64 = row.try_get("template_version")?;
    Ok(LicenceTypeRecord {
        definition,
        status: TypeStatus::parse(&s("status")?).ok_or_else(|| bad("status"))?,
        current_version: u32::try_from(current).map_err(|_| bad("template_version"))?,
        created_at: parse_time(&s("created_at")?).ok_or_else(|| bad("created_at"))?,
        published_at: opt_time("published_at")?,
        retired_at: opt_time("retired_at")?,
    })
}

/// A type with template `version` (0 = current), if it exists.
pub(crate) async fn load(
    conn: &mut AnyConnection,
    code: &str,
    version: u32,
) -> Result<Option<LicenceTypeRecord>, ServiceError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TYPE_COLUMNS} FROM licence_types WHERE code = $1")))
        .bind(code)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut record = type_from_row(&row)?;
    if version != 0 && version != record.current_version {
        let json: Option<String> =
            sqlx::query_scalar("SELECT template_json FROM template_versions WHERE type_code = $1 AND version = $2")
                .bind(code)
                .bind(i64::from(version))
                .fetch_optional(&mut *conn)
                .await?;
        let Some(json) = json else { return Ok(None) };
        record.definition.template = serde_json::from_str(&json).map_err(ServiceError::internal)?;
    }
    Ok(Some(record))
}

pub(crate) async fn load_versions(
    conn: &mut AnyConnection,
    code: &str,
) -> Result<Vec<TemplateVersionRecord>, ServiceError> {
    let rows =
        sqlx::query("SELECT template_json, created_at FROM template_versions WHERE type_code = $1 ORDER BY version")
            .bind(code)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|r| {
            let json: String = r.try_get("template_json")?;
            let at: String = r.try_get("created_at")?;
            Ok(TemplateVersionRecord {
                template: serde_json::from_str(&json).map_err(ServiceError::internal)?,
                created_at: parse_time(&at).ok_or_else(|| bad("created_at"))?,
            })
        })
        .collect()
}

pub(crate) async fn insert_type(
    conn: &mut AnyConnection,
    def: &LicenceTypeDefinition,
    status: TypeStatus,
    at: time::OffsetDateTime,
) -> Result<(), ServiceError> {
    let code = def.code.clone().unwrap_or_default();
    let at_text = format_time(at);
    let inserted = sqlx::query(
        "INSERT INTO licence_types (code, authority_code, name, status, definition_json, template_version, created_at,
            published_at, retired_at, holder_category)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&code)
    .bind(&def.defining_authority.code)
    .bind(&def.name)
    .bind(status.as_str())
    .bind(serde_json::to_string(def).map_err(ServiceError::internal)?)
    .bind(i64::from(def.template.version))
    .bind(&at_text)
    .bind((status >= TypeStatus::Published).then(|| at_text.clone()))
    .bind((status == TypeStatus::Retired).then(|| at_text.clone()))
    .bind(def.holder_category.as_str())
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(()),
        Err(e) if zhengzhao_store::is_unique_violation(&e) => Err(CatalogError::TypeExists(code.to_owned()).into()),
        Err(e) => Err(ServiceError::from(e)),
    }
}

/// Writes the definition (with its current template) and status; sets the
/// publication and retirement times the first time each status is reached.
pub(crate) async fn update_definition(
    conn: &mut AnyConnection,
    def: &LicenceTypeDefinition,
    status: TypeStatus,
) -> Result<(), ServiceError> {
    let at = format_time(now());
    sqlx::query(
        "UPDATE licence_types SET definition_json = $2, template_version = $3, status = $4,
            published_at = CASE WHEN $4 <> 'draft' AND published_at IS NULL THEN $5 ELSE published_at END,
            retired_at = CASE WHEN $4 = 'retired' AND retired_at IS NULL THEN $5 ELSE retired_at END,
            name = $6, holder_category = $7
         WHERE code = $1",
    )
    .bind(def.code.clone().unwrap_or_default())
    .bind(serde_json::to_string(def).map_err(ServiceError::internal)?)
    .bind(i64::from(def.template.version))
    .bind(status.as_str())
    .bind(at)
    .bind(&def.name)
    .bind(def.holder_category.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The code of a type other than `except` that is not retired and has this
/// name under this defining authority, if any.
pub(crate) async fn same_definition(
    conn: &mut AnyConnection,
    authority_code: &str,
    name: &str,
    except: &str,
) -> Result<Option<String>, ServiceError> {
    sqlx::query_scalar(
        "SELECT code FROM licence_types
         WHERE authority_code = $1 AND name = $2 AND code <> $3 AND status <> 'retired'
         ORDER BY code LIMIT 1",
    )
    .bind(authority_code)
    .bind(name)
    .bind(except)
    .fetch_optional(&mut *conn)
    .await
    .map_err(ServiceError::from)
}

pub(crate) async fn insert_version(
    conn: &mut AnyConnection,
    code: &str,
    template: &FaceTemplate,
    at: time::OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO template_versions (type_code, version, template_json, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(code)
    .bind(i64::from(template.version))
    .bind(serde_json::to_string(template).map_err(ServiceError::internal)?)
    .bind(format_time(at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn replace_version(
    conn: &mut AnyConnection,
    code: &str,
    template: &FaceTemplate,
) -> Result<(), ServiceError> {
    sqlx::query("UPDATE template_versions SET template_json = $3 WHERE type_code = $1 AND version = $2")
        .bind(code)
        .bind(i64::from(template.version))
        .bind(serde_json::to_string(template).map_err(ServiceError::internal)?)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn record_change(
    conn: &mut AnyConnection,
    code: &str,
    who: &Principal,
    change: &str,
    detail_json: &str,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO catalog_changes (type_code, actor, change, detail_json, recorded_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(code)
    .bind(who.actor())
    .bind(change)
    .bind(detail_json)
    .bind(format_time(now()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `text` with LIKE wildcards escaped (escape character `\`).
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

pub(crate) async fn list(
    conn: &mut AnyConnection,
    f: &TypeFilter,
    after: &str,
    limit: i64,
) -> Result<Vec<LicenceTypeRecord>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {TYPE_COLUMNS} FROM licence_types
         WHERE code > $1
           AND ($2 = '' OR name LIKE '%' || $2 || '%' ESCAPE '\\')
           AND ($3 = '' OR authority_code = $3)
           AND ($4 = '' OR holder_category = $4)
           AND ($5 = '' OR status = $5)
         ORDER BY code LIMIT $6"
    )))
    .bind(after)
    .bind(like_escaped(&f.name_contains))
    .bind(&f.defining_authority_code)
    .bind(f.holder_category.map(|c| c.as_str()).unwrap_or_default())
    .bind(f.status.map(|s| s.as_str()).unwrap_or_default())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(type_from_row).collect()
}

/// Every type with all its template versions, ordered by code.
pub(crate) async fn all_types(
    conn: &mut AnyConnection,
) -> Result<Vec<(LicenceTypeRecord, Vec<FaceTemplate>)>, ServiceError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {TYPE_COLUMNS} FROM licence_types ORDER BY code")))
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let record = type_from_row(row)?;
        let versions = load_versions(conn, record.code()).await?.into_iter().map(|v| v.template).collect();
        out.push((record, versions));
    }
    Ok(out)
}

pub(crate) async fn changes(
    conn: &mut AnyConnection,
    code: &str,
    before: i64,
    limit: i64,
) -> Result<Vec<ChangeRecord>, ServiceError> {
    let rows = sqlx::query(
        "SELECT id, type_code, actor, change, detail_json, recorded_at FROM catalog_changes
         WHERE id < $1 AND ($2 = '' OR type_code = $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(before)
    .bind(code)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let s = |c: &str| r.try_get::<String, _>(c).map_err(ServiceError::from);
            Ok(ChangeRecord {
                id: r.try_get("id")?,
                code: s("type_code")?,
                actor: s("actor")?,
                change: s("change")?,
                detail_json: s("detail_json")?,
                recorded_at: parse_time(&s("recorded_at")?).ok_or_else(|| bad("recorded_at"))?,
            })
        })
        .collect()
}
