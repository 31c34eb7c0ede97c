//! Selective Disclosure for JWTs (IETF SD-JWT, RFC 9901 draft lineage as the
//! `sd-jwt` reference implementation reads it): an issuer-signed JWT whose
//! `_sd` array holds the SHA-256 digests of salted disclosures
//! `[salt, name, value]`, so a holder shows any subset of those claims
//! without a new signature; and the key-binding JWT (`typ` `kb+jwt`) the
//! holder's key (`cnf.jwk`) signs over the presentation's digest
//! (`sd_hash`), a nonce, an audience and a time.
//!
//! Compact form: `<issuer-jwt>~<disclosure>~...~<kb-jwt>` (a presentation
//! without key binding ends in `~`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::jws::{self, JwsHeader};
use crate::{Es256KeyPair, Es256PublicKey, b64url, b64url_decode};

/// The `typ` of the issuer-signed JWT.
pub const SD_JWT_TYP: &str = "dc+sd-jwt";
/// The `typ` of the key-binding JWT.
pub const KB_JWT_TYP: &str = "kb+jwt";
/// The only digest algorithm used and accepted.
pub const SD_ALG: &str = "sha-256";
/// Largest presentation parsed.
pub const MAX_PRESENTATION_LEN: usize = 16 * 1024;
/// Most disclosures in one presentation.
pub const MAX_DISCLOSURES: usize = 64;

/// Why a presentation is not one we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdJwtError {
    #[error("not an SD-JWT presentation: {0}")]
    Shape(String),
    #[error("the issuer's signature: {0}")]
    IssuerSignature(String),
    #[error("disclosure {0} is not one the issuer signed a digest of")]
    UnknownDisclosure(usize),
    #[error("disclosure {index}: {why}")]
    Disclosure { index: usize, why: String },
    #[error("key binding: {0}")]
    KeyBinding(String),
}

/// One disclosure: a salt, a claim name and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Disclosure {
    /// base64url of the JSON array, as it travels.
    pub encoded: String,
    pub salt: String,
    pub name: String,
    pub value: serde_json::Value,
}

impl Disclosure {
    /// A new disclosure of `name` = `value` with a fresh 128-bit salt.
    pub fn new(name: &str, value: serde_json::Value) -> Self {
        let salt = b64url(&crate::random_bytes::<16>());
        let array = serde_json::json!([salt, name, value]);
        let encoded = b64url(array.to_string().as_bytes());
        Disclosure { encoded, salt, name: name.to_owned(), value }
    }

    /// Reads a disclosure as it travels.
    pub fn parse(encoded: &str) -> Result<Self, String> {
        let bytes = b64url_decode(encoded).map_err(|_| "not base64url".to_owned())?;
        let array: Vec<serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(|_| "not a JSON array".to_owned())?;
        let [salt, name, value]: [serde_json::Value; 3] =
            array.try_into().map_err(|_| "an object property disclosure has three elements".to_owned())?;
        let (Some(salt), Some(name)) = (salt.as_str(), name.as_str()) else {
            return Err("salt and claim name must be strings".into());
        };
        if matches!(name, "_sd" | "..." | "_sd_alg" | "cnf") {
            return Err(format!("{name:?} may not be disclosed"));
        }
        Ok(Disclosure { encoded: encoded.to_owned(), salt: salt.to_owned(), name: name.to_owned(), value })
    }

    /// The digest the issuer signs: base64url(SHA-256(ASCII(encoded))).
    pub fn digest(&self) -> String {
        digest(&self.encoded)
    }
}

fn digest(s: &str) -> String {
    b64url(&sha2::Sha256::digest(s.as_bytes()))
}

/// The issuer-signed payload: `plain` claims, plus `_sd` (the disclosures'
/// digests, sorted so their order says nothing) and `_sd_alg`.
pub fn issuer_payload(
    mut plain: serde_json::Map<String, serde_json::Value>,
    disclosures: &[Disclosure],
) -> serde_json::Value {
    let mut digests: Vec<String> = disclosures.iter().map(Disclosure::digest).collect();
    digests.sort();
    plain.insert("_sd".into(), digests.into());
    plain.insert("_sd_alg".into(), SD_ALG.into());
    serde_json::Value::Object(plain)
}

