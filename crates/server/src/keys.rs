//! The keys in a data directory, and which process loads which. Secrets live
//! where they are used:
//!
//! | file | what | loaded by |
//! |---|---|---|
//! | `token-key.pem` | the operator's token-signing key (ES256) | `zhengzhao token` only |
//! | `token-keys.json` | public token keys (JWKS; a rotated-out key carries `not_after`) | every process |
//! | `service-keys.json` | each service's public credential key (JWKS, `kid` `service:NAME`) | every process |
//! | `service-NAME.pem` | a service's own credential key | that service, for its outbound calls (the exchange's also mints holder tokens, in the all-in-one too) |
//! | `master.key` | seals issuer keys at rest (or `ZHENGZHAO_MASTER_KEY`) | signing |
//! | `log-key.pem` | signs transparency-log checkpoints (`kid` `log-…`) | issuance |
//!
//! The all-in-one process loads the public files, the master key and the log
//! key (its services call each other in-process). `zhengzhao init --split`
//! lays out one directory per process holding exactly its files.
//!
//! Keys are created only in an empty (or missing) data directory, which is
//! created mode 0700, each key file 0600. A key missing beside existing data
//! is an error, never a new key. A key file that group or others may read or
//! write is refused, as ssh refuses such a private key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use zhengzhao_auth::{Denylist, ServiceName, TokenAuthority, TokenKey, TokenVerifier, TrustedKeys, token_kid};
use zhengzhao_core::Uscc;
use zhengzhao_crypto::{Es256KeyPair, Es256PublicKey, MasterKey};

/// The operator's token-signing key.
pub const TOKEN_KEY_FILE: &str = "token-key.pem";
/// The public token keys every process trusts.
pub const TOKEN_KEYS_FILE: &str = "token-keys.json";
/// The public credential keys of the services.
pub const SERVICE_KEYS_FILE: &str = "service-keys.json";
/// File name of the master key.
pub const MASTER_KEY_FILE: &str = "master.key";
/// The transparency log's checkpoint-signing key.
pub const LOG_KEY_FILE: &str = "log-key.pem";
/// The one key an earlier version kept for tokens and checkpoints alike.
pub const LEGACY_LIBRARY_KEY_FILE: &str = "library-key.pem";
/// Environment variable that supplies the master key instead of the file.
pub const MASTER_KEY_ENV: &str = "ZHENGZHAO_MASTER_KEY";
/// Body of the default administrator code for development libraries.
const DEFAULT_AGENCY_BODY: &str = "11100000MB0000000";

/// A service's credential key file.
pub fn service_key_file(name: ServiceName) -> String {
    format!("service-{}.pem", name.as_str())
}

/// Which secrets a process loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The master key (the signing service).
    pub master: bool,
    /// The log key (the issuance service).
    pub log: bool,
    /// Its own credential key, for its outbound calls.
    pub credential: Option<ServiceName>,
}

impl Needs {
    /// The all-in-one process: every service in-process (the exchange's
    /// credential key mints holder tokens).
    pub const ALL_IN_ONE: Needs = Needs { master: true, log: true, credential: Some(ServiceName::Exchange) };

    /// The process of one service in a split deployment.
    pub fn service(name: ServiceName) -> Needs {
        Needs {
            master: name == ServiceName::Signing,
            log: name == ServiceName::Issuance,
            // The catalogue calls no other service.
            credential: (name != ServiceName::Catalog).then_some(name),
        }
    }
}

/// The transparency log's checkpoint-signing key.
#[derive(Debug)]
pub struct LogKey {
    pub key: Arc<Es256KeyPair>,
    /// `log-` and the first 8 hex digits of its public key's digest.
    pub kid: String,
}

impl LogKey {
    fn new(key: Es256KeyPair) -> Self {
        let kid = token_kid(&key.public_key()).replacen("token-", "log-", 1);
        LogKey { key: Arc::new(key), kid }
    }
}

