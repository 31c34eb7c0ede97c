//! Layered, validated configuration: built-in defaults, then an optional TOML
//! file, then `ZHENGZHAO_` environment variables (`__` nests), then flags.
//! Unknown keys are refused. Tests build configs directly and never touch the
//! process environment.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Variables with the `ZHENGZHAO_` prefix that are not configuration keys
/// (client settings and secrets read by their own code).
const NOT_CONFIG: &[&str] = &["server", "token", "master_key", "ca_file"];

/// Default of `shutdown_grace_seconds`.
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 10;

/// The whole configuration of a Zhengzhao process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// Directory for the library key, the master key file and SQLite files.
    pub data_dir: PathBuf,
    /// PostgreSQL URL; unset means SQLite files under `data_dir`.
    pub database_url: Option<String>,
    /// A PostgreSQL streaming replica of `database_url` (hot standby): the
    /// reads that may lag by its replay lag go there: licences as
    /// `GetLicence` reads them for callers, verification and the exchange.
    /// Writes, and every read a write depends on, stay on the primary.
    pub read_database_url: Option<String>,
    /// Beyond this replay lag (seconds) the replica is not read: the
    /// primary answers until it catches up. Default 5, at most 3600.
    pub read_max_lag_seconds: u64,
    /// This library's name: `city`, or a district's name or area code.
    /// The city names districts by it when it replicates them, and the
    /// gateway's member status shows it.
    pub library: String,
    /// Unified social credit code of the library's administrator (the
    /// agency on whose account services call each other).
    pub agency: Option<String>,
    /// Working-day calendar (TOML) for outage deadlines; unset means the shipped one.
    pub calendar_file: Option<PathBuf>,
    /// On SIGTERM or Ctrl-C: new connections are refused and open streams
    /// (the change feed) end at once with UNAVAILABLE; calls in flight get
    /// this many seconds to finish before the process stops regardless.
    pub shutdown_grace_seconds: u64,
    /// Addresses of the other services, for split deployment.
    pub peers: Peers,
    /// The gateway's libraries.
    pub gateway: GatewayConfig,
    pub signing: SigningConfig,
    pub issuance: IssuanceConfig,
    pub exchange: ExchangeConfig,
    pub verification: VerificationConfig,
    pub tls: TlsConfig,
    pub telemetry: TelemetryConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
}

/// What one process takes on (see the README's "Limits"). A call beyond a
/// limit is refused at once, before it costs memory: RESOURCE_EXHAUSTED
/// with a `retry-after` (seconds) in its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest a caller waits for an answer (its response headers; a
    /// stream then runs on) before it gets DEADLINE_EXCEEDED; a shorter
    /// `grpc-timeout` from the caller wins. The call itself runs to its end.
    pub request_timeout_seconds: u64,
    /// Calls this process works on at once; beyond it new calls are shed.
    pub max_concurrent_requests: usize,
    /// Calls one principal (role, agency and, for a holder, the holder) may
    /// make per second, on average; 0 means no rate limit.
    pub principal_rate_per_second: u32,
    /// Calls one principal may make at once above its rate before it is
    /// held to it.
    pub principal_burst: u32,
    /// Longest this process waits for another service's answer.
    pub peer_timeout_seconds: u64,
    /// HTTP/2 keepalive ping interval (seconds) on every connection; a peer
    /// that does not answer a ping in 20 s is dropped.
    pub keepalive_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            request_timeout_seconds: 60,
            max_concurrent_requests: 1024,
            principal_rate_per_second: 1000,
            principal_burst: 2000,
            peer_timeout_seconds: 30,
            keepalive_seconds: 30,
        }
    }
}

/// Bearer-token checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How often (seconds) a process that does not host the catalogue
    /// refreshes its list of revoked tokens from `peers.catalog`.
    pub revocation_refresh_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { revocation_refresh_seconds: 5 }
    }
}

/// The issuance service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuanceConfig {
    /// How many days before it is recorded an outage may have started when
    /// an issuer records it (administrators may record older ones).
    pub outage_backdate_days: u32,
}

impl Default for IssuanceConfig {
    fn default() -> Self {
        IssuanceConfig { outage_backdate_days: 7 }
    }
}

