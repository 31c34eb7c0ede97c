//! Issuer certificates: X.509 (RFC 5280) chains from a CA for issuer keys,
//! P-256 with ECDSA-SHA256 and SM2 with SM3 as GM/T 0015 profiles them
//! (`id-ecPublicKey` on the SM2 curve, signed `SM2-with-SM3` under the
//! default user ID).
//!
//! - [`certificate_request`] makes a PKCS#10 request signed by the issuer key
//!   itself, for a CA to certify;
//! - [`Chain`] is the CA's answer, leaf first, as PEM or as a JWS `x5c`;
//! - [`TrustAnchors`] checks a chain against configured anchors and CRLs
//!   once ([`TrustAnchors::evaluate`]), and the resulting [`ChainFacts`]
//!   against each signature's time ([`ChainFacts::check_at`]).

use std::str::FromStr;

use base64::Engine;
use der::asn1::{BitString, ObjectIdentifier, UintRef};
use der::{Any, Decode, Encode, EncodePem};
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::{BasicConstraints, CrlReason, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::Time;

use crate::es256::Es256PublicKey;
use crate::sm2::Sm2PublicKey;
use crate::{Algorithm, IssuerPublicKey};

/// `id-ecPublicKey` (RFC 5480).
pub const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// The P-256 curve (`secp256r1`).
pub const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// The SM2 curve (GM/T 0006).
pub const SM2_CURVE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.301");
/// `ecdsa-with-SHA256` (RFC 5758).
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// `SM2-with-SM3` (GM/T 0006).
pub const SM2_WITH_SM3: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.156.10197.1.501");
/// `id-ce-invalidityDate` (RFC 5280 §5.3.2).
const ID_CE_INVALIDITY_DATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.24");

/// Most certificates in a chain (leaf, intermediates, root).
pub const MAX_CHAIN: usize = 8;
/// Largest certificate accepted (DER bytes).
pub const MAX_CERTIFICATE: usize = 16 * 1024;
/// Longest subject name accepted for a request (RFC 4514 text).
pub const MAX_SUBJECT: usize = 512;

/// Why a certificate chain does not vouch for a signature: each a distinct
/// outcome a verifier reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    /// Trust anchors are configured, but the key carries no certificate.
    #[error("{0}")]
    Missing(String),
    /// Not a readable certificate chain.
    #[error("{0}")]
    Malformed(String),
    /// The leaf certifies another key than the one that signed.
    #[error("{0}")]
    KeyMismatch(String),
    /// The chain does not lead to a configured trust anchor, or a link in it
    /// is not signed by the next, or not by a CA.
    #[error("{0}")]
    Untrusted(String),
    /// Signed after a certificate of the chain expired.
    #[error("{0}")]
    Expired(String),
    /// Signed before a certificate of the chain became valid.
    #[error("{0}")]
    NotYetValid(String),
    /// A certificate of the chain is on its CA's revocation list.
    #[error("{0}")]
    Revoked(String),
}

impl CertProblem {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CertProblem::Missing(_) => "missing",
            CertProblem::Malformed(_) => "malformed",
            CertProblem::KeyMismatch(_) => "key mismatch",
            CertProblem::Untrusted(_) => "untrusted",
            CertProblem::Expired(_) => "expired",
            CertProblem::NotYetValid(_) => "not yet valid",
            CertProblem::Revoked(_) => "revoked",
        }
    }
}

fn malformed(what: impl std::fmt::Display) -> CertProblem {
    CertProblem::Malformed(format!("not a usable certificate chain: {what}"))
}

/// A certificate chain, leaf first, each certificate issued by the next.
#[derive(Debug, Clone)]
pub struct Chain {
    certs: Vec<Certificate>,
    der: Vec<Vec<u8>>,
}

