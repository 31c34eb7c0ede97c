//! Runs the gateway service as its own process.

#![forbid(unsafe_code)]

/// mimalloc: the read path allocates per call, and the system allocator
/// cost a measurable share of the CPU under load (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_gateway::{Gateway, GatewayGrpc, LibraryAddress};
use zhengzhao_proto::gateway::v1::gateway_service_server::GatewayServiceServer;

async fn build(ctx: zhengzhao_server::Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let libraries: Vec<LibraryAddress> = ctx
        .config
        .gateway
        .libraries
        .iter()
        .map(|l| LibraryAddress {
            name: l.name.clone(),
            address: l.address.clone(),
            issuance: l.issuance.clone(),
            verification: l.verification.clone(),
            exchange: l.exchange.clone(),
            catalog: l.catalog.clone(),
            signing: l.signing.clone(),
            area_codes: l.area_codes.clone(),
            issuers: l.issuers.clone(),
        })
        .collect();
    let gateway = Gateway::new(&libraries, ctx.keys.verifier.clone(), ctx.trusted_ca()?.as_deref())?;
    let own = Routes::new(InterceptedService::new(gateway.service(), ctx.authenticate()));
    let router = gateway.add_status(gateway.add_counter(gateway.add_forwarding(own.into_axum_router())));
    Ok((Routes::from(router), vec![GatewayServiceServer::<GatewayGrpc>::NAME]))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    zhengzhao_server::service_main("gateway", "Zhengzhao gateway service", build).await
}
