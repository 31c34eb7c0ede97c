//! `zhengzhao keys`: issuers' signing keys — create, rotate, retire, mark
//! compromised, list, the public keys as a JWKS, and certificates from a CA
//! (a request out, the CA's chain in).

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use zhengzhao_proto::signing::v1 as signing;

use super::args::{rfc3339, timestamp};
use super::client::{Client, ClientArgs};
use super::output::{print_json, print_json_line, time_text, wire_word};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an issuer's active key (administrator; refused while one is active).
    Create {
        /// The issuer's unified social credit code.
        #[arg(long)]
        issuer: String,
        /// es256 (P-256, SHA-256) or sm2 (SM2 with SM3).
        #[arg(long, default_value = "es256", ignore_case = true)]
        alg: Alg,
        #[arg(long, default_value = "key created by the administrator")]
        reason: String,
    },
    /// Retire the issuer's active key and create its successor (administrator).
    Rotate {
        #[arg(long)]
        issuer: String,
        /// Algorithm of the new key [default: the old key's].
        #[arg(long, ignore_case = true)]
        alg: Option<Alg>,
        #[arg(long, default_value = "scheduled rotation")]
        reason: String,
    },
    /// Retire the issuer's active key without a successor (administrator).
    Retire {
        #[arg(long)]
        issuer: String,
        #[arg(long, default_value = "retired by the administrator")]
        reason: String,
    },
    /// Mark a key compromised as of a time (administrator): its signatures
    /// from then on verify as "key compromised"; an active key is replaced.
    Compromise {
        /// The key ID (`keys list` shows them).
        key_id: String,
        /// From when (RFC 3339) its signatures are distrusted.
        #[arg(long, value_parser = rfc3339)]
        since: time::OffsetDateTime,
        #[arg(long)]
        reason: String,
    },
    /// Make a PKCS#10 certificate request for an active issuer key
    /// (administrator), signed by the key inside the signing service; give
    /// it to the CA, then attach its answer with `keys certify`.
    Csr {
        /// The key ID (`keys list` shows them).
        key_id: String,
        /// Certificate subject, RFC 4514 (`CN=…,O=…,C=CN`) [default: CN=<issuer code>].
        #[arg(long, default_value = "")]
        subject: String,
        /// Write the PEM here instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Attach a CA's certificate chain to an issuer key (administrator): PEM,
    /// leaf first, then each CA; the key's signatures carry it from then on.
    Certify {
        /// The key ID.
        key_id: String,
        /// PEM file of the chain (`-` for standard input).
        #[arg(long)]
        chain: std::path::PathBuf,
        #[arg(long, default_value = "certificate from the CA attached")]
        reason: String,
    },
    /// List keys with their status and dates (JSON lines).
    List {
        /// Only this issuer's keys.
        #[arg(long, default_value = "")]
        issuer: String,
    },
    /// Print the public keys as a JWKS (JSON), with status and dates.
    Jwks {
        /// Only this issuer's keys.
        #[arg(long, default_value = "")]
        issuer: String,
    },
}

/// An issuer key's signature algorithm (`--alg`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Alg {
    Es256,
    // SM2 with SM3.
    #[value(alias = "sm2sm3")]
    Sm2,
}

impl From<Alg> for signing::SignatureAlgorithm {
    fn from(a: Alg) -> Self {
        match a {
            Alg::Es256 => signing::SignatureAlgorithm::Es256,
            Alg::Sm2 => signing::SignatureAlgorithm::Sm2Sm3,
        }
    }
}

/// A key, as the `keys` commands print it.
#[derive(Serialize)]
struct KeyOut<'a> {
    key_id: &'a str,
    issuer_code: &'a str,
    algorithm: &'static str,
    status: String,
    created_at: String,
    retired_at: Option<String>,
    compromised_since: Option<String>,
    /// Certificates in its chain from a CA (0: not certified).
    certificates: usize,
}

