//! The signing service: issuer keys (ES256 or SM2-with-SM3, chosen when a key
//! is created), kept encrypted at rest under the master key; signs canonical
//! licence documents as JWS and publishes every key with its history (active,
//! retired, compromised as of a time) as a JWKS. Private keys never leave it.
//!
//! An issuer has at most one active key. Its first signature creates one of
//! the default algorithm if the issuer never had a key; after that, keys
//! change only by `create` (when none is active), `rotate`, `retire` and
//! `compromise`, each recorded in `key_events`.

#![forbid(unsafe_code)]

pub mod disclosure;
pub mod error;
pub mod events;
mod foreign;
mod metrics;
pub use metrics::METRICS_INTERVAL;
mod batch;
mod certificates;
mod custody;
pub mod grpc;
pub mod http;
pub mod pkcs11;
use batch::sign_all;
pub(crate) use custody::blocking;
use custody::{NewKey, Signer};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row;
use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::{Reason, Uscc};
use zhengzhao_crypto::{Algorithm, JwsHeader, MasterKey, jws};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, Migrations, StoreConfig, StoreError, format_time, now, parse_time};

pub use error::SigningError;
pub use zhengzhao_clients::{MAX_BATCH, SigningClient};

static PG: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// This service's migrations.
pub static MIGRATIONS: Migrations = Migrations { postgres: &PG, sqlite: &SQLITE };

/// Largest certificate chain accepted (PEM bytes).
pub const MAX_CHAIN_PEM: usize = 64 * 1024;

/// Largest payload accepted for signing.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// How long a process trusts its cached copy of an issuer's active key. Key
/// management in this process updates the cache at once; another signing
/// replica sees a rotation or compromise within this time.
const ACTIVE_KEY_TTL: Duration = Duration::from_secs(5);

pub use zhengzhao_crypto::published::{KeyStatus, PublicKeyRecord, Signed};

/// The outcome of marking a key compromised.
#[derive(Debug, Clone, PartialEq)]
pub struct Compromised {
    pub key: PublicKeyRecord,
    /// The fresh key that took over, when the compromised one was active.
    pub replacement: Option<PublicKeyRecord>,
}

/// An active key as read, when, and under which key generation.
type CachedActive = (Instant, u64, Arc<ActiveKey>);

struct ActiveKey {
    key_id: String,
    signer: Signer,
    /// Its certificate chain from a CA (JWS `x5c`), once attached.
    x5c: Option<Vec<String>>,
}

/// The signing service over its own tables.
pub struct Signing {
    db: Db,
    master: MasterKey,
    default_algorithm: Algorithm,
    /// The PKCS#11 token new keys are made in, when configured.
    token: Option<Arc<pkcs11::Token>>,
    /// Each issuer's active key as last read, when, and under which key
    /// generation: used only while no key has changed since (here, or in
    /// another replica: see [`events`]) and for at most [`ACTIVE_KEY_TTL`].
    active: Mutex<HashMap<String, CachedActive>>,
    events: Arc<events::KeyEvents>,
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signing(..)")
    }
}

fn check_issuer(issuer: &str) -> Result<(), ServiceError> {
    Uscc::parse(issuer).map(|_| ()).map_err(|e| ServiceError::invalid("issuer_code", e.to_string()))
}

const KEY_COLUMNS: &str =
    "key_id, issuer_code, algorithm, status, public_jwk, created_at, retired_at, compromised_since";

fn key_from_row(r: &sqlx::any::AnyRow) -> Result<PublicKeyRecord, ServiceError> {
    let s = |c: &str| r.try_get::<String, _>(c).map_err(ServiceError::from);
    let t = |c: &str| -> Result<Option<OffsetDateTime>, ServiceError> {
        r.try_get::<Option<String>, _>(c)?
            .map(|v| parse_time(&v).ok_or_else(|| ServiceError::internal(format!("bad {c}"))))
            .transpose()
    };
    Ok(PublicKeyRecord {
        key_id: s("key_id")?,
        issuer_code: s("issuer_code")?,
        algorithm: Algorithm::from_jws_alg(&s("algorithm")?).ok_or_else(|| ServiceError::internal("bad algorithm"))?,
        status: KeyStatus::from_name(&s("status")?).ok_or_else(|| ServiceError::internal("bad status"))?,
        jwk: serde_json::from_str(&s("public_jwk")?).map_err(ServiceError::internal)?,
        created_at: t("created_at")?.ok_or_else(|| ServiceError::internal("bad created_at"))?,
        retired_at: t("retired_at")?,
        compromised_since: t("compromised_since")?,
    })
}

