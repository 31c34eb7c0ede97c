//! A district's published issuer keys, recorded on the city (public halves
//! only) so that the city verifies the district licences it replicates.
//! They are listed with the library's own keys and never sign: an issuer
//! with a district key never gets a key here.

use sqlx::Row;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::Uscc;
use zhengzhao_crypto::IssuerPublicKey;
use zhengzhao_crypto::published::{KeyStatus, PublicKeyRecord};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, now};

use crate::Signing;

/// Most keys recorded at once.
pub const MAX_IMPORTED_KEYS: usize = 1000;

fn rank(s: KeyStatus) -> u8 {
    match s {
        KeyStatus::Active => 0,
        KeyStatus::Retired => 1,
        KeyStatus::Compromised => 2,
    }
}

/// Refuses an issuer keyed by a district.
pub(crate) async fn refuse_foreign_issuer(pool: &sqlx::AnyPool, issuer: &str) -> Result<(), ServiceError> {
    let library: Option<String> = sqlx::query_scalar("SELECT library FROM foreign_keys WHERE issuer_code = $1 LIMIT 1")
        .bind(issuer)
        .fetch_optional(pool)
        .await?;
    match library {
        Some(l) => Err(ServiceError::FailedPrecondition(format!(
            "issuer {issuer} is keyed by district {l}: this library holds only its public keys"
        ))),
        None => Ok(()),
    }
}