/// `sd_hash`: the digest of the presentation up to its key-binding JWT.
pub fn sd_hash(issuer_jwt: &str, disclosures: &[&str]) -> String {
    let mut s = String::from(issuer_jwt);
    s.push('~');
    for d in disclosures {
        s.push_str(d);
        s.push('~');
    }
    digest(&s)
}

/// What the key-binding JWT says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KbClaims {
    pub iat: i64,
    pub aud: String,
    pub nonce: String,
    pub sd_hash: String,
}

/// A presentation split into its parts (nothing checked yet but the shape).
#[derive(Debug, Clone, PartialEq)]
pub struct Presentation {
    pub issuer_jwt: String,
    pub disclosures: Vec<Disclosure>,
    pub kb_jwt: Option<String>,
}

impl Presentation {
    /// Splits a compact presentation.
    pub fn parse(s: &str) -> Result<Self, SdJwtError> {
        let s = s.trim();
        if s.len() > MAX_PRESENTATION_LEN {
            return Err(SdJwtError::Shape(format!("longer than {MAX_PRESENTATION_LEN} bytes")));
        }
        if !s.is_ascii() {
            return Err(SdJwtError::Shape("characters outside ASCII".into()));
        }
        let parts: Vec<&str> = s.split('~').collect();
        if parts.len() < 2 {
            return Err(SdJwtError::Shape("no `~` after the issuer-signed JWT".into()));
        }
        if parts.len() > MAX_DISCLOSURES + 2 {
            return Err(SdJwtError::Shape(format!("more than {MAX_DISCLOSURES} disclosures")));
        }
        let (last, rest) = parts.split_last().unwrap_or((&"", &[]));
        let kb_jwt = (!last.is_empty()).then(|| (*last).to_owned());
        let issuer_jwt = rest[0].to_owned();
        let mut disclosures = Vec::with_capacity(rest.len() - 1);
        for (i, d) in rest[1..].iter().enumerate() {
            disclosures
                .push(Disclosure::parse(d).map_err(|why| SdJwtError::Disclosure { index: i, why: why.clone() })?);
        }
        Ok(Presentation { issuer_jwt, disclosures, kb_jwt })
    }

    /// The compact form.
    pub fn serialize(&self) -> String {
        let mut s = self.without_key_binding();
        if let Some(kb) = &self.kb_jwt {
            s.push_str(kb);
        }
        s
    }

    /// `<issuer-jwt>~<disclosure>~...~`: what `sd_hash` covers.
    pub fn without_key_binding(&self) -> String {
        let mut s = self.issuer_jwt.clone();
        s.push('~');
        for d in &self.disclosures {
            s.push_str(&d.encoded);
            s.push('~');
        }
        s
    }

    /// This presentation's `sd_hash`.
    pub fn sd_hash(&self) -> String {
        digest(&self.without_key_binding())
    }

    /// Adds a key-binding JWT signed by `key` (ES256) for `aud` and `nonce` at `iat`.
    pub fn bind(mut self, key: &Es256KeyPair, aud: &str, nonce: &str, iat: i64) -> Self {
        let claims = KbClaims { iat, aud: aud.to_owned(), nonce: nonce.to_owned(), sd_hash: self.sd_hash() };
        let header = JwsHeader { alg: "ES256".into(), kid: None, typ: Some(KB_JWT_TYP.into()), iat: None, x5c: None };
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let input = jws::signing_input(&header, &payload);
        self.kb_jwt = Some(jws::assemble(&input, &key.sign(input.as_bytes())));
        self
    }

    /// Keeps only the disclosures whose claim names `keep` accepts.
    pub fn disclosing(mut self, keep: impl Fn(&str) -> bool) -> Self {
        self.disclosures.retain(|d| keep(&d.name));
        self.kb_jwt = None;
        self
    }
}

