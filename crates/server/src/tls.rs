//! TLS for servers and their clients: rustls on `aws-lc-rs` (tonic's
//! `tls-aws-lc`), the same crypto backend that signs licences.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use zhengzhao_config::TlsConfig;

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The server's TLS settings, when `tls.cert_file` and `tls.key_file` are set.
pub fn server_tls(config: &TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pem(read(cert, "tls.cert_file")?, read(key, "tls.key_file")?);
            Ok(Some(ServerTlsConfig::new().identity(identity)))
        }
        _ => Ok(None),
    }
}

/// The CA certificates (PEM) trusted for `https://` peers, when set.
pub fn trusted_ca(path: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| read(p, "CA file")).transpose()
}

/// A client endpoint for `url`: over TLS when it is `https://`, trusting `ca_pem`.
pub fn endpoint(url: &str, ca_pem: Option<&[u8]>) -> anyhow::Result<Endpoint> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("{url:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(5));
    if url.starts_with("https://") {
        let ca = ca_pem.with_context(|| {
            format!("{url} is https: give the CA that signed its certificate (tls.ca_file, --ca-file)")
        })?;
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
            .with_context(|| format!("TLS settings for {url}"))?;
    }
    Ok(endpoint)
}
