//! The gateway: consumers' one front door. It authenticates each call,
//! forwards the consumer-facing methods (licence get and history,
//! verification, the exchange's uses, applications and lists) unchanged to the library behind it, and
//! reports what it routes where. Methods it does not forward are UNIMPLEMENTED.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::Channel;

pub mod counter;
use tonic::{Request, Response, Status};
use zhengzhao_auth::{Action, TokenVerifier, authorize, principal};
use zhengzhao_proto::gateway::v1 as pb;
use zhengzhao_proto::gateway::v1::gateway_service_server::{GatewayService, GatewayServiceServer};

/// The gRPC methods the gateway forwards.
pub const FORWARDED: &[&str] = &[
    "/zhengzhao.issuance.v1.IssuanceService/GetLicence",
    "/zhengzhao.issuance.v1.IssuanceService/GetLicenceHistory",
    "/zhengzhao.issuance.v1.IssuanceService/GetCheckpoint",
    "/zhengzhao.issuance.v1.IssuanceService/GetConsistencyProof",
    "/zhengzhao.issuance.v1.IssuanceService/GetInclusionProof",
    "/zhengzhao.verification.v1.VerificationService/VerifyLicence",
    "/zhengzhao.verification.v1.VerificationService/VerifyDocument",
    "/zhengzhao.exchange.v1.ExchangeService/FetchLicence",
    "/zhengzhao.exchange.v1.ExchangeService/FindLicences",
    "/zhengzhao.exchange.v1.ExchangeService/IssueCopy",
    "/zhengzhao.exchange.v1.ExchangeService/ApplyForUsage",
    "/zhengzhao.exchange.v1.ExchangeService/ListUsageEntries",
    "/zhengzhao.exchange.v1.ExchangeService/ListApplications",
    "/zhengzhao.exchange.v1.ExchangeService/ListUsageListChanges",
    "/zhengzhao.exchange.v1.ExchangeService/GetUsageCheckpoint",
    "/zhengzhao.exchange.v1.ExchangeService/GetUsageConsistencyProof",
    "/zhengzhao.exchange.v1.HolderService/HolderLogin",
    "/zhengzhao.exchange.v1.HolderService/ListMyLicences",
    "/zhengzhao.exchange.v1.HolderService/GetMyLicence",
    "/zhengzhao.exchange.v1.HolderService/ListMyUsage",
    "/zhengzhao.exchange.v1.HolderService/ListMyReminders",
    "/zhengzhao.exchange.v1.HolderService/PresentLicence",
    "/zhengzhao.exchange.v1.HolderService/ProposeScenario",
    "/zhengzhao.exchange.v1.HolderService/ListScenarios",
    "/zhengzhao.exchange.v1.HolderService/VerifyPresentation",
];

/// One library behind the gateway, and where each of its forwarded services answers.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub address: String,
    pub channel: Channel,
    /// `(gRPC package prefix, channel)` for services at their own address.
    pub services: Vec<(&'static str, Channel)>,
}

/// How to reach one library: its address, and optionally per-service addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibraryAddress {
    pub name: String,
    pub address: String,
    pub issuance: Option<String>,
    pub verification: Option<String>,
    pub exchange: Option<String>,
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
        .connect_lazy())
}

/// A gateway over its libraries. Calls go to the first (the primary);
/// routing among city and district libraries comes with district sync.
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
    /// trusting the CA certificates `ca_pem`).
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
            .map(|l| {
                let mut services = Vec::new();
                for (prefix, address) in [
                    ("/zhengzhao.issuance.v1.", &l.issuance),
                    ("/zhengzhao.verification.v1.", &l.verification),
                    ("/zhengzhao.exchange.v1.", &l.exchange),
                ] {
                    if let Some(a) = address {
                        services.push((prefix, channel(&l.name, a, ca_pem)?));
                    }
                }
                Ok(Upstream {
                    name: l.name.clone(),
                    address: l.address.clone(),
                    channel: channel(&l.name, &l.address, ca_pem)?,
                    services,
                })
            })
            .collect::<Result<Vec<_>, GatewayError>>()?;
        Ok(Gateway { upstreams: Arc::new(upstreams), verifier })
    }

    /// Adds the forwarding routes to a router.
    pub fn add_forwarding(&self, mut router: axum::Router) -> axum::Router {
        let primary = &self.upstreams[0];
        for path in FORWARDED {
            let channel = primary
                .services
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix))
                .map_or_else(|| primary.channel.clone(), |(_, c)| c.clone());
            router = router.route_service(path, Forward { channel, verifier: self.verifier.clone() });
        }
        router
    }

    /// Adds the counter-staff page (`/counter`), which verifies
    /// presentations through the first library's exchange.
    pub fn add_counter(&self, router: axum::Router) -> axum::Router {
        let primary = &self.upstreams[0];
        let exchange = primary
            .services
            .iter()
            .find(|(prefix, _)| *prefix == "/zhengzhao.exchange.v1.")
            .map_or_else(|| primary.channel.clone(), |(_, c)| c.clone());
        counter::routes(router, exchange)
    }

    pub fn service(&self) -> GatewayServiceServer<GatewayGrpc> {
        GatewayServiceServer::new(GatewayGrpc(self.clone()))
    }
}

/// Forwards one call to a library after checking its bearer token.
#[derive(Clone)]
struct Forward {
    channel: Channel,
    verifier: Arc<TokenVerifier>,
}

fn status_response(status: Status) -> http::Response<axum::body::Body> {
    status.into_http::<tonic::body::Body>().map(axum::body::Body::new)
}

impl tower::Service<http::Request<axum::body::Body>> for Forward {
    type Response = http::Response<axum::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let verifier = self.verifier.clone();
        let mut channel = self.channel.clone();
        Box::pin(async move {
            let Some(token) = token else {
                return Ok(status_response(Status::unauthenticated(
                    "no credentials: send authorization: Bearer <token>",
                )));
            };
            if let Err(e) = verifier.verify(token.trim()) {
                return Ok(status_response(Status::unauthenticated(e.to_string())));
            }
            let (parts, body) = req.into_parts();
            let upstream = http::Request::from_parts(parts, tonic::body::Body::new(body));
            if let Err(e) = std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx)).await {
                return Ok(status_response(Status::unavailable(format!("library unavailable: {e}"))));
            }
            match tower::Service::call(&mut channel, upstream).await {
                Ok(resp) => Ok(resp.map(axum::body::Body::new)),
                Err(e) => Ok(status_response(Status::unavailable(format!("library unavailable: {e}")))),
            }
        })
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
        let mut libraries = Vec::new();
        for (i, u) in self.0.upstreams.iter().enumerate() {
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
            libraries.push(pb::Library {
                name: u.name.clone(),
                address: u.address.clone(),
                serving,
                forwarded_methods: if i == 0 {
                    FORWARDED.iter().map(|s| (*s).to_owned()).collect()
                } else {
                    Vec::new()
                },
            });
        }
        Ok(Response::new(pb::ListLibrariesResponse { libraries }))
    }
}
