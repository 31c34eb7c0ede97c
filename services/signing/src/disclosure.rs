//! Selective-disclosure licences (SD-JWT) for holders' presentations.
//!
//! Made on demand, not at issuance: each one binds the key of the front end
//! that will present it (`cnf`), lives five minutes and names the scenario
//! it is for, none of which is known when the licence is issued. The
//! exchange asks; this service makes it only from a licence JWS that one of
//! the issuer's own keys signed (and not after that key's compromise), and
//! takes every disclosed value from that document, so whoever asks can
//! choose which fields to show but never what they say.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::LicenceDocument;
use zhengzhao_crypto::sdjwt::{Disclosure, SD_JWT_TYP, issuer_payload};
use zhengzhao_crypto::{Es256PublicKey, JwsHeader, jws};
use zhengzhao_proto::ServiceError;

use crate::Signing;

/// Longest life of a selective-disclosure licence.
pub const MAX_LIFETIME_SECONDS: u32 = 300;
/// The holder claims every SD-JWT discloses selectively, beside the face fields.
pub const HOLDER_CLAIMS: [&str; 4] = ["licence_number", "holder_name", "holder_id_type", "holder_id_number"];
/// The `vct` prefix: the licence type code follows.
pub const VCT_PREFIX: &str = "urn:zhengzhao:licence-type:";

/// What a selective-disclosure licence is made for.
#[derive(Debug, Clone)]
pub struct DisclosureRequest<'a> {
    /// The licence's JWS as issuance stores it.
    pub licence_jws: &'a str,
    /// The public key (JWK, P-256) that must sign the key binding.
    pub holder_jwk: &'a Value,
    /// Plain claims the issuer's signature also covers (the scenario: `{id, fields}`).
    pub scenario: &'a Value,
    pub lifetime_seconds: u32,
}

/// An SD-JWT with every disclosure (`<jwt>~<d>~...~`) and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MadeDisclosure {
    pub sd_jwt: String,
    pub key_id: String,
}

impl Signing {
    /// Makes an SD-JWT of a licence this library's issuer keys signed.
    pub async fn selective_disclosure(
        &self,
        who: &Principal,
        req: &DisclosureRequest<'_>,
    ) -> Result<MadeDisclosure, ServiceError> {
        authorize(who, &Action::MakeSelectiveDisclosure { issuer: "" })?;
        if req.lifetime_seconds == 0 || req.lifetime_seconds > MAX_LIFETIME_SECONDS {
            return Err(ServiceError::invalid("lifetime_seconds", format!("1 to {MAX_LIFETIME_SECONDS}")));
        }
        // Only the public key goes into cnf, whatever else the JWK carried.
        let holder_jwk = Es256PublicKey::from_jwk(req.holder_jwk)
            .map_err(|e| ServiceError::invalid("holder_jwk", format!("a P-256 public JWK: {e}")))?
            .to_jwk("");
        if !req.scenario.is_object() {
            return Err(ServiceError::invalid("scenario", "a JSON object"));
        }
        let parsed = jws::parse(req.licence_jws).map_err(|e| ServiceError::invalid("licence_jws", e.to_string()))?;
        let doc = LicenceDocument::from_json(&parsed.payload)
            .map_err(|e| ServiceError::invalid("licence_jws", format!("not a licence document: {e}")))?;
        authorize(who, &Action::MakeSelectiveDisclosure { issuer: &doc.issuer.code })?;
        let kid = parsed.header.kid.as_deref().ok_or_else(|| ServiceError::invalid("licence_jws", "names no key"))?;
        let keys = self.published_keys(Some(&doc.issuer.code)).await?;
        let key = keys.iter().find(|k| k.key_id == kid).ok_or_else(|| {
            ServiceError::invalid("licence_jws", format!("key {kid} is not one of {}'s keys", doc.issuer.code))
        })?;
        let signed_at = parsed.header.iat.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        let public = zhengzhao_crypto::IssuerPublicKey::from_jwk(&key.jwk).map_err(ServiceError::internal)?;
        if parsed.header.typ.is_some()
            || zhengzhao_crypto::Algorithm::from_jws_alg(&parsed.header.alg) != Some(key.algorithm)
            || !public.verify(parsed.signing_input.as_bytes(), &parsed.signature)
            || key.distrusts(signed_at)
        {
            return Err(ServiceError::invalid(
                "licence_jws",
                "not a licence the issuer's key signed (or signed after its compromise)",
            ));
        }
        let disclosures = disclosures(&doc)?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut plain = Map::new();
        plain.insert("iss".into(), doc.issuer.code.clone().into());
        plain.insert("iat".into(), now.into());
        plain.insert("exp".into(), (now + i64::from(req.lifetime_seconds)).into());
        plain.insert("vct".into(), format!("{VCT_PREFIX}{}", doc.type_code).into());
        plain.insert("identifier".into(), doc.identifier.clone().into());
        plain.insert("type_code".into(), doc.type_code.clone().into());
        plain.insert("name".into(), doc.name.clone().into());
        plain.insert("issuer_name".into(), doc.issuer.name.clone().into());
        plain.insert("issue_date".into(), doc.issue_date.clone().into());
        plain.insert("valid_from".into(), doc.valid_from.clone().into());
        if let Some(u) = &doc.valid_until {
            plain.insert("valid_until".into(), u.clone().into());
        }
        plain.insert("scenario".into(), req.scenario.clone());
        plain.insert("cnf".into(), json!({ "jwk": holder_jwk }));
        let payload = issuer_payload(plain, &disclosures);
        let bytes = serde_json::to_vec(&payload).map_err(ServiceError::internal)?;
        let active = self.active_key(&doc.issuer.code).await?;
        let header = JwsHeader {
            alg: active.signer.algorithm().jws_alg().into(),
            kid: Some(active.key_id.clone()),
            typ: Some(SD_JWT_TYP.into()),
            iat: Some(now),
            x5c: None,
        };
        let input = jws::signing_input(&header, &bytes);
        let signature = {
            let (input, active) = (input.clone(), active.clone());
            crate::blocking(move || active.signer.sign(input.as_bytes())).await??
        };
        let mut sd_jwt = jws::assemble(&input, &signature);
        sd_jwt.push('~');
        for d in &disclosures {
            sd_jwt.push_str(&d.encoded);
            sd_jwt.push('~');
        }
        Ok(MadeDisclosure { sd_jwt, key_id: active.key_id.clone() })
    }
}

/// A disclosure per face field and per holder claim, each freshly salted.
fn disclosures(doc: &LicenceDocument) -> Result<Vec<Disclosure>, ServiceError> {
    let mut out = vec![
        Disclosure::new("licence_number", doc.licence_number.clone().into()),
        Disclosure::new("holder_name", doc.holder.name.clone().into()),
        Disclosure::new("holder_id_type", doc.holder.id_type_code.clone().into()),
        Disclosure::new("holder_id_number", doc.holder.id_number.clone().into()),
    ];
    for (k, v) in &doc.face_fields {
        if HOLDER_CLAIMS.contains(&k.as_str()) || k.starts_with('_') {
            return Err(ServiceError::internal(format!("face field {k:?} clashes with a holder claim")));
        }
        out.push(Disclosure::new(k, v.clone().into()));
    }
    Ok(out)
}
