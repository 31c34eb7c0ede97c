//! The gateway: one front door over the city library and its districts.
//! It authenticates each call and routes it (see [`ROUTES`]): writes to the
//! library that owns the issuer (from the caller's agency, or the
//! identifier's issuer segment), reads of one licence to its owning library
//! with a fallback to the city's replica when that district does not answer
//! in time (marked stale, with its lag, in the response metadata), and
//! everything else (the exchange, holders, the catalogue, keys) to the city,
//! which holds the usage lists and the aggregate of every district. A caller
//! may name the member with the `zhengzhao-library` request header. Methods
//! it does not route are UNIMPLEMENTED. Each member's own policy still
//! decides every call: the gateway adds routing, never rights.

#![forbid(unsafe_code)]
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::Channel;

pub mod counter;
pub mod status;
use tonic::{Request, Response, Status};
use zhengzhao_auth::{Action, TokenVerifier, authorize, principal};
use zhengzhao_proto::gateway::v1 as pb;
use zhengzhao_proto::gateway::v1::gateway_service_server::{GatewayService, GatewayServiceServer};
use zhengzhao_proto::issuance::v1::ListReplicasRequest;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;

/// How the gateway routes one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the city: the exchange and holders (usage lists, the aggregate),
    /// the catalogue (the city's is the source), keys, the city's log.
    City,
    /// To the library owning the licence named in the request's
    /// `identifier` (field 1); a read falls back to the city's replica.
    Owner { read: bool },
    /// To the library owning the caller's agency (an issuer's own writes).
    Agency,
}

/// Every method the gateway routes, and how.
pub const ROUTES: &[(&str, Route)] = &[
    ("/zhengzhao.issuance.v1.IssuanceService/IssueLicence", Route::Agency),
    ("/zhengzhao.issuance.v1.IssuanceService/ImportLicences", Route::Agency),
    ("/zhengzhao.issuance.v1.IssuanceService/RecordOutage", Route::Agency),
    ("/zhengzhao.issuance.v1.IssuanceService/EndOutage", Route::Agency),
    ("/zhengzhao.issuance.v1.IssuanceService/CompleteOutageBacklog", Route::Agency),
    ("/zhengzhao.issuance.v1.IssuanceService/ListOutages", Route::Agency),
    ("/zhengzhao.issuance.v1.IssuanceService/CancelLicence", Route::Owner { read: false }),
    ("/zhengzhao.issuance.v1.IssuanceService/RecordEvent", Route::Owner { read: false }),
    ("/zhengzhao.issuance.v1.IssuanceService/ChangeLicence", Route::Owner { read: false }),
    ("/zhengzhao.issuance.v1.IssuanceService/RenewLicence", Route::Owner { read: false }),
    ("/zhengzhao.issuance.v1.IssuanceService/GetLicence", Route::Owner { read: true }),
    ("/zhengzhao.issuance.v1.IssuanceService/GetLicenceHistory", Route::Owner { read: true }),
    ("/zhengzhao.issuance.v1.IssuanceService/GetInclusionProof", Route::Owner { read: true }),
    ("/zhengzhao.issuance.v1.IssuanceService/GetCheckpoint", Route::City),
    ("/zhengzhao.issuance.v1.IssuanceService/GetConsistencyProof", Route::City),
    ("/zhengzhao.issuance.v1.IssuanceService/WatchChanges", Route::City),
    ("/zhengzhao.issuance.v1.IssuanceService/ListReplicas", Route::City),
    ("/zhengzhao.verification.v1.VerificationService/VerifyLicence", Route::Owner { read: true }),
    ("/zhengzhao.verification.v1.VerificationService/VerifyDocument", Route::City),
    ("/zhengzhao.signing.v1.SigningService/ListPublicKeys", Route::City),
    ("/zhengzhao.catalog.v1.CatalogService/GetLicenceType", Route::City),
    ("/zhengzhao.catalog.v1.CatalogService/ListLicenceTypes", Route::City),
    ("/zhengzhao.catalog.v1.CatalogService/ListTemplateVersions", Route::City),
    ("/zhengzhao.catalog.v1.CatalogService/ListCatalogChanges", Route::City),
    ("/zhengzhao.catalog.v1.CatalogService/ExportCatalog", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/FetchLicence", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/FindLicences", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/IssueCopy", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/ApplyForUsage", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/ListUsageEntries", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/ListApplications", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/ListUsageListChanges", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/GetUsageCheckpoint", Route::City),
    ("/zhengzhao.exchange.v1.ExchangeService/GetUsageConsistencyProof", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/HolderLogin", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/ListMyLicences", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/GetMyLicence", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/ListMyUsage", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/ListMyReminders", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/PresentLicence", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/ProposeScenario", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/ListScenarios", Route::City),
    ("/zhengzhao.exchange.v1.HolderService/VerifyPresentation", Route::City),
];

