//! The fuzz targets' bodies: every parser of input from outside the
//! library, fed arbitrary bytes. `fuzz/` runs them under libFuzzer
//! (`cargo fuzz run <name>`); `tests/corpus.rs` runs them on stable over
//! the committed corpus and over random inputs, so CI replays what the
//! fuzzer found.
//!
//! A body returns normally for every input. It panics only when a parser
//! does, or when one of the properties it checks fails: a parsed value
//! reads back as itself, canonical JSON is a fixed point, nothing the
//! fuzzer makes up verifies under a key it does not hold, a row reader
//! ends.

use std::io::Cursor;
use std::sync::OnceLock;

use zhengzhao_crypto::{Algorithm, IssuerKeyPair, IssuerPublicKey, JwsHeader, jws};

/// A fuzz target: its name (the directory of its corpus) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("identifier", identifier),
    ("codes", codes),
    ("canonical_json", canonical_json),
    ("jws", jws_document),
    ("sd_jwt", sd_jwt),
    ("presentation", presentation),
    ("bearer_token", bearer_token),
    ("import_csv", import_csv),
    ("import_jsonl", import_jsonl),
    ("catalogue", catalogue),
    ("certificates", certificates),
];

/// The longest input the targets are given (libFuzzer's `-max_len`); the
/// services refuse far shorter messages than this anyway.
pub const MAX_LEN: usize = 64 * 1024;

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Licence identifiers (GB/T 36902), strict and as held.
pub fn identifier(data: &[u8]) {
    let Some(s) = text(data) else { return };
    use zhengzhao_core::LicenceId;
    if let Ok(id) = LicenceId::parse(s) {
        let again = LicenceId::parse(&id.to_string()).expect("a parsed identifier reads back");
        assert_eq!(again.to_string(), id.to_string());
    }
    if let Ok(id) = LicenceId::parse_allowing_legacy(s) {
        let again = LicenceId::parse_allowing_legacy(&id.to_string()).expect("a held identifier reads back");
        assert_eq!(again.to_string(), id.to_string());
        assert_eq!(again.check_form(), id.check_form());
    }
    let _ = LicenceId::parse_held("identifier", s);
}

/// Unified social credit codes, citizen ID numbers, and holder IDs of every
/// type (the type code before the first newline, the number after it).
pub fn codes(data: &[u8]) {
    let Some(s) = text(data) else { return };
    if let Ok(c) = zhengzhao_core::Uscc::parse(s) {
        let again = zhengzhao_core::Uscc::parse(&c.to_string()).expect("a parsed USCC reads back");
        assert_eq!(again.to_string(), c.to_string());
    }
    let today = time::macros::date!(2026 - 12 - 05);
    let _ = zhengzhao_core::CitizenId::parse(s, today);
    let (type_code, number) = s.split_once('\n').unwrap_or(("111", s));
    if let Ok(stored) = zhengzhao_core::parse_holder_id("t", "n", type_code, number) {
        let again = zhengzhao_core::parse_holder_id("t", "n", type_code, &stored);
        assert_eq!(again.as_deref(), Ok(stored.as_str()), "a stored holder ID parses as itself");
        let masked = zhengzhao_core::mask_id_number(&stored);
        assert!(masked.chars().count() <= stored.chars().count().max(8));
    }
}

/// JSON into canonical JSON (RFC 8785), and licence documents.
pub fn canonical_json(data: &[u8]) {
    // Floats are left out of the fixed-point property: serde_json reads
    // them without `float_roundtrip`, which may move the last bit.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
        && !has_float(&v)
        && let Ok(c) = zhengzhao_core::canonical_json(&v)
    {
        let back: serde_json::Value = serde_json::from_slice(&c).expect("canonical JSON is JSON");
        let again = zhengzhao_core::canonical_json(&back).expect("canonical JSON canonicalises");
        assert_eq!(c, again, "canonical JSON is a fixed point");
    }
    licence_document(data);
}

fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

fn licence_document(data: &[u8]) {
    if let Ok(d) = zhengzhao_core::LicenceDocument::from_json(data)
        && let Ok(c) = d.canonical_bytes()
    {
        let back = zhengzhao_core::LicenceDocument::from_json(&c).expect("a canonical document reads back");
        assert_eq!(back.canonical_bytes().ok(), Some(c), "a document's canonical bytes are a fixed point");
    }
}

/// The library's fixed keys: an issuer's ES256 and SM2 keys and the
/// operator's token key. Made from constants, so a run is repeatable.
pub struct Keys {
    pub es256: IssuerKeyPair,
    pub sm2: IssuerKeyPair,
    pub token: zhengzhao_crypto::Es256KeyPair,
    /// Their public halves, worked out once.
    pub es256_public: IssuerPublicKey,
    pub sm2_public: IssuerPublicKey,
    pub token_public: zhengzhao_crypto::Es256PublicKey,
}

