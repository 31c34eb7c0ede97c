//! The issuance service: issues licences of published types, checked against
//! their face template and signed through the signing service; records every
//! lifecycle event append-only, in the same transaction as the status change.

#![forbid(unsafe_code)]

pub mod client;
pub mod grpc;
mod record;

use std::sync::Arc;

use sha2::Digest;
use sqlx::Row;
use time::{Date, OffsetDateTime, UtcOffset};
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_catalog::{CatalogClient, TypeStatus};
use zhengzhao_core::date::{format_date, parse_date};
use zhengzhao_core::document::{DocumentHolder, DocumentIssuer};
use zhengzhao_core::status::transition;
use zhengzhao_core::{
    FieldViolation, LicenceDocument, LicenceDraft, LicenceId, LicenceStatus, LifecycleAction, TypeCode, Uscc,
    Violations,
};
use zhengzhao_proto::ServiceError;
use zhengzhao_signing::SigningClient;
use zhengzhao_store::{Db, Migrations, StoreConfig, StoreError, format_time, now};

pub use client::IssuanceClient;
pub use record::{EventRecord, LicenceRecord};

static PG: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// This service's migrations.
pub static MIGRATIONS: Migrations = Migrations { postgres: &PG, sqlite: &SQLITE };

/// The library's civil time zone (China Standard Time): "today" for validity.
pub const LIBRARY_OFFSET: UtcOffset = time::macros::offset!(+8);
/// Longest reason accepted on a lifecycle event.
pub const MAX_REASON: usize = 500;
/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Today's date in the library's time zone.
pub fn today() -> Date {
    OffsetDateTime::now_utc().to_offset(LIBRARY_OFFSET).date()
}

/// The issuance service over its own tables.
pub struct Issuance {
    db: Db,
    catalog: CatalogClient,
    signing: SigningClient,
}

impl std::fmt::Debug for Issuance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Issuance(..)")
    }
}

fn db_err(e: sqlx::Error) -> ServiceError {
    ServiceError::internal(e)
}

/// Parses an identifier from a request, as the named field.
pub fn parse_identifier(field: &str, s: &str) -> Result<LicenceId, ServiceError> {
    LicenceId::parse(s).map_err(|e| ServiceError::invalid(field, e.to_string()))
}

