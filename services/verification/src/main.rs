//! Runs the verification service as its own process.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_auth::ServiceName;
use zhengzhao_issuance::IssuanceClient;
use zhengzhao_proto::verification::v1::verification_service_server::VerificationServiceServer;
use zhengzhao_signing::SigningClient;
use zhengzhao_verification::Verification;
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
        VerificationGrpc(Verification::new(issuance, signing, ctx.clock.clone())).into_server(),
        ctx.authenticate(),
    );
    Ok((Routes::new(svc), vec![VerificationServiceServer::<VerificationGrpc>::NAME]))
}

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "zhengzhao-verification", version, about = "Zhengzhao verification service")]
struct Args {
    #[command(flatten)]
    serve: zhengzhao_server::ServeArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match zhengzhao_server::run("verification", &args.serve, build).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
