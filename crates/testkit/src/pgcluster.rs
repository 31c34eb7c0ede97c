//! Throwaway PostgreSQL clusters from the binaries on this machine (a
//! primary, and streaming replicas of it), for tests that need a server of
//! their own. As root, the server runs as `postgres` (or `nobody`), as
//! PostgreSQL requires.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A running cluster, stopped and removed when dropped.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    user: Option<String>,
    pub port: u16,
}

/// The newest PostgreSQL server binaries: `/usr/lib/postgresql/*/bin`, or
/// where `initdb` is on the PATH.
pub fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    found.pop().or_else(|| {
        let out = Command::new("sh").args(["-c", "command -v initdb"]).output().ok()?;
        let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        path.parent().filter(|_| path.exists()).map(Path::to_path_buf)
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PgCluster {
    fn new() -> anyhow::Result<Self> {
        let bin = pg_bin().context("no PostgreSQL server binaries on this machine (install postgresql)")?;
        let dir = tempfile::Builder::new().prefix("zhengzhao-pg").tempdir()?;
        let user = if is_root() {
            let user = if Command::new("id").arg("postgres").output().is_ok_and(|o| o.status.success()) {
                "postgres"
            } else {
                "nobody"
            };
            let ok = Command::new("chown").args([user, &dir.path().display().to_string()]).status()?.success();
            if !ok {
                bail!("cannot give {} to {user}", dir.path().display());
            }
            Some(user.to_owned())
        } else {
            None
        };
        Ok(PgCluster { dir, bin, user, port: free_port()? })
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of the server's programs as the cluster's user.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(program).display().to_string();
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--", &exe]);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd.args(args).output().with_context(|| format!("cannot run {program}"))?;
        if !out.status.success() {
            bail!("{program} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c wal_level=replica -c max_wal_senders=8 -c hot_standby=on",
            self.port,
            self.dir.path().display()
        );
        let data = self.data().display().to_string();
        let log = self.dir.path().join("log").display().to_string();
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start"])
    }

    /// A new primary (trust authentication on 127.0.0.1, replication allowed).
    pub fn primary() -> anyhow::Result<Self> {
        let c = Self::new()?;
        let data = c.data().display().to_string();
        c.run("initdb", &["-D", &data, "-U", "postgres", "--auth=trust"])?;
        c.start()?;
        Ok(c)
    }

    /// A streaming replica (hot standby) of `primary`.
    pub fn standby_of(primary: &PgCluster) -> anyhow::Result<Self> {
        let c = Self::new()?;
        let data = c.data().display().to_string();
        let port = primary.port.to_string();
        c.run("pg_basebackup", &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D", &data, "-R", "-X", "stream"])?;
        c.start()?;
        Ok(c)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}
