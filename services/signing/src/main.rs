//! Runs the signing service as its own process.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_proto::signing::v1::signing_service_server::SigningServiceServer;
use zhengzhao_signing::Signing;
use zhengzhao_signing::grpc::SigningGrpc;

async fn build(ctx: zhengzhao_server::Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let signing = Signing::open(&ctx.store, ctx.master_key()?, ctx.signing_algorithm()?).await?;
    let svc = InterceptedService::new(SigningGrpc(signing.clone()).into_server(), ctx.authenticate());
    let routes = Routes::from(zhengzhao_signing::http::routes(Routes::new(svc).into_axum_router(), signing));
    Ok((routes, vec![SigningServiceServer::<SigningGrpc>::NAME]))
}

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "zhengzhao-signing", version, about = "Zhengzhao signing service")]
struct Args {
    #[command(flatten)]
    serve: zhengzhao_server::ServeArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match zhengzhao_server::run("signing", &args.serve, build).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
