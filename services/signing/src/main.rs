//! Runs the signing service as its own process.

#![forbid(unsafe_code)]

/// mimalloc: the read path allocates per call, and the system allocator
/// cost a measurable share of the CPU under load (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_proto::signing::v1::signing_service_server::SigningServiceServer;
use zhengzhao_signing::Signing;
use zhengzhao_signing::grpc::SigningGrpc;

async fn build(ctx: zhengzhao_server::Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let signing = Signing::open(
        &ctx.store,
        ctx.master_key()?,
        ctx.signing_algorithm()?,
        zhengzhao_signing::pkcs11::Token::from_config(&ctx.config.signing).map_err(anyhow::Error::msg)?,
    )
    .await?;
    signing.clone().spawn_metrics(zhengzhao_signing::METRICS_INTERVAL);
    let svc = InterceptedService::new(SigningGrpc(signing.clone()).into_server(), ctx.authenticate());
    let routes = Routes::from(zhengzhao_signing::http::routes(Routes::new(svc).into_axum_router(), signing));
    Ok((routes, vec![SigningServiceServer::<SigningGrpc>::NAME]))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    zhengzhao_server::service_main("signing", "Zhengzhao signing service", build).await
}