/// Why the signing service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the issuer keys: {0}")]
    Database(String),
    #[error("signing.pkcs11: {0}")]
    Token(String),
    #[error(
        "the master key does not open the stored issuer key {0}: this is not the master key these keys were sealed with (restore the right master.key or ZHENGZHAO_MASTER_KEY)"
    )]
    WrongMasterKey(String),
}

impl Signing {
    /// Opens the service; `default_algorithm` is used for an issuer's first
    /// key when its first signature creates it. With `token`, new keys are
    /// made and used in that PKCS#11 token.
    pub async fn open(
        store: &StoreConfig,
        master: MasterKey,
        default_algorithm: Algorithm,
        token: Option<Arc<pkcs11::Token>>,
    ) -> Result<Arc<Self>, OpenError> {
        if token.is_some() && default_algorithm != Algorithm::Es256 {
            return Err(OpenError::Token(format!(
                "signing.default_algorithm is {default_algorithm}, but keys in a PKCS#11 token are ES256 only"
            )));
        }
        let db = zhengzhao_store::open(store, "signing", &MIGRATIONS).await?;
        // A master key that opens none of the stored issuer keys is the wrong
        // one (or a new one beside an old database): refuse to start rather
        // than sign with keys nobody can ever use again.
        // (Keys in a token hold only a reference: they are not sealed.)
        let stored: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT key_id, private_envelope FROM issuer_keys ORDER BY created_at")
                .fetch_all(&db.pool)
                .await
                .map_err(|e| OpenError::Database(e.to_string()))?;
        let sealed = stored.iter().find(|(_, e)| !e.starts_with(pkcs11::REFERENCE_PREFIX));
        if let Some((key_id, envelope)) = sealed
            && master.open(key_id, envelope).is_err()
        {
            return Err(OpenError::WrongMasterKey(key_id.clone()));
        }
        if token.is_none()
            && let Some((key_id, _)) = stored.iter().find(|(_, e)| e.starts_with(pkcs11::REFERENCE_PREFIX))
        {
            return Err(OpenError::Token(format!(
                "issuer key {key_id} is in a PKCS#11 token, but signing.pkcs11 is not set"
            )));
        }
        let events: Arc<events::KeyEvents> = Arc::default();
        events.clone().follow_stored(db.pool.clone()).await;
        Ok(Arc::new(Signing { db, master, default_algorithm, token, active: Mutex::new(HashMap::new()), events }))
    }

    /// Signs `payload` (a canonical licence document) with `issuer`'s active key.
    pub async fn sign(&self, who: &Principal, issuer: &str, payload: &[u8]) -> Result<Signed, ServiceError> {
        authorize(who, &Action::SignDocument { issuer })?;
        check_issuer(issuer)?;
        if payload.is_empty() || payload.len() > MAX_PAYLOAD {
            return Err(ServiceError::invalid("payload", format!("1 to {MAX_PAYLOAD} bytes")));
        }
        if serde_json::from_slice::<serde_json::Value>(payload).is_err() {
            return Err(ServiceError::invalid("payload", "must be a JSON document"));
        }
        let key = self.active_key(issuer).await?;
        let iat = OffsetDateTime::now_utc().unix_timestamp();
        match key.signer {
            Signer::Software(_) => sign_with(&key, payload, iat),
            // A token call blocks: not on the runtime's threads.
            Signer::Token(_) => {
                let payload = payload.to_vec();
                blocking(move || sign_with(&key, &payload, iat)).await?
            }
        }
    }

