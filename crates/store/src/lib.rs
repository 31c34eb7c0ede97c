//! Storage for every service: one sqlx pool per service over PostgreSQL (a
//! schema per service) or SQLite (a file per service), with that service's
//! embedded, numbered migrations applied under sqlx's migration lock.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use sqlx;

/// Where a library keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A PostgreSQL database; each service gets its own schema in it.
    Postgres(String),
    /// A directory; each service gets its own SQLite file in it.
    SqliteDir(PathBuf),
}

impl StoreConfig {
    /// `postgres://...` URLs are PostgreSQL; anything else is a directory for SQLite files.
    pub fn from_url_or_dir(url: Option<&str>, dir: PathBuf) -> Self {
        match url {
            Some(u) if !u.is_empty() => StoreConfig::Postgres(u.to_owned()),
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
}

/// A database that cannot be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("cannot migrate the {service} schema: {source}")]
    Migrate { service: String, source: sqlx::migrate::MigrateError },
}

/// The migrations of one service, for each engine.
#[derive(Debug)]
pub struct Migrations {
    pub postgres: &'static Migrator,
    pub sqlite: &'static Migrator,
}

/// Opens (creating if needed) the database of `service` and applies its migrations.
pub async fn open(config: &StoreConfig, service: &str, migrations: &Migrations) -> Result<Db, StoreError> {
    install_default_drivers();
    assert!(service.bytes().all(|b| b.is_ascii_lowercase()), "service names are lower-case ASCII");
    let db = match config {
        StoreConfig::Postgres(url) => {
            let bootstrap = AnyPoolOptions::new().max_connections(1).connect(url).await.map_err(StoreError::Connect)?;
            bootstrap
                .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {service}")))
                .await
                .map_err(StoreError::Connect)?;
            bootstrap.close().await;
            let sep = if url.contains('?') { '&' } else { '?' };
            let scoped = format!("{url}{sep}options=-c%20search_path%3D{service}");
            let pool = AnyPoolOptions::new().max_connections(16).connect(&scoped).await.map_err(StoreError::Connect)?;
            Db { pool, engine: Engine::Postgres }
        }
        StoreConfig::SqliteDir(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.clone(), e))?;
            let url = format!("sqlite://{}?mode=rwc", dir.join(format!("{service}.db")).display());
            // One connection: SQLite has one writer anyway, and a single
            // connection never meets a lock upgrade it cannot wait for.
            let pool = AnyPoolOptions::new().max_connections(1).connect(&url).await.map_err(StoreError::Connect)?;
            pool.execute("PRAGMA journal_mode = WAL").await.map_err(StoreError::Connect)?;
            Db { pool, engine: Engine::Sqlite }
        }
    };
    let migrator = match db.engine {
        Engine::Postgres => migrations.postgres,
        Engine::Sqlite => migrations.sqlite,
    };
    migrator.run(&db.pool).await.map_err(|source| StoreError::Migrate { service: service.to_owned(), source })?;
    Ok(db)
}

/// A timestamp as stored: RFC 3339, UTC, microseconds (sorts as text).
pub fn format_time(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    t.to_offset(time::UtcOffset::UTC).format(FORMAT).unwrap_or_default()
}

/// Parses a stored timestamp.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

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

    #[test]
    fn times_round_trip_and_sort_as_text() {
        let a = now();
        let b = a + time::Duration::microseconds(1);
        let c = a + time::Duration::microseconds(100_000);
        assert!(format_time(b) < format_time(c));
        assert_eq!(parse_time(&format_time(a)), Some(a));
        assert!(format_time(a) < format_time(b));
    }
}