impl Chain {
    fn from_der_list(der: Vec<Vec<u8>>) -> Result<Self, CertProblem> {
        if der.is_empty() || der.len() > MAX_CHAIN {
            return Err(malformed(format!("1 to {MAX_CHAIN} certificates, leaf first")));
        }
        let mut certs = Vec::with_capacity(der.len());
        for (i, d) in der.iter().enumerate() {
            if d.len() > MAX_CERTIFICATE {
                return Err(malformed(format!("certificate {i} is larger than {MAX_CERTIFICATE} bytes")));
            }
            let cert = Certificate::from_der(d).map_err(|e| malformed(format!("certificate {i}: {e}")))?;
            // Signatures are checked over the re-encoded TBS: only DER that
            // re-encodes to itself is accepted.
            if cert.to_der().ok().as_deref() != Some(d.as_slice()) {
                return Err(malformed(format!("certificate {i} is not in DER")));
            }
            certs.push(cert);
        }
        Ok(Chain { certs, der })
    }

    /// From PEM `CERTIFICATE` blocks, leaf first.
    pub fn from_pem(pem: &str) -> Result<Self, CertProblem> {
        if pem.len() > MAX_CHAIN * MAX_CERTIFICATE * 2 {
            return Err(malformed("the PEM text is too large"));
        }
        let certs = Certificate::load_pem_chain(pem.as_bytes()).map_err(malformed)?;
        let der = certs.iter().map(|c| c.to_der().map_err(malformed)).collect::<Result<Vec<_>, _>>()?;
        Chain::from_der_list(der)
    }

    /// From a JWS/JWK `x5c` (RFC 7515 §4.1.6: standard base64 DER, leaf first).
    pub fn from_x5c(x5c: &[String]) -> Result<Self, CertProblem> {
        if x5c.is_empty() || x5c.len() > MAX_CHAIN {
            return Err(malformed(format!("x5c holds 1 to {MAX_CHAIN} certificates")));
        }
        let der = x5c
            .iter()
            .map(|c| base64::engine::general_purpose::STANDARD.decode(c).map_err(|_| malformed("x5c is not base64")))
            .collect::<Result<Vec<_>, _>>()?;
        Chain::from_der_list(der)
    }

    /// The chain as an `x5c` member.
    pub fn to_x5c(&self) -> Vec<String> {
        self.der.iter().map(|d| base64::engine::general_purpose::STANDARD.encode(d)).collect()
    }

