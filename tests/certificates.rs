//! Issuer certificates from a CA (art. 12 of the measures), against
//! throwaway CAs made with the `openssl` command line (OpenSSL 3, which
//! signs SM2-with-SM3 certificates as GM/T 0015 profiles them):
//! - the chain checks themselves: a valid P-256 and SM2 chain, one through an
//!   intermediate, an expired certificate, a wrong CA, a non-CA issuing, a
//!   revoked certificate (key compromise: every signature; superseded: from
//!   its date), another key's certificate;
//! - through the services on both engines: `CreateCsr` → the CA →
//!   `AttachCertificate`, signatures carrying `x5c`, and a verifier that
//!   requires certificates telling valid, missing, untrusted, expired and
//!   revoked apart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use time::OffsetDateTime;
use zhengzhao_auth::Role;
use zhengzhao_crypto::x509::{CertProblem, Chain, TrustAnchors};
use zhengzhao_crypto::{Algorithm, IssuerKeyPair};
use zhengzhao_e2e::fixtures::{draft, issue, published_type};
use zhengzhao_e2e::{ADMIN, ISSUER, Library};
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::verification::v1::{CertificateProblem as P, VerificationOutcome as O};
use zhengzhao_testkit::TestDb;

type Result = anyhow::Result<()>;

const DISTID: &str = "distid:1234567812345678";

/// A throwaway CA in a directory, driven through `openssl ca`.
struct Ca {
    dir: PathBuf,
    sm2: bool,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("openssl").args(args).current_dir(dir).output().context("running openssl")?;
    if !out.status.success() {
        bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `YYYYMMDDHHMMSSZ`, as `openssl ca -startdate/-enddate` take it.
fn asn1_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:04}{:02}{:02}{:02}{:02}{:02}Z", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
}

impl Ca {
    /// A self-signed root CA named `name`, SM2 or P-256.
    fn root(parent: &Path, name: &str, sm2: bool) -> anyhow::Result<Self> {
        Ca::root_in(parent.join(name), name, sm2)
    }

