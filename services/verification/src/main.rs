//! Runs the verification service as its own process.

#![forbid(unsafe_code)]

/// mimalloc: the read path allocates per call, and the system allocator
/// cost a measurable share of the CPU under load (README, Benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_auth::ServiceName;
use zhengzhao_clients::{IssuanceClient, SigningClient};
use zhengzhao_proto::verification::v1::verification_service_server::VerificationServiceServer;
use zhengzhao_verification::Verification;
use zhengzhao_verification::certificates::Certificates;
use zhengzhao_verification::grpc::VerificationGrpc;

async fn build(ctx: zhengzhao_server::Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let peers = &ctx.config.peers;
    let issuance = IssuanceClient::remote(
        ctx.peer("issuance", peers.issuance.as_ref())?,
        ctx.credentials(ServiceName::Verification)?,
    );
    let signing = SigningClient::remote(
        ctx.peer("signing", peers.signing.as_ref())?,
        ctx.credentials(ServiceName::Verification)?,
    );
    let svc = InterceptedService::new(
        VerificationGrpc(Verification::new(
            issuance,
            signing,
            ctx.clock.clone(),
            Certificates::from_config(&ctx.config.verification).map_err(anyhow::Error::msg)?,
        ))
        .into_server(),
        ctx.authenticate(),
    );
    Ok((Routes::new(svc), vec![VerificationServiceServer::<VerificationGrpc>::NAME]))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    zhengzhao_server::service_main("verification", "Zhengzhao verification service", build).await
}