/// A presentation whose signatures and digests check out.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The issuer-signed JWT's header.
    pub header: JwsHeader,
    /// The issuer-signed claims, without `_sd` and `_sd_alg`.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The disclosed claims by name.
    pub disclosed: BTreeMap<String, serde_json::Value>,
    /// The key binding, when the presentation carries one (its signature by
    /// `cnf.jwk` and its `sd_hash` checked; time, audience and nonce are the
    /// caller's to judge).
    pub key_binding: Option<KbClaims>,
}

/// Checks a presentation: the issuer JWT's signature with the key
/// `issuer_key` finds for its header and claims, its `typ`, that every
/// disclosure's digest is one the issuer signed (once), and the key-binding
/// JWT's signature by `cnf.jwk` over this presentation's `sd_hash`.
pub fn verify<F>(presentation: &str, issuer_key: F) -> Result<Verified, SdJwtError>
where
    F: FnOnce(&JwsHeader, &serde_json::Map<String, serde_json::Value>) -> Result<crate::IssuerPublicKey, String>,
{
    let p = Presentation::parse(presentation)?;
    let parsed = jws::parse(&p.issuer_jwt).map_err(|e| SdJwtError::Shape(e.to_string()))?;
    if parsed.header.typ.as_deref() != Some(SD_JWT_TYP) {
        return Err(SdJwtError::Shape(format!("the issuer-signed JWT's typ is not {SD_JWT_TYP:?}")));
    }
    let mut claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&parsed.payload)
        .map_err(|_| SdJwtError::Shape("the issuer-signed payload is not a JSON object".into()))?;
    let key = issuer_key(&parsed.header, &claims).map_err(SdJwtError::IssuerSignature)?;
    if crate::Algorithm::from_jws_alg(&parsed.header.alg) != Some(key.algorithm()) {
        return Err(SdJwtError::IssuerSignature(format!("alg {:?} is not the key's", parsed.header.alg)));
    }
    if !key.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
        return Err(SdJwtError::IssuerSignature("does not verify".into()));
    }
    if claims.remove("_sd_alg").as_ref().and_then(|v| v.as_str()) != Some(SD_ALG) {
        return Err(SdJwtError::Shape(format!("_sd_alg must be {SD_ALG:?}")));
    }
    let digests: Vec<String> = match claims.remove("_sd") {
        Some(serde_json::Value::Array(a)) => a
            .into_iter()
            .map(|d| d.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| SdJwtError::Shape("_sd must be an array of digests".into()))?,
        _ => return Err(SdJwtError::Shape("no _sd array".into())),
    };
    let mut disclosed = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for (i, d) in p.disclosures.iter().enumerate() {
        let h = d.digest();
        if !digests.contains(&h) {
            return Err(SdJwtError::UnknownDisclosure(i));
        }
        if !seen.insert(h) {
            return Err(SdJwtError::Disclosure { index: i, why: "disclosed twice".into() });
        }
        if claims.contains_key(&d.name) || disclosed.insert(d.name.clone(), d.value.clone()).is_some() {
            return Err(SdJwtError::Disclosure { index: i, why: format!("claim {:?} appears twice", d.name) });
        }
    }
    let key_binding = match &p.kb_jwt {
        None => None,
        Some(kb) => Some(check_key_binding(kb, &claims, &p.sd_hash())?),
    };
    Ok(Verified { header: parsed.header, claims, disclosed, key_binding })
}