/// Request header naming the member library a call should go to.
pub const LIBRARY_HEADER: &str = "zhengzhao-library";
/// Response header: the member that answered.
pub const SERVED_BY_HEADER: &str = "zhengzhao-served-by";
/// Response header on a read the city's replica answered because the
/// owning district did not: `DISTRICT; lag_events=N; lag_seconds=S`
/// (lag unknown when the city could not say).
pub const STALE_HEADER: &str = "zhengzhao-stale";
/// Request header the gateway adds to every call it forwards: a library's
/// front door serves such a call itself, and a gateway refuses it, so that
/// a member misconfigured as a gateway cannot send calls round in a loop.
pub const HOP_HEADER: &str = "zhengzhao-forwarded";
/// How long a district has to answer a read before the city's replica does.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest routed request the gateway reads to find its identifier.
pub const MAX_ROUTED_REQUEST: usize = 4 * 1024 * 1024;

/// Whether a library is the city or a district.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    City,
    District,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::City => "city",
            Role::District => "district",
        }
    }
}

/// One library behind the gateway, and where each of its services answers.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub address: String,
    pub role: Role,
    pub area_codes: Vec<String>,
    pub issuers: Vec<String>,
    pub channel: Channel,
    /// `(gRPC package prefix, channel)` for services at their own address.
    pub services: Vec<(&'static str, Channel)>,
}

impl Upstream {
    fn channel_for(&self, path: &str) -> Channel {
        self.services
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map_or_else(|| self.channel.clone(), |(_, c)| c.clone())
    }
}

/// How to reach one library: its address, optionally per-service
/// addresses, and (for a district) what it owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibraryAddress {
    pub name: String,
    pub address: String,
    pub issuance: Option<String>,
    pub verification: Option<String>,
    pub exchange: Option<String>,
    pub catalog: Option<String>,
    pub signing: Option<String>,
    /// Administrative division code prefixes of its issuers.
    pub area_codes: Vec<String>,
    /// Its issuers' unified social credit codes.
    pub issuers: Vec<String>,
}

impl LibraryAddress {
    /// A library reachable at one address.
    pub fn single(name: &str, address: &str) -> Self {
        LibraryAddress { name: name.to_owned(), address: address.to_owned(), ..Default::default() }
    }
}

fn channel(name: &str, address: &str, ca_pem: Option<&[u8]>) -> Result<Channel, GatewayError> {
    Ok(zhengzhao_server::tls::endpoint(address, ca_pem)
        .map_err(|e| GatewayError::Address(name.to_owned(), format!("{e:#}")))?
        .connect_timeout(Duration::from_secs(2))
        // No request timeout here: a forwarded import streams for as long as
        // its caller sends, and each member bounds its own calls.
        .http2_keep_alive_interval(GATEWAY_KEEPALIVE)
        .keep_alive_timeout(zhengzhao_server::KEEPALIVE_TIMEOUT)
        .connect_lazy())
}

/// HTTP/2 keepalive pings on the gateway's connections to its members.
const GATEWAY_KEEPALIVE: Duration = Duration::from_secs(30);

/// A gateway over its libraries: the first is the city, the others districts.
#[derive(Debug, Clone)]
pub struct Gateway {
    upstreams: Arc<Vec<Upstream>>,
    verifier: Arc<TokenVerifier>,
}

/// A gateway that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the gateway needs at least one library (gateway.libraries)")]
    NoLibraries,
    #[error("library {0}: invalid address {1}")]
    Address(String, String),
}