    /// The chain as PEM, leaf first.
    pub fn to_pem(&self) -> String {
        self.certs.iter().filter_map(|c| c.to_pem(der::pem::LineEnding::LF).ok()).collect()
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &Certificate {
        &self.certs[0]
    }

    /// The key the leaf certifies.
    pub fn leaf_key(&self) -> Result<IssuerPublicKey, CertProblem> {
        key_of(self.leaf().tbs_certificate().subject_public_key_info()).map_err(malformed)
    }

    /// The leaf's subject, issuer, serial number and validity, for people.
    pub fn describe(&self) -> String {
        let tbs = self.leaf().tbs_certificate();
        clean(&format!(
            "subject {}, issued by {}, serial {}, valid {} to {}",
            tbs.subject(),
            tbs.issuer(),
            hex::encode(tbs.serial_number().as_bytes()),
            format_time(to_time(tbs.validity().not_before)),
            format_time(to_time(tbs.validity().not_after)),
        ))
    }

    /// When the first certificate of the chain expires.
    pub fn expires(&self) -> OffsetDateTime {
        self.certs
            .iter()
            .map(|c| to_time(c.tbs_certificate().validity().not_after))
            .min()
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// The leaf's validity period.
    pub fn leaf_validity(&self) -> (OffsetDateTime, OffsetDateTime) {
        let v = self.leaf().tbs_certificate().validity();
        (to_time(v.not_before), to_time(v.not_after))
    }

    /// Checks that the leaf certifies `key` and for signatures, and that each
    /// certificate is signed by the next, which is a CA. Trust is not
    /// checked here: see [`TrustAnchors::evaluate`].
    pub fn check_links(&self, key: &IssuerPublicKey, issuer_code: &str) -> Result<(), CertProblem> {
        let leaf_key = self.leaf_key()?;
        if leaf_key.algorithm() != key.algorithm() || leaf_key.sec1() != key.sec1() {
            return Err(CertProblem::KeyMismatch(format!(
                "the certificate ({}) certifies another key than the issuer key that signed",
                self.describe()
            )));
        }
        let tbs = self.leaf().tbs_certificate();
        let usage = key_usage(self.leaf())?;
        if usage.is_some_and(|u| !u.contains(KeyUsages::DigitalSignature) && !u.contains(KeyUsages::NonRepudiation)) {
            return Err(CertProblem::Untrusted(format!(
                "the certificate ({}) is not for signatures (its key usage has neither digitalSignature nor nonRepudiation)",
                self.describe()
            )));
        }
        if !names(tbs.subject(), issuer_code) {
            return Err(CertProblem::Untrusted(format!(
                "the certificate ({}) is not issued to {issuer_code}: no attribute of its subject is that credit code",
                self.describe()
            )));
        }
        for c in &self.certs {
            check_critical(c)?;
        }
        for (i, pair) in self.certs.windows(2).enumerate() {
            let (child, parent) = (&pair[0], &pair[1]);
            if child.tbs_certificate().issuer() != parent.tbs_certificate().subject() {
                return Err(CertProblem::Untrusted(format!(
                    "certificate {i} is issued by {}, but the next in the chain is {}",
                    child.tbs_certificate().issuer(),
                    parent.tbs_certificate().subject()
                )));
            }
            // `i` CAs stand between this issuer and the leaf.
            check_ca(parent, i)?;
            check_signed_by(child, parent).map_err(|e| {
                CertProblem::Untrusted(format!("certificate {i} is not signed by the next in the chain: {e}"))
            })?;
        }
        Ok(())
    }

    /// Each certificate's validity period, for people, if any is not valid at `at`.
    pub fn invalid_at(&self, at: OffsetDateTime) -> Option<String> {
        self.certs.iter().find_map(|c| {
            let v = c.tbs_certificate().validity();
            let (from, until) = (to_time(v.not_before), to_time(v.not_after));
            (at < from || at > until).then(|| {
                format!(
                    "{} is valid from {} to {}, not now",
                    clean(&c.tbs_certificate().subject().to_string()),
                    format_time(from),
                    format_time(until)
                )
            })
        })
    }
}

/// What a checked chain vouches for: the period all its certificates are
/// valid in, and the earliest revocation that applies to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFacts {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub revoked: Option<Revocation>,
    /// The leaf, described for people.
    pub leaf: String,
}

/// A certificate of a chain found on its CA's revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Signatures made at or after this time are not vouched for; `None`:
    /// none are (a key or CA compromise without an invalidity date).
    pub from: Option<OffsetDateTime>,
    pub detail: String,
}

impl ChainFacts {
    /// Whether the chain vouches for a signature made at `signed_at`.
    pub fn check_at(&self, signed_at: OffsetDateTime) -> Result<(), CertProblem> {
        if signed_at < self.not_before {
            return Err(CertProblem::NotYetValid(format!(
                "signed at {} but the certificate chain is valid only from {} ({})",
                format_time(signed_at),
                format_time(self.not_before),
                self.leaf
            )));
        }
        if signed_at > self.not_after {
            return Err(CertProblem::Expired(format!(
                "signed at {} after the certificate chain expired at {} ({})",
                format_time(signed_at),
                format_time(self.not_after),
                self.leaf
            )));
        }
        if let Some(r) = &self.revoked
            && r.from.is_none_or(|from| signed_at >= from)
        {
            return Err(CertProblem::Revoked(format!("signed at {}: {}", format_time(signed_at), r.detail)));
        }
        Ok(())
    }
}

/// Trust anchors (root or intermediate CA certificates a verifier trusts)
/// and the revocation lists it was given.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    anchors: Vec<Certificate>,
    crls: Vec<CertificateList>,
}

