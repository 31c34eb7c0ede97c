//! The library's keys in its data directory: the library key (signs bearer
//! tokens; PKCS#8 PEM) and the master key that encrypts issuer keys at rest
//! (64 hex characters; `ZHENGZHAO_MASTER_KEY` takes precedence over the file).
//! Both files are created on first start with mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use zhengzhao_auth::{TokenAuthority, TokenVerifier};
use zhengzhao_core::Uscc;
use zhengzhao_crypto::{Es256KeyPair, MasterKey};

/// File name of the library key.
pub const LIBRARY_KEY_FILE: &str = "library-key.pem";
/// File name of the master key.
pub const MASTER_KEY_FILE: &str = "master.key";
/// Environment variable that supplies the master key instead of the file.
pub const MASTER_KEY_ENV: &str = "ZHENGZHAO_MASTER_KEY";
/// Body of the default administrator code for development libraries.
const DEFAULT_AGENCY_BODY: &str = "11100000MB0000000";

/// The keys a library process holds.
#[derive(Debug)]
pub struct LibraryKeys {
    pub tokens: Arc<TokenAuthority>,
    pub verifier: Arc<TokenVerifier>,
    pub master: MasterKey,
    /// The administrator's unified social credit code.
    pub agency: String,
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// The default administrator code of a development library.
pub fn default_agency() -> String {
    Uscc::from_body(DEFAULT_AGENCY_BODY).map(|u| u.to_string()).unwrap_or_default()
}

impl LibraryKeys {
    /// Loads the keys from `dir`, creating the directory and any missing key.
    pub fn load_or_create(dir: &Path, agency: Option<&str>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
        let library_path = dir.join(LIBRARY_KEY_FILE);
        if !library_path.exists() {
            let key = Es256KeyPair::generate();
            write_private(&library_path, &key.to_pkcs8_pem()?)?;
            tracing::info!(path = %library_path.display(), "library key created");
        }
        let master = match std::env::var(MASTER_KEY_ENV) {
            Ok(hex) => MasterKey::from_hex(&hex).context(MASTER_KEY_ENV)?,
            Err(_) => {
                let path = dir.join(MASTER_KEY_FILE);
                if !path.exists() {
                    write_private(&path, &MasterKey::generate().to_hex())?;
                    tracing::info!(path = %path.display(), "master key created");
                }
                read_master(&path)?
            }
        };
        let agency = match agency {
            Some(a) => Uscc::parse(a).with_context(|| format!("agency {a:?}"))?.to_string(),
            None => default_agency(),
        };
        let tokens = Arc::new(Self::token_authority(dir)?);
        let verifier = Arc::new(tokens.verifier().clone());
        Ok(LibraryKeys { tokens, verifier, master, agency })
    }

    /// The token authority from an existing data directory (for `zhengzhao token`).
    pub fn token_authority(dir: &Path) -> anyhow::Result<TokenAuthority> {
        let path: PathBuf = dir.join(LIBRARY_KEY_FILE);
        let pem = std::fs::read_to_string(&path).with_context(|| {
            format!("cannot read {} (start the library once with this --data-dir to create it)", path.display())
        })?;
        let key = Es256KeyPair::from_pkcs8_pem(&pem)
            .with_context(|| format!("{} is not a P-256 PKCS#8 key", path.display()))?;
        Ok(TokenAuthority::new(key))
    }
}

fn read_master(path: &Path) -> anyhow::Result<MasterKey> {
    let hex = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    MasterKey::from_hex(&hex).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = LibraryKeys::load_or_create(dir.path(), None).unwrap();
        let b = LibraryKeys::load_or_create(dir.path(), None).unwrap();
        assert_eq!(a.master.to_hex(), b.master.to_hex());
        let token = a.tokens.mint(&a.agency, zhengzhao_auth::Role::Admin, std::time::Duration::from_secs(60)).unwrap();
        assert!(b.verifier.verify(&token).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(LIBRARY_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
    }
}