    /// Signs many payloads with `issuer`'s active key, spread over the cores.
    pub async fn sign_many(
        &self,
        who: &Principal,
        issuer: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<Signed>, ServiceError> {
        authorize(who, &Action::SignDocument { issuer })?;
        check_issuer(issuer)?;
        if payloads.len() > MAX_BATCH {
            return Err(ServiceError::invalid("payloads", format!("at most {MAX_BATCH} per call")));
        }
        if let Some(i) = payloads.iter().position(|p| p.is_empty() || p.len() > MAX_PAYLOAD) {
            return Err(ServiceError::invalid(format!("payloads[{i}]"), format!("1 to {MAX_PAYLOAD} bytes")));
        }
        let key = self.active_key(issuer).await?;
        let iat = OffsetDateTime::now_utc().unix_timestamp();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        tokio::task::spawn_blocking(move || sign_all(&payloads, threads, |p| sign_with(&key, p, iat))).await.map_err(
            |e| {
                if e.is_cancelled() {
                    SigningError::ShuttingDown.into()
                } else {
                    ServiceError::internal(format!("a signing batch failed: {e}"))
                }
            },
        )?
    }

    /// Public keys with their history, optionally of one issuer, oldest first.
    pub async fn public_keys(
        &self,
        who: &Principal,
        issuer: Option<&str>,
    ) -> Result<Vec<PublicKeyRecord>, ServiceError> {
        authorize(who, &Action::ReadPublicKeys)?;
        self.published_keys(issuer).await
    }

    /// Key events for a remote public-key cache (see [`events`]).
    pub fn watch_key_events(
        &self,
        who: &Principal,
        acks: tonic::Streaming<zhengzhao_proto::signing::v1::WatchKeyEventsRequest>,
    ) -> Result<events::KeyEventStream, ServiceError> {
        authorize(who, &Action::WatchKeyEvents)?;
        self.events.watch(acks).map_err(|s| ServiceError::from_status(&s))
    }

    /// The published key history (public to everyone, as on the HTTP JWKS).
    pub async fn published_keys(&self, issuer: Option<&str>) -> Result<Vec<PublicKeyRecord>, ServiceError> {
        if let Some(i) = issuer {
            check_issuer(i)?;
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM issuer_keys WHERE ($1 = '' OR issuer_code = $1)
             UNION ALL SELECT {KEY_COLUMNS} FROM foreign_keys WHERE ($1 = '' OR issuer_code = $1)
             ORDER BY created_at, key_id"
        )))
        .bind(issuer.unwrap_or(""))
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Creates `issuer`'s active key of `alg`; refused while one is active
    /// (rotate instead).
    pub async fn create_key(
        &self,
        who: &Principal,
        issuer: &str,
        alg: Algorithm,
        reason: &str,
    ) -> Result<PublicKeyRecord, ServiceError> {
        authorize(who, &Action::ManageKeys)?;
        check_issuer(issuer)?;
        let reason = Reason::parse_field("reason", reason)?;
        if let Some(k) = active_record(&mut *self.db.pool.acquire().await?, issuer).await? {
            return Err(SigningError::HasActiveKey { issuer: issuer.to_owned(), key_id: k.key_id }.into());
        }
        self.with_new_key(issuer, alg, async |new| {
            let mut tx = self.db.begin().await?;
            if let Some(k) = active_record(&mut tx, issuer).await? {
                return Err(SigningError::HasActiveKey { issuer: issuer.to_owned(), key_id: k.key_id }.into());
            }
            let (record, key) = self.insert_key(&mut tx, issuer, new, &who.actor(), &reason, "create").await?;
            tx.commit().await?;
            self.remember(issuer, Arc::new(key));
            self.events.changed().await;
            Ok(record)
        })
        .await
    }