    /// A self-signed root CA named `name` in `dir` (two CAs may share a name).
    fn root_in(dir: PathBuf, name: &str, sm2: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("db"))?;
        std::fs::write(dir.join("db/index.txt"), "")?;
        std::fs::write(dir.join("db/serial"), "1000\n")?;
        std::fs::write(dir.join("db/crlnumber"), "1000\n")?;
        let md = if sm2 { "sm3" } else { "sha256" };
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = CA\n[CA]\ndir = .\ndatabase = ./db/index.txt\nserial = ./db/serial\n\
                 crlnumber = ./db/crlnumber\nnew_certs_dir = ./db\ncertificate = ./ca.pem\nprivate_key = ./ca.key\n\
                 default_md = {md}\npolicy = anything\ndefault_crl_days = 30\nunique_subject = no\n\
                 copy_extensions = none\n[anything]\ncommonName = supplied\norganizationName = optional\n\
                 organizationalUnitName = optional\ncountryName = optional\n\
                 [leaf]\nbasicConstraints = critical,CA:FALSE\n\
                 keyUsage = critical,digitalSignature,nonRepudiation\n[sub_ca]\n\
                 basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
                 [sub_ca0]\nbasicConstraints = critical,CA:TRUE,pathlen:0\nkeyUsage = critical,keyCertSign,cRLSign\n\
                 [not_ca]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature,keyCertSign\n\
                 [odd]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 1.2.3.4.5 = critical,ASN1:UTF8String:unknown to verifiers\n"
            ),
        )?;
        let ca = Ca { dir, sm2 };
        ca.genkey("ca.key")?;
        let subj = format!("/CN={name}/O=Zhengzhao test CA/C=CN");
        let mut args =
            vec!["req", "-new", "-x509", "-key", "ca.key", "-subj", &subj, "-days", "3650", "-out", "ca.pem"];
        args.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        args.extend(ca.digest());
        openssl(&ca.dir, &args)?;
        Ok(ca)
    }

    fn genkey(&self, file: &str) -> anyhow::Result<()> {
        let curve = if self.sm2 { "SM2" } else { "prime256v1" };
        openssl(&self.dir, &["ecparam", "-genkey", "-name", curve, "-noout", "-out", file]).map(|_| ())
    }

    fn digest(&self) -> Vec<&'static str> {
        if self.sm2 { vec!["-sm3", "-sigopt", DISTID] } else { vec!["-sha256"] }
    }

    fn pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("ca.pem"))?)
    }

    /// Certifies a PEM request for `from..until` with extensions `section`;
    /// returns the certificate (PEM).
    fn certify(&self, csr: &str, from: OffsetDateTime, until: OffsetDateTime, section: &str) -> anyhow::Result<String> {
        let n = std::fs::read_dir(self.dir.join("db"))?.count();
        let (req, out) = (format!("req{n}.csr"), format!("cert{n}.pem"));
        std::fs::write(self.dir.join(&req), csr)?;
        let (start, end) = (asn1_time(from), asn1_time(until));
        let mut args = vec!["ca", "-batch", "-config", "ca.cnf", "-notext", "-in", &req, "-out", &out];
        args.extend(["-extensions", section, "-startdate", &start, "-enddate", &end]);
        if self.sm2 {
            args.extend(["-sigopt", DISTID, "-vfyopt", DISTID]);
        }
        openssl(&self.dir, &args)?;
        Ok(std::fs::read_to_string(self.dir.join(out))?)
    }

    /// Revokes `cert` (PEM) for `reason` (an `openssl ca -crl_reason` name).
    fn revoke(&self, cert: &str, reason: &str) -> anyhow::Result<()> {
        let n = std::fs::read_dir(&self.dir)?.count();
        let file = format!("revoke{n}.pem");
        std::fs::write(self.dir.join(&file), cert)?;
        openssl(&self.dir, &["ca", "-batch", "-config", "ca.cnf", "-revoke", &file, "-crl_reason", reason]).map(|_| ())
    }

    /// Writes the CA's current CRL (PEM) to `crl.pem`; returns its path.
    fn crl(&self) -> anyhow::Result<PathBuf> {
        let mut args = vec!["ca", "-batch", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem"];
        if self.sm2 {
            args.extend(["-sigopt", DISTID]);
        }
        openssl(&self.dir, &args)?;
        Ok(self.dir.join("crl.pem"))
    }

    /// Signs `csr` with the intermediate CA `ca_pem`/`ca_key` (files in this
    /// CA's directory) for 30 days with extensions `section`; returns the PEM.
    fn sign_as(&self, ca_pem: &str, ca_key: &Path, csr: &str, section: &str) -> anyhow::Result<String> {
        let n = std::fs::read_dir(&self.dir)?.count();
        let (req, out) = (format!("sub-req{n}.csr"), format!("sub-cert{n}.pem"));
        std::fs::write(self.dir.join(&req), csr)?;
        std::fs::write(self.dir.join(format!("sub-ca{n}.pem")), ca_pem)?;
        let (ca, key) = (format!("sub-ca{n}.pem"), ca_key.display().to_string());
        let serial = format!("{}", 100 + n);
        let mut args = vec!["x509", "-req", "-in", &req, "-CA", &ca, "-CAkey", &key, "-days", "30"];
        args.extend(["-set_serial", &serial, "-extfile", "ca.cnf", "-extensions", section, "-out", &out]);
        if self.sm2 {
            args.extend(["-sm3", "-sigopt", DISTID, "-vfyopt", DISTID]);
        }
        openssl(&self.dir, &args)?;
        Ok(std::fs::read_to_string(self.dir.join(out))?)
    }

    /// A key made by `openssl` and its request, for a certificate of a key
    /// that is not an issuer key (an intermediate CA's, say).
    fn request_for_new_key(&self, name: &str) -> anyhow::Result<(String, PathBuf)> {
        let key = format!("{name}.key");
        self.genkey(&key)?;
        let subj = format!("/CN={name}/C=CN");
        let mut args = vec!["req", "-new", "-key", &key, "-subj", &subj];
        args.extend(self.digest());
        Ok((openssl(&self.dir, &args)?, self.dir.join(key)))
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

fn request(pair: &IssuerKeyPair) -> String {
    zhengzhao_crypto::x509::certificate_request(&pair.public_key(), "CN=91350100M000100Y43,O=Test Issuer,C=CN", |m| {
        Ok(pair.sign(m))
    })
    .expect("a request")
}

fn anchors(cas: &[&Ca], crls: &[PathBuf]) -> anyhow::Result<TrustAnchors> {
    let pems = cas.iter().map(|c| c.pem()).collect::<anyhow::Result<Vec<_>>>()?;
    let crls = crls.iter().map(std::fs::read).collect::<std::io::Result<Vec<_>>>()?;
    TrustAnchors::new(&pems, &crls).map_err(anyhow::Error::msg)
}

#[test]
fn chains_are_checked_against_anchors_dates_and_crls() -> Result {
    let tmp = tempfile::tempdir()?;
    for sm2 in [false, true] {
        let alg = if sm2 { Algorithm::Sm2Sm3 } else { Algorithm::Es256 };
        let root = Ca::root(tmp.path(), &format!("root-{sm2}"), sm2)?;
        let other = Ca::root(tmp.path(), &format!("other-{sm2}"), sm2)?;
        let pair = IssuerKeyPair::generate(alg);
        let key = pair.public_key();

        // Our request is accepted by OpenSSL, and its certificate checks.
        let cert = root.certify(&request(&pair), now() - days(1), now() + days(365), "leaf")?;
        let chain = Chain::from_pem(&cert).map_err(anyhow::Error::msg)?;
        let trust = anchors(&[&root], &[])?;
        let facts = trust.evaluate(&chain, &key, ISSUER).map_err(anyhow::Error::msg)?;
        facts.check_at(now()).map_err(anyhow::Error::msg)?;
        // x5c round-trips.
        let again = Chain::from_x5c(&chain.to_x5c()).map_err(anyhow::Error::msg)?;
        ensure!(trust.evaluate(&again, &key, ISSUER).is_ok());

        // Outside its validity.
        ensure!(matches!(facts.check_at(now() + days(400)), Err(CertProblem::Expired(_))), "{alg}: expired");
        ensure!(matches!(facts.check_at(now() - days(2)), Err(CertProblem::NotYetValid(_))), "{alg}: early");
        let expired = root.certify(&request(&pair), now() - days(400), now() - days(35), "leaf")?;
        let facts = trust.evaluate(&Chain::from_pem(&expired).map_err(anyhow::Error::msg)?, &key, ISSUER);
        ensure!(matches!(facts.map(|f| f.check_at(now())), Ok(Err(CertProblem::Expired(_)))), "{alg}: expired cert");

        // Another CA, and another key.
        let wrong = other.certify(&request(&pair), now() - days(1), now() + days(30), "leaf")?;
        let r = trust.evaluate(&Chain::from_pem(&wrong).map_err(anyhow::Error::msg)?, &key, ISSUER);
        ensure!(matches!(r, Err(CertProblem::Untrusted(_))), "{alg}: wrong CA: {r:?}");
        let stranger = IssuerKeyPair::generate(alg).public_key();
        let r = trust.evaluate(&chain, &stranger, ISSUER);
        ensure!(matches!(r, Err(CertProblem::KeyMismatch(_))), "{alg}: another key: {r:?}");

        // Through an intermediate CA; a non-CA cannot stand in for one.
        for (section, ok) in [("sub_ca", true), ("not_ca", false)] {
            let (sub_req, sub_key) = root.request_for_new_key(&format!("sub-{section}"))?;
            let sub_cert = root.certify(&sub_req, now() - days(1), now() + days(365), section)?;
            let pem = root.sign_as(&sub_cert, &sub_key, &request(&pair), "leaf")? + &sub_cert;
            let r = trust.evaluate(&Chain::from_pem(&pem).map_err(anyhow::Error::msg)?, &key, ISSUER);
            ensure!(r.is_ok() == ok, "{alg}: through {section}: {r:?}");
            if ok {
                // The intermediate alone as the anchor, the chain going on to the root.
                let sub_only = TrustAnchors::new(std::slice::from_ref(&sub_cert), &[]).map_err(anyhow::Error::msg)?;
                let long = pem.clone() + &root.pem()?;
                let r = sub_only.evaluate(&Chain::from_pem(&long).map_err(anyhow::Error::msg)?, &key, ISSUER);
                ensure!(r.is_ok(), "{alg}: an intermediate anchor: {r:?}");
            }
            if !ok {
                ensure!(matches!(r, Err(CertProblem::Untrusted(_))), "{alg}: {r:?}");
            }
        }
        // A path length of 0 allows no CA below it.
        let (req0, key0) = root.request_for_new_key("sub0")?;
        let sub0 = root.certify(&req0, now() - days(1), now() + days(365), "sub_ca0")?;
        let (req1, key1) = root.request_for_new_key("sub1")?;
        let sub1 = root.sign_as(&sub0, &key0, &req1, "sub_ca")?;
        let pem = root.sign_as(&sub1, &key1, &request(&pair), "leaf")? + &sub1 + &sub0;
        let r = trust.evaluate(&Chain::from_pem(&pem).map_err(anyhow::Error::msg)?, &key, ISSUER);
        ensure!(matches!(&r, Err(CertProblem::Untrusted(m)) if m.contains("at most 0")), "{alg}: path length: {r:?}");

        // A root with the trusted one's very name but another key.
        let forged = Ca::root_in(tmp.path().join(format!("forged-{sm2}")), &format!("root-{sm2}"), sm2)?;
        ensure!(forged.pem()? != root.pem()?);
        let fake = forged.certify(&request(&pair), now() - days(1), now() + days(30), "leaf")?;
        let r = trust.evaluate(&Chain::from_pem(&fake).map_err(anyhow::Error::msg)?, &key, ISSUER);
        ensure!(matches!(r, Err(CertProblem::Untrusted(_))), "{alg}: a same-name forged CA: {r:?}");
        let r = trust.evaluate(
            &Chain::from_pem(&(fake.clone() + &forged.pem()?)).map_err(anyhow::Error::msg)?,
            &key,
            ISSUER,
        );
        ensure!(matches!(r, Err(CertProblem::Untrusted(_))), "{alg}: with its forged root: {r:?}");
        // Its CRL, under the trusted CA's name, is not taken for the trusted CA's.
        let with_forged_crl = anchors(&[&root], &[forged.crl()?])?;
        let r = with_forged_crl.evaluate(&chain, &key, ISSUER);
        ensure!(matches!(&r, Err(CertProblem::Untrusted(m)) if m.contains("CRL")), "{alg}: a forged CRL: {r:?}");

        // A critical extension the verifier does not process.
        let odd = root.certify(&request(&pair), now() - days(1), now() + days(30), "odd")?;
        let r = trust.evaluate(&Chain::from_pem(&odd).map_err(anyhow::Error::msg)?, &key, ISSUER);
        ensure!(matches!(&r, Err(CertProblem::Untrusted(m)) if m.contains("critical")), "{alg}: {r:?}");

        // Issued to another agency: the subject does not name the licence's issuer.
        let r = trust.evaluate(&chain, &key, "91110000802100433B");
        ensure!(matches!(&r, Err(CertProblem::Untrusted(m)) if m.contains("not issued to")), "{alg}: {r:?}");

        // Revocation: a compromise taints every signature; a supersession
        // only those from its date.
        let compromised = root.certify(&request(&pair), now() - days(1), now() + days(30), "leaf")?;
        let superseded = root.certify(&request(&pair), now() - days(1), now() + days(30), "leaf")?;
        // A time after the root's start and before the revocations (whole seconds).
        std::thread::sleep(Duration::from_millis(1100));
        let before = now();
        std::thread::sleep(Duration::from_millis(1100));
        root.revoke(&compromised, "keyCompromise")?;
        root.revoke(&superseded, "superseded")?;
        let crl = root.crl()?;
        let trust = anchors(&[&root], &[crl])?;
        let r = trust.evaluate(&Chain::from_pem(&compromised).map_err(anyhow::Error::msg)?, &key, ISSUER);
        let r = r.map_err(anyhow::Error::msg)?.check_at(before);
        ensure!(matches!(r, Err(CertProblem::Revoked(_))), "{alg}: compromise: {r:?}");
        let facts = trust
            .evaluate(&Chain::from_pem(&superseded).map_err(anyhow::Error::msg)?, &key, ISSUER)
            .map_err(anyhow::Error::msg)?;
        ensure!(facts.check_at(before).is_ok(), "{alg}: before its supersession");
        ensure!(matches!(facts.check_at(now() + days(1)), Err(CertProblem::Revoked(_))), "{alg}: after it");
        // The still-valid certificate is not on the list.
        ensure!(trust.evaluate(&chain, &key, ISSUER).map_err(anyhow::Error::msg)?.check_at(now()).is_ok());
    }
    Ok(())
}

async fn verify(lib: &Library, id: &str) -> anyhow::Result<(O, P, String)> {
    let v = zhengzhao_e2e::fixtures::verification_of(lib, id).await?;
    Ok((O::try_from(v.outcome)?, P::try_from(v.certificate_problem)?, v.detail))
}

async fn csr(lib: &Library, key_id: &str) -> anyhow::Result<String> {
    Ok(lib
        .signing(Role::Admin, ADMIN)
        .create_csr(signing::CreateCsrRequest {
            key_id: key_id.into(),
            subject: format!("CN=Test Issuer,OU={ISSUER},C=CN"),
        })
        .await?
        .into_inner()
        .csr_pem)
}

async fn attach(
    lib: &Library,
    key_id: &str,
    chain_pem: &str,
) -> std::result::Result<signing::PublicKey, tonic::Status> {
    lib.signing(Role::Admin, ADMIN)
        .attach_certificate(signing::AttachCertificateRequest {
            key_id: key_id.into(),
            chain_pem: chain_pem.into(),
            reason: "certificate from the test CA".into(),
        })
        .await
        .map(|r| r.into_inner().key.unwrap_or_default())
}

async fn rotate(lib: &Library, alg: signing::SignatureAlgorithm) -> anyhow::Result<String> {
    let r = lib
        .signing(Role::Admin, ADMIN)
        .rotate_key(signing::RotateKeyRequest {
            issuer_code: ISSUER.into(),
            algorithm: alg as i32,
            reason: "test".into(),
        })
        .await?
        .into_inner();
    Ok(r.active.unwrap_or_default().key_id)
}

/// Issues a licence; returns its identifier and the x5c its JWS carries.
async fn issued(lib: &Library, code: &str) -> anyhow::Result<(String, Option<Vec<String>>)> {
    let l = issue(lib, draft(code)).await?;
    let x5c = zhengzhao_crypto::jws::parse(&l.jws)?.header.x5c;
    Ok((l.identifier, x5c))
}

#[tokio::test]
async fn issuer_keys_certified_by_a_ca_and_verifiers_that_require_it() -> Result {
    let tmp = tempfile::tempdir()?;
    let p256 = Ca::root(tmp.path(), "p256-root", false)?;
    let sm2 = Ca::root(tmp.path(), "sm2-root", true)?;
    let untrusted = Ca::root(tmp.path(), "untrusted-root", true)?;
    let crls = vec![p256.crl()?, sm2.crl()?];
    let anchor_files = vec![p256.dir.join("ca.pem"), sm2.dir.join("ca.pem")];
    for db in TestDb::both().await? {
        let engine = db.engine();
        let (a, c) = (anchor_files.clone(), crls.clone());
        let lib = Library::start_with_config(db, move |cfg| {
            cfg.verification.trust_anchors = a;
            cfg.verification.crls = c;
        })
        .await?;
        let code = published_type(&lib).await?;

        // An uncertified key: the verifier requires a certificate.
        let (plain, x5c) = issued(&lib, &code).await?;
        ensure!(x5c.is_none(), "{engine}: no chain yet");
        let (o, p, detail) = verify(&lib, &plain).await?;
        ensure!((o, p) == (O::CertificateInvalid, P::Missing), "{engine}: {o:?} {p:?} {detail}");

        // ES256: request, certify by the trusted P-256 CA, attach.
        let es_key = rotate(&lib, signing::SignatureAlgorithm::Es256).await?;
        let cert = p256.certify(&csr(&lib, &es_key).await?, now() - days(1), now() + days(365), "leaf")?;
        let key = attach(&lib, &es_key, &(cert.clone() + &p256.pem()?)).await?;
        ensure!(key.jwk_json.contains("\"x5c\""), "{engine}: the published JWK has the chain");
        let (es_licence, x5c) = issued(&lib, &code).await?;
        ensure!(x5c.as_ref().map(Vec::len) == Some(2), "{engine}: the JWS carries leaf and root: {x5c:?}");
        let (o, _, detail) = verify(&lib, &es_licence).await?;
        ensure!(o == O::Valid, "{engine}: certified ES256: {o:?} {detail}");

        // Refused attachments: another key's certificate, an expired one, garbage.
        let sm2_key = rotate(&lib, signing::SignatureAlgorithm::Sm2Sm3).await?;
        for (bad, what) in [
            (cert.clone(), "another key's certificate"),
            (sm2.certify(&csr(&lib, &sm2_key).await?, now() - days(60), now() - days(30), "leaf")?, "expired"),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(), "garbage"),
            ("x".repeat(70_000), "too large"),
        ] {
            let e = attach(&lib, &sm2_key, &bad).await.err().with_context(|| format!("{engine}: {what} attached"))?;
            ensure!(e.code() == tonic::Code::InvalidArgument, "{engine}: {what}: {e:?}");
        }
        // Only an administrator certifies.
        let e = lib
            .signing(Role::Issuer, ISSUER)
            .create_csr(signing::CreateCsrRequest { key_id: sm2_key.clone(), subject: String::new() })
            .await
            .err()
            .context("an issuer made a request")?;
        ensure!(e.code() == tonic::Code::PermissionDenied, "{engine}: {e:?}");

        // SM2 certified by a CA this verifier does not trust.
        let wrong = untrusted.certify(&csr(&lib, &sm2_key).await?, now() - days(1), now() + days(30), "leaf")?;
        attach(&lib, &sm2_key, &wrong).await?;
        let (id, _) = issued(&lib, &code).await?;
        let (o, p, detail) = verify(&lib, &id).await?;
        ensure!((o, p) == (O::CertificateInvalid, P::Untrusted), "{engine}: untrusted CA: {o:?} {p:?} {detail}");

        // Renewed by the trusted SM2 CA: valid; the earlier licence keeps the
        // chain it carries.
        let good = sm2.certify(&csr(&lib, &sm2_key).await?, now() - days(1), now() + days(365), "leaf")?;
        attach(&lib, &sm2_key, &good).await?;
        let (sm2_licence, _) = issued(&lib, &code).await?;
        let (o, _, detail) = verify(&lib, &sm2_licence).await?;
        ensure!(o == O::Valid, "{engine}: certified SM2: {o:?} {detail}");
        let (o, p, _) = verify(&lib, &id).await?;
        ensure!((o, p) == (O::CertificateInvalid, P::Untrusted), "{engine}: the older licence: {o:?} {p:?}");

        // A certificate that expires: what the key signs after it is caught.
        let short_key = rotate(&lib, signing::SignatureAlgorithm::Es256).await?;
        let until = now() + time::Duration::seconds(6);
        let short = p256.certify(&csr(&lib, &short_key).await?, now() - days(1), until, "leaf")?;
        attach(&lib, &short_key, &short).await.context("a certificate valid for 6 more seconds")?;
        let wait = (until - now()).whole_milliseconds().max(0) as u64 + 1500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let (late, _) = issued(&lib, &code).await?;
        let (o, p, detail) = verify(&lib, &late).await?;
        ensure!((o, p) == (O::CertificateInvalid, P::Expired), "{engine}: after expiry: {o:?} {p:?} {detail}");

        // Revocation, read from the CRLs at start: the SM2 certificate for a
        // key compromise (every signature), the ES256 one as superseded
        // (signatures before its revocation stand).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        sm2.revoke(&good, "keyCompromise")?;
        p256.revoke(&cert, "superseded")?;
        sm2.crl()?;
        p256.crl()?;
        let (a, c) = (anchor_files.clone(), crls.clone());
        let lib = lib
            .restart_with_config(move |cfg| {
                cfg.verification.trust_anchors = a;
                cfg.verification.crls = c;
            })
            .await?;
        let (o, p, detail) = verify(&lib, &sm2_licence).await?;
        ensure!((o, p) == (O::CertificateInvalid, P::Revoked), "{engine}: compromised: {o:?} {p:?} {detail}");
        let (o, _, detail) = verify(&lib, &es_licence).await?;
        ensure!(o == O::Valid, "{engine}: signed before its supersession: {o:?} {detail}");
    }
    Ok(())
}