impl Signing {
    /// Records `library`'s published keys; returns how many were new or changed.
    pub async fn import_public_keys(
        &self,
        who: &Principal,
        library: &str,
        keys: &[PublicKeyRecord],
    ) -> Result<u32, ServiceError> {
        authorize(who, &Action::ImportPublicKeys)?;
        if !zhengzhao_core::library::is_library_name(library) {
            let rule = zhengzhao_core::library::LIBRARY_NAME_RULE;
            return Err(ServiceError::invalid("library", format!("a library name: {rule}")));
        }
        if keys.len() > MAX_IMPORTED_KEYS {
            return Err(ServiceError::invalid("keys", format!("at most {MAX_IMPORTED_KEYS}")));
        }
        for (i, k) in keys.iter().enumerate() {
            let field = format!("keys[{i}]");
            Uscc::parse(&k.issuer_code).map_err(|e| ServiceError::invalid(&field, format!("issuer_code: {e}")))?;
            let public = IssuerPublicKey::from_jwk(&k.jwk)
                .map_err(|e| ServiceError::invalid(&field, format!("not a public key: {e}")))?;
            if public.algorithm() != k.algorithm {
                return Err(ServiceError::invalid(&field, "the JWK's curve does not match the algorithm"));
            }
            // A certificate chain the district attached must be one for this key.
            if let Some(x5c) = k.jwk.get("x5c") {
                let x5c: Vec<String> = serde_json::from_value(x5c.clone())
                    .map_err(|_| ServiceError::invalid(&field, "x5c is not a list of certificates"))?;
                zhengzhao_crypto::x509::Chain::from_x5c(&x5c)
                    .and_then(|c| c.check_links(&public, &k.issuer_code))
                    .map_err(|e| ServiceError::invalid(&field, format!("x5c: {e}")))?;
            }
            if k.jwk.get("d").is_some() {
                return Err(ServiceError::invalid(&field, "a private key: send public halves only"));
            }
            if k.key_id.is_empty() || k.key_id.len() > 200 || k.key_id.chars().any(char::is_control) {
                return Err(ServiceError::invalid(&field, "key_id: 1 to 200 printable characters"));
            }
            if k.status == KeyStatus::Compromised && k.compromised_since.is_none() {
                return Err(ServiceError::invalid(&field, "a compromised key needs compromised_since"));
            }
        }
        let at = format_time(now());
        let mut changed = 0;
        let mut tx = self.db.begin().await?;
        for k in keys {
            let own: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM issuer_keys WHERE issuer_code = $1 OR key_id = $2")
                .bind(&k.issuer_code)
                .bind(&k.key_id)
                .fetch_one(&mut *tx)
                .await?;
            if own > 0 {
                return Err(ServiceError::FailedPrecondition(format!(
                    "key {} of issuer {}: this library keys that issuer (or that key id) itself",
                    k.key_id, k.issuer_code
                )));
            }
            let other: Option<String> =
                sqlx::query_scalar("SELECT library FROM foreign_keys WHERE issuer_code = $1 AND library <> $2 LIMIT 1")
                    .bind(&k.issuer_code)
                    .bind(library)
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some(other) = other {
                return Err(ServiceError::FailedPrecondition(format!(
                    "issuer {} is keyed by district {other}, not {library}",
                    k.issuer_code
                )));
            }
            let jwk = k.jwk.to_string();
            let row = sqlx::query(
                "SELECT library, issuer_code, public_jwk, status, compromised_since FROM foreign_keys WHERE key_id = $1",
            )
                    .bind(&k.key_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let mut compromised = k.compromised_since.map(format_time);
            let retired = k.retired_at.map(format_time);
            match row {
                None => {
                    sqlx::query(
                        "INSERT INTO foreign_keys (key_id, library, issuer_code, algorithm, status, public_jwk,
                            created_at, retired_at, compromised_since, imported_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(&k.key_id)
                    .bind(library)
                    .bind(&k.issuer_code)
                    .bind(k.algorithm.jws_alg())
                    .bind(k.status.name())
                    .bind(&jwk)
                    .bind(format_time(k.created_at))
                    .bind(&retired)
                    .bind(&compromised)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
                    changed += 1;
                }
                Some(row) => {
                    let held_library: String = row.try_get("library")?;
                    let held_issuer: String = row.try_get("issuer_code")?;
                    let held_jwk: String = row.try_get("public_jwk")?;
                    let held_status: String = row.try_get("status")?;
                    let held_jwk: serde_json::Value =
                        serde_json::from_str(&held_jwk).map_err(ServiceError::internal)?;
                    // The key itself never changes; its certificate chain
                    // ("x5c") may be attached or renewed at the district.
                    let bare = |j: &serde_json::Value| {
                        let mut j = j.clone();
                        if let Some(o) = j.as_object_mut() {
                            o.remove("x5c");
                        }
                        j
                    };
                    if held_library != library || held_issuer != k.issuer_code || bare(&held_jwk) != bare(&k.jwk) {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "key {} is recorded for district {held_library} with another issuer or public key: a key never changes",
                            k.key_id
                        )));
                    }
                    let held =
                        KeyStatus::from_name(&held_status).ok_or_else(|| ServiceError::internal("bad status"))?;
                    if rank(k.status) < rank(held) {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "key {} is recorded {}: a key's status only moves forward",
                            k.key_id,
                            held.name()
                        )));
                    }
                    // A compromise recorded here only moves earlier: a
                    // district cannot shrink the span of signatures the
                    // city distrusts.
                    let held_since: Option<String> = row.try_get("compromised_since")?;
                    let held_since = held_since.and_then(|t| zhengzhao_store::parse_time(&t));
                    if let (Some(held), Some(sent)) = (held_since, k.compromised_since)
                        && held < sent
                    {
                        compromised = Some(format_time(held));
                    }
                    let done = sqlx::query(
                        "UPDATE foreign_keys SET status = $1, retired_at = $2, compromised_since = $3, imported_at = $4,
                            public_jwk = $6
                         WHERE key_id = $5 AND (status <> $1 OR retired_at IS DISTINCT FROM $2
                            OR compromised_since IS DISTINCT FROM $3 OR public_jwk <> $6)",
                    )
                    .bind(k.status.name())
                    .bind(&retired)
                    .bind(&compromised)
                    .bind(&at)
                    .bind(&k.key_id)
                    .bind(&jwk)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() > 0 {
                        changed += 1;
                        tracing::info!(key_id = %k.key_id, library, status = k.status.name(), "district key updated");
                    }
                }
            }
        }
        if changed > 0 {
            crate::events::bump_stored(&mut tx).await?;
        }
        tx.commit().await?;
        if changed > 0 {
            self.events.changed().await;
        }
        Ok(changed)
    }
}