/// The exchange service: annotated copies and their PDFs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeConfig {
    /// The URL consumers and the public reach this process's plain-HTTP
    /// routes at (`https://licences.example.gov.cn`), for download links and
    /// the verification URL in a copy's QR code. Unset: `http://` and the
    /// listen address (with TLS configured, `https://localhost:PORT`).
    pub public_url: Option<String>,
    /// The CJK font copies are printed with (TrueType/OpenType, or a
    /// collection with `copy_font_index`). Unset: the first of the usual
    /// Noto Sans CJK / Noto Serif CJK / WenQuanYi locations (Debian
    /// `fonts-noto-cjk`).
    pub copy_font: Option<PathBuf>,
    /// The face of `copy_font` when it is a collection (.ttc).
    pub copy_font_index: u32,
    /// How often the reminder job reads the change feed, schedules due
    /// reminders and delivers the outbox, in seconds (0: 60).
    pub reminder_interval_seconds: u64,
    /// Delivery attempts of one reminder to one front end before it is
    /// dead-lettered (0: 12; backoff doubles from 5 s up to an hour).
    pub reminder_max_attempts: u32,
}

/// The verification service: which CAs vouch for issuer keys (art. 12 of
/// the measures: licences sealed through a lawful certification service).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerificationConfig {
    /// PEM files of the CA certificates (roots or intermediates) trusted to
    /// certify issuer keys. Set: every verified signature's key must carry a
    /// chain to one of them, valid at the signing time, else the outcome is
    /// "certificate invalid". Unset: certificates are not checked.
    pub trust_anchors: Vec<PathBuf>,
    /// Certificate revocation lists of those CAs (PEM or DER), read at
    /// start: a certificate on one does not vouch for signatures made from
    /// its revocation (a key compromise: for any). Restart to read new ones.
    pub crls: Vec<PathBuf>,
}

/// TLS for this process's server and its calls to peers (rustls on
/// `aws-lc-rs`, the same backend that signs). Unset means plain HTTP/2, for
/// a private network or behind a TLS-terminating ingress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain this process serves with (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates trusted for `https://` peers and libraries.
    pub ca_file: Option<PathBuf>,
}

/// The signing service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Algorithm of an issuer's first key when its first signature creates
    /// it: `es256` or `sm2`. Keys an administrator creates name their own.
    pub default_algorithm: String,
    /// Issuer keys in a hardware security module (PKCS#11). Set: new keys
    /// are generated and used inside the token (ES256 only: PKCS#11 defines
    /// no SM2 mechanism); keys made before stay in their envelopes.
    pub pkcs11: Option<Pkcs11Config>,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig { default_algorithm: "es256".into(), pkcs11: None }
    }
}

/// The PKCS#11 token that holds issuer keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The module (`/usr/lib/softhsm/libsofthsm2.so` for SoftHSM2).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// A file holding the user PIN (one line). Or `pin`.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// The user PIN itself, for `ZHENGZHAO_SIGNING__PKCS11__PIN`. Or `pin_file`.
    /// Never written out (nor shown by `Debug`); digits-only PINs are read
    /// as text too.
    #[serde(default, skip_serializing, deserialize_with = "pin_text")]
    pub pin: Option<String>,
}

/// A PIN as text, whether the source gave a string or a number (an
/// environment variable of digits), without the value in any error.
fn pin_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Pin {
        Text(String),
        Number(u64),
    }
    match Option::<Pin>::deserialize(d) {
        Ok(p) => Ok(p.map(|p| match p {
            Pin::Text(s) => s,
            Pin::Number(n) => n.to_string(),
        })),
        Err(_) => Err(serde::de::Error::custom("signing.pkcs11.pin: text or digits")),
    }
}

/// Never prints the PIN.
impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin_file", &self.pin_file)
            .field("pin", &self.pin.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// Where the other services are (split deployment); unset means in-process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Peers {
    pub catalog: Option<String>,
    pub issuance: Option<String>,
    pub signing: Option<String>,
    pub verification: Option<String>,
    pub exchange: Option<String>,
}

/// The libraries a gateway forwards to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub libraries: Vec<LibraryRoute>,
}