/// The keys one process holds.
#[derive(Debug)]
pub struct ProcessKeys {
    /// Checks bearer tokens against the trusted public keys, refusing those on `denylist`.
    pub verifier: Arc<TokenVerifier>,
    /// Tokens revoked by an administrator, shared by every verifier in the process.
    pub denylist: Arc<Denylist>,
    /// The master key, in the process that hosts signing.
    pub master: Option<MasterKey>,
    /// The log key, in the process that hosts issuance.
    pub log: Option<Arc<LogKey>>,
    /// This service's own credential key, for its outbound calls.
    pub credential: Option<Arc<TokenAuthority>>,
    /// The administrator's unified social credit code.
    pub agency: String,
    /// Where the keys were read from (the trusted public keys are re-read on rotation).
    pub dir: PathBuf,
}

/// A JWKS file: public keys, a token key with the end of its grace period.
#[derive(Debug, Default, Serialize, Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
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

/// Writes `contents` to `path` in place of what is there, atomically (a
/// private temporary file renamed over it).
fn replace_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, contents)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
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
    let held = if existing.is_empty() { "nothing".to_owned() } else { format!("{}{more}", shown.join(", ")) };
    anyhow::anyhow!(
        "{} has no {file} (it holds {held}): keys are created only in an empty data directory (`zhengzhao init`); \
         restore {file} from a backup ({consequence})",
        dir.display(),
    )
}

fn read_key(path: &Path) -> anyhow::Result<Es256KeyPair> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    check_private(path)?;
    Es256KeyPair::from_pkcs8_pem(&pem).with_context(|| format!("{} is not a P-256 PKCS#8 key", path.display()))
}

fn read_master(path: &Path) -> anyhow::Result<MasterKey> {
    let hex = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    check_private(path)?;
    MasterKey::from_hex(&hex).with_context(|| format!("{}", path.display()))
}

fn new_key(path: &Path) -> anyhow::Result<Es256KeyPair> {
    let key = Es256KeyPair::generate();
    write_private(path, &key.to_pkcs8_pem()?)?;
    Ok(key)
}

fn write_json(path: &Path, set: &KeySet) -> anyhow::Result<()> {
    replace_private(path, &serde_json::to_string_pretty(set)?)
}

fn read_set(path: &Path) -> anyhow::Result<KeySet> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a JWKS", path.display()))
}

/// The private keys of a new library, made once.
struct NewLibrary {
    token: Es256KeyPair,
    token_kid: String,
    services: Vec<(ServiceName, Es256KeyPair)>,
}

impl NewLibrary {
    fn generate() -> Self {
        let token = Es256KeyPair::generate();
        let token_kid = token_kid(&token.public_key());
        let services = ServiceName::ALL.into_iter().map(|n| (n, Es256KeyPair::generate())).collect();
        NewLibrary { token, token_kid, services }
    }

    fn token_keys(&self) -> KeySet {
        KeySet { keys: vec![self.token.public_key().to_jwk(&self.token_kid)] }
    }

    fn service_keys(&self) -> KeySet {
        KeySet {
            keys: self
                .services
                .iter()
                .map(|(n, k)| {
                    k.public_key().to_jwk(&format!("{}{}", zhengzhao_auth::token::SERVICE_KID_PREFIX, n.as_str()))
                })
                .collect(),
        }
    }

    fn write_public(&self, dir: &Path) -> anyhow::Result<()> {
        write_json(&dir.join(TOKEN_KEYS_FILE), &self.token_keys())?;
        write_json(&dir.join(SERVICE_KEYS_FILE), &self.service_keys())
    }

    fn write_service(&self, dir: &Path, name: ServiceName) -> anyhow::Result<()> {
        let key = self.services.iter().find(|(n, _)| *n == name).map(|(_, k)| k);
        if let Some(k) = key {
            write_private(&dir.join(service_key_file(name)), &k.to_pkcs8_pem()?)?;
        }
        Ok(())
    }
}

