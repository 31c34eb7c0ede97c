//! Issuer keys in a PKCS#11 token (SoftHSM2), on both engines: the first
//! signature makes the issuer's key in the token, rotation and compromise
//! replace it with fresh token keys, SM2 is refused, a certificate request
//! is signed in the token, a restart finds the keys again, and the token
//! shows every private key sensitive and never extractable — it cannot be
//! read out.
//!
//! The token is made with `softhsm2-util` in the SoftHSM2 configuration
//! `SOFTHSM2_CONF` names (`scripts/test` points it into `target/`), or the
//! system's, and deleted afterwards.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use time::OffsetDateTime;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, issue, published_type, verify_outcome};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library};
use zhengzhao_proto::convert::timestamp;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::verification::v1::VerificationOutcome as O;
use zhengzhao_testkit::TestDb;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "87654321";

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh SoftHSM2 token, deleted when dropped.
struct TestToken {
    label: String,
}

impl TestToken {
    fn new() -> anyhow::Result<Self> {
        let label = format!("zz-{}", hex::encode(zhengzhao_crypto::random_bytes::<6>()));
        if let Ok(conf) = std::env::var("SOFTHSM2_CONF")
            && let Ok(text) = std::fs::read_to_string(&conf)
        {
            // The configuration scripts/test writes names a directory it may not have made yet.
            for line in text.lines() {
                if let Some(dir) = line.trim().strip_prefix("directories.tokendir") {
                    std::fs::create_dir_all(dir.trim_start_matches([' ', '=']).trim())?;
                }
            }
        }
        run("softhsm2-util", &["--init-token", "--free", "--label", &label, "--so-pin", "12345678", "--pin", PIN])?;
        Ok(TestToken { label })
    }

    /// What `pkcs11-tool` lists of the token's private keys.
    fn private_keys(&self) -> anyhow::Result<String> {
        run(
            "pkcs11-tool",
            &[
                "--module",
                MODULE,
                "--token-label",
                &self.label,
                "--login",
                "--pin",
                PIN,
                "--list-objects",
                "--type",
                "privkey",
            ],
        )
    }
}

impl Drop for TestToken {
    fn drop(&mut self) {
        let _ = run("softhsm2-util", &["--delete-token", "--token", &self.label]);
    }
}

/// A session of this process (to PKCS#11, the same application as the
/// library under test) on the test token, logged in as its user.
fn user_session(token: &str) -> anyhow::Result<cryptoki::session::Session> {
    let ctx = Pkcs11::new(MODULE)?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // The library in this process has initialised the module already.
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(e.into()),
    }
    let slot = ctx
        .get_slots_with_token()?
        .into_iter()
        .find(|s| ctx.get_token_info(*s).is_ok_and(|i| i.label().trim_end() == token))
        .context("the test token")?;
    let session = ctx.open_ro_session(slot)?;
    match session.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(e.into()),
    }
}

/// The private key `label`'s sensitivity, extractability and value, as
/// the token answers another application asking for them.
fn private_key_attributes(token: &str, label: &str) -> anyhow::Result<Vec<Attribute>> {
    let session = user_session(token)?;
    let found = session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Label(label.as_bytes().to_vec())])?;
    let [key] = found[..] else { bail!("{} private keys labelled {label}", found.len()) };
    let asked = [AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Value];
    Ok(session.get_attributes(key, &asked).unwrap_or_default())
}

async fn active_key(lib: &Library) -> anyhow::Result<String> {
    let keys = lib
        .signing(Role::Consumer, CONSUMER)
        .list_public_keys(signing::ListPublicKeysRequest { issuer_code: ISSUER.into() })
        .await?
        .into_inner()
        .keys;
    keys.into_iter()
        .find(|k| k.status == signing::KeyStatus::Active as i32)
        .map(|k| k.key_id)
        .context("the issuer has an active key")
}

fn configure(token: &str, pin_file: &Path) -> impl FnOnce(&mut zhengzhao_config::Config) + use<> {
    let pkcs11 = zhengzhao_config::Pkcs11Config {
        module: MODULE.into(),
        token_label: token.to_owned(),
        pin_file: Some(pin_file.to_owned()),
        pin: None,
    };
    move |c| c.signing.pkcs11 = Some(pkcs11)
}

/// Logs every session of this process (the application, to PKCS#11) out
/// of the token, as an HSM restart or a session timeout would.
fn log_everyone_out(token: &str) -> anyhow::Result<()> {
    let session = user_session(token)?;
    session.logout()?;
    Ok(())
}

async fn compromise(lib: &Library, key_id: &str) -> anyhow::Result<Option<String>> {
    let since = OffsetDateTime::now_utc() - time::Duration::seconds(30);
    let r = lib
        .signing(Role::Admin, ADMIN)
        .compromise_key(signing::CompromiseKeyRequest {
            key_id: key_id.to_owned(),
            since: Some(timestamp(since)),
            reason: "test compromise".into(),
        })
        .await?
        .into_inner();
    Ok(r.replacement.map(|k| k.key_id))
}