/// The fixed keys (the seed corpus is signed with them).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let seed = |b: u8| [b; 32];
        let es256 = IssuerKeyPair::from_secret_bytes(Algorithm::Es256, &seed(7)).expect("a valid P-256 scalar");
        let sm2 = IssuerKeyPair::from_secret_bytes(Algorithm::Sm2Sm3, &seed(9)).expect("a valid SM2 scalar");
        let token = match IssuerKeyPair::from_secret_bytes(Algorithm::Es256, &seed(11)).expect("a valid P-256 scalar") {
            IssuerKeyPair::Es256(k) => k,
            IssuerKeyPair::Sm2(_) => unreachable!("asked for ES256"),
        };
        Keys {
            es256_public: es256.public_key(),
            sm2_public: sm2.public_key(),
            token_public: token.public_key(),
            es256,
            sm2,
            token,
        }
    })
}

/// Signed licence documents as `VerifyDocument` takes them. The first
/// byte chooses: the rest as a compact JWS checked under the key its `alg`
/// names (as the verification service does), or as a payload one of the
/// library's keys signs (so what lies behind a good signature is reached).
pub fn jws_document(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let k = keys();
    if mode & 1 == 0 {
        let Some(s) = text(rest) else { return };
        let Ok(parsed) = jws::parse(s) else { return };
        let key = match Algorithm::from_jws_alg(&parsed.header.alg) {
            Some(Algorithm::Es256) => &k.es256_public,
            Some(Algorithm::Sm2Sm3) => &k.sm2_public,
            None => return,
        };
        if key.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
            signed_is_used(&parsed);
        }
        licence_document(&parsed.payload);
    } else {
        let (key, public, alg) = if mode & 2 == 0 {
            (&k.es256, &k.es256_public, "ES256".to_owned())
        } else {
            (&k.sm2, &k.sm2_public, zhengzhao_crypto::sm2::JWS_ALG.to_owned())
        };
        let header = JwsHeader { alg, kid: Some("k1".into()), typ: None, iat: None, x5c: None };
        let input = jws::signing_input(&header, rest);
        let compact = jws::assemble(&input, &key.sign(input.as_bytes()));
        let parsed = jws::parse(&compact).expect("a JWS the library made parses");
        assert_eq!(parsed.payload, rest);
        assert!(public.verify(parsed.signing_input.as_bytes(), &parsed.signature));
        licence_document(&parsed.payload);
    }
}

/// What a verified JWS yields is what its signature covers: the payload
/// is the one its signing input encodes, and the header the one it names.
fn signed_is_used(parsed: &zhengzhao_crypto::ParsedJws) {
    let (header, payload) = parsed.signing_input.split_once('.').expect("a signing input has two parts");
    let payload_bytes = zhengzhao_crypto::b64url_decode(payload).expect("a verified payload decodes");
    assert_eq!(payload_bytes, parsed.payload, "the payload used is not the payload signed");
    let header: JwsHeader =
        serde_json::from_slice(&zhengzhao_crypto::b64url_decode(header).expect("a verified header decodes"))
            .expect("a verified header is a header");
    assert_eq!(header.alg, parsed.header.alg);
    assert_eq!(header.kid, parsed.header.kid);
}

/// SD-JWT presentations (RFC 9901 compact form), their disclosures, and
/// their verification under an issuer key.
pub fn sd_jwt(data: &[u8]) {
    use zhengzhao_crypto::sdjwt;
    let Some(s) = text(data) else { return };
    if let Ok(p) = sdjwt::Presentation::parse(s) {
        let again = sdjwt::Presentation::parse(&p.serialize()).expect("a parsed presentation reads back");
        assert_eq!(again.serialize(), p.serialize());
        for d in &p.disclosures {
            let _ = d.digest();
        }
    }
    for part in s.split('~') {
        let _ = sdjwt::Disclosure::parse(part);
    }
    let es256 = &keys().es256_public;
    if sdjwt::verify(s, |_, _| Ok(es256.clone())).is_ok() {
        let p = sdjwt::Presentation::parse(s).expect("a verified presentation parses");
        let issuer = jws::parse(&p.issuer_jwt).expect("a verified issuer JWT parses");
        assert!(
            es256.verify(issuer.signing_input.as_bytes(), &issuer.signature),
            "verified without the issuer's signature"
        );
        signed_is_used(&issuer);
    }
}

