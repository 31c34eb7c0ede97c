//! A whole library in the test process: every service wired as `zhengzhao
//! serve` wires them, over a test database, served on 127.0.0.1:0, with
//! helpers to mint tokens and make authenticated clients.

#![forbid(unsafe_code)]

pub mod consumers;
pub mod fixtures;
pub mod remote;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::{BearerToken, Role};
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::exchange::v1::holder_service_client::HolderServiceClient;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;
use zhengzhao_server::{Context, ProcessKeys};
use zhengzhao_testkit::TestDb;

/// The administrator used in tests.
pub const ADMIN: &str = "11100000000013338W";
/// The issuer the example type lists.
pub const ISSUER: &str = "91350100M000100Y43";
/// An issuer the example type does not list.
pub const OTHER_ISSUER: &str = "91110000802100433B";
/// A consumer agency.
pub const CONSUMER: &str = "12100000400010275N";

/// An authenticated channel.
pub type Authed = InterceptedService<Channel, BearerToken>;

/// A running in-process library.
pub struct Library {
    pub db: TestDb,
    /// The keys the library process holds.
    pub keys: Arc<ProcessKeys>,
    /// The operator's token key (the test mints tokens as the operator would).
    pub tokens: Arc<zhengzhao_auth::TokenAuthority>,
    pub addr: std::net::SocketAddr,
    pub data: tempfile::TempDir,
    /// Where its keys are (the data directory, or a district's `keys` in it).
    pub keys_dir: std::path::PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    channel: Channel,
    /// The issuance service itself, for driving its jobs.
    pub issuance_service: Arc<zhengzhao_issuance::Issuance>,
    /// The library's clock: tests advance it to walk the calendar.
    pub clock: zhengzhao_core::clock::Clock,
}

impl Library {
    /// Starts a library over `db`.
    pub async fn start(db: TestDb) -> anyhow::Result<Self> {
        Self::start_in(db, tempfile::tempdir()?).await
    }

