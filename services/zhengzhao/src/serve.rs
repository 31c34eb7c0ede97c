//! The all-in-one wiring: every service in this process, calling each other
//! directly on their own service accounts, served on one port.

use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_auth::{Principal, ServiceName};
use zhengzhao_catalog::grpc::CatalogGrpc;
use zhengzhao_catalog::revocation::TokenGrpc;
use zhengzhao_catalog::{Catalog, CatalogClient, Revocations};
use zhengzhao_exchange::grpc::ExchangeGrpc;
use zhengzhao_exchange::holder_grpc::HolderGrpc;
use zhengzhao_exchange::{Exchange, ExchangeDeps, FontSource};
use zhengzhao_gateway::{Gateway, GatewayGrpc, LibraryAddress};
use zhengzhao_issuance::grpc::IssuanceGrpc;
use zhengzhao_issuance::{Issuance, IssuanceClient};
use zhengzhao_proto::auth::v1::token_service_server::TokenServiceServer;
use zhengzhao_proto::catalog::v1::catalog_service_server::CatalogServiceServer;
use zhengzhao_proto::exchange::v1::exchange_service_server::ExchangeServiceServer;
use zhengzhao_proto::exchange::v1::holder_service_server::HolderServiceServer;
use zhengzhao_proto::gateway::v1::gateway_service_server::GatewayServiceServer;
use zhengzhao_proto::issuance::v1::issuance_service_server::IssuanceServiceServer;
use zhengzhao_proto::signing::v1::signing_service_server::SigningServiceServer;
use zhengzhao_proto::verification::v1::verification_service_server::VerificationServiceServer;
use zhengzhao_server::Context;
use zhengzhao_signing::grpc::SigningGrpc;
use zhengzhao_signing::{Signing, SigningClient};
use zhengzhao_verification::Verification;
use zhengzhao_verification::grpc::VerificationGrpc;

/// How often expiries are recorded in the feed (status is right at read time regardless).
pub const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// Every service of one library, wired in one process.
pub struct Assembly {
    pub routes: Routes,
    /// The gRPC service names, for health.
    pub names: Vec<&'static str>,
    /// The issuance service itself (jobs and tests drive it directly).
    pub issuance: std::sync::Arc<Issuance>,
}

/// Builds every service over the process's store.
pub async fn build(ctx: Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let a = assemble(ctx).await?;
    Ok((a.routes, a.names))
}

