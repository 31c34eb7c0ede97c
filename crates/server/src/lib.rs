//! Plumbing every Zhengzhao server process shares: the library's keys in the
//! data directory, layered config from flags, health and reflection, the
//! metrics layer, and serving on a bound listener until shutdown.

#![forbid(unsafe_code)]

pub mod keys;
pub mod limits;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::{Channel, Server};
use zhengzhao_auth::{Authenticate, Denylist, ServiceCredentials, ServiceName};
use zhengzhao_config::Config;
use zhengzhao_store::StoreConfig;

pub use keys::{Needs, ProcessKeys};

/// Flags every server process takes; each overrides the config file and environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML config file (keys as in the README); flags and ZHENGZHAO_* variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7070]; port 0 picks a free one.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for keys and SQLite files [default: ./zhengzhao-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL; without it, SQLite files under the data directory.
    #[arg(long)]
    pub database_url: Option<String>,
    /// A PostgreSQL streaming replica of --database-url for the reads that
    /// may lag (licences read by verification, GetLicence).
    #[arg(long)]
    pub read_database_url: Option<String>,
    /// The library administrator's unified social credit code.
    #[arg(long)]
    pub agency: Option<String>,
    /// Catalogue service URL (split deployment).
    #[arg(long)]
    pub catalog_url: Option<String>,
    /// Issuance service URL (split deployment).
    #[arg(long)]
    pub issuance_url: Option<String>,
    /// Signing service URL (split deployment).
    #[arg(long)]
    pub signing_url: Option<String>,
    /// This library's name: `city` (the default), or a district's name or
    /// area code (1-64 of a-z, 0-9, - and _).
    #[arg(long = "library", value_name = "NAME")]
    pub library: Option<String>,
    /// Member libraries a gateway fronts, as NAME=URL (repeatable): the
    /// first is the city, the others districts.
    #[arg(long = "member", value_name = "NAME=URL")]
    pub members: Vec<String>,
    /// A district member's administrative division code prefixes, as
    /// NAME=CODE[,CODE...] (repeatable): issuers whose credit code carries
    /// one are routed to it.
    #[arg(long = "member-areas", value_name = "NAME=CODES")]
    pub member_areas: Vec<String>,
    /// A district member's issuers, as NAME=USCC[,USCC...] (repeatable).
    #[arg(long = "member-issuers", value_name = "NAME=CODES")]
    pub member_issuers: Vec<String>,
    /// Address for a Prometheus /metrics endpoint.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

impl ServeArgs {
    /// The flags the user set, as a config overlay.
    pub fn overrides(&self) -> anyhow::Result<serde_json::Value> {
        let mut v = serde_json::Map::new();
        let mut put = |k: &str, val: Option<serde_json::Value>| {
            if let Some(val) = val {
                v.insert(k.to_owned(), val);
            }
        };
        put("listen", self.listen.map(|a| a.to_string().into()));
        put("data_dir", self.data_dir.as_ref().map(|d| d.display().to_string().into()));
        put("database_url", self.database_url.clone().map(Into::into));
        put("read_database_url", self.read_database_url.clone().map(Into::into));
        put("agency", self.agency.clone().map(Into::into));
        let mut peers = serde_json::Map::new();
        for (k, u) in [("catalog", &self.catalog_url), ("issuance", &self.issuance_url), ("signing", &self.signing_url)]
        {
            if let Some(u) = u {
                peers.insert(k.to_owned(), u.clone().into());
            }
        }
        if !peers.is_empty() {
            v.insert("peers".into(), peers.into());
        }
        if let Some(l) = &self.library {
            v.insert("library".into(), l.clone().into());
        }
        if !self.members.is_empty() {
            let lists = |flag: &str, given: &[String]| -> anyhow::Result<Vec<(String, Vec<String>)>> {
                given
                    .iter()
                    .map(|g| {
                        let (name, codes) =
                            g.split_once('=').with_context(|| format!("--{flag} takes NAME=CODE[,CODE...]"))?;
                        Ok((name.to_owned(), codes.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect()))
                    })
                    .collect()
            };
            let areas = lists("member-areas", &self.member_areas)?;
            let issuers = lists("member-issuers", &self.member_issuers)?;
            let of = |list: &[(String, Vec<String>)], name: &str| -> Vec<String> {
                list.iter().filter(|(n, _)| n == name).flat_map(|(_, c)| c.clone()).collect()
            };
            let libs = self
                .members
                .iter()
                .map(|l| {
                    let (name, address) = l.split_once('=').context("--member takes NAME=URL")?;
                    Ok(serde_json::json!({
                        "name": name,
                        "address": address,
                        "area_codes": of(&areas, name),
                        "issuers": of(&issuers, name),
                    }))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            for (name, _) in areas.iter().chain(&issuers) {
                if !libs.iter().any(|l| l["name"] == name.as_str()) {
                    anyhow::bail!("--member-areas/--member-issuers name {name}, which no --member names");
                }
            }
            v.insert("gateway".into(), serde_json::json!({ "libraries": libs }));
        }
        if let Some(m) = self.metrics_listen {
            v.insert("telemetry".into(), serde_json::json!({ "metrics_listen": m.to_string() }));
        }
        Ok(v.into())
    }

    /// Defaults, file, environment, then these flags.
    pub fn load_config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(self.config.as_deref(), &self.overrides()?)?)
    }
}

