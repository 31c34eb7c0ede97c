//! The library's keys in its data directory: the library key (signs bearer
//! tokens; PKCS#8 PEM) and the master key that encrypts issuer keys at rest
//! (64 hex characters; `ZHENGZHAO_MASTER_KEY` takes precedence over the file).
//!
//! Keys are created only in an empty (or missing) data directory, which is
//! created mode 0700, each key file 0600. A key missing beside existing data
//! is an error, never a new key: a new library key would orphan every token
//! and checkpoint, a new master key every issuer key. A key file that group
//! or others may read or write is refused, as ssh refuses such a private key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use zhengzhao_auth::{Denylist, TokenAuthority, TokenVerifier};
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
    /// Checks bearer tokens, refusing those on `denylist`.
    pub verifier: Arc<TokenVerifier>,
    /// Tokens revoked by an administrator, shared by every verifier in the process.
    pub denylist: Arc<Denylist>,
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

/// Creates `dir` (and missing parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Refuses a key file that group or others may read or write.
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is accessible by group or others (mode {:04o}): a key file must be private to its owner; \
                 run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            );
        }
    }
    Ok(())
}

/// The default administrator code of a development library.
pub fn default_agency() -> String {
    Uscc::from_body(DEFAULT_AGENCY_BODY).map(|u| u.to_string()).unwrap_or_default()
}

/// Names of what `dir` holds, sorted (empty when it does not exist).
fn contents(dir: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = entries
                .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("cannot list data directory {}", dir.display()))?;
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot list data directory {}", dir.display())),
    }
}

fn missing_key(dir: &Path, file: &str, existing: &[String], consequence: &str) -> anyhow::Error {
    let shown: Vec<&str> = existing.iter().take(5).map(String::as_str).collect();
    let more = if existing.len() > shown.len() { ", …" } else { "" };
    anyhow::anyhow!(
        "{} has no {file} but already holds data ({}{more}): keys are created only in an empty data directory; \
         restore {file} from a backup ({consequence})",
        dir.display(),
        shown.join(", ")
    )
}

impl LibraryKeys {
    /// Loads the keys from `dir`; when `dir` is missing or empty, creates it
    /// (mode 0700) and the keys first.
    pub fn load_or_create(dir: &Path, agency: Option<&str>) -> anyhow::Result<Self> {
        let existing = contents(dir)?;
        let master_from_env = std::env::var(MASTER_KEY_ENV).ok();
        let library_path = dir.join(LIBRARY_KEY_FILE);
        let master_path = dir.join(MASTER_KEY_FILE);
        if existing.is_empty() {
            create_private_dir(dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
            write_private(&library_path, &Es256KeyPair::generate().to_pkcs8_pem()?)?;
            tracing::info!(path = %library_path.display(), "library key created");
            if master_from_env.is_none() {
                write_private(&master_path, &MasterKey::generate().to_hex())?;
                tracing::info!(path = %master_path.display(), "master key created");
            }
        } else {
            warn_if_shared(dir);
            if !library_path.exists() {
                return Err(missing_key(
                    dir,
                    LIBRARY_KEY_FILE,
                    &existing,
                    "a new one would not verify the tokens and checkpoints already issued",
                ));
            }
            if master_from_env.is_none() && !master_path.exists() {
                return Err(missing_key(
                    dir,
                    MASTER_KEY_FILE,
                    &existing,
                    &format!("or set {MASTER_KEY_ENV}: a new one could not open the issuer keys already stored"),
                ));
            }
        }
        let master = match master_from_env {
            Some(hex) => MasterKey::from_hex(&hex).context(MASTER_KEY_ENV)?,
            None => read_master(&master_path)?,
        };
        let agency = match agency {
            Some(a) => Uscc::parse(a).with_context(|| format!("agency {a:?}"))?.to_string(),
            None => default_agency(),
        };
        let tokens = Arc::new(Self::token_authority(dir)?);
        let denylist = Arc::new(Denylist::default());
        let verifier = Arc::new(tokens.verifier().clone().with_denylist(denylist.clone()));
        Ok(LibraryKeys { tokens, verifier, denylist, master, agency })
    }

    /// The token authority from an existing data directory (for `zhengzhao token`).
    pub fn token_authority(dir: &Path) -> anyhow::Result<TokenAuthority> {
        let path: PathBuf = dir.join(LIBRARY_KEY_FILE);
        let pem = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (run `zhengzhao init --data-dir {}` or start the library once)",
                path.display(),
                dir.display()
            )
        })?;
        check_private(&path)?;
        let key = Es256KeyPair::from_pkcs8_pem(&pem)
            .with_context(|| format!("{} is not a P-256 PKCS#8 key", path.display()))?;
        Ok(TokenAuthority::new(key))
    }
}

