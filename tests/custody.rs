//! Key custody in a split deployment (PostgreSQL): each process is given
//! only the directory `zhengzhao init --split` lays out for it, and with the
//! gateway's, verification's or exchange's files nobody can mint a token or
//! get a signature; only the issuance service's own credential may sign.

use std::time::Duration;

use tonic::Code;
use zhengzhao_auth::{BearerToken, Role, ServiceName, TokenAuthority};
use zhengzhao_e2e::{ADMIN, ISSUER};
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;
use zhengzhao_server::keys;
use zhengzhao_testkit::{ServerProcess, TestDb, binary};

fn credential(dir: &std::path::Path, name: ServiceName) -> anyhow::Result<TokenAuthority> {
    let pem = std::fs::read_to_string(dir.join(keys::service_key_file(name)))?;
    Ok(TokenAuthority::service(zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&pem)?, name))
}

async fn sign(url: &str, token: &str) -> Result<signing::SignDocumentResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect_lazy();
    let bearer = BearerToken::new(token).map_err(|e| tonic::Status::internal(e.to_string()))?;
    SigningServiceClient::with_interceptor(channel, bearer)
        .sign_document(signing::SignDocumentRequest { issuer_code: ISSUER.into(), payload: br#"{"a":1}"#.to_vec() })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn with_the_gateways_verifications_or_exchanges_files_no_token_and_no_signature() -> anyhow::Result<()> {
    let db = TestDb::postgres().await?;
    let url = db.url().unwrap_or_default().to_owned();
    let work = tempfile::tempdir()?;
    let root = work.path().join("keys");
    keys::init_split(&root)?;
    let dir = |name: &str| root.join(name);
    let args = |name: &str, extra: &[String]| -> Vec<String> {
        let mut v: Vec<String> =
            ["--listen", "127.0.0.1:0", "--database-url", &url].iter().map(|s| (*s).to_owned()).collect();
        v.push("--data-dir".into());
        v.push(dir(name).display().to_string());
        v.extend_from_slice(extra);
        v
    };
    let catalog = ServerProcess::start("zhengzhao-catalog", &args("catalog", &[]), &[]).await?;
    let signing_process =
        ServerProcess::start("zhengzhao-signing", &args("signing", &["--catalog-url".into(), catalog.url()]), &[])
            .await?;
    let signing_url = signing_process.url();

    // The issuance service's own credential gets a signature.
    let issuance = credential(&dir("issuance"), ServiceName::Issuance)?;
    let token = issuance.mint(ADMIN, Role::Service(ServiceName::Issuance), Duration::from_secs(60))?;
    assert!(sign(&signing_url, &token).await.is_ok(), "issuance signs");

    for name in [ServiceName::Gateway, ServiceName::Verification, ServiceName::Exchange] {
        let d = dir(name.as_str());
        let files: Vec<String> = std::fs::read_dir(&d)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        assert!(
            !files.iter().any(|f| f == keys::TOKEN_KEY_FILE || f == keys::MASTER_KEY_FILE || f == keys::LOG_KEY_FILE),
            "{name:?} holds no secret but its own credential: {files:?}"
        );
        // No token can be minted with its files, by the library or the CLI.
        assert!(keys::operator_authority(&d).is_err(), "{name:?}");
        let cli = std::process::Command::new(binary("zhengzhao"))
            .args(["token", "--role", "admin", "--agency", ADMIN, "--data-dir"])
            .arg(&d)
            .output()?;
        assert!(!cli.status.success(), "{name:?}: `zhengzhao token` minted with its files");
        // Its own credential is not enough to be signed for...
        let own = credential(&d, name)?;
        let token = own.mint(ADMIN, Role::Service(name), Duration::from_secs(60))?;
        assert_eq!(sign(&signing_url, &token).await.unwrap_err().code(), Code::PermissionDenied, "{name:?}");
        // ...and it cannot pose as issuance or as a person.
        assert!(own.mint(ADMIN, Role::Service(ServiceName::Issuance), Duration::from_secs(60)).is_err());
        assert!(own.mint(ADMIN, Role::Admin, Duration::from_secs(60)).is_err());
        let posing = TokenAuthority::service(
            zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&std::fs::read_to_string(
                d.join(keys::service_key_file(name)),
            )?)?,
            ServiceName::Issuance,
        )
        .mint(ADMIN, Role::Service(ServiceName::Issuance), Duration::from_secs(60))?;
        assert_eq!(sign(&signing_url, &posing).await.unwrap_err().code(), Code::Unauthenticated, "{name:?}");
    }

    // The operator's token key mints people's tokens, never a service's.
    let operator = keys::operator_authority(&dir("operator"))?;
    assert!(operator.mint(ADMIN, Role::Service(ServiceName::Issuance), Duration::from_secs(60)).is_err());
    let admin = operator.mint(ADMIN, Role::Admin, Duration::from_secs(60))?;
    assert_eq!(sign(&signing_url, &admin).await.unwrap_err().code(), Code::PermissionDenied);
    Ok(())
}