impl TrustAnchors {
    /// From PEM texts: certificates for the anchors, and CRLs (PEM
    /// `X509 CRL` or DER).
    pub fn new(anchor_pems: &[String], crls: &[Vec<u8>]) -> Result<Self, String> {
        let mut anchors = Vec::new();
        for (i, pem) in anchor_pems.iter().enumerate() {
            let certs = Certificate::load_pem_chain(pem.as_bytes())
                .map_err(|e| format!("trust anchor file {i}: not PEM certificates: {e}"))?;
            if certs.is_empty() {
                return Err(format!("trust anchor file {i} holds no certificate"));
            }
            for c in &certs {
                key_of(c.tbs_certificate().subject_public_key_info())
                    .map_err(|e| format!("trust anchor {}: {e}", c.tbs_certificate().subject()))?;
            }
            anchors.extend(certs);
        }
        let mut lists = Vec::new();
        for (i, bytes) in crls.iter().enumerate() {
            let crl = if bytes.starts_with(b"-----BEGIN") {
                let (label, der) = der::pem::decode_vec(bytes).map_err(|e| format!("CRL file {i}: {e}"))?;
                if label != "X509 CRL" {
                    return Err(format!("CRL file {i}: a PEM {label:?} block, not X509 CRL"));
                }
                CertificateList::from_der(&der)
            } else {
                CertificateList::from_der(bytes)
            }
            .map_err(|e| format!("CRL file {i}: {e}"))?;
            let mut extensions = crl.tbs_cert_list.crl_extensions.iter().flatten().chain(
                crl.tbs_cert_list
                    .revoked_certificates
                    .iter()
                    .flatten()
                    .flat_map(|r| r.crl_entry_extensions.iter().flatten()),
            );
            if let Some(ext) = extensions.find(|e| e.critical) {
                return Err(format!(
                    "CRL file {i}: critical extension {} (delta, partitioned or indirect CRLs are not read): give a complete CRL",
                    ext.extn_id
                ));
            }
            lists.push(crl);
        }
        Ok(TrustAnchors { anchors, crls: lists })
    }

    /// Whether any anchor is configured (then every key needs a certificate).
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// The CRLs whose next update is before `now`, described (stale lists are
    /// still applied: a revocation stays a revocation).
    pub fn stale_crls(&self, now: OffsetDateTime) -> Vec<String> {
        self.crls
            .iter()
            .filter_map(|c| {
                let next = to_time(c.tbs_cert_list.next_update?);
                (next < now)
                    .then(|| format!("CRL of {} (next update was due {})", c.tbs_cert_list.issuer, format_time(next)))
            })
            .collect()
    }

