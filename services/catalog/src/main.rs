//! Runs the catalog service as its own process.

#![forbid(unsafe_code)]

/// mimalloc: the read path allocates per call, and the system allocator
/// cost a measurable share of the CPU under load (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_catalog::grpc::CatalogGrpc;
use zhengzhao_catalog::revocation::TokenGrpc;
use zhengzhao_catalog::{Catalog, Revocations};
use zhengzhao_proto::auth::v1::token_service_server::TokenServiceServer;
use zhengzhao_proto::catalog::v1::catalog_service_server::CatalogServiceServer;

async fn build(ctx: zhengzhao_server::Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let catalog = Catalog::open(&ctx.store).await?;
    // The revoked tokens live here; other replicas may revoke too, so reload.
    let revocations = Revocations::open(&catalog, ctx.denylist()).await?;
    revocations.clone().spawn_reload(std::time::Duration::from_secs(ctx.config.auth.revocation_refresh_seconds));
    let svc = InterceptedService::new(CatalogGrpc(catalog).into_server(), ctx.authenticate());
    let tokens = InterceptedService::new(TokenGrpc(revocations).into_server(), ctx.authenticate());
    Ok((
        Routes::new(svc).add_service(tokens),
        vec![CatalogServiceServer::<CatalogGrpc>::NAME, TokenServiceServer::<TokenGrpc>::NAME],
    ))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    zhengzhao_server::service_main("catalog", "Zhengzhao catalog service", build).await
}
