//! Test helpers: a fresh database on each engine (SQLite in a temporary
//! directory; PostgreSQL from `DATABASE_URL` or 127.0.0.1:5432, one new
//! database per test), and service processes started on port 0 whose
//! address is read from their `listening on ADDR` line.

#![forbid(unsafe_code)]

mod pgcluster;

pub use pgcluster::{PgCluster, pg_bin};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use zhengzhao_store::StoreConfig;

/// The PostgreSQL server tests use: `DATABASE_URL`, else the local default.
pub fn postgres_server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database for one test.
#[derive(Debug)]
pub enum TestDb {
    Sqlite(tempfile::TempDir),
    Postgres { url: String },
}

impl TestDb {
    /// A new SQLite directory.
    pub fn sqlite() -> anyhow::Result<Self> {
        Ok(TestDb::Sqlite(tempfile::tempdir()?))
    }

    /// A new, empty PostgreSQL database on the test server.
    pub async fn postgres() -> anyhow::Result<Self> {
        let server = postgres_server_url();
        let name = format!("zz_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&server).await.with_context(|| {
            format!("PostgreSQL tests need a server: set DATABASE_URL or run scripts/test (tried {server})")
        })?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        conn.close().await?;
        let mut url = url::Url::parse(&server)?;
        url.set_path(&format!("/{name}"));
        Ok(TestDb::Postgres { url: url.to_string() })
    }

    /// One of each engine.
    pub async fn both() -> anyhow::Result<Vec<TestDb>> {
        Ok(vec![TestDb::sqlite()?, TestDb::postgres().await?])
    }

    pub fn store(&self) -> StoreConfig {
        match self {
            TestDb::Sqlite(dir) => StoreConfig::SqliteDir(dir.path().to_path_buf()),
            TestDb::Postgres { url } => StoreConfig::Postgres {
                url: url.clone(),
                read_url: None,
                read_max_lag: zhengzhao_store::MAX_REPLICA_LAG,
            },
        }
    }

    /// `sqlite` or `postgres`, for assertion messages.
    pub fn engine(&self) -> &'static str {
        match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    /// The PostgreSQL URL, if this is PostgreSQL.
    pub fn url(&self) -> Option<&str> {
        match self {
            TestDb::Postgres { url } => Some(url),
            TestDb::Sqlite(_) => None,
        }
    }
}

/// Path of a workspace binary, next to the running test's target directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    dir.join(name)
}

/// A running server process, killed when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: tokio::process::Child,
}

impl ServerProcess {
    /// Starts `binary` with `args` (which should include `--listen 127.0.0.1:0`)
    /// and waits for its `listening on ADDR` line.
    pub async fn start(binary_name: &str, args: &[String], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let path = binary(binary_name);
        if !path.exists() {
            bail!("{} is not built: run `cargo build --workspace --bins` first", path.display());
        }
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot start {}", path.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(a) = line.strip_prefix("listening on ") {
                    return Ok::<_, anyhow::Error>(a.trim().parse::<SocketAddr>()?);
                }
            }
            bail!("{binary_name} exited before listening")
        })
        .await
        .with_context(|| format!("{binary_name} did not start listening within 60s"))??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ServerProcess { name: binary_name.to_owned(), addr, child })
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the process.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