#[tokio::test]
async fn issuer_keys_are_made_and_used_in_a_pkcs11_token() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let pin_file = tmp.path().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n"))?;
    // One token for both engines: a process's SoftHSM2 sees only the tokens
    // there were when it was initialised.
    let token = TestToken::new()?;
    for (round, db) in TestDb::both().await?.into_iter().enumerate() {
        let engine = db.engine();
        // Before the token: software keys, the last one SM2.
        let lib = Library::start_with_config(db, |_| ()).await?;
        let code = published_type(&lib).await?;
        let soft = issue(&lib, draft(&code)).await?;
        lib.signing(Role::Admin, ADMIN)
            .rotate_key(signing::RotateKeyRequest {
                issuer_code: ISSUER.into(),
                algorithm: signing::SignatureAlgorithm::Sm2Sm3 as i32,
                reason: "SM2".into(),
            })
            .await?;
        let sm2_key = active_key(&lib).await?;

        // With the token configured, keys made before keep signing.
        let lib = lib.restart_with_config(configure(&token.label, &pin_file)).await?;
        let admin = || lib.signing(Role::Admin, ADMIN);
        let still_soft = issue(&lib, draft(&code)).await?;
        for id in [&soft.identifier, &still_soft.identifier] {
            let (o, detail) = verify_outcome(&lib, id).await?;
            ensure!(o == O::Valid, "{engine}: {id}: {o:?} {detail}");
        }
        // No SM2 key can be made in the token...
        let e = admin()
            .rotate_key(signing::RotateKeyRequest {
                issuer_code: ISSUER.into(),
                algorithm: signing::SignatureAlgorithm::Sm2Sm3 as i32,
                reason: "try SM2".into(),
            })
            .await
            .err()
            .context("an SM2 key in the token")?;
        ensure!(e.code() == tonic::Code::FailedPrecondition, "{engine}: {e:?}");
        ensure!(active_key(&lib).await? == sm2_key, "{engine}: nothing changed");
        // ...but the compromise of the SM2 key is recorded and an ES256 key
        // in the token replaces it.
        let first_key = compromise(&lib, &sm2_key).await?.context("a replacement")?;
        ensure!(first_key.contains(".es256."), "{engine}: {first_key}");
        let listed = token.private_keys()?;
        ensure!(listed.contains(&first_key), "{engine}: the token holds {first_key}: {listed}");
        let first = issue(&lib, draft(&code)).await?;
        let (o, detail) = verify_outcome(&lib, &first.identifier).await?;
        ensure!(o == O::Valid, "{engine}: {o:?} {detail}");

        // Rotation: a new token key signs; the old one's licence stays valid.
        admin()
            .rotate_key(signing::RotateKeyRequest { issuer_code: ISSUER.into(), algorithm: 0, reason: "rotate".into() })
            .await?;
        let second_key = active_key(&lib).await?;
        let second = issue(&lib, draft(&code)).await?;
        for id in [&first.identifier, &second.identifier] {
            let (o, detail) = verify_outcome(&lib, id).await?;
            ensure!(o == O::Valid, "{engine}: {id}: {o:?} {detail}");
        }

        // A certificate request is signed in the token, and OpenSSL checks it.
        let csr = admin()
            .create_csr(signing::CreateCsrRequest { key_id: second_key.clone(), subject: String::new() })
            .await?
            .into_inner()
            .csr_pem;
        std::fs::write(tmp.path().join("req.pem"), &csr)?;
        let req = tmp.path().join("req.pem").display().to_string();
        run("openssl", &["req", "-in", &req, "-verify", "-noout"]).context("openssl checks the request")?;

        // The token logs the process out (an HSM restart, a timeout): the
        // next signature logs in again.
        log_everyone_out(&token.label)?;
        let after = issue(&lib, draft(&code)).await.context("signing after the token logged us out")?;
        let (o, detail) = verify_outcome(&lib, &after.identifier).await?;
        ensure!(o == O::Valid, "{engine}: after a new login: {o:?} {detail}");

        // Compromise: signatures from then on are distrusted; a fresh token key takes over.
        let third_key = compromise(&lib, &second_key).await?.context("an active key is replaced")?;
        let (o, detail) = verify_outcome(&lib, &second.identifier).await?;
        ensure!(o == O::KeyCompromised, "{engine}: {o:?} {detail}");

        // After a restart the keys are found in the token again.
        let lib = lib.restart_with_config(configure(&token.label, &pin_file)).await?;
        let third = issue(&lib, draft(&code)).await?;
        let (o, detail) = verify_outcome(&lib, &third.identifier).await?;
        ensure!(o == O::Valid, "{engine}: after a restart: {o:?} {detail}");
        ensure!(active_key(&lib).await? == third_key, "{engine}");

        // Three keys in the token, none extractable, none readable.
        let listed = token.private_keys()?;
        for key in [&first_key, &second_key, &third_key] {
            ensure!(listed.contains(key.as_str()), "{engine}: {key} in the token: {listed}");
        }
        ensure!(!listed.contains(&sm2_key), "{engine}: the software key is not in the token");
        let made = 3 * (round + 1);
        ensure!(listed.matches("Private Key Object").count() == made, "{engine}: {listed}");
        ensure!(listed.matches("never extractable").count() == made, "{engine}: {listed}");
        ensure!(listed.matches("always sensitive").count() == made, "{engine}: {listed}");
        // Asked for its value, the token gives nothing.
        let attrs = private_key_attributes(&token.label, &third_key)?;
        ensure!(
            !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
            "{engine}: the key's value was read: {attrs:?}"
        );
        ensure!(attrs.contains(&Attribute::Sensitive(true)) && attrs.contains(&Attribute::Extractable(false)));
        drop(lib);
    }
    Ok(())
}