impl Gateway {
    /// Connects lazily to each library (over TLS to `https://` addresses,
    /// trusting the CA certificates `ca_pem`). The first is the city.
    pub fn new(
        libraries: &[LibraryAddress],
        verifier: Arc<TokenVerifier>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, GatewayError> {
        if libraries.is_empty() {
            return Err(GatewayError::NoLibraries);
        }
        let upstreams = libraries
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut services = Vec::new();
                for (prefix, address) in [
                    ("/zhengzhao.issuance.v1.", &l.issuance),
                    ("/zhengzhao.verification.v1.", &l.verification),
                    ("/zhengzhao.exchange.v1.", &l.exchange),
                    ("/zhengzhao.catalog.v1.", &l.catalog),
                    ("/zhengzhao.signing.v1.", &l.signing),
                ] {
                    if let Some(a) = address {
                        services.push((prefix, channel(&l.name, a, ca_pem)?));
                    }
                }
                Ok(Upstream {
                    name: l.name.clone(),
                    address: l.address.clone(),
                    role: if i == 0 { Role::City } else { Role::District },
                    area_codes: l.area_codes.clone(),
                    issuers: l.issuers.clone(),
                    channel: channel(&l.name, &l.address, ca_pem)?,
                    services,
                })
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        Ok(Gateway { upstreams: Arc::new(upstreams), verifier })
    }

    /// The members, city first.
    pub fn members(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// The member owning `issuer` (a unified social credit code): a district
    /// naming it, else a district whose area code prefixes the code's
    /// administrative division code (characters 3 to 8), else the city.
    pub fn owner_of_issuer(&self, issuer: &str) -> usize {
        let division = issuer.get(2..8).unwrap_or("");
        self.upstreams
            .iter()
            .position(|u| u.role == Role::District && u.issuers.iter().any(|i| i == issuer))
            .or_else(|| {
                self.upstreams.iter().position(|u| {
                    u.role == Role::District && u.area_codes.iter().any(|a| division.starts_with(a.as_str()))
                })
            })
            .unwrap_or(0)
    }

    /// Adds the routes to a router whose own services do not serve them
    /// (the gateway process): every call goes to a member.
    pub fn add_forwarding(&self, mut router: axum::Router) -> axum::Router {
        for (path, route) in ROUTES {
            router = router.route_service(path, Front { gateway: self.clone(), path, route: *route, local: None });
        }
        router
    }

    /// Wraps a library's own router (the all-in-one, which is the city):
    /// calls the districts own go to them, the rest to `local`.
    pub fn front_door(&self, local: axum::Router) -> axum::Router {
        if self.upstreams.len() < 2 {
            return local;
        }
        axum::Router::new().fallback_service(FrontDoor { gateway: self.clone(), local })
    }

    /// Adds the status page (`/status`, see [`status`]).
    pub fn add_status(&self, router: axum::Router) -> axum::Router {
        status::routes(router, self.clone())
    }

    /// Adds the counter-staff page (`/counter`), which verifies
    /// presentations through the city's exchange.
    pub fn add_counter(&self, router: axum::Router) -> axum::Router {
        let city = &self.upstreams[0];
        counter::routes(router, city.channel_for("/zhengzhao.exchange.v1."))
    }

    pub fn service(&self) -> GatewayServiceServer<GatewayGrpc> {
        GatewayServiceServer::new(GatewayGrpc(self.clone()))
    }

    /// What the city says of district `name`'s replica, asked with `auth`.
    async fn replica(&self, name: &str, auth: Option<&http::HeaderValue>) -> Option<ReplicaPb> {
        let city = &self.upstreams[0];
        let mut client = IssuanceServiceClient::new(city.channel_for("/zhengzhao.issuance.v1."));
        let mut req = Request::new(ListReplicasRequest { library: name.to_owned() });
        if let Some(v) = auth.and_then(|v| tonic::metadata::MetadataValue::try_from(v.as_bytes()).ok()) {
            req.metadata_mut().insert("authorization", v);
        }
        let resp = tokio::time::timeout(Duration::from_secs(2), client.list_replicas(req)).await.ok()?.ok()?;
        resp.into_inner().replicas.into_iter().next()
    }
}

type ReplicaPb = zhengzhao_proto::issuance::v1::Replica;

fn status_response(status: Status) -> http::Response<axum::body::Body> {
    status.into_http::<tonic::body::Body>().map(axum::body::Body::new)
}

/// The library's own router, with district-owned calls sent on.
#[derive(Clone)]
struct FrontDoor {
    gateway: Gateway,
    local: axum::Router,
}

impl tower::Service<http::Request<axum::body::Body>> for FrontDoor {
    type Response = http::Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let route = ROUTES.iter().find(|(p, _)| *p == req.uri().path()).map(|(p, r)| (*p, *r));
        let mut local = self.local.clone();
        let forwarded = req.headers().contains_key(HOP_HEADER);
        match route {
            Some((path, route))
                if !forwarded && (route != Route::City || req.headers().contains_key(LIBRARY_HEADER)) =>
            {
                let mut front = Front { gateway: self.gateway.clone(), path, route, local: Some(local) };
                tower::Service::call(&mut front, req)
            }
            _ => Box::pin(async move {
                let resp = tower::Service::call(&mut local, req).await;
                Ok(resp.unwrap_or_else(|e| match e {}))
            }),
        }
    }
}

/// Routes one method after checking the caller's bearer token.
#[derive(Clone)]
struct Front {
    gateway: Gateway,
    path: &'static str,
    route: Route,
    /// The city served in this process (the all-in-one).
    local: Option<axum::Router>,
}

/// A request's identifier (field 1 of every `Route::Owner` request).
#[derive(Clone, PartialEq, prost::Message)]
struct IdentifierOnly {
    #[prost(string, tag = "1")]
    identifier: String,
}

/// Whether a unary gRPC request body's message is compressed (its owner
/// cannot be read from it).
fn compressed(body: &[u8]) -> bool {
    body.first().is_some_and(|&flag| flag != 0)
}

/// The identifier in a unary gRPC request body, if it can be read.
fn identifier_of(body: &[u8]) -> Option<String> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let message = rest.get(4..4 + len)?;
    <IdentifierOnly as prost::Message>::decode(message).ok().map(|m| m.identifier)
}