/// What a holder's phone shows at a counter (the QR code's text), checked
/// offline as the counter page and `VerifyPresentation` check it.
pub fn presentation(data: &[u8]) {
    let Some(s) = text(data) else { return };
    let k = keys();
    let now = time::OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time");
    static PUBLISHED: OnceLock<[zhengzhao_crypto::published::PublicKeyRecord; 2]> = OnceLock::new();
    let published = PUBLISHED.get_or_init(|| {
        let record = |key: &IssuerPublicKey, kid: &str| zhengzhao_crypto::published::PublicKeyRecord {
            key_id: kid.into(),
            issuer_code: "91350100M000100Y43".into(),
            algorithm: key.algorithm(),
            status: zhengzhao_crypto::published::KeyStatus::Active,
            jwk: key.to_jwk(kid),
            created_at: now - time::Duration::days(30),
            retired_at: None,
            compromised_since: None,
        };
        [record(&k.es256_public, "k1"), record(&k.sm2_public, "k2")]
    });
    let v = zhengzhao_exchange::presentations::check_offline(s, published, now);
    if v.valid {
        let p = zhengzhao_crypto::sdjwt::Presentation::parse(s).expect("a valid presentation parses");
        let issuer = jws::parse(&p.issuer_jwt).expect("a valid presentation's issuer JWT parses");
        let keys = [&k.es256_public, &k.sm2_public];
        assert!(
            keys.iter().any(|key| key.verify(issuer.signing_input.as_bytes(), &issuer.signature)),
            "a presentation is valid without a published key's signature"
        );
        assert!(p.kb_jwt.is_some(), "a presentation is valid without the holder's key binding");
    }
}

/// The time the targets check tokens and presentations at.
pub const NOW: i64 = 1_796_428_800;

/// Bearer tokens. The first byte chooses: the rest as a token, or as the
/// claims of a token the operator's key signs.
pub fn bearer_token(data: &[u8]) {
    use zhengzhao_auth::{TokenKey, TokenVerifier, TrustedKeys};
    let Some((&mode, rest)) = data.split_first() else { return };
    let k = keys();
    static VERIFIER: OnceLock<(String, TokenVerifier)> = OnceLock::new();
    let (kid, verifier) = VERIFIER.get_or_init(|| {
        let kid = zhengzhao_auth::token_kid(&k.token_public);
        let verifier = TokenVerifier::new(TrustedKeys {
            tokens: vec![TokenKey { kid: kid.clone(), key: k.token_public.clone(), not_after: None }],
            services: Default::default(),
        });
        (kid, verifier)
    });
    let now = NOW;
    let token = if mode & 1 == 0 {
        let Some(s) = text(rest) else { return };
        s.to_owned()
    } else {
        let header =
            JwsHeader { alg: "ES256".into(), kid: Some(kid.clone()), typ: Some("JWT".into()), iat: None, x5c: None };
        let input = jws::signing_input(&header, rest);
        jws::assemble(&input, &k.token.sign(input.as_bytes()))
    };
    if let Ok(p) = verifier.verify_at(&token, now) {
        let parsed = jws::parse(&token).expect("an accepted token parses");
        assert!(k.token_public.verify(parsed.signing_input.as_bytes(), &parsed.signature));
        signed_is_used(&parsed);
        zhengzhao_core::Uscc::parse(&p.agency).expect("an accepted token names an agency by its code");
        assert_eq!(p.holder.is_some(), p.role == zhengzhao_auth::Role::Holder);
        // The same token, from the cache, says the same.
        let again = verifier.verify_at(&token, now).expect("an accepted token is accepted again");
        assert_eq!((again.agency, again.role, again.token_id), (p.agency, p.role, p.token_id));
    }
}

fn import(data: &[u8], format: zhengzhao::import::Format) {
    let source: Box<dyn std::io::Read + Send> = Box::new(Cursor::new(data.to_vec()));
    let Ok(mut rows) = zhengzhao::import::Rows::from_reader(source, format) else { return };
    // Every row takes at least one byte: a reader that yields more rows
    // than that never ends.
    let mut seen = 0usize;
    while let Some(row) = rows.next_row() {
        seen += 1;
        assert!(seen <= data.len() + 1, "the row reader does not end");
        if let Ok(r) = row {
            let draft = r.draft.unwrap_or_default();
            let _ = zhengzhao_core::LicenceDraft::from(draft);
        }
    }
}

/// Historical licences as `zhengzhao licence import` reads them: CSV.
pub fn import_csv(data: &[u8]) {
    import(data, zhengzhao::import::Format::Csv);
}

/// Historical licences as `zhengzhao licence import` reads them: JSON Lines.
pub fn import_jsonl(data: &[u8]) {
    import(data, zhengzhao::import::Format::JsonLines);
}