fn check_key_binding(
    kb: &str,
    claims: &serde_json::Map<String, serde_json::Value>,
    sd_hash: &str,
) -> Result<KbClaims, SdJwtError> {
    let bad = |s: &str| SdJwtError::KeyBinding(s.to_owned());
    let jwk =
        claims.get("cnf").and_then(|c| c.get("jwk")).ok_or_else(|| bad("the issuer named no holder key (cnf)"))?;
    let holder = Es256PublicKey::from_jwk(jwk).map_err(|e| SdJwtError::KeyBinding(format!("cnf.jwk: {e}")))?;
    let parsed = jws::parse(kb).map_err(|e| SdJwtError::KeyBinding(e.to_string()))?;
    if parsed.header.typ.as_deref() != Some(KB_JWT_TYP) || parsed.header.alg != "ES256" {
        return Err(bad("the key-binding JWT must be typ kb+jwt, alg ES256"));
    }
    if !holder.verify_p256(parsed.signing_input.as_bytes(), &parsed.signature) {
        return Err(bad("not signed by the holder key the issuer named"));
    }
    let c: KbClaims =
        serde_json::from_slice(&parsed.payload).map_err(|_| bad("claims must be iat, aud, nonce, sd_hash"))?;
    if c.sd_hash != sd_hash {
        return Err(bad("sd_hash does not match this presentation (disclosures changed)"));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IssuerKeyPair;

    fn issue(key: &IssuerKeyPair, holder: &Es256KeyPair) -> Presentation {
        let ds = vec![
            Disclosure::new("name", "张三".into()),
            Disclosure::new("address", "福州市鼓楼区".into()),
            Disclosure::new("number", 42.into()),
        ];
        let mut plain = serde_json::Map::new();
        plain.insert("iss".into(), "zhengzhao".into());
        plain.insert("cnf".into(), serde_json::json!({"jwk": holder.public_key().to_jwk("")}));
        let payload = issuer_payload(plain, &ds);
        let header = JwsHeader {
            alg: key.algorithm().jws_alg().into(),
            kid: Some("k1".into()),
            typ: Some(SD_JWT_TYP.into()),
            iat: None,
            x5c: None,
        };
        let input = jws::signing_input(&header, payload.to_string().as_bytes());
        let issuer_jwt = jws::assemble(&input, &key.sign(input.as_bytes()));
        Presentation { issuer_jwt, disclosures: ds, kb_jwt: None }
    }

    #[test]
    fn a_subset_verifies_with_key_binding_and_nothing_else_shows() {
        for alg in [crate::Algorithm::Es256, crate::Algorithm::Sm2Sm3] {
            let key = IssuerKeyPair::generate(alg);
            let holder = Es256KeyPair::generate();
            let p = issue(&key, &holder).disclosing(|n| n != "address").bind(&holder, "scenario-1", "n1", 100);
            let text = p.serialize();
            let v = verify(&text, |_, _| Ok(key.public_key())).unwrap();
            assert_eq!(v.disclosed.len(), 2);
            assert_eq!(v.disclosed["name"], "张三");
            assert!(!v.disclosed.contains_key("address"));
            let kb = v.key_binding.unwrap();
            assert_eq!((kb.aud.as_str(), kb.nonce.as_str(), kb.iat), ("scenario-1", "n1", 100));
        }
    }

    #[test]
    fn tampering_is_caught() {
        let key = IssuerKeyPair::generate(crate::Algorithm::Es256);
        let holder = Es256KeyPair::generate();
        let full = issue(&key, &holder);
        let bound = full.clone().disclosing(|n| n == "name").bind(&holder, "a", "n", 1);
        let k = |_: &JwsHeader, _: &serde_json::Map<String, serde_json::Value>| Ok(key.public_key());
        // A disclosure added after binding.
        let mut added = bound.clone();
        added.disclosures.push(full.disclosures[1].clone());
        assert!(matches!(verify(&added.serialize(), k), Err(SdJwtError::KeyBinding(_))));
        // A made-up disclosure.
        let mut forged = full.clone().disclosing(|_| true);
        forged.disclosures[0] = Disclosure::new("name", "李四".into());
        assert_eq!(verify(&forged.serialize(), k), Err(SdJwtError::UnknownDisclosure(0)));
        // Bound by another key.
        let other = Es256KeyPair::generate();
        let wrong = full.clone().disclosing(|n| n == "name").bind(&other, "a", "n", 1);
        assert!(matches!(verify(&wrong.serialize(), k), Err(SdJwtError::KeyBinding(_))));
        // Another issuer key.
        let stranger = IssuerKeyPair::generate(crate::Algorithm::Es256);
        assert!(matches!(
            verify(&bound.serialize(), |_, _| Ok(stranger.public_key())),
            Err(SdJwtError::IssuerSignature(_))
        ));
        // Garbage never panics.
        for s in ["", "~", "a~b~c", "~~~~", "eyJ9.e30.~WyJ9~"] {
            assert!(verify(s, k).is_err());
        }
    }
}
