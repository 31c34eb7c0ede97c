//! The signing service: one ES256 key per issuer, created on first use, kept
//! encrypted at rest under the master key; signs canonical licence documents
//! as JWS and publishes the public keys as a JWKS. Private keys never leave it.

#![forbid(unsafe_code)]

pub mod client;
pub mod grpc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::Row;
use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::Uscc;
use zhengzhao_crypto::{Es256KeyPair, JwsHeader, MasterKey, jws};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, Migrations, StoreConfig, StoreError, format_time, now, parse_time};

pub use client::SigningClient;

static PG: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// This service's migrations.
pub static MIGRATIONS: Migrations = Migrations { postgres: &PG, sqlite: &SQLITE };

/// Largest payload accepted for signing.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Most payloads signed in one batch call.
pub const MAX_BATCH: usize = 1000;

/// A signature over a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub jws: String,
    pub key_id: String,
    pub algorithm: String,
}

/// A public key and its state.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicKeyRecord {
    pub key_id: String,
    pub issuer_code: String,
    pub algorithm: String,
    pub status: String,
    pub jwk: serde_json::Value,
    pub created_at: OffsetDateTime,
}

/// The signing service over its own table.
pub struct Signing {
    db: Db,
    master: MasterKey,
    active: Mutex<HashMap<String, Arc<(String, Es256KeyPair)>>>,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signing(..)")
    }
}

fn db_err(e: sqlx::Error) -> ServiceError {
    ServiceError::internal(e)
}

impl Signing {
    pub async fn open(store: &StoreConfig, master: MasterKey) -> Result<Arc<Self>, StoreError> {
        let db = zhengzhao_store::open(store, "signing", &MIGRATIONS).await?;
        Ok(Arc::new(Signing { db, master, active: Mutex::new(HashMap::new()) }))
    }

