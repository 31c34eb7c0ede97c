//! `zhengzhao init`: a new library's key directory, laid out for one
//! process or for a split deployment, or upgraded from an earlier version.

use std::path::PathBuf;

use clap::Args;
use zhengzhao_server::keys;

use super::output::say;

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long, default_value = "zhengzhao-data")]
    data_dir: PathBuf,
    /// Lay out a split deployment: an `operator` directory with the token
    /// key and one directory per service holding exactly what it loads.
    #[arg(long, conflicts_with = "upgrade")]
    split: bool,
    /// Upgrade a directory an earlier version made (one library-key.pem).
    #[arg(long)]
    upgrade: bool,
}

pub fn run(InitArgs { data_dir, split, upgrade }: InitArgs) -> anyhow::Result<()> {
    if split {
        keys::init_split(&data_dir)?;
        say!("operator (token key; keep it off the servers): {}", data_dir.join("operator").display());
        for name in zhengzhao_auth::ServiceName::ALL {
            say!("{}: {}", name.as_str(), data_dir.join(name.as_str()).display());
        }
    } else {
        if upgrade {
            keys::upgrade(&data_dir)?;
        } else {
            keys::init_library(&data_dir)?;
        }
        say!("token key (operator): {}", data_dir.join(keys::TOKEN_KEY_FILE).display());
        say!("log key: {}", data_dir.join(keys::LOG_KEY_FILE).display());
        if std::env::var(keys::MASTER_KEY_ENV).is_err() && !upgrade {
            say!("master key: {}", data_dir.join(keys::MASTER_KEY_FILE).display());
        }
    }
    say!("default administrator code: {}", keys::default_agency());
    Ok(())
}