/// A request to send on, rebuilt around `body`.
fn rebuild(parts: &http::request::Parts, body: bytes::Bytes) -> http::Request<axum::body::Body> {
    let mut req = http::Request::new(axum::body::Body::from(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// Whether a member's answer says it could not serve (so a read may fall back).
fn unavailable(resp: &http::Response<axum::body::Body>) -> bool {
    matches!(resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()), Some("14") | Some("4"))
}

impl Front {
    /// Sends `req` to member `target` (or to the local city).
    async fn send(
        &self,
        target: usize,
        req: http::Request<axum::body::Body>,
    ) -> Result<http::Response<axum::body::Body>, Status> {
        if target == 0
            && let Some(local) = &self.local
        {
            let mut local = local.clone();
            let resp = tower::Service::call(&mut local, req).await.unwrap_or_else(|e| match e {});
            return Ok(resp);
        }
        let member = &self.gateway.upstreams[target];
        let mut channel = zhengzhao_telemetry::trace::Traced::new(member.channel_for(self.path));
        let (mut parts, body) = req.into_parts();
        parts.headers.insert(HOP_HEADER, http::HeaderValue::from_static("1"));
        let upstream = http::Request::from_parts(parts, tonic::body::Body::new(body));
        std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx))
            .await
            .map_err(|e| Status::unavailable(format!("library {} unavailable: {e}", member.name)))?;
        let resp = tower::Service::call(&mut channel, upstream)
            .await
            .map_err(|e| Status::unavailable(format!("library {} unavailable: {e}", member.name)))?;
        Ok(resp.map(axum::body::Body::new))
    }

    async fn route(self, req: http::Request<axum::body::Body>) -> http::Response<axum::body::Body> {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let Some(token) = token else {
            return status_response(Status::unauthenticated("no credentials: send authorization: Bearer <token>"));
        };
        let who = match self.gateway.verifier.verify(token.trim()) {
            Ok(p) => p,
            Err(e) => return status_response(Status::unauthenticated(e.to_string())),
        };
        who.record_on_span();
        if req.headers().contains_key(HOP_HEADER) {
            return status_response(Status::failed_precondition(
                "this call was already forwarded by a gateway: a member library is configured as a gateway (a loop)",
            ));
        }
        let named = req.headers().get(LIBRARY_HEADER).map(|v| v.to_str().unwrap_or("").to_owned());
        if let Some(name) = named {
            let Some(target) = self.gateway.upstreams.iter().position(|u| u.name == name) else {
                return status_response(Status::invalid_argument(format!(
                    "{LIBRARY_HEADER}: no member library {name:?}"
                )));
            };
            return self.answer(target, req).await;
        }
        match self.route {
            Route::City => self.answer(0, req).await,
            Route::Agency => {
                let target = self.gateway.owner_of_issuer(&who.agency);
                self.answer(target, req).await
            }
            Route::Owner { read } => {
                let (parts, body) = req.into_parts();
                let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(
                    body,
                    MAX_ROUTED_REQUEST,
                ))
                .await
                {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        return status_response(Status::invalid_argument(format!(
                            "request unreadable or over {MAX_ROUTED_REQUEST} bytes: {e}"
                        )));
                    }
                };
                if compressed(&body) {
                    return status_response(Status::unimplemented(
                        "the gateway routes by the licence named in the request: send this method uncompressed",
                    ));
                }
                let target = identifier_of(&body)
                    .and_then(|id| zhengzhao_core::LicenceId::parse_allowing_legacy(&id).ok())
                    .map_or(0, |id| self.gateway.owner_of_issuer(id.issuer().as_str()));
                if target == 0 || !read {
                    return self.answer(target, rebuild(&parts, body)).await;
                }
                let first = tokio::time::timeout(READ_TIMEOUT, self.send(target, rebuild(&parts, body.clone()))).await;
                match first {
                    Ok(Ok(resp)) if !unavailable(&resp) => served_by(resp, &self.gateway.upstreams[target].name),
                    _ => {
                        let district = self.gateway.upstreams[target].name.clone();
                        tracing::warn!(library = %district, path = self.path, "district did not answer: reading the city's replica");
                        let lag = self.gateway.replica(&district, parts.headers.get("authorization")).await;
                        let mut resp = self.answer(0, rebuild(&parts, body)).await;
                        let value = match lag {
                            Some(r) => {
                                format!("{district}; lag_events={}; lag_seconds={:.0}", r.lag_events, r.lag_seconds)
                            }
                            None => format!("{district}; lag=unknown"),
                        };
                        if let Ok(v) = http::HeaderValue::from_str(&value) {
                            resp.headers_mut().insert(STALE_HEADER, v);
                        }
                        resp
                    }
                }
            }
        }
    }

    async fn answer(&self, target: usize, req: http::Request<axum::body::Body>) -> http::Response<axum::body::Body> {
        match self.send(target, req).await {
            Ok(resp) => served_by(resp, &self.gateway.upstreams[target].name),
            Err(status) => status_response(status),
        }
    }
}