    /// Signs `payload` (a canonical licence document) with `issuer`'s active key.
    pub async fn sign(&self, who: &Principal, issuer: &str, payload: &[u8]) -> Result<Signed, ServiceError> {
        authorize(who, &Action::SignDocument)?;
        Uscc::parse(issuer).map_err(|e| ServiceError::invalid("issuer_code", e.to_string()))?;
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return Err(ServiceError::invalid("payload", format!("1 to {MAX_PAYLOAD} bytes")));
        }
        if serde_json::from_slice::<serde_json::Value>(payload).is_err() {
            return Err(ServiceError::invalid("payload", "must be a JSON document"));
        }
        let key = self.active_key(issuer).await?;
        Ok(sign_with(&key, payload))
    }

    /// Signs many payloads with `issuer`'s active key, spread over the cores.
    pub async fn sign_many(
        &self,
        who: &Principal,
        issuer: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<Signed>, ServiceError> {
        authorize(who, &Action::SignDocument)?;
        Uscc::parse(issuer).map_err(|e| ServiceError::invalid("issuer_code", e.to_string()))?;
        if payloads.len() > MAX_BATCH {
            return Err(ServiceError::invalid("payloads", format!("at most {MAX_BATCH} per call")));
        }
        if let Some(i) = payloads.iter().position(|p| p.is_empty() || p.len() > MAX_PAYLOAD) {
            return Err(ServiceError::invalid(format!("payloads[{i}]"), format!("1 to {MAX_PAYLOAD} bytes")));
        }
        let key = self.active_key(issuer).await?;
        tokio::task::spawn_blocking(move || {
            let threads = std::thread::available_parallelism().map_or(1, usize::from).min(payloads.len().max(1));
            let chunk = payloads.len().div_ceil(threads).max(1);
            std::thread::scope(|scope| {
                let handles: Vec<_> = payloads
                    .chunks(chunk)
                    .map(|part| {
                        let key = &key;
                        scope.spawn(move || part.iter().map(|p| sign_with(key, p)).collect::<Vec<_>>())
                    })
                    .collect();
                handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect::<Vec<_>>()
            })
        })
        .await
        .map_err(ServiceError::internal)
    }

    /// Public keys, optionally of one issuer, oldest first.
    pub async fn public_keys(
        &self,
        who: &Principal,
        issuer: Option<&str>,
    ) -> Result<Vec<PublicKeyRecord>, ServiceError> {
        authorize(who, &Action::ReadPublicKeys)?;
        if let Some(i) = issuer {
            Uscc::parse(i).map_err(|e| ServiceError::invalid("issuer_code", e.to_string()))?;
        }
        let rows = sqlx::query(
            "SELECT key_id, issuer_code, algorithm, status, public_jwk, created_at FROM issuer_keys
             WHERE ($1 = '' OR issuer_code = $1) ORDER BY created_at, key_id",
        )
        .bind(issuer.unwrap_or(""))
        .fetch_all(&self.db.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                let s = |c: &str| r.try_get::<String, _>(c).map_err(db_err);
                Ok(PublicKeyRecord {
                    key_id: s("key_id")?,
                    issuer_code: s("issuer_code")?,
                    algorithm: s("algorithm")?,
                    status: s("status")?,
                    jwk: serde_json::from_str(&s("public_jwk")?).map_err(ServiceError::internal)?,
                    created_at: parse_time(&s("created_at")?)
                        .ok_or_else(|| ServiceError::internal("bad created_at"))?,
                })
            })
            .collect()
    }

    async fn active_key(&self, issuer: &str) -> Result<Arc<(String, Es256KeyPair)>, ServiceError> {
        if let Some(k) = self.cached(issuer) {
            return Ok(k);
        }
        for _ in 0..3 {
            if let Some(k) = self.load_active(issuer).await? {
                return Ok(k);
            }
            let key = Es256KeyPair::generate();
            let key_id = format!("{issuer}.es256.{}", hex_id());
            let envelope = self.master.seal(&key_id, &key.secret_bytes());
            let jwk = key.public_key().to_jwk(&key_id).to_string();
            let inserted = sqlx::query(
                "INSERT INTO issuer_keys (key_id, issuer_code, algorithm, status, public_jwk, private_envelope, created_at)
                 VALUES ($1, $2, 'ES256', 'active', $3, $4, $5)",
            )
            .bind(&key_id)
            .bind(issuer)
            .bind(&jwk)
            .bind(envelope)
            .bind(format_time(now()))
            .execute(&self.db.pool)
            .await;
            match inserted {
                Ok(_) => {
                    tracing::info!(issuer_code = %issuer, key_id = %key_id, "issuer key created");
                    let k = Arc::new((key_id, key));
                    self.remember(issuer, k.clone());
                    return Ok(k);
                }
                // Another replica created the issuer's key first: use theirs.
                Err(e) if zhengzhao_store::is_unique_violation(&e) => continue,
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(ServiceError::internal("could not create or load the issuer key"))
    }

    async fn load_active(&self, issuer: &str) -> Result<Option<Arc<(String, Es256KeyPair)>>, ServiceError> {
        let row = sqlx::query(
            "SELECT key_id, private_envelope FROM issuer_keys WHERE issuer_code = $1 AND status = 'active'",
        )
        .bind(issuer)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let key_id: String = row.try_get("key_id").map_err(db_err)?;
        let envelope: Vec<u8> = row.try_get("private_envelope").map_err(db_err)?;
        let secret =
            self.master.open(&key_id, &envelope).map_err(|e| ServiceError::internal(format!("key {key_id}: {e}")))?;
        let key = Es256KeyPair::from_secret_bytes(&secret).map_err(ServiceError::internal)?;
        let k = Arc::new((key_id, key));
        self.remember(issuer, k.clone());
        Ok(Some(k))
    }

    fn cached(&self, issuer: &str) -> Option<Arc<(String, Es256KeyPair)>> {
        self.active.lock().ok().and_then(|m| m.get(issuer).cloned())
    }

    fn remember(&self, issuer: &str, key: Arc<(String, Es256KeyPair)>) {
        if let Ok(mut m) = self.active.lock() {
            m.insert(issuer.to_owned(), key);
        }
    }
}

fn sign_with(key: &(String, Es256KeyPair), payload: &[u8]) -> Signed {
    let header = JwsHeader { alg: "ES256".into(), kid: Some(key.0.clone()), typ: None };
    let input = jws::signing_input(&header, payload);
    let signature = key.1.sign(input.as_bytes());
    Signed { jws: jws::assemble(&input, &signature), key_id: key.0.clone(), algorithm: "ES256".into() }
}

/// A JWK Set of the given keys.
pub fn jwks(keys: &[PublicKeyRecord]) -> serde_json::Value {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

fn hex_id() -> String {
    zhengzhao_crypto::random_bytes::<6>().iter().map(|b| format!("{b:02x}")).collect()
}
