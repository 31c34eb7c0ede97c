//! Runs the issuance service as its own process.

#![forbid(unsafe_code)]

/// mimalloc: the read path allocates per call, and the system allocator
/// cost a measurable share of the CPU under load (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_auth::ServiceName;
use zhengzhao_clients::{CatalogClient, SigningClient};
use zhengzhao_issuance::Issuance;
use zhengzhao_issuance::grpc::IssuanceGrpc;
use zhengzhao_proto::issuance::v1::issuance_service_server::IssuanceServiceServer;

async fn build(ctx: zhengzhao_server::Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let peers = &ctx.config.peers;
    let catalog =
        CatalogClient::remote(ctx.peer("catalog", peers.catalog.as_ref())?, ctx.credentials(ServiceName::Issuance)?);
    let signing =
        SigningClient::remote(ctx.peer("signing", peers.signing.as_ref())?, ctx.credentials(ServiceName::Issuance)?);
    let log_key = ctx.log_key()?;
    let log = zhengzhao_issuance::translog::LogSigner {
        key: log_key.key.clone(),
        kid: log_key.kid.clone(),
        origin: zhengzhao_issuance::translog::origin(&ctx.keys.agency, &ctx.config.library),
    };
    let issuance = Issuance::open(
        &ctx.store,
        catalog,
        signing,
        zhengzhao_issuance::outage::OutageRules::new(ctx.calendar()?, ctx.config.issuance.outage_backdate_days),
        log,
        ctx.clock.clone(),
        ctx.config.library.clone(),
    )
    .await?;
    let job = zhengzhao_auth::Principal::service(ServiceName::Issuance, &ctx.keys.agency);
    issuance.clone().spawn_expiry_job(job, std::time::Duration::from_secs(300));
    issuance.clone().spawn_metrics(zhengzhao_issuance::METRICS_INTERVAL);
    let svc = InterceptedService::new(IssuanceGrpc(issuance).into_server(), ctx.authenticate());
    Ok((Routes::new(svc), vec![IssuanceServiceServer::<IssuanceGrpc>::NAME]))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    zhengzhao_server::service_main("issuance", "Zhengzhao issuance service", build).await
}