/// What a service needs to build itself.
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub keys: Arc<ProcessKeys>,
    pub store: StoreConfig,
    /// The address this process listens on, once bound.
    pub local_addr: Option<SocketAddr>,
    /// The library's clock ("today" for validity), shared by its services.
    pub clock: zhengzhao_core::clock::Clock,
    /// Per-principal rate limits (`limits.principal_*`), shared by every
    /// service in the process; `None` when off.
    pub rate_limit: Option<Arc<zhengzhao_auth::RateLimit>>,
}

impl Context {
    pub fn new(config: Config, keys: ProcessKeys) -> Self {
        Self::with_keys(config, Arc::new(keys))
    }

    /// A context over keys the caller keeps a handle on.
    pub fn with_keys(config: Config, keys: Arc<ProcessKeys>) -> Self {
        let store = StoreConfig::from_urls_or_dir(
            config.database_url.as_deref(),
            config.read_database_url.as_deref(),
            std::time::Duration::from_secs(config.read_max_lag_seconds),
            config.data_dir.clone(),
        );
        let rate_limit =
            zhengzhao_auth::RateLimit::new(config.limits.principal_rate_per_second, config.limits.principal_burst)
                .map(Arc::new);
        Context { config, keys, store, local_addr: None, clock: Default::default(), rate_limit }
    }