    /// Checks `chain` as a chain for `key`: its links, that it leads to an
    /// anchor, and which revocations apply. Independent of any signature's
    /// time: cache the result, then [`ChainFacts::check_at`] per signature.
    pub fn evaluate(&self, chain: &Chain, key: &IssuerPublicKey, issuer_code: &str) -> Result<ChainFacts, CertProblem> {
        chain.check_links(key, issuer_code)?;
        // The path from the leaf to the first anchor met: a certificate of
        // the chain that is one, or one an anchor issued (an intermediate
        // may be the anchor while the chain goes on to its root).
        let mut path: Option<Vec<&Certificate>> = None;
        for (i, (cert, der)) in chain.certs.iter().zip(&chain.der).enumerate() {
            if self.anchors.iter().any(|a| a.to_der().is_ok_and(|d| &d == der)) {
                path = Some(chain.certs[..=i].iter().collect());
                break;
            }
            let issuer = cert.tbs_certificate().issuer();
            if let Some(anchor) = self
                .anchors
                .iter()
                .filter(|a| a.tbs_certificate().subject() == issuer)
                .find(|a| check_signed_by(cert, a).is_ok() && check_ca(a, i).is_ok())
            {
                let mut p: Vec<&Certificate> = chain.certs[..=i].iter().collect();
                p.push(anchor);
                path = Some(p);
                break;
            }
        }
        let path = path.ok_or_else(|| {
            let top = chain.certs.last().map(|c| clean(&c.tbs_certificate().subject().to_string())).unwrap_or_default();
            CertProblem::Untrusted(format!(
                "the certificate chain ({}) leads to no CA trusted here (it ends at {top})",
                chain.describe()
            ))
        })?;
        let mut not_before = OffsetDateTime::UNIX_EPOCH;
        let mut not_after = OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT);
        for c in &path {
            let v = c.tbs_certificate().validity();
            not_before = not_before.max(to_time(v.not_before));
            not_after = not_after.min(to_time(v.not_after));
        }
        let mut revoked: Option<Revocation> = None;
        for pair in path.windows(2) {
            let (cert, issuer) = (pair[0], pair[1]);
            for r in self.revocations(cert, issuer)? {
                let earlier = match (&revoked, r.from) {
                    (None, _) => true,
                    (Some(old), from) => match (old.from, from) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(a), Some(b)) => b < a,
                    },
                };
                if earlier {
                    revoked = Some(r);
                }
            }
        }
        Ok(ChainFacts { not_before, not_after, revoked, leaf: chain.describe() })
    }

    /// `cert`'s entries on the CRLs of `issuer`. A CRL that names `issuer`
    /// but does not verify under its key fails the chain: revocation data
    /// that cannot be trusted is not silently ignored.
    fn revocations(&self, cert: &Certificate, issuer: &Certificate) -> Result<Vec<Revocation>, CertProblem> {
        let tbs = cert.tbs_certificate();
        let serial = tbs.serial_number();
        let mut found = Vec::new();
        for crl in self.crls.iter().filter(|c| &c.tbs_cert_list.issuer == tbs.issuer()) {
            if let Err(e) = check_crl_signed_by(crl, issuer) {
                return Err(CertProblem::Untrusted(format!(
                    "the configured CRL of {} does not verify under its certificate: {e}",
                    clean(&tbs.issuer().to_string())
                )));
            }
            if key_usage(issuer)?.is_some_and(|u| !u.contains(KeyUsages::CRLSign)) {
                return Err(CertProblem::Untrusted(format!(
                    "{} signs a CRL but its key usage has no cRLSign",
                    clean(&tbs.issuer().to_string())
                )));
            }
            let Some(entry) =
                crl.tbs_cert_list.revoked_certificates.iter().flatten().find(|e| e.serial_number == *serial)
            else {
                continue;
            };
            let at = to_time(entry.revocation_date);
            let mut reason = None;
            let mut invalid_from = None;
            for ext in entry.crl_entry_extensions.iter().flatten() {
                if ext.extn_id == CrlReason::OID {
                    reason = CrlReason::from_der(ext.extn_value.as_bytes()).ok();
                } else if ext.extn_id == ID_CE_INVALIDITY_DATE {
                    invalid_from = der::asn1::GeneralizedTime::from_der(ext.extn_value.as_bytes())
                        .ok()
                        .map(|t| to_time(Time::GeneralTime(t)));
                }
            }
            let compromise = matches!(reason, Some(CrlReason::KeyCompromise | CrlReason::CaCompromise));
            // A compromise taints what the key signed before it was revoked:
            // from its invalidity date if the CA gave one, else everything.
            let from = if compromise { invalid_from } else { Some(invalid_from.unwrap_or(at)) };
            let reason_text = reason.map_or_else(|| "no reason given".to_owned(), |r| format!("{r:?}"));
            found.push(Revocation {
                from,
                detail: clean(&format!(
                    "certificate {} (serial {}) revoked by {} on {} ({reason_text})",
                    tbs.subject(),
                    hex::encode(serial.as_bytes()),
                    tbs.issuer(),
                    format_time(at)
                )),
            });
        }
        Ok(found)
    }
}

