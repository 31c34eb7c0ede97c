//! Storage for every service: one sqlx pool per service over PostgreSQL (a
//! schema per service) or SQLite (a file per service), with that service's
//! embedded, numbered migrations applied under sqlx's migration lock.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use time::OffsetDateTime;

pub use rusqlite;
pub use sqlx;

/// Where a library keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A PostgreSQL database; each service gets its own schema in it.
    /// `read_url`, when given, is a streaming replica of it that the reads
    /// allowed to lag ([`Db::replica_reader`]) go to.
    Postgres { url: String, read_url: Option<String>, read_max_lag: std::time::Duration },
    /// A directory; each service gets its own SQLite file in it.
    SqliteDir(PathBuf),
}

impl StoreConfig {
    /// `postgres://...` URLs are PostgreSQL; anything else is a directory for SQLite files.
    pub fn from_url_or_dir(url: Option<&str>, dir: PathBuf) -> Self {
        Self::from_urls_or_dir(url, None, MAX_REPLICA_LAG, dir)
    }

    /// As [`StoreConfig::from_url_or_dir`], with a streaming replica's URL
    /// for the reads that may lag (PostgreSQL only).
    pub fn from_urls_or_dir(
        url: Option<&str>,
        read_url: Option<&str>,
        read_max_lag: std::time::Duration,
        dir: PathBuf,
    ) -> Self {
        match url {
            Some(u) if !u.is_empty() => StoreConfig::Postgres {
                url: u.to_owned(),
                read_url: read_url.filter(|r| !r.is_empty()).map(str::to_owned),
                read_max_lag,
            },
            _ => StoreConfig::SqliteDir(dir),
        }
    }
}

/// Which engine a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

/// A service's database handle.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub engine: Engine,
    /// On SQLite, read-only connections beside the one writer (WAL lets
    /// them read committed data while the writer commits); on PostgreSQL
    /// the pool itself.
    reader: Option<AnyPool>,
    /// On PostgreSQL with a streaming replica configured: read-only
    /// connections to it.
    replica: Option<AnyPool>,
    /// Whether the replica is within `max_lag` (checked every second).
    replica_usable: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max_lag: std::time::Duration,
    /// On SQLite: read-only connections called directly, for point reads
    /// on the hot path ([`Db::sqlite_read`]).
    direct: Option<std::sync::Arc<DirectReads>>,
}

/// Read-only SQLite connections used on the calling thread: a point read by
/// key costs microseconds, less than the two cross-thread hand-offs of a
/// statement through sqlx's connection worker.
#[derive(Debug)]
pub struct DirectReads {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

/// Idle direct connections kept.
const DIRECT_IDLE: usize = 8;

impl DirectReads {
    fn connection(&self) -> rusqlite::Result<rusqlite::Connection> {
        if let Some(c) = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop() {
            return Ok(c);
        }
        use rusqlite::OpenFlags;
        let c = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(c)
    }

    fn give_back(&self, c: rusqlite::Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < DIRECT_IDLE {
            idle.push(c);
        }
    }
}

/// The default lag beyond which the reads that may lag go to the primary.
pub const MAX_REPLICA_LAG: std::time::Duration = std::time::Duration::from_secs(5);

/// Where reads that may lag are served from, and how far behind.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadStatus {
    /// Whether a streaming replica is configured for them.
    pub replica: bool,
    /// Whether it serves them now (within its maximum lag; else the primary does).
    pub in_use: bool,
    /// The replica's WAL not yet replayed, in bytes.
    pub lag_bytes: i64,
    /// Seconds since the last transaction the replica replayed was
    /// committed on the primary; 0 when it has replayed everything.
    pub lag_seconds: f64,
}