    /// The working-day calendar: the configured file, or the shipped one.
    pub fn calendar(&self) -> anyhow::Result<zhengzhao_core::calendar::WorkingCalendar> {
        match &self.config.calendar_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                Ok(zhengzhao_core::calendar::WorkingCalendar::parse(&text)?)
            }
            None => Ok(zhengzhao_core::calendar::WorkingCalendar::parse(zhengzhao_core::calendar::SHIPPED)?),
        }
    }

    /// The algorithm of an issuer's first key (`signing.default_algorithm`).
    pub fn signing_algorithm(&self) -> anyhow::Result<zhengzhao_crypto::Algorithm> {
        self.config
            .signing
            .default_algorithm
            .parse()
            .map_err(|e: String| anyhow::anyhow!("signing.default_algorithm: {e}"))
    }

    /// The tokens this process refuses (revoked by an administrator).
    pub fn denylist(&self) -> Arc<Denylist> {
        self.keys.denylist.clone()
    }

    /// The interceptor that authenticates inbound calls (refusing revoked tokens).
    /// Each principal is held to the process's rate limit.
    pub fn authenticate(&self) -> Authenticate {
        Authenticate::new(self.keys.verifier.clone()).limited(self.rate_limit.clone())
    }

    /// Credentials for this service's own outbound calls: tokens signed with
    /// its own credential key (`service-NAME.pem`).
    pub fn credentials(&self, name: ServiceName) -> anyhow::Result<ServiceCredentials> {
        let key = self
            .keys
            .credential
            .clone()
            .with_context(|| format!("this process holds no credential key ({})", keys::service_key_file(name)))?;
        Ok(ServiceCredentials::new(key, name, &self.keys.agency))
    }

    /// The master key (the signing service's process only).
    pub fn master_key(&self) -> anyhow::Result<zhengzhao_crypto::MasterKey> {
        self.keys.master.clone().context("this process holds no master key")
    }

    /// The transparency log's key (the issuance service's process only).
    pub fn log_key(&self) -> anyhow::Result<Arc<keys::LogKey>> {
        self.keys.log.clone().context("this process holds no log key")
    }

    /// A lazily connected channel to a peer service named in the config
    /// (over TLS for `https://`, trusting `tls.ca_file`).
    /// How this process reaches itself: `https://localhost:PORT` with TLS
    /// (the certificate must name localhost), else `http://` and the bound
    /// (or configured) listen address.
    pub fn own_url(&self) -> String {
        let port = self.local_addr.map_or(self.config.listen.port(), |a| a.port());
        let addr = self.local_addr.unwrap_or(self.config.listen);
        if self.config.tls.cert_file.is_some() || addr.ip().is_unspecified() {
            // A wildcard address (0.0.0.0, ::) is not somewhere to go.
            let scheme = if self.config.tls.cert_file.is_some() { "https" } else { "http" };
            format!("{scheme}://localhost:{port}")
        } else {
            format!("http://{addr}")
        }
    }

    /// The URL the public reaches this process's plain-HTTP routes at:
    /// `exchange.public_url`, else [`Context::own_url`].
    pub fn public_url(&self) -> String {
        self.config.exchange.public_url.clone().unwrap_or_else(|| {
            let url = self.own_url();
            tracing::warn!(
                url = %url,
                "exchange.public_url is not set: annotated copies will point at {url}; \
                 set it to the address the public reaches this library at"
            );
            url
        })
    }

    pub fn peer(&self, name: &str, url: Option<&String>) -> anyhow::Result<Channel> {
        let url =
            url.with_context(|| format!("the {name} service is not in this process: set peers.{name} (--{name}-url)"))?;
        let ca = self.trusted_ca()?;
        Ok(tls::endpoint(url, ca.as_deref())
            .with_context(|| format!("peers.{name}"))?
            .timeout(Duration::from_secs(self.config.limits.peer_timeout_seconds))
            .http2_keep_alive_interval(Duration::from_secs(self.config.limits.keepalive_seconds))
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .connect_lazy())
    }

    /// The CA certificates trusted for `https://` peers (`tls.ca_file`).
    pub fn trusted_ca(&self) -> anyhow::Result<Option<Vec<u8>>> {
        tls::trusted_ca(self.config.tls.ca_file.as_deref())
    }
}