/// Warns when an existing data directory is open to group or others (the
/// operator chose it; its files are private regardless).
fn warn_if_shared(dir: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(dir)
            && m.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                path = %dir.display(),
                mode = format!("{:04o}", m.permissions().mode() & 0o7777),
                "data directory is accessible by group or others: chmod 700 it"
            );
        }
    }
}

fn read_master(path: &Path) -> anyhow::Result<MasterKey> {
    let hex = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    check_private(path)?;
    MasterKey::from_hex(&hex).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_once_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = LibraryKeys::load_or_create(dir.path(), None).unwrap();
        let b = LibraryKeys::load_or_create(dir.path(), None).unwrap();
        assert_eq!(a.master.to_hex(), b.master.to_hex());
        let token = a.tokens.mint(&a.agency, zhengzhao_auth::Role::Admin, std::time::Duration::from_secs(60)).unwrap();
        assert!(b.verifier.verify(&token).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_data_directory_is_private_and_so_are_its_keys() {
        if std::env::var_os(MASTER_KEY_ENV).is_some() {
            return; // the master key file is not created then
        }
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nested").join("data");
        LibraryKeys::load_or_create(&dir, None).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(LIBRARY_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(MASTER_KEY_FILE)), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_open_to_group_or_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        LibraryKeys::load_or_create(dir.path(), None).unwrap();
        for file in [LIBRARY_KEY_FILE, MASTER_KEY_FILE] {
            let path = dir.path().join(file);
            if !path.exists() {
                continue;
            }
            for loose in [0o640, 0o604, 0o620, 0o602, 0o644] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
                let e = LibraryKeys::load_or_create(dir.path(), None).unwrap_err().to_string();
                assert!(e.contains(file) && e.contains("group or others") && e.contains("chmod 600"), "{loose:o}: {e}");
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(LibraryKeys::load_or_create(dir.path(), None).is_ok());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
            assert!(LibraryKeys::load_or_create(dir.path(), None).is_ok(), "read-only for the owner is fine");
        }
        std::fs::set_permissions(dir.path().join(LIBRARY_KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = LibraryKeys::token_authority(dir.path()).unwrap_err().to_string();
        assert!(e.contains("group or others"), "zhengzhao token refuses it too: {e}");
    }

    #[test]
    fn a_key_missing_beside_existing_data_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = LibraryKeys::load_or_create(dir.path(), None).unwrap();
        std::fs::write(dir.path().join("catalog.db"), b"").unwrap();
        let library_pem = std::fs::read(dir.path().join(LIBRARY_KEY_FILE)).unwrap();
        std::fs::remove_file(dir.path().join(LIBRARY_KEY_FILE)).unwrap();
        let e = LibraryKeys::load_or_create(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("has no library-key.pem") && e.contains("catalog.db") && e.contains("restore"), "{e}");
        assert!(!dir.path().join(LIBRARY_KEY_FILE).exists(), "no new key was made");
        // Only the other key beside it counts as existing data too.
        std::fs::remove_file(dir.path().join("catalog.db")).unwrap();
        let e = LibraryKeys::load_or_create(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("has no library-key.pem"), "{e}");
        write_private(&dir.path().join(LIBRARY_KEY_FILE), std::str::from_utf8(&library_pem).unwrap()).unwrap();
        if std::env::var_os(MASTER_KEY_ENV).is_none() {
            std::fs::remove_file(dir.path().join(MASTER_KEY_FILE)).unwrap();
            let e = LibraryKeys::load_or_create(dir.path(), None).unwrap_err().to_string();
            assert!(e.contains("has no master.key") && e.contains(MASTER_KEY_ENV), "{e}");
            assert!(!dir.path().join(MASTER_KEY_FILE).exists());
            write_private(&dir.path().join(MASTER_KEY_FILE), &first.master.to_hex()).unwrap();
        }
        let again = LibraryKeys::load_or_create(dir.path(), None).unwrap();
        assert_eq!(again.master.to_hex(), first.master.to_hex());
    }

    #[test]
    fn the_verifier_refuses_tokens_on_the_process_denylist() {
        let dir = tempfile::tempdir().unwrap();
        let keys = LibraryKeys::load_or_create(dir.path(), None).unwrap();
        let m =
            keys.tokens.issue(&keys.agency, zhengzhao_auth::Role::Admin, std::time::Duration::from_secs(60)).unwrap();
        assert!(keys.verifier.verify(&m.token).is_ok());
        keys.denylist.revoke(&m.token_id, m.expires_at.unix_timestamp());
        assert_eq!(keys.verifier.verify(&m.token), Err(zhengzhao_auth::TokenError::Revoked));
    }
}
