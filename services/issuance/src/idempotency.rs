//! Idempotency keys: a retry with the key of an earlier request answers with
//! that request's result (the licence as it left it) and changes nothing; a
//! key reused for another request is refused.

use sha2::Digest as _;
use sqlx::Row;
use time::OffsetDateTime;
use zhengzhao_auth::Principal;
use zhengzhao_core::{LicenceState, LicenceStatus};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::format_time;

use crate::{Issuance, IssuanceError, LicenceRecord, MAX_IDEMPOTENCY_KEY};

pub(crate) fn digest(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

pub(crate) fn check_idempotency_key(key: &str) -> Result<(), ServiceError> {
    if key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(|c| c.is_control()) {
        return Err(ServiceError::invalid(
            "idempotency_key",
            format!("at most {MAX_IDEMPOTENCY_KEY} bytes, no control characters"),
        ));
    }
    Ok(())
}

impl Issuance {
    pub(crate) async fn replay(
        &self,
        who: &Principal,
        key: &str,
        operation: &str,
        request_digest: &str,
    ) -> Result<Option<LicenceRecord>, ServiceError> {
        let Some((identifier, state)) = self.first_result(who, key, operation, request_digest).await? else {
            return Ok(None);
        };
        let mut licence = self.fetch(&identifier).await?;
        // Answer as the first request was answered, whatever happened since.
        if let Some(state) = state.as_deref().and_then(decode_state) {
            licence.status = state.status;
            licence.stored_status = state.status;
            licence.reported_lost = state.lost;
            licence.mortgaged = state.mortgaged;
        }
        Ok(Some(licence))
    }

    /// What the first request with idempotency `key` produced (an identifier),
    /// if there was one; refuses a key reused for a different request.
    pub(crate) async fn first_result(
        &self,
        who: &Principal,
        key: &str,
        operation: &str,
        request_digest: &str,
    ) -> Result<Option<(String, Option<String>)>, ServiceError> {
        if key.is_empty() {
            return Ok(None);
        }
        let row = sqlx::query("SELECT operation, request_digest, identifier, result_state FROM idempotency_keys WHERE agency = $1 AND idempotency_key = $2")
            .bind(&who.agency)
            .bind(key)
            .fetch_optional(&self.db.pool)
            .await
            ?;
        let Some(row) = row else { return Ok(None) };
        let op: String = row.try_get("operation")?;
        let d: String = row.try_get("request_digest")?;
        if op != operation || d != request_digest {
            return Err(IssuanceError::KeyReused(key.to_owned()).into());
        }
        let identifier: String = row.try_get("identifier")?;
        let state: Option<String> = row.try_get("result_state")?;
        Ok(Some((identifier, state)))
    }
}

pub(crate) fn encode_state(s: LicenceState) -> String {
    format!("{},{},{}", s.status.name(), u8::from(s.lost), u8::from(s.mortgaged))
}

pub(crate) fn decode_state(text: &str) -> Option<LicenceState> {
    let mut parts = text.split(',');
    let status = LicenceStatus::from_name(parts.next()?)?;
    let lost = parts.next()? == "1";
    let mortgaged = parts.next()? == "1";
    Some(LicenceState { status, lost, mortgaged })
}

/// Records the state a request left its licence in, under its idempotency key.
pub(crate) async fn remember_state(
    conn: &mut sqlx::AnyConnection,
    who: &Principal,
    key: &str,
    state: LicenceState,
) -> Result<(), ServiceError> {
    if key.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE idempotency_keys SET result_state = $3 WHERE agency = $1 AND idempotency_key = $2")
        .bind(&who.agency)
        .bind(key)
        .bind(encode_state(state))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn remember(
    conn: &mut sqlx::AnyConnection,
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
    .execute(&mut *conn)
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if zhengzhao_store::is_unique_violation(&e) => Err(IssuanceError::KeyInUse(key.to_owned()).into()),
        Err(e) => Err(ServiceError::from(e)),
    }
}