/// Every gRPC method a Zhengzhao process may serve: the library's services,
/// health and reflection. Metrics label only these; other paths are `unknown`.
pub fn known_methods() -> anyhow::Result<zhengzhao_telemetry::KnownMethods> {
    zhengzhao_telemetry::KnownMethods::from_descriptor_sets(&[
        zhengzhao_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
    .context("the compiled-in descriptor sets do not decode")
}

/// Keeps the denylist of a process that does not host the catalogue in step
/// with the catalogue's list of revoked tokens: asks `peers.catalog` every
/// `auth.revocation_refresh_seconds` with the service's own credentials and
/// prunes expired entries. Without `peers.catalog`, warns that revocations
/// are not enforced here.
pub fn spawn_revocation_refresh(ctx: &Context, name: ServiceName) -> anyhow::Result<()> {
    use zhengzhao_proto::auth::v1::ListRevokedTokensRequest;
    use zhengzhao_proto::auth::v1::token_service_client::TokenServiceClient;
    let Some(url) = ctx.config.peers.catalog.as_ref() else {
        tracing::warn!(
            service = name.as_str(),
            "token revocations are not enforced by this process: set peers.catalog (--catalog-url)"
        );
        return Ok(());
    };
    let mut client = TokenServiceClient::with_interceptor(ctx.peer("catalog", Some(url))?, ctx.credentials(name)?);
    let denylist = ctx.denylist();
    let every = std::time::Duration::from_secs(ctx.config.auth.revocation_refresh_seconds);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match client.list_revoked_tokens(ListRevokedTokensRequest {}).await {
                Ok(list) => {
                    for t in list.into_inner().revoked_tokens {
                        if let Some(expires_at) = t.expires_at {
                            denylist.revoke(&t.token_id, expires_at.seconds);
                        }
                    }
                    denylist.prune(time_now());
                    if failing {
                        tracing::info!("revoked tokens refreshed from the catalogue again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e.message(), code = ?e.code(), "cannot refresh the revoked tokens from the catalogue");
                    }
                    failing = true;
                    denylist.prune(time_now());
                }
            }
        }
    });
    Ok(())
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The service whose credentials a process of this name uses, when the
/// process does not host the catalogue (which holds the revoked tokens).
fn refreshing_service(process: &str) -> Option<ServiceName> {
    match process {
        "issuance" => Some(ServiceName::Issuance),
        "signing" => Some(ServiceName::Signing),
        "verification" => Some(ServiceName::Verification),
        "exchange" => Some(ServiceName::Exchange),
        "gateway" => Some(ServiceName::Gateway),
        _ => None,
    }
}

/// Health (with every named service set to SERVING) and reflection added to `routes`.
pub async fn with_health_and_reflection(routes: Routes, services: &[&str]) -> anyhow::Result<Routes> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for s in services {
        reporter.set_service_status(*s, tonic_health::ServingStatus::Serving).await;
    }
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(zhengzhao_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok(routes.add_service(health).add_service(reflection))
}

/// How long an HTTP/2 keepalive ping may go unanswered before the
/// connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `routes` on `listener` (over TLS when `tls` is given) until
/// `shutdown` completes, with the default grace period (see [`serve_with_grace`]).
pub async fn serve(
    routes: Routes,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
    limits: &zhengzhao_config::LimitsConfig,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(zhengzhao_config::DEFAULT_SHUTDOWN_GRACE_SECONDS);
    serve_with_grace(routes, listener, tls, shutdown, grace, limits).await
}

/// Serves `routes` on `listener` (over TLS when `tls` is given) until
/// `shutdown` completes. Then new connections are refused, every open gRPC
/// response stream (a change-feed follower, say) ends at once with
/// UNAVAILABLE, and calls in flight get `grace` to finish; after that the
/// server stops regardless. Every call is traced and counted, then held
/// to `limits` (calls in flight, answer deadline; see [`limits`]); every
/// connection is kept alive with HTTP/2 pings.
pub async fn serve_with_grace(
    routes: Routes,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
    limits: &zhengzhao_config::LimitsConfig,
) -> anyhow::Result<()> {
    // No Nagle: a reply written in pieces (headers, data, trailers) must
    // not wait for the client's delayed ACK (40 ms on Linux).
    let incoming = tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |s| {
        s.inspect(|s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        })
    });
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("TLS settings (tls.cert_file, tls.key_file)")?;
    }
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
    };
    // HTTP/1.1 too, for the plain-HTTP routes (the JWKS) web clients read.
    let known = known_methods()?;
    let serving = builder
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(limits.keepalive_seconds)))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(zhengzhao_telemetry::MetricsLayer::new(known.clone()))
        .layer(crate::limits::LimitLayer::new(
            limits.max_concurrent_requests,
            Duration::from_secs(limits.request_timeout_seconds),
            known,
        ))
        .layer(tower::util::MapResponseLayer::new(end_streams_on(stopping.clone())))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(serving);
    let mut stopped = stopping;
    let deadline = async move {
        // An error means the signal is gone with the server: nothing to wait for.
        if stopped.wait_for(|s| *s).await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = &mut serving => r?,
        () = deadline => {
            tracing::warn!(grace_seconds = grace.as_secs(), "calls still in flight after the shutdown grace period: stopping anyway");
        }
    }
    Ok(())
}

