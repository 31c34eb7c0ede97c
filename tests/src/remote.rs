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

/// Catalogue, signing, issuance and verification as separate processes on
/// one PostgreSQL database, each with only its own directory of
/// `zhengzhao init --split`; the operator's tokens through [`Remote`].
pub struct Split {
    pub catalog: zhengzhao_testkit::ServerProcess,
    pub signing: zhengzhao_testkit::ServerProcess,
    pub issuance: zhengzhao_testkit::ServerProcess,
    pub verification: zhengzhao_testkit::ServerProcess,
    pub remote: Remote,
    /// The key directories (`root/<service>`), removed when dropped.
    pub work: tempfile::TempDir,
}

impl Split {
    /// Starts the four on `database_url`; `signing_flags` go to the signing
    /// service too, `envs` to every process.
    pub async fn start(database_url: &str, signing_flags: &[String], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        use zhengzhao_testkit::ServerProcess;
        let work = tempfile::tempdir()?;
        let root = work.path().join("keys");
        zhengzhao_server::keys::init_split(&root)?;
        let args = |name: &str, extra: &[String]| -> Vec<String> {
            let mut v: Vec<String> =
                ["--listen", "127.0.0.1:0", "--database-url", database_url].iter().map(|s| (*s).to_owned()).collect();
            v.push("--data-dir".into());
            v.push(root.join(name).display().to_string());
            v.extend_from_slice(extra);
            v
        };
        let catalog = ServerProcess::start("zhengzhao-catalog", &args("catalog", &[]), envs).await?;
        let mut flags = vec!["--catalog-url".to_owned(), catalog.url()];
        flags.extend_from_slice(signing_flags);
        let signing = ServerProcess::start("zhengzhao-signing", &args("signing", &flags), envs).await?;
        let peers = ["--catalog-url".into(), catalog.url(), "--signing-url".into(), signing.url()];
        let issuance = ServerProcess::start("zhengzhao-issuance", &args("issuance", &peers), envs).await?;
        let mut with_issuance = peers.to_vec();
        with_issuance.extend(["--issuance-url".into(), issuance.url()]);
        let verification =
            ServerProcess::start("zhengzhao-verification", &args("verification", &with_issuance), envs).await?;
        let remote = Remote::new(&root.join("operator"))?;
        Ok(Split { catalog, signing, issuance, verification, remote, work })
    }

    /// The directory `init --split` laid out for `service`.
    pub fn dir(&self, service: &str) -> std::path::PathBuf {
        self.work.path().join("keys").join(service)
    }

    pub async fn stop(self) {
        for p in [self.verification, self.issuance, self.signing, self.catalog] {
            p.stop().await;
        }
    }
}