    /// Stops this library and starts it again over the same database and
    /// data directory (same keys), as an operator's restart would.
    pub async fn restart(mut self) -> anyhow::Result<Self> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let db = std::mem::replace(&mut self.db, TestDb::sqlite()?);
        let data = std::mem::replace(&mut self.data, tempfile::tempdir()?);
        drop(self);
        Self::start_in(db, data).await
    }

    /// Like [`Library::restart`], with the configuration `configure` adjusts.
    pub async fn restart_with_config(
        mut self,
        configure: impl FnOnce(&mut zhengzhao_config::Config),
    ) -> anyhow::Result<Self> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let db = std::mem::replace(&mut self.db, TestDb::sqlite()?);
        let data = std::mem::replace(&mut self.data, tempfile::tempdir()?);
        drop(self);
        let dir = data.path().to_path_buf();
        Self::start_limited(db, data, &dir, "city", configure).await
    }

    /// Starts a district library named `name` over `db` whose operator is
    /// `operator`'s (it trusts the same token key, so one token works on both).
    pub async fn start_district(db: TestDb, name: &str, operator: &Library) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let dir = data.path().join("keys");
        zhengzhao_server::keys::init_library(&dir)?;
        for f in [zhengzhao_server::keys::TOKEN_KEY_FILE, zhengzhao_server::keys::TOKEN_KEYS_FILE] {
            std::fs::copy(operator.data.path().join(f), dir.join(f))?;
        }
        Self::start_configured(db, data, &dir, name).await
    }

    async fn start_in(db: TestDb, data: tempfile::TempDir) -> anyhow::Result<Self> {
        let dir = data.path().to_path_buf();
        Self::start_configured(db, data, &dir, "city").await
    }

    /// Starts a library over `db` held to `limits`.
    pub async fn start_with_limits(db: TestDb, limits: zhengzhao_config::LimitsConfig) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let dir = data.path().to_path_buf();
        Self::start_limited(db, data, &dir, "city", |c| c.limits = limits).await
    }

    /// Starts a library over `db` whose configuration `configure` adjusts.
    pub async fn start_with_config(
        db: TestDb,
        configure: impl FnOnce(&mut zhengzhao_config::Config),
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let dir = data.path().to_path_buf();
        Self::start_limited(db, data, &dir, "city", configure).await
    }

    async fn start_configured(
        db: TestDb,
        data: tempfile::TempDir,
        dir: &std::path::Path,
        name: &str,
    ) -> anyhow::Result<Self> {
        Self::start_limited(db, data, dir, name, |_| ()).await
    }

    async fn start_limited(
        db: TestDb,
        data: tempfile::TempDir,
        dir: &std::path::Path,
        name: &str,
        configure: impl FnOnce(&mut zhengzhao_config::Config),
    ) -> anyhow::Result<Self> {
        let mut config = zhengzhao_config::Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: dir.to_path_buf(),
            library: name.to_owned(),
            ..Default::default()
        };
        configure(&mut config);
        config.database_url = db.url().map(str::to_owned);
        // The reminder job ticks every second, so tests see deliveries soon.
        config.exchange.reminder_interval_seconds = 1;
        // Two attempts before a failing delivery is dead-lettered (5 s apart).
        config.exchange.reminder_max_attempts = 2;
        let keys = Arc::new(ProcessKeys::load_or_create(dir, None)?);
        let tokens = Arc::new(zhengzhao_server::keys::operator_authority(dir)?);
        let limits = config.limits.clone();
        let mut ctx = Context::with_keys(config, keys);
        ctx.store = db.store();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        ctx.local_addr = Some(addr);
        let keys = ctx.keys.clone();
        let clock = ctx.clock.clone();
        let assembly = zhengzhao::serve::assemble(ctx).await?;
        let issuance_service = assembly.issuance.clone();
        let routes = zhengzhao_server::with_health_and_reflection(assembly.routes, &assembly.names).await?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = zhengzhao_server::serve(
                routes,
                listener,
                None,
                async {
                    let _ = rx.await;
                },
                &limits,
            )
            .await;
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Library {
            db,
            keys,
            tokens,
            addr,
            data,
            keys_dir: dir.to_path_buf(),
            shutdown: Some(tx),
            channel,
            issuance_service,
            clock,
        })
    }

    /// A token for `agency` in `role`, valid for an hour.
    pub fn token(&self, role: Role, agency: &str) -> String {
        self.tokens.mint(agency, role, Duration::from_secs(3600)).expect("test agencies are valid codes")
    }

    /// A token for `agency` in `role` that names the person acting.
    pub fn token_for(&self, role: Role, agency: &str, operator: &str) -> String {
        self.tokens
            .issue_for(agency, role, Duration::from_secs(3600), operator)
            .expect("test agencies and operators are valid")
            .token
    }

    /// GET `path` over HTTP/1.1 on the library's port: the status code and body.
    pub async fn http_get(&self, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: zhengzhao\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no HTTP head"))?;
        let head = String::from_utf8_lossy(&out[..split]).to_string();
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        anyhow::ensure!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "chunked answer: {head}");
        Ok((status, out[split + 4..].to_vec()))
    }

    /// A token of service `name`, signed with that service's own credential key.
    pub fn service_token(&self, name: zhengzhao_auth::ServiceName) -> anyhow::Result<String> {
        let path = self.keys_dir.join(zhengzhao_server::keys::service_key_file(name));
        let pem = std::fs::read_to_string(&path)?;
        let key = zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&pem)?;
        let authority = zhengzhao_auth::TokenAuthority::service(key, name);
        Ok(authority.mint(&self.keys.agency, zhengzhao_auth::Role::Service(name), Duration::from_secs(60))?)
    }

    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn bearer(&self, role: Role, agency: &str) -> BearerToken {
        BearerToken::new(&self.token(role, agency)).expect("tokens are header text")
    }

    pub fn catalog(&self, role: Role, agency: &str) -> CatalogServiceClient<Authed> {
        CatalogServiceClient::with_interceptor(self.channel(), self.bearer(role, agency))
    }
    pub fn issuance(&self, role: Role, agency: &str) -> IssuanceServiceClient<Authed> {
        IssuanceServiceClient::with_interceptor(self.channel(), self.bearer(role, agency))
    }
    pub fn signing(&self, role: Role, agency: &str) -> SigningServiceClient<Authed> {
        SigningServiceClient::with_interceptor(self.channel(), self.bearer(role, agency))
    }
    pub fn verification(&self, role: Role, agency: &str) -> VerificationServiceClient<Authed> {
        VerificationServiceClient::with_interceptor(self.channel(), self.bearer(role, agency))
    }
    pub fn exchange(&self, role: Role, agency: &str) -> ExchangeServiceClient<Authed> {
        ExchangeServiceClient::with_interceptor(self.channel(), self.bearer(role, agency))
    }
    /// The holder service as `role` of `agency`.
    pub fn holders(&self, role: Role, agency: &str) -> HolderServiceClient<Authed> {
        HolderServiceClient::with_interceptor(self.channel(), self.bearer(role, agency))
    }
    /// The holder service with `token` (a holder token, say).
    pub fn holders_with(&self, token: &str) -> HolderServiceClient<Authed> {
        HolderServiceClient::with_interceptor(self.channel(), BearerToken::new(token).expect("tokens are header text"))
    }
    /// The exchange as `agency`'s operator `operator` (the token names them).
    pub fn exchange_as(&self, role: Role, agency: &str, operator: &str) -> ExchangeServiceClient<Authed> {
        let bearer = BearerToken::new(&self.token_for(role, agency, operator)).expect("tokens are header text");
        ExchangeServiceClient::with_interceptor(self.channel(), bearer)
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