fn served_by(mut resp: http::Response<axum::body::Body>, name: &str) -> http::Response<axum::body::Body> {
    if let Ok(v) = http::HeaderValue::from_str(name) {
        resp.headers_mut().insert(SERVED_BY_HEADER, v);
    }
    resp
}

impl tower::Service<http::Request<axum::body::Body>> for Front {
    type Response = http::Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let front = self.clone();
        Box::pin(async move { Ok(front.route(req).await) })
    }
}

impl Gateway {
    /// Every member with its health (a 2 s health check) and, for a
    /// district, its sync state as the city reports it to `auth`'s caller.
    pub async fn libraries(&self, auth: Option<&http::HeaderValue>) -> Vec<pb::Library> {
        let mut libraries = Vec::new();
        for u in self.upstreams.iter() {
            let mut health = tonic_health::pb::health_client::HealthClient::new(u.channel.clone());
            let serving = tokio::time::timeout(
                Duration::from_secs(2),
                health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|r| r.into_inner().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
            .unwrap_or(false);
            let forwarded_methods = ROUTES
                .iter()
                .filter(|(_, r)| u.role == Role::City || *r != Route::City)
                .map(|(p, _)| (*p).to_owned())
                .collect();
            let mut library = pb::Library {
                name: u.name.clone(),
                address: u.address.clone(),
                serving,
                forwarded_methods,
                role: u.role.name().to_owned(),
                area_codes: u.area_codes.clone(),
                issuers: u.issuers.clone(),
                ..Default::default()
            };
            if u.role == Role::District {
                match self.replica(&u.name, auth).await {
                    Some(r) => {
                        library.sync_state = if r.state == zhengzhao_proto::issuance::v1::ReplicaState::Stopped as i32 {
                            format!("stopped: {}", r.reason)
                        } else {
                            "ok".to_owned()
                        };
                        library.lag_events = r.lag_events;
                        library.lag_seconds = r.lag_seconds;
                        library.cursor = r.cursor;
                    }
                    None => {
                        library.sync_state = "unknown: the city did not say (not replicated yet, or unreachable)".into()
                    }
                }
            }
            libraries.push(library);
        }
        libraries
    }
}

/// The gateway's own gRPC service.
#[derive(Debug, Clone)]
pub struct GatewayGrpc(Gateway);

#[tonic::async_trait]
impl GatewayService for GatewayGrpc {
    async fn list_libraries(
        &self,
        req: Request<pb::ListLibrariesRequest>,
    ) -> Result<Response<pb::ListLibrariesResponse>, Status> {
        let who = principal(&req)?;
        authorize(&who, &Action::ReadRoutes)?;
        let auth = req.metadata().get("authorization").and_then(|v| http::HeaderValue::from_bytes(v.as_bytes()).ok());
        let libraries = self.0.libraries(auth.as_ref()).await;
        Ok(Response::new(pb::ListLibrariesResponse { libraries }))
    }
}
