//! A deployment reached over its URLs (separate processes): tokens from the
//! operator's directory and authenticated clients of each service.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::{BearerToken, Role, TokenAuthority};
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::definition_to_wire;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;

use crate::{ADMIN, ISSUER};

type Authed = InterceptedService<Channel, BearerToken>;

/// Tokens minted with the operator's key, for clients of any URL.
pub struct Remote {
    pub operator: TokenAuthority,
}

impl Remote {
    /// The operator of `dir` (`zhengzhao init`'s directory, or `--split`'s `operator`).
    pub fn new(dir: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Remote { operator: zhengzhao_server::keys::operator_authority(dir)? })
    }

    /// A token for `agency` in `role`, valid for an hour.
    pub fn token(&self, role: Role, agency: &str) -> anyhow::Result<String> {
        Ok(self.operator.mint(agency, role, Duration::from_secs(3600))?)
    }

    fn parts(&self, url: &str, role: Role, agency: &str) -> anyhow::Result<(Channel, BearerToken)> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?.connect_lazy();
        Ok((channel, BearerToken::new(&self.token(role, agency)?)?))
    }

    pub fn catalog(&self, url: &str, role: Role, agency: &str) -> anyhow::Result<CatalogServiceClient<Authed>> {
        let (c, b) = self.parts(url, role, agency)?;
        Ok(CatalogServiceClient::with_interceptor(c, b))
    }

    pub fn issuance(&self, url: &str, role: Role, agency: &str) -> anyhow::Result<IssuanceServiceClient<Authed>> {
        let (c, b) = self.parts(url, role, agency)?;
        Ok(IssuanceServiceClient::with_interceptor(c, b))
    }

    pub fn signing(&self, url: &str, role: Role, agency: &str) -> anyhow::Result<SigningServiceClient<Authed>> {
        let (c, b) = self.parts(url, role, agency)?;
        Ok(SigningServiceClient::with_interceptor(c, b))
    }

    pub fn verification(
        &self,
        url: &str,
        role: Role,
        agency: &str,
    ) -> anyhow::Result<VerificationServiceClient<Authed>> {
        let (c, b) = self.parts(url, role, agency)?;
        Ok(VerificationServiceClient::with_interceptor(c, b))
    }

    pub fn exchange(&self, url: &str, role: Role, agency: &str) -> anyhow::Result<ExchangeServiceClient<Authed>> {
        let (c, b) = self.parts(url, role, agency)?;
        Ok(ExchangeServiceClient::with_interceptor(c, b))
    }

    /// Creates and publishes the example type at the catalogue of `url`; its code.
    pub async fn publish_example_type(&self, url: &str) -> anyhow::Result<String> {
        let mut cat = self.catalog(url, Role::Admin, ADMIN)?;
        let definition = definition_to_wire(&crate::fixtures::example_definition());
        let created =
            cat.create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition) }).await?;
        let code = created.into_inner().licence_type.and_then(|t| t.definition).map(|d| d.code).unwrap_or_default();
        cat.publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() }).await?;
        Ok(code)
    }

    /// Issues an example licence of `code` as the example issuer at `url`.
    pub async fn issue(&self, url: &str, code: &str) -> anyhow::Result<common::Licence> {
        let r = self
            .issuance(url, Role::Issuer, ISSUER)?
            .issue_licence(issuance::IssueLicenceRequest {
                draft: Some(crate::fixtures::draft(code)),
                ..Default::default()
            })
            .await?;
        r.into_inner().licence.ok_or_else(|| anyhow::anyhow!("no licence in the answer"))
    }
}