fn digest(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

fn check_idempotency_key(key: &str) -> Result<(), ServiceError> {
    if key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(|c| c.is_control()) {
        return Err(ServiceError::invalid(
            "idempotency_key",
            format!("at most {MAX_IDEMPOTENCY_KEY} bytes, no control characters"),
        ));
    }
    Ok(())
}

/// A serial of 16 upper-case letters and digits from the OS random source.
fn generate_serial() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    zhengzhao_crypto::random_bytes::<16>()
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

impl Issuance {
    pub async fn open(
        store: &StoreConfig,
        catalog: CatalogClient,
        signing: SigningClient,
    ) -> Result<Arc<Self>, StoreError> {
        let db = zhengzhao_store::open(store, "issuance", &MIGRATIONS).await?;
        Ok(Arc::new(Issuance { db, catalog, signing }))
    }

    /// Issues a licence from `draft` on the caller's own account.
    pub async fn issue(
        &self,
        who: &Principal,
        mut draft: LicenceDraft,
        idempotency_key: &str,
    ) -> Result<LicenceRecord, ServiceError> {
        authorize(who, &Action::IssueLicence { issuer: &who.agency })?;
        check_idempotency_key(idempotency_key)?;
        let request_digest = digest(&[&serde_json::to_string(&draft).map_err(ServiceError::internal)?]);
        if let Some(done) = self.replay(who, idempotency_key, "issue", &request_digest).await? {
            return Ok(done);
        }
        let type_code = TypeCode::parse(&draft.type_code).map_err(|e| ServiceError::invalid("type_code", e))?;
        let licence_type = match self.catalog.get(type_code.as_str(), draft.template_version).await {
            Err(ServiceError::NotFound(m)) if draft.template_version != 0 => {
                return Err(ServiceError::invalid("template_version", m));
            }
            Err(ServiceError::NotFound(m)) => return Err(ServiceError::invalid("type_code", m)),
            other => other?,
        };
        if licence_type.status != TypeStatus::Published {
            return Err(ServiceError::FailedPrecondition(format!(
                "licence type {type_code} is {}, not published",
                licence_type.status.as_str()
            )));
        }
        if !licence_type.definition.may_issue(&who.agency) {
            return Err(ServiceError::PermissionDenied(format!(
                "{} is not an issuing agency of licence type {type_code}",
                who.agency
            )));
        }
        let def = &licence_type.definition;
        let mut out: Vec<FieldViolation> = draft.holder.validate(def.holder_category);
        let issuer_name = draft.issuer_name.trim().to_owned();
        if issuer_name.is_empty() || issuer_name.chars().count() > 200 {
            out.push(FieldViolation::new("issuer_name", "1 to 200 characters"));
        }
        if draft.area_code.len() != 6 || !draft.area_code.bytes().all(|b| b.is_ascii_digit()) {
            out.push(FieldViolation::new("area_code", "6 digits"));
        }
        if draft.serial.is_empty() {
            draft.serial = generate_serial();
        } else if draft.serial.len() > zhengzhao_core::identifier::MAX_SERIAL_LEN
            || !draft.serial.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            out.push(FieldViolation::new("serial", "upper-case letters and digits, at most 64"));
        }
        let issue_date = parse_date(&draft.issue_date).map_err(|e| out.push(FieldViolation::new("issue_date", e))).ok();
        let valid_from = if draft.valid_from.is_empty() {
            issue_date
        } else {
            parse_date(&draft.valid_from).map_err(|e| out.push(FieldViolation::new("valid_from", e))).ok()
        };
        let valid_until = match (valid_from, draft.valid_until.as_str()) {
            (Some(from), "") => def.validity.end_date(from),
            (Some(from), given) => match parse_date(given) {
                Err(e) => {
                    out.push(FieldViolation::new("valid_until", e));
                    None
                }
                Ok(until) if until < from => {
                    out.push(FieldViolation::new("valid_until", "before valid_from"));
                    None
                }
                Ok(until) => match def.validity.end_date(from) {
                    Some(max) if until > max => {
                        out.push(FieldViolation::new(
                            "valid_until",
                            format!("beyond the type's validity range {} (at most {})", def.validity, format_date(max)),
                        ));
                        None
                    }
                    None => {
                        out.push(FieldViolation::new("valid_until", "this licence type is long-term: leave it empty"));
                        None
                    }
                    Some(_) => Some(until),
                },
            },
            (None, _) => None,
        };
        if let Err(Violations(more)) = def.template.check_values(&draft.face_fields) {
            out.extend(more);
        }
        Violations::into_result(out)?;
        let (Some(issue_date), Some(valid_from)) = (issue_date, valid_from) else {
            return Err(ServiceError::internal("dates validated but missing"));
        };
        let issuer = Uscc::parse(&who.agency).map_err(|e| ServiceError::invalid("issuer", e.to_string()))?;
        let id = LicenceId::new(type_code.clone(), issuer, &draft.serial, 1)
            .map_err(|e| ServiceError::invalid("serial", e.to_string()))?;
        let document = LicenceDocument {
            identifier: id.to_string(),
            licence_number: draft.serial.clone(),
            name: def.name.clone(),
            type_code: type_code.to_string(),
            template_version: def.template.version,
            issuer: DocumentIssuer { name: issuer_name, code: who.agency.clone() },
            issue_date: format_date(issue_date),
            valid_from: format_date(valid_from),
            valid_until: valid_until.map(format_date),
            holder: DocumentHolder {
                name: draft.holder.name.trim().to_owned(),
                id_type_code: draft.holder.id_type_code.clone(),
                id_number: draft.holder.id_number.clone(),
            },
            area_code: draft.area_code.clone(),
            face_fields: draft.face_fields.clone(),
            replaces: None,
        };
        let canonical = document.canonical_bytes().map_err(ServiceError::internal)?;
        let signed = self.signing.sign(&who.agency, &canonical).await?;
        let at = now();
        let status =
            transition(None, LifecycleAction::Issue).map_err(|e| ServiceError::FailedPrecondition(e.to_string()))?;
        let identifier = id.to_string();
        let mut tx = self.db.pool.begin().await.map_err(db_err)?;
        let inserted = sqlx::query(
            "INSERT INTO licences (identifier, type_code, issuer_code, serial, version, template_version, holder_id_type,
                holder_id_number, status, valid_until, document_json, jws, key_id, recorded_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
        )
        .bind(&identifier)
        .bind(type_code.as_str())
        .bind(&who.agency)
        .bind(&draft.serial)
        .bind(1_i64)
        .bind(i64::from(def.template.version))
        .bind(&document.holder.id_type_code)
        .bind(&document.holder.id_number)
        .bind(status.code())
        .bind(document.valid_until.clone())
        .bind(String::from_utf8(canonical).map_err(ServiceError::internal)?)
        .bind(&signed.jws)
        .bind(&signed.key_id)
        .bind(format_time(at))
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(if zhengzhao_store::is_unique_violation(&e) {
                ServiceError::AlreadyExists(format!(
                    "licence number {} of type {type_code} was already issued by {}",
                    draft.serial, who.agency
                ))
            } else {
                db_err(e)
            });
        }
        append_event(&mut tx, &identifier, LifecycleAction::Issue, status, &who.actor(), "", at, at).await?;
        remember(&mut tx, who, idempotency_key, "issue", &request_digest, &identifier, at).await?;
        tx.commit().await.map_err(db_err)?;
        tracing::info!(identifier = %identifier, actor = %who.actor(), holder = %zhengzhao_core::mask_id_number(&document.holder.id_number), "licence issued");
        self.fetch(&identifier).await
    }

    /// Cancels (注销) a licence.
    pub async fn cancel(
        &self,
        who: &Principal,
        identifier: &str,
        reason: &str,
        occurred_at: Option<OffsetDateTime>,
        idempotency_key: &str,
    ) -> Result<LicenceRecord, ServiceError> {
        self.record_action(who, identifier, LifecycleAction::Cancel, reason, occurred_at, idempotency_key).await
    }

    async fn record_action(
        &self,
        who: &Principal,
        identifier: &str,
        action: LifecycleAction,
        reason: &str,
        occurred_at: Option<OffsetDateTime>,
        idempotency_key: &str,
    ) -> Result<LicenceRecord, ServiceError> {
        let id = parse_identifier("identifier", identifier)?;
        authorize(who, &Action::ChangeLicence { issuer: id.issuer().as_str() })?;
        check_idempotency_key(idempotency_key)?;
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(ServiceError::invalid("reason", format!("required, at most {MAX_REASON} characters")));
        }
        let at = now();
        let occurred_at = occurred_at.unwrap_or(at);
        if occurred_at > at + time::Duration::minutes(5) {
            return Err(ServiceError::invalid("occurred_at", "in the future"));
        }
        let request_digest = digest(&[action.name(), identifier, reason, &format_time(occurred_at)]);
        if let Some(done) = self.replay(who, idempotency_key, action.name(), &request_digest).await? {
            return Ok(done);
        }
        let current = self.fetch(identifier).await?;
        let next =
            transition(Some(current.status), action).map_err(|e| ServiceError::FailedPrecondition(e.to_string()))?;
        let mut tx = self.db.pool.begin().await.map_err(db_err)?;
        let updated =
            sqlx::query("UPDATE licences SET status = $1, updated_at = $2 WHERE identifier = $3 AND status = $4")
                .bind(next.code())
                .bind(format_time(at))
                .bind(identifier)
                .bind(current.stored_status.code())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        if updated.rows_affected() != 1 {
            return Err(ServiceError::FailedPrecondition(format!(
                "licence {identifier} changed concurrently; read it again and retry"
            )));
        }
        append_event(&mut tx, identifier, action, next, &who.actor(), reason, occurred_at, at).await?;
        remember(&mut tx, who, idempotency_key, action.name(), &request_digest, identifier, at).await?;
        tx.commit().await.map_err(db_err)?;
        tracing::info!(identifier = %identifier, actor = %who.actor(), action = action.name(), "lifecycle event recorded");
        self.fetch(identifier).await
    }

    /// Reads a licence (status as of today).
    pub async fn get(&self, who: &Principal, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        let id = parse_identifier("identifier", identifier)?;
        authorize(who, &Action::ReadLicence { issuer: id.issuer().as_str() })?;
        self.fetch(identifier).await
    }

    /// A licence's events, oldest first.
    pub async fn history(&self, who: &Principal, identifier: &str) -> Result<Vec<EventRecord>, ServiceError> {
        let id = parse_identifier("identifier", identifier)?;
        authorize(who, &Action::ReadLicence { issuer: id.issuer().as_str() })?;
        self.fetch(identifier).await?;
        let rows = sqlx::query(
            "SELECT sequence, kind, status_after, actor, reason, occurred_at, recorded_at FROM licence_events
             WHERE identifier = $1 ORDER BY sequence",
        )
        .bind(identifier)
        .fetch_all(&self.db.pool)
        .await
        .map_err(db_err)?;
        rows.iter().map(record::event_from_row).collect()
    }

    async fn fetch(&self, identifier: &str) -> Result<LicenceRecord, ServiceError> {
        let row = sqlx::query(
            "SELECT identifier, type_code, issuer_code, template_version, status, valid_until, document_json, jws, key_id,
                    recorded_at, updated_at FROM licences WHERE identifier = $1",
        )
        .bind(identifier)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(db_err)?
        .ok_or_else(|| ServiceError::NotFound(format!("no licence {identifier}")))?;
        record::licence_from_row(&row, today())
    }

    async fn replay(
        &self,
        who: &Principal,
        key: &str,
        operation: &str,
        request_digest: &str,
    ) -> Result<Option<LicenceRecord>, ServiceError> {
        if key.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query("SELECT operation, request_digest, identifier FROM idempotency_keys WHERE agency = $1 AND idempotency_key = $2")
            .bind(&who.agency)
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let op: String = row.try_get("operation").map_err(db_err)?;
        let d: String = row.try_get("request_digest").map_err(db_err)?;
        if op != operation || d != request_digest {
            return Err(ServiceError::FailedPrecondition(format!(
                "idempotency key {key:?} was already used for a different request"
            )));
        }
        let identifier: String = row.try_get("identifier").map_err(db_err)?;
        self.fetch(&identifier).await.map(Some)
    }
}

#[allow(clippy::too_many_arguments)]
async fn append_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    identifier: &str,
    action: LifecycleAction,
    status_after: LicenceStatus,
    actor: &str,
    reason: &str,
    occurred_at: OffsetDateTime,
    recorded_at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO licence_events (identifier, kind, status_after, actor, reason, occurred_at, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(identifier)
    .bind(action.name())
    .bind(status_after.code())
    .bind(actor)
    .bind(reason)
    .bind(format_time(occurred_at))
    .bind(format_time(recorded_at))
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn remember(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    who: &Principal,
    key: &str,
    operation: &str,
    request_digest: &str,
    identifier: &str,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    if key.is_empty() {
        return Ok(());
    }
    let r = sqlx::query(
        "INSERT INTO idempotency_keys (agency, idempotency_key, operation, request_digest, identifier, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&who.agency)
    .bind(key)
    .bind(operation)
    .bind(request_digest)
    .bind(identifier)
    .bind(format_time(at))
    .execute(&mut **tx)
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if zhengzhao_store::is_unique_violation(&e) => Err(ServiceError::FailedPrecondition(format!(
            "idempotency key {key:?} is being used by a concurrent request; retry"
        ))),
        Err(e) => Err(db_err(e)),
    }
}