    /// Retires `issuer`'s active key and creates a new one (of `alg`, or of
    /// the old key's algorithm). The old key still verifies what it signed.
    pub async fn rotate_key(
        &self,
        who: &Principal,
        issuer: &str,
        alg: Option<Algorithm>,
        reason: &str,
    ) -> Result<(PublicKeyRecord, PublicKeyRecord), ServiceError> {
        authorize(who, &Action::ManageKeys)?;
        check_issuer(issuer)?;
        let reason = Reason::parse_field("reason", reason)?;
        let current = active_record(&mut *self.db.pool.acquire().await?, issuer)
            .await?
            .ok_or_else(|| SigningError::NothingToReplace { issuer: issuer.to_owned(), verb: "rotate".to_owned() })?;
        self.with_new_key(issuer, alg.unwrap_or(current.algorithm), async |new| {
            let mut tx = self.db.begin().await?;
            let old = retire_active(&mut tx, issuer, "rotate", "retire (rotation)", &who.actor(), &reason).await?;
            let (record, key) =
                self.insert_key(&mut tx, issuer, new, &who.actor(), &reason, "create (rotation)").await?;
            tx.commit().await?;
            self.remember(issuer, Arc::new(key));
            self.events.changed().await;
            Ok((old, record))
        })
        .await
    }

    /// Retires `issuer`'s active key without a successor: the issuer cannot
    /// sign until a key is created.
    pub async fn retire_key(
        &self,
        who: &Principal,
        issuer: &str,
        reason: &str,
    ) -> Result<PublicKeyRecord, ServiceError> {
        authorize(who, &Action::ManageKeys)?;
        check_issuer(issuer)?;
        let reason = Reason::parse_field("reason", reason)?;
        let mut tx = self.db.begin().await?;
        let old = retire_active(&mut tx, issuer, "retire", "retire", &who.actor(), &reason).await?;
        tx.commit().await?;
        self.forget(issuer);
        self.events.changed().await;
        Ok(old)
    }

