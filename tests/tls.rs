//! TLS end to end: `zhengzhao serve` with a certificate from a test CA
//! (rustls on aws-lc-rs); the CLI reaches it over https only when it trusts
//! that CA, and plaintext or untrusted connections are refused.

use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use zhengzhao_e2e::CONSUMER;
use zhengzhao_testkit::{ServerProcess, binary};

fn ca() -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

#[tokio::test]
async fn the_library_serves_tls_and_clients_trust_only_its_ca() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = |name: &str| dir.path().join(name).display().to_string();
    let authority = ca()?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &authority)?;
    std::fs::write(path("ca.pem"), authority.pem())?;
    std::fs::write(path("cert.pem"), cert.pem())?;
    std::fs::write(path("key.pem"), key.serialize_pem())?;
    std::fs::write(path("other-ca.pem"), ca()?.pem())?;

    let server = ServerProcess::start(
        "zhengzhao",
        &["serve".into(), "--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), path("data")],
        &[
            ("ZHENGZHAO_TLS__CERT_FILE", &path("cert.pem")),
            ("ZHENGZHAO_TLS__KEY_FILE", &path("key.pem")),
            ("ZHENGZHAO_TLS__CA_FILE", &path("ca.pem")),
        ],
    )
    .await?;
    let token = Command::new(binary("zhengzhao"))
        .args(["token", "--data-dir", &path("data"), "--role", "consumer", "--agency", CONSUMER])
        .output()?;
    let token = String::from_utf8(token.stdout)?.trim().to_owned();
    let https = format!("https://localhost:{}", server.addr.port());
    let run = |server: &str, ca: Option<&str>| {
        let mut c = Command::new(binary("zhengzhao"));
        c.args(["keys", "list", "--server", server, "--token", &token]).env_remove("ZHENGZHAO_CA_FILE");
        if let Some(ca) = ca {
            c.args(["--ca-file", ca]);
        }
        c.output()
    };
    let ok = run(&https, Some(&path("ca.pem")))?;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let no_ca = run(&https, None)?;
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("--ca-file"), "{}", String::from_utf8_lossy(&no_ca.stderr));
    let untrusted = run(&https, Some(&path("other-ca.pem")))?;
    assert!(!untrusted.status.success(), "a certificate from another CA was accepted");
    let plaintext = run(&format!("http://127.0.0.1:{}", server.addr.port()), None)?;
    assert!(!plaintext.status.success(), "plaintext HTTP/2 was served next to TLS");
    server.stop().await;
    Ok(())
}
