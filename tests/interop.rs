//! Interoperability with independent implementations: SM2-with-SM3 signatures
//! checked by Python `gmssl` in both directions (ES256 JWS interop is in the
//! end-to-end tests, with `jwcrypto`).

use std::path::Path;
use std::process::Command;

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

#[test]
fn gmssl_verifies_our_sm2_signatures_and_we_verify_theirs() -> anyhow::Result<()> {
    let key = Sm2KeyPair::generate();
    let public = key.public_key();
    let message = "{\"identifier\":\"1.2.156.3005.2.示例\"}".as_bytes();
    // Ours, verified by gmssl; and a tampered message refused by it.
    let ours = key.sign(message);
    let run = |args: &[String]| Command::new(python()).arg(script()).args(args).output();
    let ok = run(&["verify".into(), public_xy(&public), hex::encode(message), hex::encode(ours)])?;
    assert!(ok.status.success(), "gmssl rejected our signature: {}", String::from_utf8_lossy(&ok.stderr));
    let bad = run(&["verify".into(), public_xy(&public), hex::encode(b"other"), hex::encode(ours)])?;
    assert_eq!(bad.status.code(), Some(1), "gmssl accepted a signature over another message");
    // Theirs, verified by us.
    for _ in 0..5 {
        let out = run(&["sign".into(), hex::encode(key.secret_bytes()), public_xy(&public), hex::encode(message)])?;
        assert!(out.status.success(), "gmssl could not sign: {}", String::from_utf8_lossy(&out.stderr));
        let theirs = hex::decode(String::from_utf8(out.stdout)?.trim())?;
        assert!(public.verify(message, &theirs), "we rejected gmssl's signature");
        assert!(!public.verify(b"other", &theirs));
    }
    Ok(())
}
