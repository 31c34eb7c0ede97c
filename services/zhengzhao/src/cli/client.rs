//! Where the client commands connect and as whom: the global `--server`,
//! `--token` and `--ca-file` flags, and a connection that hands out each
//! service's client with the bearer token attached.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::BearerToken;
use zhengzhao_proto::auth::v1::token_service_client::TokenServiceClient;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::exchange::v1::holder_service_client::HolderServiceClient;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;

/// Where client commands connect, and as whom.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Library (or gateway) URL.
    #[arg(long, global = true, env = "ZHENGZHAO_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// Bearer token (mint one with `zhengzhao token`).
    #[arg(long, global = true, env = "ZHENGZHAO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificates to trust for an https:// server.
    #[arg(long, global = true, env = "ZHENGZHAO_CA_FILE")]
    ca_file: Option<PathBuf>,
}

type Authed = InterceptedService<Channel, BearerToken>;

/// A connection to the library (or gateway) with the caller's token.
pub struct Client {
    channel: Channel,
    token: BearerToken,
}

impl ClientArgs {
    /// The token given, if any.
    pub fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The CA file given, if any.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }
}

impl Client {
    pub async fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match args.token.as_deref().map(str::trim) {
            None => bail!("no token: pass --token or set ZHENGZHAO_TOKEN (mint one with `zhengzhao token`)"),
            Some("") => {
                bail!("no token given: --token (or ZHENGZHAO_TOKEN) is empty; mint one with `zhengzhao token`")
            }
            Some(t) => t,
        };
        let token = BearerToken::new(token).context("the token is not valid header text")?;
        let ca = zhengzhao_server::tls::trusted_ca(args.ca_file.as_deref())?;
        let channel = zhengzhao_server::tls::endpoint(&args.server, ca.as_deref())
            .context("--server")?
            .connect()
            .await
            .with_context(|| format!("cannot reach {}", args.server))?;
        Ok(Client { channel, token })
    }
    pub fn catalog(&self) -> CatalogServiceClient<Authed> {
        CatalogServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    pub fn issuance(&self) -> IssuanceServiceClient<Authed> {
        IssuanceServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    pub fn signing(&self) -> SigningServiceClient<Authed> {
        SigningServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    pub fn verification(&self) -> VerificationServiceClient<Authed> {
        VerificationServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    pub fn gateway(&self) -> zhengzhao_proto::gateway::v1::gateway_service_client::GatewayServiceClient<Authed> {
        zhengzhao_proto::gateway::v1::gateway_service_client::GatewayServiceClient::with_interceptor(
            self.channel.clone(),
            self.token.clone(),
        )
    }
    pub fn exchange(&self) -> ExchangeServiceClient<Authed> {
        ExchangeServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    pub fn holders(&self) -> HolderServiceClient<Authed> {
        HolderServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    pub fn tokens(&self) -> TokenServiceClient<Authed> {
        TokenServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
}
