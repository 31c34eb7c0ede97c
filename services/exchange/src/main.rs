//! Runs the exchange service as its own process.

#![forbid(unsafe_code)]

use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use zhengzhao_auth::ServiceName;
use zhengzhao_clients::IssuanceClient;
use zhengzhao_exchange::Exchange;
use zhengzhao_exchange::grpc::ExchangeGrpc;
use zhengzhao_proto::exchange::v1::exchange_service_server::ExchangeServiceServer;

async fn build(ctx: zhengzhao_server::Context) -> anyhow::Result<(Routes, Vec<&'static str>)> {
    let issuance = IssuanceClient::remote(
        ctx.peer("issuance", ctx.config.peers.issuance.as_ref())?,
        ctx.credentials(ServiceName::Exchange)?,
    );
    let exchange = Exchange::open(&ctx.store, issuance).await?;
    let svc = InterceptedService::new(ExchangeGrpc(exchange).into_server(), ctx.authenticate());
    Ok((Routes::new(svc), vec![ExchangeServiceServer::<ExchangeGrpc>::NAME]))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    zhengzhao_server::service_main("exchange", "Zhengzhao exchange service", build).await
}