use der::oid::AssociatedOid;

/// A PKCS#10 certificate request (PEM) for `public` under `subject`
/// (RFC 4514 text, e.g. `CN=市场监督管理局,O=…,C=CN`), signed by `sign`
/// (its private key, wherever it is: a 64-byte `r || s` signature).
pub fn certificate_request(
    public: &IssuerPublicKey,
    subject: &str,
    sign: impl FnOnce(&[u8]) -> Result<[u8; 64], String>,
) -> Result<String, String> {
    let subject = parse_subject(subject)?;
    let info = CertReqInfo {
        version: x509_cert::request::Version::V1,
        subject,
        public_key: spki_of(public)?,
        attributes: Default::default(),
    };
    let tbs = info.to_der().map_err(|e| e.to_string())?;
    let signature = der_signature(&sign(&tbs)?)?;
    let request = CertReq {
        info,
        algorithm: AlgorithmIdentifierOwned { oid: signature_oid(public.algorithm()), parameters: None },
        signature: BitString::from_bytes(&signature).map_err(|e| e.to_string())?,
    };
    request.to_pem(der::pem::LineEnding::LF).map_err(|e| e.to_string())
}

/// Reads an RFC 4514 subject name: 1 to [`MAX_SUBJECT`] characters, no
/// control characters.
pub fn parse_subject(subject: &str) -> Result<Name, String> {
    let subject = subject.trim();
    if subject.is_empty() || subject.chars().count() > MAX_SUBJECT {
        return Err(format!("a subject name of 1 to {MAX_SUBJECT} characters, such as CN=…,O=…,C=CN"));
    }
    if subject.chars().any(char::is_control) {
        return Err("a subject name has no control characters".into());
    }
    Name::from_str(subject).map_err(|e| format!("not an RFC 4514 name (CN=…,O=…,C=CN): {e}"))
}

/// The public key of an SPKI this library can verify with.
fn key_of(spki: &SubjectPublicKeyInfoOwned) -> Result<IssuerPublicKey, String> {
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return Err(format!("key algorithm {}: only EC keys (P-256 or SM2)", spki.algorithm.oid));
    }
    let curve: ObjectIdentifier = spki
        .algorithm
        .parameters
        .as_ref()
        .ok_or("an EC key names its curve")?
        .decode_as()
        .map_err(|e| format!("EC curve: {e}"))?;
    let point = spki.subject_public_key.as_bytes().ok_or("the key is not whole bytes")?;
    match curve {
        c if c == SECP256R1 => Es256PublicKey::from_sec1(point).map(IssuerPublicKey::Es256),
        c if c == SM2_CURVE => Sm2PublicKey::from_sec1(point).map(IssuerPublicKey::Sm2),
        c => return Err(format!("EC curve {c}: P-256 or SM2 only")),
    }
    .map_err(|e| e.to_string())
}

fn spki_of(key: &IssuerPublicKey) -> Result<SubjectPublicKeyInfoOwned, String> {
    let curve = match key.algorithm() {
        Algorithm::Es256 => SECP256R1,
        Algorithm::Sm2Sm3 => SM2_CURVE,
    };
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&curve).map_err(|e| e.to_string())?),
        },
        subject_public_key: BitString::from_bytes(&key.sec1()).map_err(|e| e.to_string())?,
    })
}

fn signature_oid(alg: Algorithm) -> ObjectIdentifier {
    match alg {
        Algorithm::Es256 => ECDSA_WITH_SHA256,
        Algorithm::Sm2Sm3 => SM2_WITH_SM3,
    }
}

/// `Ecdsa-Sig-Value` (RFC 3279), as SM2 signatures are encoded too.
#[derive(der::Sequence)]
struct EcdsaSig<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

fn der_signature(rs: &[u8; 64]) -> Result<Vec<u8>, String> {
    let sig = EcdsaSig {
        r: UintRef::new(&rs[..32]).map_err(|e| e.to_string())?,
        s: UintRef::new(&rs[32..]).map_err(|e| e.to_string())?,
    };
    sig.to_der().map_err(|e| e.to_string())
}

