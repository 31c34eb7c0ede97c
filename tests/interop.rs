//! Interoperability with independent implementations: SM2-with-SM3 signatures
//! checked by Python `gmssl` in both directions (ES256 JWS interop is in the
//! end-to-end tests, with `jwcrypto`).

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

use zhengzhao_crypto::sm2::{Sm2KeyPair, Sm2PublicKey};

fn python() -> String {
    std::env::var("JOSE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/sm2_interop.py")
}

fn public_xy(key: &Sm2PublicKey) -> String {
    hex::encode(&key.to_sec1()[1..])
}

/// Signatures by `key` checked both ways: ours by gmssl (and a signature over
/// another message refused), gmssl's by us.
fn both_directions(key: &Sm2KeyPair) -> anyhow::Result<()> {
    let public = key.public_key();
    let message = "{\"identifier\":\"1.2.156.3005.2.示例\"}".as_bytes();
    let xy = public_xy(&public);
    // Ours, verified by gmssl; and a tampered message refused by it.
    let ours = key.sign(message);
    let run = |args: &[String]| Command::new(python()).arg(script()).args(args).output();
    let ok = run(&["verify".into(), xy.clone(), hex::encode(message), hex::encode(ours)])?;
    assert!(ok.status.success(), "gmssl rejected our signature (key {xy}): {}", String::from_utf8_lossy(&ok.stderr));
    let bad = run(&["verify".into(), xy.clone(), hex::encode(b"other"), hex::encode(ours)])?;
    assert_eq!(bad.status.code(), Some(1), "gmssl accepted a signature over another message");
    // Theirs, verified by us.
    for _ in 0..5 {
        let out = run(&["sign".into(), hex::encode(key.secret_bytes()), xy.clone(), hex::encode(message)])?;
        assert!(out.status.success(), "gmssl could not sign: {}", String::from_utf8_lossy(&out.stderr));
        let theirs = hex::decode(String::from_utf8(out.stdout)?.trim())?;
        assert!(public.verify(message, &theirs), "we rejected gmssl's signature (key {xy})");
        assert!(!public.verify(b"other", &theirs));
    }
    Ok(())
}

#[test]
fn gmssl_verifies_our_sm2_signatures_and_we_verify_theirs() -> anyhow::Result<()> {
    both_directions(&Sm2KeyPair::generate())
}

/// gmssl's `CryptSM2` constructor strips a "04" prefix with `lstrip("04")`,
/// mangling a key whose x coordinate starts with the byte 0x04 (one in
/// 256): the script must set the key past the constructor. This test always
/// uses such a key, so the bug can never come back as a rare flake.
#[test]
fn gmssl_interop_holds_for_a_key_whose_x_starts_with_04() -> anyhow::Result<()> {
    let key = (0..100_000)
        .map(|_| Sm2KeyPair::generate())
        .find(|k| k.public_key().to_sec1()[1] == 0x04)
        .context("no key with x starting 0x04 in 100,000 tries")?;
    assert!(public_xy(&key.public_key()).starts_with("04"));
    both_directions(&key)
}

/// A licence the signing service sealed with an SM2 key, as published: gmssl
/// verifies the JWS signature under the key from the service's JWKS.
#[tokio::test]
async fn gmssl_verifies_a_licence_sealed_with_an_sm2_key() -> anyhow::Result<()> {
    use zhengzhao_auth::Role;
    use zhengzhao_e2e::fixtures::{draft, issue, published_type};
    use zhengzhao_e2e::{ADMIN, ISSUER, Library};
    use zhengzhao_proto::signing::v1 as signing;

    let lib = Library::start(zhengzhao_testkit::TestDb::sqlite()?).await?;
    let code = published_type(&lib).await?;
    lib.signing(Role::Admin, ADMIN)
        .create_key(signing::CreateKeyRequest {
            issuer_code: ISSUER.into(),
            algorithm: signing::SignatureAlgorithm::Sm2Sm3 as i32,
            reason: "SM2 from the start".into(),
        })
        .await?;
    let licence = issue(&lib, draft(&code)).await?;
    let parsed = zhengzhao_crypto::jws::parse(&licence.jws)?;
    assert_eq!(parsed.header.alg, "SM2SM3");
    let jwks = lib
        .signing(Role::Admin, ADMIN)
        .list_public_keys(signing::ListPublicKeysRequest { issuer_code: ISSUER.into() })
        .await?
        .into_inner();
    let jwk: serde_json::Value = serde_json::from_str(&jwks.keys[0].jwk_json)?;
    assert_eq!(jwk["crv"], "SM2");
    let coordinate = |c: &str| -> anyhow::Result<String> {
        Ok(hex::encode(zhengzhao_crypto::b64url_decode(jwk[c].as_str().unwrap_or_default())?))
    };
    let xy = format!("{}{}", coordinate("x")?, coordinate("y")?);
    let run = |message: &[u8]| {
        tokio::process::Command::new(python())
            .arg(script())
            .args(["verify", &xy, &hex::encode(message), &hex::encode(&parsed.signature)])
            .output()
    };
    let ok = run(parsed.signing_input.as_bytes()).await?;
    assert!(ok.status.success(), "gmssl rejected the licence: {}", String::from_utf8_lossy(&ok.stderr));
    let tampered = parsed.signing_input.replacen('.', ".e", 1);
    assert_eq!(run(tampered.as_bytes()).await?.status.code(), Some(1), "gmssl accepted a tampered licence");
    Ok(())
}