/// A database transaction that runs in its own span (`db.transaction`, a
/// child of the call's span, ended when it commits, rolls back or is
/// dropped). Use it as the connection it wraps: `&mut *tx`.
#[derive(Debug)]
pub struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    span: tracing::Span,
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Tx { tx, span } = self;
        let result = tracing::Instrument::instrument(tx.commit(), span.clone()).await;
        span.record("db.outcome", if result.is_ok() { "commit" } else { "commit failed" });
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Tx { tx, span } = self;
        span.record("db.outcome", "rollback");
        tracing::Instrument::instrument(tx.rollback(), span).await
    }

    /// The sqlx transaction itself, for code that takes one.
    pub fn into_inner(self) -> sqlx::Transaction<'static, sqlx::Any> {
        self.tx
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Db {
    /// Begins a transaction on the primary, in its own span.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let span = tracing::info_span!(
            "db.transaction",
            otel.kind = "client",
            db.system = match self.engine {
                Engine::Postgres => "postgresql",
                Engine::Sqlite => "sqlite",
            },
            db.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let tx = tracing::Instrument::instrument(self.pool.begin(), span.clone()).await?;
        Ok(Tx { tx, span })
    }

    /// Where reads that need no transaction go: on SQLite they then do not
    /// queue behind the writer's commits.
    pub fn reader(&self) -> &AnyPool {
        self.reader.as_ref().unwrap_or(&self.pool)
    }

    /// Where reads that may lag behind the latest commits go: a streaming
    /// replica when one is configured, else [`Db::reader`]. Never for what
    /// a write depends on.
    pub fn replica_reader(&self) -> &AnyPool {
        match &self.replica {
            Some(r) if self.replica_usable.load(std::sync::atomic::Ordering::Relaxed) => r,
            _ => self.reader(),
        }
    }

    /// Runs `read` on a direct read-only connection on this thread (SQLite
    /// only; `None` on PostgreSQL). For short reads by key on the hot path:
    /// it blocks the calling thread for as long as it runs.
    pub fn sqlite_read<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Option<rusqlite::Result<T>> {
        let direct = self.direct.as_ref()?;
        Some(direct.connection().and_then(|c| {
            let r = read(&c);
            direct.give_back(c);
            r
        }))
    }

    /// Whether a read replica is configured.
    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// Follows the replica's lag every second, sending the reads that may
    /// lag to the primary while it is beyond its maximum lag or cannot be
    /// asked.
    fn watch_replica(&self) {
        let db = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let usable = match db.lag().await {
                    Ok((_, seconds)) => seconds <= db.max_lag.as_secs_f64(),
                    Err(e) => {
                        tracing::warn!(error = %e, "read replica cannot be asked: reading from the primary");
                        false
                    }
                };
                let was = db.replica_usable.swap(usable, std::sync::atomic::Ordering::Relaxed);
                if was && !usable {
                    tracing::warn!("read replica beyond its maximum lag: reading from the primary");
                }
                if db.pool.is_closed() {
                    return;
                }
            }
        });
    }

    /// How far the replica behind [`Db::replica_reader`] lags.
    pub async fn read_status(&self) -> Result<ReadStatus, sqlx::Error> {
        if self.replica.is_none() {
            return Ok(ReadStatus { replica: false, in_use: false, lag_bytes: 0, lag_seconds: 0.0 });
        }
        let (lag_bytes, lag_seconds) = self.lag().await?;
        let in_use = self.replica_usable.load(std::sync::atomic::Ordering::Relaxed);
        Ok(ReadStatus { replica: true, in_use, lag_bytes, lag_seconds })
    }

    /// The replica's lag: WAL bytes not yet replayed, and seconds.
    async fn lag(&self) -> Result<(i64, f64), sqlx::Error> {
        let Some(replica) = &self.replica else { return Ok((0, 0.0)) };
        let (replayed, replay_age): (Option<String>, Option<f64>) = sqlx::query_as(
            "SELECT pg_last_wal_replay_lsn()::text,
                    EXTRACT(EPOCH FROM (clock_timestamp() - pg_last_xact_replay_timestamp()))::float8",
        )
        .fetch_one(replica)
        .await?;
        let Some(replayed) = replayed else {
            // Not in recovery: not a replica at all.
            return Err(sqlx::Error::Protocol("the read database is not a streaming replica (not in recovery)".into()));
        };
        let lag_bytes: i64 = sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint")
            .bind(&replayed)
            .fetch_one(&self.pool)
            .await?;
        let lag_seconds = if lag_bytes <= 0 { 0.0 } else { replay_age.unwrap_or(0.0).max(0.0) };
        Ok((lag_bytes.max(0), lag_seconds))
    }
}