fn raw_signature(der_sig: &[u8]) -> Result<[u8; 64], String> {
    let sig = EcdsaSig::from_der(der_sig).map_err(|e| format!("signature: {e}"))?;
    let mut out = [0u8; 64];
    for (i, n) in [sig.r.as_bytes(), sig.s.as_bytes()].into_iter().enumerate() {
        if n.len() > 32 {
            return Err("signature: an integer longer than 32 bytes".into());
        }
        out[i * 32 + 32 - n.len()..(i + 1) * 32].copy_from_slice(n);
    }
    Ok(out)
}

/// Checks `signature` over `tbs` by `signer`'s key under `alg`.
fn check_signature(
    tbs: &[u8],
    alg: &AlgorithmIdentifierOwned,
    signature: &BitString,
    signer: &Certificate,
) -> Result<(), String> {
    let key = key_of(signer.tbs_certificate().subject_public_key_info())?;
    if alg.oid != signature_oid(key.algorithm()) {
        return Err(format!("signature algorithm {} does not match the {} key", alg.oid, key.algorithm()));
    }
    let rs = raw_signature(signature.as_bytes().ok_or("signature: not whole bytes")?)?;
    if key.verify(tbs, &rs) { Ok(()) } else { Err("the signature does not verify".into()) }
}

fn check_signed_by(child: &Certificate, parent: &Certificate) -> Result<(), String> {
    if child.signature_algorithm() != child.tbs_certificate().signature() {
        return Err("the two signature algorithm fields differ".into());
    }
    let tbs = child.tbs_certificate().to_der().map_err(|e| e.to_string())?;
    check_signature(&tbs, child.signature_algorithm(), child.signature(), parent)
}

fn check_crl_signed_by(crl: &CertificateList, issuer: &Certificate) -> Result<(), String> {
    let tbs = crl.tbs_cert_list.to_der().map_err(|e| e.to_string())?;
    check_signature(&tbs, &crl.signature_algorithm, &crl.signature, issuer)
}

/// A certificate that issues others must be a CA (basic constraints), may
/// sign certificates (key usage, when it has one), and allow the `below` CA
/// certificates between it and the leaf (path length constraint).
fn check_ca(cert: &Certificate, below: usize) -> Result<(), CertProblem> {
    let subject = || clean(&cert.tbs_certificate().subject().to_string());
    let constraints = match cert.tbs_certificate().get_extension::<BasicConstraints>() {
        Ok(Some((_, c))) if c.ca => c,
        _ => {
            return Err(CertProblem::Untrusted(format!(
                "{} issues certificates but is not a CA (no basicConstraints cA)",
                subject()
            )));
        }
    };
    if constraints.path_len_constraint.is_some_and(|n| usize::from(n) < below) {
        return Err(CertProblem::Untrusted(format!(
            "{} allows at most {} CA certificates below it, and the chain has {below}",
            subject(),
            constraints.path_len_constraint.unwrap_or_default()
        )));
    }
    if key_usage(cert)?.is_some_and(|u| !u.contains(KeyUsages::KeyCertSign)) {
        return Err(CertProblem::Untrusted(format!(
            "{} issues certificates but its key usage has no keyCertSign",
            subject()
        )));
    }
    Ok(())
}

/// The key usage a certificate states, if any; a malformed or repeated one
/// fails.
fn key_usage(cert: &Certificate) -> Result<Option<der::flagset::FlagSet<KeyUsages>>, CertProblem> {
    match cert.tbs_certificate().get_extension::<KeyUsage>() {
        Ok(u) => Ok(u.map(|(_, KeyUsage(u))| u)),
        Err(e) => Err(CertProblem::Malformed(format!(
            "{}: key usage: {e}",
            clean(&cert.tbs_certificate().subject().to_string())
        ))),
    }
}