    /// Marks `key_id` compromised as of `since`: its signatures made at or
    /// after then verify as "key compromised", earlier ones stay valid. An
    /// active key is replaced at once by a fresh key of the same algorithm
    /// (ES256 in a PKCS#11 token). The compromise is recorded even when no
    /// replacement can be made (the token is down): then none is returned,
    /// and the issuer signs again once a key is created. `since` may move
    /// earlier on a second call, never later.
    pub async fn compromise_key(
        &self,
        who: &Principal,
        key_id: &str,
        since: OffsetDateTime,
        reason: &str,
    ) -> Result<Compromised, ServiceError> {
        authorize(who, &Action::ManageKeys)?;
        let reason = Reason::parse_field("reason", reason)?;
        let at = now();
        if since > at {
            return Err(ServiceError::invalid("since", "must not be in the future"));
        }
        let select = format!("SELECT {KEY_COLUMNS} FROM issuer_keys WHERE key_id = $1");
        let before =
            sqlx::query(sqlx::AssertSqlSafe(select.clone())).bind(key_id).fetch_optional(&self.db.pool).await?;
        let before =
            before.as_ref().map(key_from_row).transpose()?.ok_or_else(|| SigningError::NoKey(key_id.to_owned()))?;
        // The replacement is made before the transaction, and may fail
        // without holding up the compromise.
        let mut fresh = None;
        if before.status == KeyStatus::Active {
            let alg = if self.token.is_some() { Algorithm::Es256 } else { before.algorithm };
            match self.new_key(&before.issuer_code, alg).await {
                Ok(k) => fresh = Some(k),
                Err(e) => tracing::error!(key_id = %key_id, error = %e, "no replacement for the compromised key"),
            }
        }
        let fresh_id = fresh.as_ref().map(|k| k.key_id.clone());
        let mut used = false;
        let outcome = async {
            let mut tx = self.db.begin().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(select)).bind(key_id).fetch_optional(&mut *tx).await?;
            let key =
                row.as_ref().map(key_from_row).transpose()?.ok_or_else(|| SigningError::NoKey(key_id.to_owned()))?;
            if let Some(earlier) = key.compromised_since.filter(|t| *t < since) {
                return Err(SigningError::CompromisedEarlier {
                    key_id: key_id.to_owned(),
                    since: format_time(earlier),
                }
                .into());
            }
            let retired_at = key.retired_at.unwrap_or(at);
            set_status(&mut tx, key_id, KeyStatus::Compromised, retired_at, Some(since)).await?;
            let event = format!("compromised since {}", format_time(since));
            log_key_event(&mut tx, key_id, &event, &who.actor(), &reason, at).await?;
            let replacement = match fresh.take() {
                Some(new) if key.status == KeyStatus::Active => {
                    used = true;
                    let action = "create (replaces compromised)";
                    Some(self.insert_key(&mut tx, &key.issuer_code, new, &who.actor(), &reason, action).await?)
                }
                _ => None,
            };
            tx.commit().await?;
            Ok::<_, ServiceError>((key, retired_at, replacement))
        }
        .await;
        if !(used && outcome.is_ok())
            && let Some(id) = fresh_id
        {
            self.discard(&id).await;
        }
        let (key, retired_at, replacement) = outcome?;
        tracing::warn!(key_id = %key_id, since = %format_time(since), "issuer key marked compromised");
        let replacement = match replacement {
            Some((record, pair)) => {
                self.remember(&key.issuer_code, Arc::new(pair));
                Some(record)
            }
            None => {
                if key.status == KeyStatus::Active {
                    self.forget(&key.issuer_code);
                }
                None
            }
        };
        self.events.changed().await;
        Ok(Compromised {
            key: PublicKeyRecord {
                status: KeyStatus::Compromised,
                retired_at: Some(retired_at),
                compromised_since: Some(since),
                ..key
            },
            replacement,
        })
    }

    /// Records `new` as `issuer`'s active key in `conn`'s transaction.
    async fn insert_key(
        &self,
        conn: &mut sqlx::AnyConnection,
        issuer: &str,
        new: NewKey,
        actor: &str,
        reason: &str,
        action: &str,
    ) -> Result<(PublicKeyRecord, ActiveKey), ServiceError> {
        let NewKey { key_id, alg, signer, envelope } = new;
        let jwk = signer.public_key().to_jwk(&key_id);
        let at = now();
        sqlx::query(
            "INSERT INTO issuer_keys (key_id, issuer_code, algorithm, status, public_jwk, private_envelope, created_at)
             VALUES ($1, $2, $3, 'active', $4, $5, $6)",
        )
        .bind(&key_id)
        .bind(issuer)
        .bind(alg.jws_alg())
        .bind(jwk.to_string())
        .bind(envelope)
        .bind(format_time(at))
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            if zhengzhao_store::is_unique_violation(&e) {
                SigningError::ActiveKeyRace(issuer.to_owned()).into()
            } else {
                ServiceError::from(e)
            }
        })?;
        log_key_event(conn, &key_id, action, actor, reason, at).await?;
        tracing::info!(issuer_code = %issuer, key_id = %key_id, algorithm = %alg, "issuer key created");
        let record = PublicKeyRecord {
            key_id: key_id.clone(),
            issuer_code: issuer.to_owned(),
            algorithm: alg,
            status: KeyStatus::Active,
            jwk,
            created_at: at,
            retired_at: None,
            compromised_since: None,
        };
        Ok((record, ActiveKey { key_id, signer, x5c: None }))
    }

    async fn active_key(&self, issuer: &str) -> Result<Arc<ActiveKey>, ServiceError> {
        if let Some(k) = self.cached(issuer) {
            return Ok(k);
        }
        for _ in 0..3 {
            if let Some(k) = self.load_active(issuer).await? {
                return Ok(k);
            }
            let had_keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM issuer_keys WHERE issuer_code = $1")
                .bind(issuer)
                .fetch_one(&self.db.pool)
                .await?;
            // A district's issuer is keyed there: never make it a key here.
            foreign::refuse_foreign_issuer(&self.db.pool, issuer).await?;
            if had_keys > 0 {
                return Err(SigningError::NoActiveKey(issuer.to_owned()).into());
            }
            let created = self
                .with_new_key(issuer, self.default_algorithm, async |new| {
                    let mut tx = self.db.begin().await?;
                    let (_, key) = self
                        .insert_key(&mut tx, issuer, new, "service:signing", "first signature of the issuer", "create")
                        .await?;
                    tx.commit().await.map_err(|e| {
                        if zhengzhao_store::is_unique_violation(&e) {
                            SigningError::ActiveKeyRace(issuer.to_owned()).into()
                        } else {
                            ServiceError::from(e)
                        }
                    })?;
                    Ok(key)
                })
                .await;
            match created {
                Ok(key) => {
                    let k = Arc::new(key);
                    self.remember(issuer, k.clone());
                    self.events.changed().await;
                    return Ok(k);
                }
                // Another replica created the issuer's key first: use theirs.
                Err(ServiceError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ServiceError::internal("could not create or load the issuer key"))
    }

    async fn load_active(&self, issuer: &str) -> Result<Option<Arc<ActiveKey>>, ServiceError> {
        // Read before the key: a change committed after the read below
        // moves the generation on, so this entry is never used after it.
        let generation = self.events.counter();
        let row = sqlx::query(
            "SELECT key_id, algorithm, private_envelope, public_jwk FROM issuer_keys
             WHERE issuer_code = $1 AND status = 'active'",
        )
        .bind(issuer)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key_id: String = row.try_get("key_id")?;
        let signer = self.signer(&key_id, &row).await?;
        let jwk: serde_json::Value =
            serde_json::from_str(&row.try_get::<String, _>("public_jwk")?).map_err(ServiceError::internal)?;
        let k = Arc::new(ActiveKey { key_id, signer, x5c: x5c_of(&jwk) });
        self.remember_at(issuer, generation, k.clone());
        Ok(Some(k))
    }

    fn cached(&self, issuer: &str) -> Option<Arc<ActiveKey>> {
        let generation = self.events.counter();
        let m = self.active.lock().ok()?;
        m.get(issuer).filter(|(at, g, _)| *g == generation && at.elapsed() < ACTIVE_KEY_TTL).map(|(_, _, k)| k.clone())
    }

    /// Keeps the key this process just made active (before the generation
    /// moves for it: the next signature reads it back once).
    fn remember(&self, issuer: &str, key: Arc<ActiveKey>) {
        self.remember_at(issuer, self.events.counter(), key);
    }

    fn remember_at(&self, issuer: &str, generation: u64, key: Arc<ActiveKey>) {
        if let Ok(mut m) = self.active.lock() {
            m.insert(issuer.to_owned(), (Instant::now(), generation, key));
        }
    }

    fn forget(&self, issuer: &str) {
        if let Ok(mut m) = self.active.lock() {
            m.remove(issuer);
        }
    }
}

async fn active_record(conn: &mut sqlx::AnyConnection, issuer: &str) -> Result<Option<PublicKeyRecord>, ServiceError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM issuer_keys WHERE issuer_code = $1 AND status = 'active'"
    )))
    .bind(issuer)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}

