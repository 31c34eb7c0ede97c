//! Runs the exchange service as its own process.

#![forbid(unsafe_code)]

/// mimalloc: the read path allocates per call, and the system allocator
/// cost a measurable share of the CPU under load (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_auth::ServiceName;
use zhengzhao_clients::{CatalogClient, IssuanceClient, SigningClient};
use zhengzhao_exchange::grpc::ExchangeGrpc;
use zhengzhao_exchange::holder_grpc::HolderGrpc;
use zhengzhao_exchange::{Exchange, ExchangeDeps, FontSource};
use zhengzhao_proto::exchange::v1::exchange_service_server::ExchangeServiceServer;
use zhengzhao_proto::exchange::v1::holder_service_server::HolderServiceServer;

async fn build(ctx: zhengzhao_server::Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let credentials = ctx.credentials(ServiceName::Exchange)?;
    let peers = &ctx.config.peers;
    let deps = ExchangeDeps {
        issuance: IssuanceClient::remote(ctx.peer("issuance", peers.issuance.as_ref())?, credentials.clone()),
        catalog: CatalogClient::remote(ctx.peer("catalog", peers.catalog.as_ref())?, credentials.clone()),
        signing: SigningClient::remote(ctx.peer("signing", peers.signing.as_ref())?, credentials),
        holder_tokens: ctx.keys.credential.clone(),
        agency: ctx.keys.agency.clone(),
        public_url: ctx.public_url(),
        font: FontSource { path: ctx.config.exchange.copy_font.clone(), index: ctx.config.exchange.copy_font_index },
        clock: ctx.clock.clone(),
    };
    let exchange = Exchange::open(&ctx.store, deps).await?;
    exchange.spawn_jobs(&ctx.config.exchange);
    let svc = InterceptedService::new(ExchangeGrpc(exchange.clone()).into_server(), ctx.authenticate());
    let holders = InterceptedService::new(HolderGrpc(exchange.clone()).into_server(), ctx.authenticate());
    let routes = Routes::new(svc).add_service(holders);
    let router = zhengzhao_exchange::http::routes(routes.into_axum_router(), exchange);
    Ok((
        Routes::from(router),
        vec![ExchangeServiceServer::<ExchangeGrpc>::NAME, HolderServiceServer::<HolderGrpc>::NAME],
    ))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    zhengzhao_server::service_main("exchange", "Zhengzhao exchange service", build).await
}