/// One library behind the gateway: one address for all of it (an all-in-one
/// process or an ingress), or per-service addresses for a split deployment.
/// The first is the city; the others are districts, each owning the issuers
/// it names and those whose credit code carries one of its area codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryRoute {
    pub name: String,
    pub address: String,
    /// Administrative division code prefixes (2 to 6 digits).
    #[serde(default)]
    pub area_codes: Vec<String>,
    /// Unified social credit codes of its issuers.
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub issuance: Option<String>,
    #[serde(default)]
    pub verification: Option<String>,
    #[serde(default)]
    pub exchange: Option<String>,
    #[serde(default)]
    pub catalog: Option<String>,
    #[serde(default)]
    pub signing: Option<String>,
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` or `json`.
    pub log_format: String,
    /// `tracing` filter, e.g. `info,zhengzhao=debug`.
    pub log_filter: String,
    /// OTLP/gRPC endpoint for traces; unset means no export.
    pub otlp_endpoint: Option<String>,
    /// Address for the Prometheus `/metrics` endpoint; unset means none.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            log_format: "text".into(),
            log_filter: "info".into(),
            otlp_endpoint: None,
            metrics_listen: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("zhengzhao-data"),
            database_url: None,
            read_database_url: None,
            read_max_lag_seconds: 5,
            library: "city".into(),
            agency: None,
            calendar_file: None,
            shutdown_grace_seconds: DEFAULT_SHUTDOWN_GRACE_SECONDS,
            peers: Peers::default(),
            gateway: GatewayConfig::default(),
            signing: SigningConfig::default(),
            issuance: IssuanceConfig::default(),
            exchange: ExchangeConfig::default(),
            verification: VerificationConfig::default(),
            tls: TlsConfig::default(),
            telemetry: TelemetryConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

/// Configuration that cannot be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` (if given), then the process environment, then `overrides`
    /// (flags the user gave, serialised with only the keys they set).
    pub fn load<T: Serialize>(file: Option<&Path>, overrides: &T) -> Result<Self, ConfigError> {
        let env = Env::prefixed("ZHENGZHAO_").split("__").ignore(NOT_CONFIG);
        Self::from_figment(Self::base(file).merge(env).merge(Serialized::defaults(overrides)))
    }

    /// As [`Config::load`] but without the environment (for tests).
    pub fn load_without_env<T: Serialize>(file: Option<&Path>, overrides: &T) -> Result<Self, ConfigError> {
        Self::from_figment(Self::base(file).merge(Serialized::defaults(overrides)))
    }

    fn base(file: Option<&Path>) -> Figment {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            f = f.merge(Toml::file_exact(path));
        }
        f
    }

    fn from_figment(f: Figment) -> Result<Self, ConfigError> {
        let c: Config = f.extract().map_err(Box::new)?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.telemetry.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid("telemetry.log_format must be text or json".into()));
        }
        if let Some(url) = &self.database_url
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            return Err(ConfigError::Invalid("database_url must be a postgres:// URL".into()));
        }
        if let Some(url) = &self.read_database_url {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return Err(ConfigError::Invalid("read_database_url must be a postgres:// URL".into()));
            }
            if self.database_url.is_none() {
                return Err(ConfigError::Invalid(
                    "read_database_url is a replica of database_url: set database_url too".into(),
                ));
            }
        }
        if !(1..=3600).contains(&self.read_max_lag_seconds) {
            return Err(ConfigError::Invalid("read_max_lag_seconds must be 1 to 3600".into()));
        }
        for (name, url) in [
            ("catalog", &self.peers.catalog),
            ("issuance", &self.peers.issuance),
            ("signing", &self.peers.signing),
            ("verification", &self.peers.verification),
            ("exchange", &self.peers.exchange),
        ] {
            if let Some(u) = url
                && !u.starts_with("http://")
                && !u.starts_with("https://")
            {
                return Err(ConfigError::Invalid(format!("peers.{name} must be an http:// or https:// URL")));
            }
        }
        if !(1..=3600).contains(&self.auth.revocation_refresh_seconds) {
            return Err(ConfigError::Invalid("auth.revocation_refresh_seconds must be 1 to 3600".into()));
        }
        if let Some(u) = &self.exchange.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "exchange.public_url must start with http:// or https://, got {u:?}"
            )));
        }
        if !(1..=3650).contains(&self.issuance.outage_backdate_days) {
            return Err(ConfigError::Invalid("issuance.outage_backdate_days must be 1 to 3650".into()));
        }
        use zhengzhao_core::library::{LIBRARY_NAME_RULE, is_library_name as name_ok};
        if !name_ok(&self.library) {
            return Err(ConfigError::Invalid(format!("library must be {LIBRARY_NAME_RULE}, got {:?}", self.library)));
        }
        let mut seen = std::collections::BTreeSet::new();
        for l in &self.gateway.libraries {
            if !name_ok(&l.name) || !seen.insert(l.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "gateway.libraries: {:?} is not a library name ({LIBRARY_NAME_RULE}) or is named twice",
                    l.name
                )));
            }
            if let Some(bad) =
                l.area_codes.iter().find(|c| !(2..=6).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ConfigError::Invalid(format!(
                    "gateway.libraries {}: area code {bad:?} is not 2 to 6 digits",
                    l.name
                )));
            }
            if let Some(bad) = l.issuers.iter().find(|c| c.len() != 18 || !c.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(ConfigError::Invalid(format!(
                    "gateway.libraries {}: issuer {bad:?} is not a unified social credit code",
                    l.name
                )));
            }
        }
        if self.shutdown_grace_seconds > 600 {
            return Err(ConfigError::Invalid("shutdown_grace_seconds must be 0 to 600".into()));
        }
        let l = &self.limits;
        if !(1..=3600).contains(&l.request_timeout_seconds) {
            return Err(ConfigError::Invalid("limits.request_timeout_seconds must be 1 to 3600".into()));
        }
        if !(1..=3600).contains(&l.peer_timeout_seconds) {
            return Err(ConfigError::Invalid("limits.peer_timeout_seconds must be 1 to 3600".into()));
        }
        if !(1..=1_000_000).contains(&l.max_concurrent_requests) {
            return Err(ConfigError::Invalid("limits.max_concurrent_requests must be 1 to 1000000".into()));
        }
        if l.principal_rate_per_second > 0 && l.principal_burst == 0 {
            return Err(ConfigError::Invalid("limits.principal_burst must be at least 1 with a rate".into()));
        }
        if !(1..=3600).contains(&l.keepalive_seconds) {
            return Err(ConfigError::Invalid("limits.keepalive_seconds must be 1 to 3600".into()));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::Invalid("tls.cert_file and tls.key_file go together".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("zz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[telemetry]\nlog_format = \"json\"\n").unwrap();
        let c = Config::load_without_env(Some(&file), &serde_json::json!({"listen": "127.0.0.1:9100"})).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.telemetry.log_format, "json");
        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        assert!(Config::load_without_env(Some(&file), &serde_json::json!({})).is_err());
        assert!(Config::load_without_env(None, &serde_json::json!({"database_url": "mysql://x"})).is_err());
        let c =
            Config::load_without_env(None, &serde_json::json!({"auth": {"revocation_refresh_seconds": 30}})).unwrap();
        assert_eq!(c.auth.revocation_refresh_seconds, 30);
        assert_eq!(Config::default().auth.revocation_refresh_seconds, 5);
        assert!(
            Config::load_without_env(None, &serde_json::json!({"auth": {"revocation_refresh_seconds": 0}})).is_err()
        );
    }

    #[test]
    fn a_pin_of_digits_reads_as_text_and_is_never_shown() {
        let pkcs11 = |pin: serde_json::Value| serde_json::json!({"signing": {"pkcs11": {"module": "/m.so", "token_label": "t", "pin": pin}}});
        for pin in [serde_json::json!(87654321), serde_json::json!("87654321")] {
            let c = Config::load_without_env(None, &pkcs11(pin)).unwrap();
            let p = c.signing.pkcs11.expect("pkcs11 set");
            assert_eq!(p.pin.as_deref(), Some("87654321"));
            assert!(!format!("{p:?}").contains("87654321"));
            assert!(!serde_json::to_string(&p).unwrap().contains("87654321"));
        }
        let e = Config::load_without_env(None, &pkcs11(serde_json::json!([87654321]))).unwrap_err();
        assert!(!e.to_string().contains("87654321"), "{e}");
    }

    #[test]
    fn shutdown_grace_has_a_default_and_a_bound() {
        assert_eq!(Config::default().shutdown_grace_seconds, 10);
        let c = Config::load_without_env(None, &serde_json::json!({"shutdown_grace_seconds": 0})).unwrap();
        assert_eq!(c.shutdown_grace_seconds, 0);
        let e = Config::load_without_env(None, &serde_json::json!({"shutdown_grace_seconds": 601})).unwrap_err();
        assert!(e.to_string().contains("shutdown_grace_seconds must be 0 to 600"), "{e}");
        assert!(Config::load_without_env(None, &serde_json::json!({"shutdown_grace_seconds": -1})).is_err());
    }

    #[test]
    fn library_names_and_members_are_checked() {
        assert_eq!(Config::default().library, "city");
        let c = Config::load_without_env(None, &serde_json::json!({"library": "d1"})).unwrap();
        assert_eq!(c.library, "d1");
        for bad in ["", "City", "d 1", "d1\n", &"x".repeat(65)] {
            let e = Config::load_without_env(None, &serde_json::json!({"library": bad})).unwrap_err();
            assert!(e.to_string().contains("library must be"), "{bad:?}: {e}");
        }
        let member = |extra: serde_json::Value| {
            let mut m = serde_json::json!({"name": "d1", "address": "http://d1:7070"});
            m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            Config::load_without_env(None, &serde_json::json!({"gateway": {"libraries": [m]}}))
        };
        assert!(member(serde_json::json!({"area_codes": ["320102"], "issuers": ["91350100M000100Y43"]})).is_ok());
        assert!(member(serde_json::json!({"area_codes": ["32a"]})).is_err());
        assert!(member(serde_json::json!({"area_codes": ["3201020"]})).is_err());
        assert!(member(serde_json::json!({"issuers": ["short"]})).is_err());
        let twice = serde_json::json!({"gateway": {"libraries": [
            {"name": "d1", "address": "http://a"}, {"name": "d1", "address": "http://b"}]}});
        assert!(Config::load_without_env(None, &twice).is_err());
    }
}
