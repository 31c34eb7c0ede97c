//! The soak's processes: servers on fixed addresses, killed and started
//! again in place, and the sync job.

use std::time::{Duration, Instant};

use zhengzhao_testkit::{ServerProcess, binary};

use crate::ENVS;

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process with a fixed address, so that it can be killed and
/// started again where its peers look for it.
pub struct Service {
    pub name: &'static str,
    pub binary: &'static str,
    pub args: Vec<String>,
    pub port: u16,
    pub process: Option<ServerProcess>,
}

impl Service {
    pub fn new(name: &'static str, binary: &'static str, args: Vec<String>) -> anyhow::Result<Self> {
        Ok(Service { name, binary, args, port: free_port()?, process: None })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self) -> anyhow::Result<()> {
        let mut args = self.args.clone();
        args.extend(["--listen".into(), format!("127.0.0.1:{}", self.port)]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match ServerProcess::start(self.binary, &args, ENVS).await {
                Ok(p) => {
                    self.process = Some(p);
                    return Ok(());
                }
                // The killed process's port can take a moment to come free.
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(e) => return Err(e.context(format!("starting {}", self.name))),
            }
        }
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(p) = self.process.take() {
            p.stop().await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServerProcess::pid)
    }
}

/// The sync job's process.
pub struct SyncJob {
    pub args: Vec<String>,
    pub token: String,
    pub child: Option<tokio::process::Child>,
}

impl SyncJob {
    pub fn start(&mut self) -> anyhow::Result<()> {
        let child = tokio::process::Command::new(binary("zhengzhao"))
            .args(&self.args)
            .env("ZHENGZHAO_TOKEN", &self.token)
            .envs(ENVS.iter().copied())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }
}

pub fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