/// Catalogue documents (`ImportCatalog`), licence type definitions and
/// face templates, as JSON.
pub fn catalogue(data: &[u8]) {
    if let Ok(doc) = serde_json::from_slice::<zhengzhao_catalog::CatalogDocument>(data)
        && doc.validate().is_ok()
    {
        let json = serde_json::to_vec(&doc).expect("a document serialises");
        let back: zhengzhao_catalog::CatalogDocument = serde_json::from_slice(&json).expect("and reads back");
        assert_eq!(back, doc);
    }
    if let Ok(def) = serde_json::from_slice::<zhengzhao_core::LicenceTypeDefinition>(data) {
        let _ = def.validate();
    }
    if let Ok(mut t) = serde_json::from_slice::<zhengzhao_core::FaceTemplate>(data) {
        t.normalise();
        if t.validate().is_ok() {
            let values = t.in_order().iter().map(|f| (f.key.clone(), f.key.clone())).collect();
            let _ = t.check_values(&values);
        }
    }
}

/// A P-256 CA made with `openssl` for these targets, a certificate it
/// issued to the ES256 fuzzing key (subject `CN=91350100M000100Y43`), and
/// its CRL (one other certificate revoked for a key compromise).
pub const CA_PEM: &str = include_str!("../fixtures/ca.pem");
pub const CHAIN_PEM: &str = include_str!("../fixtures/chain.pem");
pub const CRL_PEM: &str = include_str!("../fixtures/crl.pem");
/// The issuer the fixture certificate names.
pub const CERTIFIED_ISSUER: &str = "91350100M000100Y43";

fn fixture_anchors() -> &'static zhengzhao_crypto::x509::TrustAnchors {
    static ANCHORS: OnceLock<zhengzhao_crypto::x509::TrustAnchors> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        zhengzhao_crypto::x509::TrustAnchors::new(&[CA_PEM.to_owned()], &[CRL_PEM.as_bytes().to_vec()])
            .expect("the fixture CA and CRL read")
    })
}

/// Certificate chains and CRLs as they come from outside: PEM as
/// `AttachCertificate` takes it, a JWS header's `x5c` (the input a run of
/// certificates' DER, each after its 2-byte length), and a CRL file as the
/// verifier reads it. The
/// first byte chooses. Every chain read is checked against the fixture CA
/// for the ES256 fuzzing key, and reads back from its own `x5c`.
pub fn certificates(data: &[u8]) {
    use zhengzhao_crypto::x509::{Chain, TrustAnchors};
    let Some((&mode, rest)) = data.split_first() else { return };
    let key = &keys().es256_public;
    let at = time::OffsetDateTime::from_unix_timestamp(NOW).expect("a valid time");
    let check = |chain: Chain| {
        let x5c = chain.to_x5c();
        let again = Chain::from_x5c(&x5c).expect("a chain's own x5c reads back");
        assert_eq!(again.to_x5c(), x5c, "x5c round-trips");
        let _ = (chain.describe(), chain.expires(), chain.to_pem());
        if let Ok(facts) = fixture_anchors().evaluate(&chain, key, CERTIFIED_ISSUER) {
            let _ = facts.check_at(at);
        }
    };
    match mode % 3 {
        0 => {
            if let Some(t) = text(rest)
                && let Ok(chain) = Chain::from_pem(t)
            {
                check(chain);
            }
        }
        1 => {
            use base64::Engine;
            let mut x5c = Vec::new();
            let mut left = rest;
            while let [hi, lo, tail @ ..] = left {
                let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
                x5c.push(base64::engine::general_purpose::STANDARD.encode(&tail[..n]));
                left = &tail[n..];
            }
            if let Ok(chain) = Chain::from_x5c(&x5c) {
                check(chain);
            }
        }
        _ => {
            if let Ok(anchors) = TrustAnchors::new(&[CA_PEM.to_owned()], &[rest.to_vec()])
                && let Ok(chain) = Chain::from_pem(CHAIN_PEM)
            {
                let _ = anchors.stale_crls(at);
                if let Ok(facts) = anchors.evaluate(&chain, key, CERTIFIED_ISSUER) {
                    let _ = facts.check_at(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    #[test]
    fn the_fixture_chain_is_trusted_and_not_revoked() {
        let chain = zhengzhao_crypto::x509::Chain::from_pem(CHAIN_PEM).expect("the fixture chain");
        let facts = fixture_anchors().evaluate(&chain, &keys().es256_public, CERTIFIED_ISSUER).expect("trusted");
        assert!(facts.revoked.is_none());
        let later = time::OffsetDateTime::from_unix_timestamp(NOW + 86_400 * 30).expect("a time");
        assert!(facts.check_at(later).is_ok());
    }
}