impl<'a> From<&'a signing::PublicKey> for KeyOut<'a> {
    fn from(k: &'a signing::PublicKey) -> Self {
        let algorithm = match signing::SignatureAlgorithm::try_from(k.algorithm) {
            Ok(signing::SignatureAlgorithm::Es256) => "es256",
            Ok(signing::SignatureAlgorithm::Sm2Sm3) => "sm2",
            _ => "unknown",
        };
        let status = signing::KeyStatus::try_from(k.status).ok().map(|s| s.as_str_name());
        KeyOut {
            key_id: &k.key_id,
            issuer_code: &k.issuer_code,
            algorithm,
            status: wire_word(status, "KEY_STATUS_"),
            created_at: time_text(&k.created_at),
            retired_at: k.retired_at.as_ref().map(|_| time_text(&k.retired_at)),
            compromised_since: k.compromised_since.as_ref().map(|_| time_text(&k.compromised_since)),
            certificates: serde_json::from_str::<serde_json::Value>(&k.jwk_json)
                .ok()
                .and_then(|j| j.get("x5c").and_then(|x| x.as_array()).map(Vec::len))
                .unwrap_or(0),
        }
    }
}

/// The keys a rotation touched.
#[derive(Serialize)]
struct Rotated<'a> {
    retired: Option<KeyOut<'a>>,
    active: Option<KeyOut<'a>>,
}

/// The key marked compromised, and its replacement if it was active.
#[derive(Serialize)]
struct Compromised<'a> {
    compromised: Option<KeyOut<'a>>,
    replacement: Option<KeyOut<'a>>,
}

/// A key just certified, and its leaf certificate described.
#[derive(Serialize)]
struct Certified<'a> {
    key: Option<KeyOut<'a>>,
    certificate: &'a str,
}

pub async fn run(cli: &ClientArgs, cmd: KeysCommand) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    match cmd {
        KeysCommand::Create { issuer, alg, reason } => {
            let algorithm = signing::SignatureAlgorithm::from(alg) as i32;
            let r = c
                .signing()
                .create_key(signing::CreateKeyRequest { issuer_code: issuer, algorithm, reason })
                .await?
                .into_inner();
            print_json(&KeyOut::from(&r.key.context("no key returned")?))?;
        }
        KeysCommand::Rotate { issuer, alg, reason } => {
            let algorithm = alg.map_or(0, |a| signing::SignatureAlgorithm::from(a) as i32);
            let r = c
                .signing()
                .rotate_key(signing::RotateKeyRequest { issuer_code: issuer, algorithm, reason })
                .await?
                .into_inner();
            print_json(&Rotated {
                retired: r.retired.as_ref().map(KeyOut::from),
                active: r.active.as_ref().map(KeyOut::from),
            })?;
        }
        KeysCommand::Retire { issuer, reason } => {
            let r =
                c.signing().retire_key(signing::RetireKeyRequest { issuer_code: issuer, reason }).await?.into_inner();
            print_json(&KeyOut::from(&r.key.context("no key returned")?))?;
        }
        KeysCommand::Compromise { key_id, since, reason } => {
            let r = c
                .signing()
                .compromise_key(signing::CompromiseKeyRequest { key_id, since: Some(timestamp(since)), reason })
                .await?
                .into_inner();
            print_json(&Compromised {
                compromised: r.key.as_ref().map(KeyOut::from),
                replacement: r.replacement.as_ref().map(KeyOut::from),
            })?;
        }
        KeysCommand::Csr { key_id, subject, out } => {
            let pem = c.signing().create_csr(signing::CreateCsrRequest { key_id, subject }).await?.into_inner().csr_pem;
            match out {
                Some(path) => std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{pem}"),
            }
        }
        KeysCommand::Certify { key_id, chain, reason } => {
            let chain_pem = if chain.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the chain from standard input")?
            } else {
                std::fs::read_to_string(&chain).with_context(|| format!("reading {}", chain.display()))?
            };
            let r = c
                .signing()
                .attach_certificate(signing::AttachCertificateRequest { key_id, chain_pem, reason })
                .await?
                .into_inner();
            print_json(&Certified { key: r.key.as_ref().map(KeyOut::from), certificate: &r.certificate })?;
        }
        KeysCommand::List { issuer } => {
            for k in &list(&c, issuer).await?.keys {
                print_json_line(&KeyOut::from(k))?;
            }
        }
        KeysCommand::Jwks { issuer } => {
            let jwks = list(&c, issuer).await?.jwks_json;
            print_json(&serde_json::from_str::<serde_json::Value>(&jwks)?)?;
        }
    }
    Ok(())
}

async fn list(c: &Client, issuer_code: String) -> anyhow::Result<signing::ListPublicKeysResponse> {
    Ok(c.signing().list_public_keys(signing::ListPublicKeysRequest { issuer_code }).await?.into_inner())
}