/// Extensions this verifier reads, or may ignore when critical (names the
/// signature does not depend on).
const UNDERSTOOD: [ObjectIdentifier; 5] = [
    ObjectIdentifier::new_unwrap("2.5.29.19"), // basicConstraints
    ObjectIdentifier::new_unwrap("2.5.29.15"), // keyUsage
    ObjectIdentifier::new_unwrap("2.5.29.14"), // subjectKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.35"), // authorityKeyIdentifier
    ObjectIdentifier::new_unwrap("2.5.29.17"), // subjectAltName
];

/// RFC 5280 §4.2: a critical extension the verifier does not process fails.
fn check_critical(cert: &Certificate) -> Result<(), CertProblem> {
    let tbs = cert.tbs_certificate();
    match tbs.extensions().into_iter().flatten().find(|e| e.critical && !UNDERSTOOD.contains(&e.extn_id)) {
        Some(e) => Err(CertProblem::Untrusted(format!(
            "{} has a critical extension this verifier does not process ({})",
            clean(&tbs.subject().to_string()),
            e.extn_id
        ))),
        None => Ok(()),
    }
}

/// Whether an attribute of `name` (CN, OU, serialNumber, …) is exactly
/// `code`, as a UTF8String, PrintableString or IA5String value.
fn names(name: &Name, code: &str) -> bool {
    use der::{Tag, Tagged};
    !code.is_empty()
        && name.iter().any(|atv| {
            matches!(atv.value.tag(), Tag::Utf8String | Tag::PrintableString | Tag::Ia5String)
                && atv.value.value() == code.as_bytes()
        })
}

/// Text from a certificate, for logs and details: control characters shown as `?`.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn to_time(t: Time) -> OffsetDateTime {
    let secs = i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or_else(|_| OffsetDateTime::new_utc(time::Date::MAX, time::Time::MIDNIGHT))
}

fn format_time(t: OffsetDateTime) -> String {
    zhengzhao_core::date::format_time(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IssuerKeyPair;

    #[test]
    fn a_request_carries_the_key_and_verifies_under_it() {
        for alg in [Algorithm::Es256, Algorithm::Sm2Sm3] {
            let pair = IssuerKeyPair::generate(alg);
            let pem =
                certificate_request(&pair.public_key(), "CN=Test Issuer,O=Example Agency,C=CN", |m| Ok(pair.sign(m)))
                    .unwrap();
            let (label, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
            assert_eq!(label, "CERTIFICATE REQUEST");
            let req = CertReq::from_der(&der).unwrap();
            assert_eq!(req.info.subject.to_string(), "CN=Test Issuer,O=Example Agency,C=CN");
            let key = key_of(&req.info.public_key).unwrap();
            assert_eq!(key.sec1(), pair.public_key().sec1());
            let rs = raw_signature(req.signature.as_bytes().unwrap()).unwrap();
            assert!(key.verify(&req.info.to_der().unwrap(), &rs), "{alg}");
            assert_eq!(req.algorithm.oid, signature_oid(alg));
        }
    }

    #[test]
    fn subjects_are_checked() {
        assert!(parse_subject("").is_err());
        assert!(parse_subject("CN=a\nb").is_err());
        assert!(parse_subject(&"CN=".repeat(300)).is_err());
        assert!(parse_subject("not a name").is_err());
        assert!(parse_subject("CN=某市市场监督管理局,C=CN").is_ok());
    }

    #[test]
    fn signatures_convert_both_ways() {
        let mut rs = [0u8; 64];
        rs[31] = 1;
        rs[32] = 0x80;
        let der = der_signature(&rs).unwrap();
        assert_eq!(raw_signature(&der).unwrap(), rs);
        assert!(raw_signature(b"\x30\x00").is_err());
        assert!(Chain::from_x5c(&[]).is_err());
        assert!(Chain::from_x5c(&["!!".into()]).is_err());
        assert!(Chain::from_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