/// Retires `issuer`'s active key in `conn`'s transaction, for `verb`
/// ("rotate" or "retire"), recording the key event `event`.
async fn retire_active(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
    verb: &str,
    event: &str,
    actor: &str,
    reason: &str,
) -> Result<PublicKeyRecord, ServiceError> {
    let old = active_record(conn, issuer)
        .await?
        .ok_or_else(|| SigningError::NothingToReplace { issuer: issuer.to_owned(), verb: verb.to_owned() })?;
    let at = now();
    set_status(conn, &old.key_id, KeyStatus::Retired, at, None).await?;
    log_key_event(conn, &old.key_id, event, actor, reason, at).await?;
    Ok(PublicKeyRecord { status: KeyStatus::Retired, retired_at: Some(at), ..old })
}

async fn set_status(
    conn: &mut sqlx::AnyConnection,
    key_id: &str,
    status: KeyStatus,
    retired_at: OffsetDateTime,
    compromised_since: Option<OffsetDateTime>,
) -> Result<(), ServiceError> {
    sqlx::query("UPDATE issuer_keys SET status = $2, retired_at = $3, compromised_since = $4 WHERE key_id = $1")
        .bind(key_id)
        .bind(status.name())
        .bind(format_time(retired_at))
        .bind(compromised_since.map(format_time))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn log_key_event(
    conn: &mut sqlx::AnyConnection,
    key_id: &str,
    action: &str,
    actor: &str,
    reason: &str,
    at: OffsetDateTime,
) -> Result<(), ServiceError> {
    sqlx::query("INSERT INTO key_events (key_id, action, actor, reason, recorded_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(key_id)
        .bind(action)
        .bind(actor)
        .bind(reason)
        .bind(format_time(at))
        .execute(&mut *conn)
        .await?;
    events::bump_stored(conn).await?;
    Ok(())
}

fn sign_with(key: &ActiveKey, payload: &[u8], iat: i64) -> Result<Signed, ServiceError> {
    let alg = key.signer.algorithm();
    let header = JwsHeader {
        alg: alg.jws_alg().into(),
        kid: Some(key.key_id.clone()),
        typ: None,
        iat: Some(iat),
        x5c: key.x5c.clone(),
    };
    let input = jws::signing_input(&header, payload);
    let signature = key.signer.sign(input.as_bytes())?;
    Ok(Signed { jws: jws::assemble(&input, &signature), key_id: key.key_id.clone(), algorithm: alg })
}

/// The certificate chain a JWK carries (`x5c`), if any.
fn x5c_of(jwk: &serde_json::Value) -> Option<Vec<String>> {
    serde_json::from_value(jwk.get("x5c")?.clone()).ok()
}

/// A JWK Set of the given keys, each with its status and dates.
pub fn jwks(keys: &[PublicKeyRecord]) -> serde_json::Value {
    serde_json::json!({ "keys": keys.iter().map(PublicKeyRecord::published_jwk).collect::<Vec<_>>() })
}

fn hex_id() -> String {
    zhengzhao_crypto::random_bytes::<6>().iter().map(|b| format!("{b:02x}")).collect()
}

/// The signing service as other services call it in-process.
#[tonic::async_trait]
impl zhengzhao_clients::SigningApi for Signing {
    async fn sign(&self, who: &Principal, issuer: &str, payload: &[u8]) -> Result<Signed, ServiceError> {
        Signing::sign(self, who, issuer, payload).await
    }

    async fn sign_many(
        &self,
        who: &Principal,
        issuer: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<Signed>, ServiceError> {
        Signing::sign_many(self, who, issuer, payloads).await
    }

    async fn selective_disclosure(
        &self,
        who: &Principal,
        licence_jws: &str,
        holder_jwk_json: &str,
        scenario_json: &str,
        lifetime_seconds: u32,
    ) -> Result<(String, String), ServiceError> {
        authorize(who, &Action::MakeSelectiveDisclosure { issuer: "" })?;
        let holder_jwk: serde_json::Value =
            serde_json::from_str(holder_jwk_json).map_err(|_| ServiceError::invalid("holder_jwk_json", "not JSON"))?;
        let scenario: serde_json::Value =
            serde_json::from_str(scenario_json).map_err(|_| ServiceError::invalid("scenario_json", "not JSON"))?;
        let made = Signing::selective_disclosure(
            self,
            who,
            &disclosure::DisclosureRequest {
                licence_jws,
                holder_jwk: &holder_jwk,
                scenario: &scenario,
                lifetime_seconds,
            },
        )
        .await?;
        Ok((made.sd_jwt, made.key_id))
    }

    async fn public_keys(&self, who: &Principal, issuer: Option<&str>) -> Result<Vec<PublicKeyRecord>, ServiceError> {
        Signing::public_keys(self, who, issuer).await
    }

    fn key_generation(&self) -> tokio::sync::watch::Receiver<zhengzhao_clients::KeyGeneration> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_master_key_beside_sealed_issuer_keys_refuses_to_start() -> anyhow::Result<()> {
        for db in zhengzhao_testkit::TestDb::both().await? {
            let master = MasterKey::generate();
            let signing = Signing::open(&db.store(), master.clone(), Algorithm::Es256, None).await?;
            let issuance = Principal::service(zhengzhao_auth::ServiceName::Issuance, "11100000000013338W");
            signing.sign(&issuance, "91350100M000100Y43", b"{}").await?;
            signing.db.pool.close().await;
            let wrong = Signing::open(&db.store(), MasterKey::generate(), Algorithm::Es256, None).await;
            assert!(matches!(wrong, Err(OpenError::WrongMasterKey(_))), "{}", db.engine());
            Signing::open(&db.store(), master, Algorithm::Es256, None).await?;
        }
        Ok(())
    }
}