/// A row's columns by name, whichever driver read it: sqlx (either engine),
/// or a direct SQLite read ([`Db::sqlite_read`]), so that one function
/// reads a table's rows on every path. A direct read's errors come as
/// `sqlx::Error::Decode`.
pub trait Columns {
    fn text(&self, c: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, c: &str) -> Result<Option<String>, sqlx::Error>;
    fn int(&self, c: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, c: &str) -> Result<Option<i64>, sqlx::Error>;
}

impl Columns for sqlx::any::AnyRow {
    fn text(&self, c: &str) -> Result<String, sqlx::Error> {
        sqlx::Row::try_get(self, c)
    }
    fn opt_text(&self, c: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::Row::try_get(self, c)
    }
    fn int(&self, c: &str) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get(self, c)
    }
    fn opt_int(&self, c: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::Row::try_get(self, c)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, c: &str) -> Result<String, sqlx::Error> {
        self.get(c).map_err(decode)
    }
    fn opt_text(&self, c: &str) -> Result<Option<String>, sqlx::Error> {
        self.get(c).map_err(decode)
    }
    fn int(&self, c: &str) -> Result<i64, sqlx::Error> {
        self.get(c).map_err(decode)
    }
    fn opt_int(&self, c: &str) -> Result<Option<i64>, sqlx::Error> {
        self.get(c).map_err(decode)
    }
}

/// A direct read's column error, as sqlx reports one.
fn decode(e: rusqlite::Error) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// Read-only connections of a SQLite database.
const SQLITE_READERS: u32 = 4;

/// A database that cannot be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot make {0} private to its owner: {1}")]
    Permissions(PathBuf, std::io::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("cannot connect to the read replica (read_database_url): {0}")]
    ConnectReplica(sqlx::Error),
    #[error("read_database_url is not a streaming replica (the server is not in recovery): writes there would be lost")]
    NotAReplica,
    #[error("cannot migrate the {service} schema: {source}")]
    Migrate { service: String, source: sqlx::migrate::MigrateError },
}

/// The migrations of one service, for each engine.
#[derive(Debug)]
pub struct Migrations {
    pub postgres: &'static Migrator,
    pub sqlite: &'static Migrator,
}