/// Builds every service over the process's store, keeping a handle on issuance.
pub async fn assemble(ctx: Context) -> anyhow::Result<Assembly> {
    let agency = ctx.keys.agency.clone();
    let as_service = |name| Principal::service(name, &agency);
    let catalog = Catalog::open(&ctx.store).await?;
    // Revoked tokens: kept by the catalogue, refused by every service here at once.
    let revocations = Revocations::open(&catalog, ctx.denylist()).await?;
    revocations.clone().spawn_reload(std::time::Duration::from_secs(ctx.config.auth.revocation_refresh_seconds));
    let signing = Signing::open(
        &ctx.store,
        ctx.master_key()?,
        ctx.signing_algorithm()?,
        zhengzhao_signing::pkcs11::Token::from_config(&ctx.config.signing).map_err(anyhow::Error::msg)?,
    )
    .await?;
    signing.clone().spawn_metrics(zhengzhao_signing::METRICS_INTERVAL);
    let log_key = ctx.log_key()?;
    let issuance = Issuance::open(
        &ctx.store,
        CatalogClient::Local(catalog.clone(), as_service(ServiceName::Issuance)),
        SigningClient::local(signing.clone(), as_service(ServiceName::Issuance)),
        zhengzhao_issuance::outage::OutageRules::new(ctx.calendar()?, ctx.config.issuance.outage_backdate_days),
        zhengzhao_issuance::translog::LogSigner {
            key: log_key.key.clone(),
            kid: log_key.kid.clone(),
            origin: zhengzhao_issuance::translog::origin(&agency, &ctx.config.library),
        },
        ctx.clock.clone(),
        ctx.config.library.clone(),
    )
    .await?;
    issuance.clone().spawn_expiry_job(as_service(ServiceName::Issuance), EXPIRY_INTERVAL);
    issuance.clone().spawn_metrics(zhengzhao_issuance::METRICS_INTERVAL);
    let verification = Verification::new(
        IssuanceClient::Local(issuance.clone(), as_service(ServiceName::Verification)),
        SigningClient::local(signing.clone(), as_service(ServiceName::Verification)),
        ctx.clock.clone(),
        zhengzhao_verification::certificates::Certificates::from_config(&ctx.config.verification)
            .map_err(anyhow::Error::msg)?,
    );
    let exchange = Exchange::open(
        &ctx.store,
        ExchangeDeps {
            issuance: IssuanceClient::Local(issuance.clone(), as_service(ServiceName::Exchange)),
            catalog: CatalogClient::Local(catalog.clone(), as_service(ServiceName::Exchange)),
            signing: SigningClient::local(signing.clone(), as_service(ServiceName::Exchange)),
            agency: agency.clone(),
            public_url: ctx.public_url(),
            font: FontSource {
                path: ctx.config.exchange.copy_font.clone(),
                index: ctx.config.exchange.copy_font_index,
            },
            clock: ctx.clock.clone(),
            holder_tokens: ctx.keys.credential.clone(),
        },
    )
    .await?;
    exchange.spawn_jobs(&ctx.config.exchange);
    // The gateway's routing table names this process as the city and
    // `gateway.libraries` as its districts: calls a district owns are sent
    // on, the rest served here. With TLS it calls itself as
    // https://localhost:PORT: the certificate must name localhost and
    // tls.ca_file hold its CA.
    let own = ctx.own_url();
    let mut members = vec![LibraryAddress::single(&ctx.config.library, &own)];
    members.extend(ctx.config.gateway.libraries.iter().map(|l| LibraryAddress {
        name: l.name.clone(),
        address: l.address.clone(),
        issuance: l.issuance.clone(),
        verification: l.verification.clone(),
        exchange: l.exchange.clone(),
        catalog: l.catalog.clone(),
        signing: l.signing.clone(),
        area_codes: l.area_codes.clone(),
        issuers: l.issuers.clone(),
    }));
    let gateway = Gateway::new(&members, ctx.keys.verifier.clone(), ctx.trusted_ca()?.as_deref())?;
    let gateway_counter = gateway.clone();
    let auth = ctx.authenticate();
    let routes = Routes::new(InterceptedService::new(CatalogGrpc(catalog).into_server(), auth.clone()))
        .add_service(InterceptedService::new(SigningGrpc(signing.clone()).into_server(), auth.clone()))
        .add_service(InterceptedService::new(IssuanceGrpc(issuance.clone()).into_server(), auth.clone()))
        .add_service(InterceptedService::new(VerificationGrpc(verification).into_server(), auth.clone()))
        .add_service(InterceptedService::new(ExchangeGrpc(exchange.clone()).into_server(), auth.clone()))
        .add_service(InterceptedService::new(HolderGrpc(exchange.clone()).into_server(), auth.clone()))
        .add_service(InterceptedService::new(gateway.service(), auth.clone()))
        .add_service(InterceptedService::new(TokenGrpc(revocations).into_server(), auth));
    let names = vec![
        CatalogServiceServer::<CatalogGrpc>::NAME,
        SigningServiceServer::<SigningGrpc>::NAME,
        IssuanceServiceServer::<IssuanceGrpc>::NAME,
        VerificationServiceServer::<VerificationGrpc>::NAME,
        ExchangeServiceServer::<ExchangeGrpc>::NAME,
        HolderServiceServer::<HolderGrpc>::NAME,
        GatewayServiceServer::<GatewayGrpc>::NAME,
        TokenServiceServer::<TokenGrpc>::NAME,
    ];
    let router = zhengzhao_signing::http::routes(routes.into_axum_router(), signing);
    let router = gateway_counter.add_status(gateway_counter.add_counter(router));
    let router = zhengzhao_exchange::http::routes(router, exchange);
    let routes = Routes::from(gateway_counter.front_door(router));
    Ok(Assembly { routes, names, issuance })
}