fn ensure_empty(dir: &Path) -> anyhow::Result<()> {
    let existing = contents(dir)?;
    if !existing.is_empty() {
        bail!(
            "{} is not empty ({}): keys are created only in an empty data directory",
            dir.display(),
            existing.join(", ")
        );
    }
    create_private_dir(dir).with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// Creates every key of a library in the empty directory `dir`: the
/// embedded default's layout, where one process runs every service.
pub fn init_library(dir: &Path) -> anyhow::Result<()> {
    ensure_empty(dir)?;
    let lib = NewLibrary::generate();
    write_private(&dir.join(TOKEN_KEY_FILE), &lib.token.to_pkcs8_pem()?)?;
    lib.write_public(dir)?;
    for name in ServiceName::ALL {
        lib.write_service(dir, name)?;
    }
    new_key(&dir.join(LOG_KEY_FILE))?;
    if std::env::var_os(MASTER_KEY_ENV).is_none() {
        write_private(&dir.join(MASTER_KEY_FILE), &MasterKey::generate().to_hex())?;
    }
    tracing::info!(path = %dir.display(), "library keys created");
    Ok(())
}

/// Creates a split deployment's keys under the empty directory `dir`: an
/// `operator` directory with the token-signing key, and one directory per
/// service holding exactly what that process loads (see the module table).
pub fn init_split(dir: &Path) -> anyhow::Result<()> {
    ensure_empty(dir)?;
    let lib = NewLibrary::generate();
    let operator = dir.join("operator");
    create_private_dir(&operator)?;
    write_private(&operator.join(TOKEN_KEY_FILE), &lib.token.to_pkcs8_pem()?)?;
    lib.write_public(&operator)?;
    for name in ServiceName::ALL {
        let d = dir.join(name.as_str());
        create_private_dir(&d)?;
        lib.write_public(&d)?;
        let needs = Needs::service(name);
        if needs.credential.is_some() {
            lib.write_service(&d, name)?;
        }
        if needs.log {
            new_key(&d.join(LOG_KEY_FILE))?;
        }
        if needs.master {
            write_private(&d.join(MASTER_KEY_FILE), &MasterKey::generate().to_hex())?;
        }
    }
    Ok(())
}

/// Upgrades a data directory an earlier version made (one `library-key.pem`
/// for tokens and checkpoints): that key becomes the token key (`kid`
/// "library", so tokens already minted stay valid), and the log and service
/// keys are created.
pub fn upgrade(dir: &Path) -> anyhow::Result<()> {
    let legacy = dir.join(LEGACY_LIBRARY_KEY_FILE);
    if !legacy.exists() {
        bail!("{} holds no {LEGACY_LIBRARY_KEY_FILE}: nothing to upgrade", dir.display());
    }
    let token = read_key(&legacy)?;
    let lib = NewLibrary { token_kid: zhengzhao_auth::token::LEGACY_KID.to_owned(), ..NewLibrary::generate() };
    let lib = NewLibrary { token, ..lib };
    write_private(&dir.join(TOKEN_KEY_FILE), &lib.token.to_pkcs8_pem()?)?;
    lib.write_public(dir)?;
    for name in ServiceName::ALL {
        lib.write_service(dir, name)?;
    }
    new_key(&dir.join(LOG_KEY_FILE))?;
    std::fs::remove_file(&legacy).with_context(|| format!("cannot remove {}", legacy.display()))?;
    Ok(())
}

/// The public keys `dir` says to trust.
pub fn trusted_keys(dir: &Path) -> anyhow::Result<TrustedKeys> {
    let mut keys = TrustedKeys::default();
    for jwk in read_set(&dir.join(TOKEN_KEYS_FILE))?.keys {
        let kid = jwk["kid"].as_str().context("token-keys.json: a key without kid")?.to_owned();
        let key = Es256PublicKey::from_jwk(&jwk).with_context(|| format!("token-keys.json: key {kid}"))?;
        keys.tokens.push(TokenKey { kid, key, not_after: jwk["not_after"].as_i64() });
    }
    for jwk in read_set(&dir.join(SERVICE_KEYS_FILE))?.keys {
        let kid = jwk["kid"].as_str().unwrap_or_default();
        let name = kid
            .strip_prefix(zhengzhao_auth::token::SERVICE_KID_PREFIX)
            .and_then(ServiceName::from_name)
            .with_context(|| format!("service-keys.json: {kid:?} names no service"))?;
        let key = Es256PublicKey::from_jwk(&jwk).with_context(|| format!("service-keys.json: key {kid}"))?;
        keys.services.insert(name, key);
    }
    Ok(keys)
}

/// The operator's token authority (for `zhengzhao token`): `token-key.pem`
/// under the `kid` that `token-keys.json` gives its public key.
pub fn operator_authority(dir: &Path) -> anyhow::Result<TokenAuthority> {
    let path = dir.join(TOKEN_KEY_FILE);
    if !path.exists() {
        if dir.join(LEGACY_LIBRARY_KEY_FILE).exists() {
            bail!(
                "{} was made by an earlier version: run `zhengzhao init --upgrade --data-dir {}`",
                dir.display(),
                dir.display()
            );
        }
        bail!(
            "{} has no {TOKEN_KEY_FILE}: tokens are minted where the operator keeps the token key \
             (run `zhengzhao init --data-dir {}`, or use the `operator` directory of `zhengzhao init --split`)",
            dir.display(),
            dir.display()
        );
    }
    let key = read_key(&path)?;
    let public = key.public_key().to_jwk("");
    let kid = read_set(&dir.join(TOKEN_KEYS_FILE))?
        .keys
        .into_iter()
        .find(|k| k["x"] == public["x"] && k["y"] == public["y"] && k["not_after"].is_null())
        .and_then(|k| k["kid"].as_str().map(str::to_owned))
        .with_context(|| format!("{TOKEN_KEYS_FILE} does not list {TOKEN_KEY_FILE} as its current key"))?;
    Ok(TokenAuthority::operator(key, &kid))
}

/// Replaces the operator's token key with a new one: the old key stays
/// trusted for `grace` (its `not_after`), then is dropped. Returns the new
/// `kid`. Processes that read `token-keys.json` pick the change up within
/// seconds; copy it to every process of a split deployment.
pub fn rotate_token_key(dir: &Path, grace: std::time::Duration) -> anyhow::Result<String> {
    operator_authority(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let grace = i64::try_from(grace.as_secs()).context("grace too long")?;
    let key = Es256KeyPair::generate();
    let kid = token_kid(&key.public_key());
    let mut set = read_set(&dir.join(TOKEN_KEYS_FILE))?;
    set.keys.retain(|k| k["not_after"].as_i64().is_none_or(|t| t > now));
    for k in &mut set.keys {
        if k["not_after"].is_null() {
            k["not_after"] = serde_json::json!(now.saturating_add(grace));
        }
    }
    set.keys.insert(0, key.public_key().to_jwk(&kid));
    write_json(&dir.join(TOKEN_KEYS_FILE), &set)?;
    replace_private(&dir.join(TOKEN_KEY_FILE), &key.to_pkcs8_pem()?)?;
    Ok(kid)
}

impl ProcessKeys {
    /// The all-in-one process's keys from `dir`; when `dir` is missing or
    /// empty, creates it (mode 0700) and every key first.
    pub fn load_or_create(dir: &Path, agency: Option<&str>) -> anyhow::Result<Self> {
        if contents(dir)?.is_empty() {
            init_library(dir)?;
        }
        Self::load(dir, Needs::ALL_IN_ONE, agency)
    }

    /// Loads what a process with `needs` holds from `dir` (nothing is created).
    pub fn load(dir: &Path, needs: Needs, agency: Option<&str>) -> anyhow::Result<Self> {
        let existing = contents(dir)?;
        warn_if_shared(dir);
        if existing.iter().any(|f| f == LEGACY_LIBRARY_KEY_FILE) {
            bail!(
                "{} was made by an earlier version (one {LEGACY_LIBRARY_KEY_FILE} for tokens and checkpoints): \
                 run `zhengzhao init --upgrade --data-dir {}` once",
                dir.display(),
                dir.display()
            );
        }
        for file in [TOKEN_KEYS_FILE, SERVICE_KEYS_FILE] {
            if !dir.join(file).exists() {
                return Err(missing_key(dir, file, &existing, "the public keys every process checks tokens with"));
            }
        }
        let master = if needs.master {
            Some(match std::env::var(MASTER_KEY_ENV) {
                Ok(hex) => MasterKey::from_hex(&hex).context(MASTER_KEY_ENV)?,
                Err(_) => {
                    let path = dir.join(MASTER_KEY_FILE);
                    if !path.exists() {
                        return Err(missing_key(
                            dir,
                            MASTER_KEY_FILE,
                            &existing,
                            &format!(
                                "or set {MASTER_KEY_ENV}: a new one could not open the issuer keys already stored"
                            ),
                        ));
                    }
                    read_master(&path)?
                }
            })
        } else {
            None
        };
        let log = if needs.log {
            let path = dir.join(LOG_KEY_FILE);
            if !path.exists() {
                return Err(missing_key(
                    dir,
                    LOG_KEY_FILE,
                    &existing,
                    "a new one would sign checkpoints auditors do not know",
                ));
            }
            Some(Arc::new(LogKey::new(read_key(&path)?)))
        } else {
            None
        };
        let credential = match needs.credential {
            Some(name) => {
                let file = service_key_file(name);
                let path = dir.join(&file);
                if !path.exists() {
                    return Err(missing_key(dir, &file, &existing, "the other services know this service by it"));
                }
                Some(Arc::new(TokenAuthority::service(read_key(&path)?, name)))
            }
            None => None,
        };
        let agency = match agency {
            Some(a) => Uscc::parse(a).with_context(|| format!("agency {a:?}"))?.to_string(),
            None => default_agency(),
        };
        let denylist = Arc::new(Denylist::default());
        let verifier = Arc::new(TokenVerifier::new(trusted_keys(dir)?).with_denylist(denylist.clone()));
        Ok(ProcessKeys { verifier, denylist, master, log, credential, agency, dir: dir.to_path_buf() })
    }

    /// Re-reads the trusted public keys every `every`, so a token-key
    /// rotation reaches this process without a restart.
    pub fn spawn_trust_reload(self: &Arc<Self>, every: std::time::Duration) {
        let keys = self.clone();
        tokio::spawn(async move {
            let stamp = |dir: &Path| {
                [TOKEN_KEYS_FILE, SERVICE_KEYS_FILE]
                    .map(|f| std::fs::metadata(dir.join(f)).and_then(|m| m.modified()).ok())
            };
            let mut seen = stamp(&keys.dir);
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let now = stamp(&keys.dir);
                if now == seen {
                    continue;
                }
                match trusted_keys(&keys.dir) {
                    Ok(trusted) => {
                        keys.verifier.replace_keys(trusted);
                        seen = now;
                        tracing::info!(path = %keys.dir.display(), "trusted token keys reloaded");
                    }
                    Err(e) => tracing::warn!(error = %e, "trusted token keys not reloaded"),
                }
            }
        });
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use zhengzhao_auth::{Role, TokenError};

    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn creates_once_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProcessKeys::load_or_create(dir.path(), None).unwrap();
        let b = ProcessKeys::load_or_create(dir.path(), None).unwrap();
        assert_eq!(a.master.as_ref().map(MasterKey::to_hex), b.master.as_ref().map(MasterKey::to_hex));
        assert_eq!(a.log.as_ref().map(|l| l.kid.clone()), b.log.as_ref().map(|l| l.kid.clone()));
        let operator = operator_authority(dir.path()).unwrap();
        let token = operator.mint(&a.agency, Role::Admin, Duration::from_secs(60)).unwrap();
        assert!(b.verifier.verify(&token).is_ok());
        // The all-in-one calls its services in-process; it holds the
        // exchange's credential key only to mint holder tokens.
        assert_eq!(a.credential.as_ref().map(|c| c.kid().to_owned()).as_deref(), Some("service:exchange"));
        let log = a.log.as_ref().unwrap();
        assert!(log.kid.starts_with("log-") && log.kid != operator.kid(), "the log has its own key and kid");
    }

    #[cfg(unix)]
    #[test]
    fn a_new_data_directory_is_private_and_so_are_its_keys() {
        if std::env::var_os(MASTER_KEY_ENV).is_some() {
            return; // the master key file is not created then
        }
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nested").join("data");
        ProcessKeys::load_or_create(&dir, None).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in [TOKEN_KEY_FILE, MASTER_KEY_FILE, LOG_KEY_FILE, "service-issuance.pem", TOKEN_KEYS_FILE] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn key_files_open_to_group_or_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        ProcessKeys::load_or_create(dir.path(), None).unwrap();
        for file in [LOG_KEY_FILE, MASTER_KEY_FILE] {
            let path = dir.path().join(file);
            if !path.exists() {
                continue;
            }
            for loose in [0o640, 0o604, 0o620, 0o602, 0o644] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
                let e = ProcessKeys::load_or_create(dir.path(), None).unwrap_err().to_string();
                assert!(e.contains(file) && e.contains("group or others") && e.contains("chmod 600"), "{loose:o}: {e}");
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(ProcessKeys::load_or_create(dir.path(), None).is_ok());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
            assert!(ProcessKeys::load_or_create(dir.path(), None).is_ok(), "read-only for the owner is fine");
        }
        std::fs::set_permissions(dir.path().join(TOKEN_KEY_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = operator_authority(dir.path()).unwrap_err().to_string();
        assert!(e.contains("group or others"), "zhengzhao token refuses it too: {e}");
    }

    #[test]
    fn a_key_missing_beside_existing_data_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = ProcessKeys::load_or_create(dir.path(), None).unwrap();
        std::fs::write(dir.path().join("catalog.db"), b"").unwrap();
        let log_pem = std::fs::read(dir.path().join(LOG_KEY_FILE)).unwrap();
        std::fs::remove_file(dir.path().join(LOG_KEY_FILE)).unwrap();
        let e = ProcessKeys::load_or_create(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("has no log-key.pem") && e.contains("catalog.db") && e.contains("restore"), "{e}");
        assert!(!dir.path().join(LOG_KEY_FILE).exists(), "no new key was made");
        write_private(&dir.path().join(LOG_KEY_FILE), std::str::from_utf8(&log_pem).unwrap()).unwrap();
        if std::env::var_os(MASTER_KEY_ENV).is_none() {
            std::fs::remove_file(dir.path().join(MASTER_KEY_FILE)).unwrap();
            let e = ProcessKeys::load_or_create(dir.path(), None).unwrap_err().to_string();
            assert!(e.contains("has no master.key") && e.contains(MASTER_KEY_ENV), "{e}");
            assert!(!dir.path().join(MASTER_KEY_FILE).exists());
            write_private(&dir.path().join(MASTER_KEY_FILE), &first.master.as_ref().unwrap().to_hex()).unwrap();
        }
        let again = ProcessKeys::load_or_create(dir.path(), None).unwrap();
        assert_eq!(again.master.map(|m| m.to_hex()), first.master.map(|m| m.to_hex()));
    }

    #[test]
    fn the_verifier_refuses_tokens_on_the_process_denylist() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ProcessKeys::load_or_create(dir.path(), None).unwrap();
        let m =
            operator_authority(dir.path()).unwrap().issue(&keys.agency, Role::Admin, Duration::from_secs(60)).unwrap();
        assert!(keys.verifier.verify(&m.token).is_ok());
        keys.denylist.revoke(&m.token_id, m.expires_at.unix_timestamp());
        assert_eq!(keys.verifier.verify(&m.token), Err(TokenError::Revoked));
    }

    #[test]
    fn a_split_layout_gives_each_process_only_its_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("keys");
        init_split(&root).unwrap();
        let files = |d: &str| contents(&root.join(d)).unwrap();
        let sorted = |v: &[&str]| {
            let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(files("operator"), sorted(&[SERVICE_KEYS_FILE, TOKEN_KEY_FILE, TOKEN_KEYS_FILE]));
        assert_eq!(files("catalog"), sorted(&[SERVICE_KEYS_FILE, TOKEN_KEYS_FILE]));
        assert_eq!(
            files("signing"),
            sorted(&[MASTER_KEY_FILE, SERVICE_KEYS_FILE, "service-signing.pem", TOKEN_KEYS_FILE])
        );
        assert_eq!(
            files("issuance"),
            sorted(&[LOG_KEY_FILE, SERVICE_KEYS_FILE, "service-issuance.pem", TOKEN_KEYS_FILE])
        );
        for name in ["verification", "exchange", "gateway"] {
            let own = format!("service-{name}.pem");
            assert_eq!(files(name), sorted(&[SERVICE_KEYS_FILE, &own, TOKEN_KEYS_FILE]));
        }
        // Each process loads exactly its files; a service's key works where the others trust it.
        let gateway = ProcessKeys::load(&root.join("gateway"), Needs::service(ServiceName::Gateway), None).unwrap();
        let signing = ProcessKeys::load(&root.join("signing"), Needs::service(ServiceName::Signing), None).unwrap();
        let credential = gateway.credential.as_ref().unwrap();
        let t = credential.mint(&gateway.agency, Role::Service(ServiceName::Gateway), Duration::from_secs(60)).unwrap();
        assert_eq!(signing.verifier.verify(&t).unwrap().role, Role::Service(ServiceName::Gateway));
        assert!(
            credential.mint(&gateway.agency, Role::Service(ServiceName::Issuance), Duration::from_secs(60)).is_err()
        );
        assert!(operator_authority(&root.join("gateway")).is_err(), "no token key outside the operator's directory");
        assert!(gateway.master.is_none() && gateway.log.is_none());
        assert!(init_split(&root).is_err(), "never over existing keys");
    }

    #[test]
    fn a_rotated_token_key_keeps_old_tokens_for_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(ProcessKeys::load_or_create(dir.path(), None).unwrap());
        let old = operator_authority(dir.path()).unwrap();
        let old_token = old.mint(&keys.agency, Role::Issuer, HOUR).unwrap();
        let kid = rotate_token_key(dir.path(), HOUR).unwrap();
        let new = operator_authority(dir.path()).unwrap();
        assert_eq!(new.kid(), kid);
        assert_ne!(new.kid(), old.kid());
        keys.verifier.replace_keys(trusted_keys(dir.path()).unwrap());
        assert!(keys.verifier.verify(&old_token).is_ok(), "within the grace period");
        assert!(keys.verifier.verify(&new.mint(&keys.agency, Role::Issuer, HOUR).unwrap()).is_ok());
        // With no grace, the old key is out at once.
        rotate_token_key(dir.path(), Duration::ZERO).unwrap();
        keys.verifier.replace_keys(trusted_keys(dir.path()).unwrap());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(keys.verifier.verify(&new.mint(&keys.agency, Role::Issuer, HOUR).unwrap()).is_err());
    }

    #[test]
    fn an_earlier_versions_directory_is_upgraded_keeping_its_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = Es256KeyPair::generate();
        write_private(&dir.path().join(LEGACY_LIBRARY_KEY_FILE), &legacy.to_pkcs8_pem().unwrap()).unwrap();
        std::fs::write(dir.path().join("issuance.db"), b"").unwrap();
        write_private(&dir.path().join(MASTER_KEY_FILE), &MasterKey::generate().to_hex()).unwrap();
        let e = ProcessKeys::load_or_create(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("init --upgrade"), "{e}");
        upgrade(dir.path()).unwrap();
        let keys = ProcessKeys::load_or_create(dir.path(), None).unwrap();
        let op = operator_authority(dir.path()).unwrap();
        assert_eq!(op.kid(), "library");
        let t = TokenAuthority::operator(legacy, "library").mint(&keys.agency, Role::Admin, HOUR).unwrap();
        assert!(keys.verifier.verify(&t).is_ok(), "tokens minted before the upgrade stay valid");
        assert!(!dir.path().join(LEGACY_LIBRARY_KEY_FILE).exists());
    }
}