/// Creates `dir` (and missing parents) mode 0700; an existing one is left as it is.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes a SQLite database file and its `-wal` and `-shm` companions mode
/// 0600, creating the database file so: SQLite creates the companions with
/// the database file's mode, so they are born private too.
fn private_database_files(db: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(db)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            let file = PathBuf::from(name);
            match std::fs::metadata(&file) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// Opens (creating if needed) the database of `service` and applies its migrations.
pub async fn open(config: &StoreConfig, service: &str, migrations: &Migrations) -> Result<Db, StoreError> {
    install_default_drivers();
    assert!(service.bytes().all(|b| b.is_ascii_lowercase()), "service names are lower-case ASCII");
    let db = match config {
        StoreConfig::Postgres { url, read_url, read_max_lag } => {
            let bootstrap = AnyPoolOptions::new().max_connections(1).connect(url).await.map_err(StoreError::Connect)?;
            bootstrap
                .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {service}")))
                .await
                .map_err(StoreError::Connect)?;
            bootstrap.close().await;
            let sep = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{sep}options=-c%20search_path%3D{service}");
            let pool = AnyPoolOptions::new().max_connections(16).connect(&scoped).await.map_err(StoreError::Connect)?;
            let replica = match read_url {
                Some(r) => {
                    // Read-only by default too: nothing written goes there.
                    let sep = if r.contains('?') { '&' } else { '?' };
                    let scoped = format!(
                        "{r}{sep}options=-c%20search_path%3D{service}%20-c%20default_transaction_read_only%3Don"
                    );
                    let replica = AnyPoolOptions::new()
                        .max_connections(16)
                        .connect(&scoped)
                        .await
                        .map_err(StoreError::ConnectReplica)?;
                    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
                        .fetch_one(&replica)
                        .await
                        .map_err(StoreError::ConnectReplica)?;
                    if !standby {
                        return Err(StoreError::NotAReplica);
                    }
                    Some(replica)
                }
                None => None,
            };
            Db {
                pool,
                engine: Engine::Postgres,
                reader: None,
                replica,
                replica_usable: Default::default(),
                max_lag: *read_max_lag,
                direct: None,
            }
        }
        StoreConfig::SqliteDir(dir) => {
            private_dir(dir).map_err(|e| StoreError::Dir(dir.clone(), e))?;
            let path = dir.join(format!("{service}.db"));
            private_database_files(&path).map_err(|e| StoreError::Permissions(path.clone(), e))?;
            let url = format!("sqlite://{}?mode=rwc", path.display());
            // One connection: SQLite has one writer anyway, and a single
            // connection never meets a lock upgrade it cannot wait for.
            let pool = AnyPoolOptions::new().max_connections(1).connect(&url).await.map_err(StoreError::Connect)?;
            pool.execute("PRAGMA journal_mode = WAL").await.map_err(StoreError::Connect)?;
            Db {
                pool,
                engine: Engine::Sqlite,
                reader: None,
                replica: None,
                replica_usable: Default::default(),
                max_lag: MAX_REPLICA_LAG,
                direct: None,
            }
        }
    };
    let migrator = match db.engine {
        Engine::Postgres => migrations.postgres,
        Engine::Sqlite => migrations.sqlite,
    };
    migrator.run(&db.pool).await.map_err(|source| StoreError::Migrate { service: service.to_owned(), source })?;
    let mut db = db;
    if db.replica.is_some() {
        let usable = matches!(db.lag().await, Ok((_, s)) if s <= db.max_lag.as_secs_f64());
        db.replica_usable.store(usable, std::sync::atomic::Ordering::Relaxed);
        db.watch_replica();
    }
    if let StoreConfig::SqliteDir(dir) = config {
        let path = dir.join(format!("{service}.db"));
        let url = format!("sqlite://{}?mode=ro", path.display());
        let reader =
            AnyPoolOptions::new().max_connections(SQLITE_READERS).connect(&url).await.map_err(StoreError::Connect)?;
        db.reader = Some(reader);
        db.direct = Some(std::sync::Arc::new(DirectReads { path, idle: Default::default() }));
    }
    Ok(db)
}

pub use zhengzhao_core::date::{format_time, parse_time};

/// Now, as stored.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    parse_time(&format_time(t)).unwrap_or(t)
}

/// Whether an error is a unique-constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &std::path::Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// The data directory is created 0700 and every SQLite file in it
    /// (database, WAL, shared memory) is 0600, also a database an older
    /// version left readable by others.
    #[cfg(unix)]
    #[tokio::test]
    async fn sqlite_files_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        static NONE: Migrator = Migrator::DEFAULT;
        static EMPTY: Migrations = Migrations { postgres: &NONE, sqlite: &NONE };
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a").join("data");
        let config = StoreConfig::SqliteDir(dir.clone());
        let db = open(&config, "catalog", &EMPTY).await.unwrap();
        sqlx::query("CREATE TABLE t (v TEXT)").execute(&db.pool).await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES ('x')").execute(&db.pool).await.unwrap();
        assert_eq!(mode(&dir), 0o700);
        let names = |d: &std::path::Path| {
            let mut v: Vec<String> =
                std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&dir), ["catalog.db", "catalog.db-shm", "catalog.db-wal"]);
        for name in names(&dir) {
            assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
        }
        db.pool.close().await;
        // A database an older version created 0644 is made private when opened.
        std::fs::set_permissions(dir.join("catalog.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = open(&config, "catalog", &EMPTY).await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES ('y')").execute(&db.pool).await.unwrap();
        for name in names(&dir) {
            assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
        }
    }

    #[test]
    fn times_round_trip_and_sort_as_text() {
        let a = now();
        let b = a + time::Duration::microseconds(1);
        let c = a + time::Duration::microseconds(100_000);
        assert!(format_time(b) < format_time(c));
        assert_eq!(parse_time(&format_time(a)), Some(a));
        assert!(format_time(a) < format_time(b));
    }

    #[test]
    fn what_older_versions_stored_reads_back() {
        let year_minus_one = OffsetDateTime::from_unix_timestamp(-62_198_755_200).unwrap();
        let stored = format_time(year_minus_one);
        assert!(stored.starts_with("-0001-"), "{stored}");
        assert_eq!(parse_time(&stored), Some(year_minus_one));
    }
}