/// Wraps every gRPC response body so that, once `stopping` turns true, a
/// body still waiting for its next message (a server stream) ends with
/// UNAVAILABLE trailers. A body with a message ready is never cut: unary
/// answers to calls in flight go out whole.
fn end_streams_on(
    stopping: tokio::sync::watch::Receiver<bool>,
) -> impl Fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> + Clone {
    move |response| {
        let grpc = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if !grpc {
            return response;
        }
        let stopping = stopping.clone();
        response.map(|body| tonic::body::Body::new(until_stopping(body, stopping)))
    }
}

fn until_stopping(
    body: tonic::body::Body,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> http_body_util::StreamBody<impl futures::Stream<Item = Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
    use http_body_util::BodyExt as _;
    let frames = futures::stream::unfold(Some((body, stopping)), |state| async move {
        let (mut body, mut stopping) = state?;
        let next = tokio::select! {
            biased;
            frame = body.frame() => Some(frame),
            Ok(_) = stopping.wait_for(|s| *s) => None,
        };
        match next {
            Some(frame) => frame.map(|f| (f, Some((body, stopping)))),
            None => Some((Ok(http_body::Frame::trailers(unavailable_trailers())), None)),
        }
    });
    http_body_util::StreamBody::new(frames)
}

/// `grpc-status: 14` (UNAVAILABLE) with a message saying why.
fn unavailable_trailers() -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
    trailers.insert("grpc-message", http::HeaderValue::from_static("the%20server%20is%20shutting%20down"));
    trailers
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// The whole `main` of a service process `zhengzhao-NAME`: parses the
/// shared flags, runs the service [`run`] builds until shutdown, and reports a
/// failure as one line on stderr with exit code 1.
pub async fn service_main<F, Fut>(name: &'static str, about: &'static str, build: F) -> std::process::ExitCode
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = anyhow::Result<(Routes, Vec<&'static str>)>>,
{
    use clap::{Args as _, FromArgMatches as _};
    let command = ServeArgs::augment_args(
        clap::Command::new("zhengzhao-service")
            .bin_name(format!("zhengzhao-{name}"))
            .version(env!("CARGO_PKG_VERSION")),
    )
    .about(about);
    let args = match ServeArgs::from_arg_matches(&command.get_matches()) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match run(name, &args, build).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a server process: loads config, starts telemetry, loads (or creates)
/// the library keys, builds the routes, binds, prints `listening on ADDR`
/// on stdout, and serves until a shutdown signal.
pub async fn run<F, Fut>(name: &str, args: &ServeArgs, build: F) -> anyhow::Result<()>
where
    F: FnOnce(Context) -> Fut,
    Fut: Future<Output = anyhow::Result<(Routes, Vec<&'static str>)>>,
{
    let config = args.load_config()?;
    let _telemetry = zhengzhao_telemetry::init(&zhengzhao_telemetry::Settings {
        service: format!("zhengzhao-{name}"),
        log_format: config.telemetry.log_format.clone(),
        log_filter: config.telemetry.log_filter.clone(),
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
    })?;
    zhengzhao_telemetry::domain::touch();
    // Each process loads only the secrets it uses; only the all-in-one
    // creates keys (in an empty data directory).
    let keys = match ServiceName::from_name(name) {
        Some(service) => ProcessKeys::load(&config.data_dir, Needs::service(service), config.agency.as_deref())?,
        None => ProcessKeys::load_or_create(&config.data_dir, config.agency.as_deref())?,
    };
    let keys = Arc::new(keys);
    keys.spawn_trust_reload(std::time::Duration::from_secs(5));
    let tls = tls::server_tls(&config.tls)?;
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let mut ctx = Context::with_keys(config.clone(), keys);
    ctx.local_addr = Some(addr);
    if let Some(service) = refreshing_service(name) {
        spawn_revocation_refresh(&ctx, service)?;
    }
    let (routes, services) = build(ctx).await?;
    let routes = with_health_and_reflection(routes, &services).await?;
    if let Some(m) = config.telemetry.metrics_listen {
        tokio::spawn(async move {
            if let Err(e) = zhengzhao_telemetry::serve_metrics(m, shutdown_signal()).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    tracing::info!(%addr, service = name, tls = tls.is_some(), "listening");
    println!("listening on {addr}");
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    serve_with_grace(routes, listener, tls, shutdown_signal(), grace, &config.limits).await
}
