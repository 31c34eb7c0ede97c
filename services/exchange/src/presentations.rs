//! Presentations (art. 16): a holder shows a licence on an approved mobile
//! end to staff who check it against the library.
//!
//! A presentation is an SD-JWT the issuer's key signed (made on demand by
//! the signing service from the licence as issued, bound to the front end's
//! key and naming its scenario), the disclosures the scenario needs and no
//! others, and a key-binding JWT the front end's key signs over a nonce the
//! library handed out, the scenario's audience and the time. It is good for
//! [`PRESENTATION_LIFETIME`] and for one verification.
//!
//! [`check_offline`] is everything that needs no library: signature,
//! digests, holder binding, the scenario's claims, freshness. Online
//! ([`Exchange::verify_presentation`]) adds that the scenario is approved,
//! the nonce was handed out for this licence, scenario and front end, is
//! used for the first time, and that the licence is in force now.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::LicenceStatus;
use zhengzhao_crypto::published::PublicKeyRecord;
use zhengzhao_crypto::sdjwt::{self, Presentation};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::now;

use crate::holders::{holder_of_token, holder_record};
use crate::scenarios::{Scenario, ScenarioState};
use crate::usage::{Caller, document_of, with_licence};
use crate::usagelog::{Job, holder_digest};
use crate::{Exchange, holder_rows as rows};

/// How long a presentation is good for.
pub const PRESENTATION_LIFETIME: time::Duration = time::Duration::minutes(5);
/// Clock skew allowed on the key binding's time.
pub const SKEW: time::Duration = time::Duration::seconds(60);

/// What a front end gets to make a presentation with.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `<issuer-jwt>~<the scenario's disclosures>~`.
    pub sd_jwt: String,
    pub nonce: String,
    pub audience: String,
    pub expires_at: OffsetDateTime,
    pub disclosed: Vec<String>,
}

/// Which check a presentation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    Format,
    Signature,
    Disclosure,
    Scenario,
    Binding,
    Expired,
    Replayed,
    Status,
}

impl Failed {
    pub fn as_str(self) -> &'static str {
        match self {
            Failed::Format => "format",
            Failed::Signature => "signature",
            Failed::Disclosure => "disclosure",
            Failed::Scenario => "scenario",
            Failed::Binding => "binding",
            Failed::Expired => "expired",
            Failed::Replayed => "replayed",
            Failed::Status => "status",
        }
    }
}

/// The answer about a presentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PresentationVerdict {
    pub valid: bool,
    /// Why not, in plain words (empty when valid).
    pub reason: String,
    pub failed: Option<Failed>,
    pub identifier: String,
    pub licence_name: String,
    pub issuer_name: String,
    pub scenario_id: i64,
    pub scenario_name: String,
    pub disclosed: BTreeMap<String, String>,
    /// The licence's status now (online only).
    pub status: Option<LicenceStatus>,
    pub front_end_id: i64,
    pub presented_at: Option<OffsetDateTime>,
    /// Offline: single use and current status were not checked.
    pub offline: bool,
    /// The nonce, for the single-use check.
    pub nonce: String,
}

impl PresentationVerdict {
    fn fail(mut self, failed: Failed, reason: impl Into<String>) -> Self {
        self.valid = false;
        self.failed = Some(failed);
        self.reason = reason.into();
        self
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Everything that needs no library: the issuer's signature (with `keys`,
/// the published key history), the digests, the key binding by the key the
/// issuer named, the audience, the disclosed claims against the scenario
/// the issuer signed, and freshness as of `at`.
pub fn check_offline(presentation: &str, keys: &[PublicKeyRecord], at: OffsetDateTime) -> PresentationVerdict {
    let mut v = PresentationVerdict { offline: true, ..Default::default() };
    let verified = sdjwt::verify(presentation, |header, claims| {
        let kid = header.kid.as_deref().ok_or("the issuer-signed JWT names no key")?;
        let iss = claims.get("iss").and_then(|i| i.as_str()).unwrap_or_default();
        let key = keys
            .iter()
            .find(|k| k.key_id == kid && k.issuer_code == iss)
            .ok_or_else(|| format!("key {kid} is not a published key of issuer {iss}"))?;
        let signed_at = header.iat.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        if key.distrusts(signed_at) {
            return Err(format!("key {kid} was compromised when this was signed"));
        }
        zhengzhao_crypto::IssuerPublicKey::from_jwk(&key.jwk).map_err(|e| e.to_string())
    });
    let verified = match verified {
        Ok(x) => x,
        Err(e @ sdjwt::SdJwtError::Shape(_)) => return v.fail(Failed::Format, e.to_string()),
        Err(e @ sdjwt::SdJwtError::IssuerSignature(_)) => return v.fail(Failed::Signature, e.to_string()),
        Err(e @ (sdjwt::SdJwtError::UnknownDisclosure(_) | sdjwt::SdJwtError::Disclosure { .. })) => {
            return v.fail(Failed::Disclosure, e.to_string());
        }
        Err(e @ sdjwt::SdJwtError::KeyBinding(_)) => return v.fail(Failed::Binding, e.to_string()),
    };
    let c = &verified.claims;
    let s = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    v.identifier = s("identifier");
    v.licence_name = s("name");
    v.issuer_name = s("issuer_name");
    v.disclosed = verified.disclosed.iter().map(|(k, x)| (k.clone(), text(x))).collect();
    let scenario = c.get("scenario");
    v.scenario_id = scenario.and_then(|x| x.get("id")).and_then(serde_json::Value::as_i64).unwrap_or_default();
    v.scenario_name = scenario.and_then(|x| x.get("name")).and_then(|x| x.as_str()).unwrap_or_default().to_owned();
    let fields: Vec<String> =
        scenario.and_then(|x| x.get("fields")).and_then(|f| serde_json::from_value(f.clone()).ok()).unwrap_or_default();
    if v.scenario_id <= 0 || fields.is_empty() {
        return v.fail(Failed::Format, "the issuer-signed JWT names no scenario");
    }
    let sid = v.scenario_id;
    let mut shown: Vec<&String> = verified.disclosed.keys().collect();
    shown.sort();
    let mut wanted: Vec<&String> = fields.iter().collect();
    wanted.sort();
    if let Some(extra) = shown.iter().find(|k| !fields.contains(k)) {
        return v.fail(Failed::Disclosure, format!("discloses {extra}, which scenario {sid} does not allow"));
    }
    if shown != wanted {
        return v.fail(Failed::Disclosure, format!("does not disclose every claim scenario {sid} needs"));
    }
    let Some(kb) = verified.key_binding else {
        return v.fail(Failed::Binding, "no key-binding JWT: a presentation must be bound by the front end's key");
    };
    if kb.nonce.is_empty()
        || kb.nonce.len() > 64
        || !kb.nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return v.fail(Failed::Binding, "the key binding's nonce is not one the library hands out");
    }
    v.nonce.clone_from(&kb.nonce);
    if kb.aud != format!("zhengzhao-scenario:{sid}") {
        return v.fail(Failed::Binding, format!("bound for {:?}, not scenario {sid}", kb.aud));
    }
    let presented = OffsetDateTime::from_unix_timestamp(kb.iat).ok();
    v.presented_at = presented;
    let exp = c.get("exp").and_then(serde_json::Value::as_i64).unwrap_or(i64::MIN);
    match presented {
        None => return v.fail(Failed::Binding, "the key binding's time is not a time"),
        Some(t) if t > at + SKEW => return v.fail(Failed::Expired, "presented in the future: check the clocks"),
        Some(t) if at - t > PRESENTATION_LIFETIME || at.unix_timestamp() > exp => {
            return v.fail(Failed::Expired, "presented more than 5 minutes ago");
        }
        Some(_) => {}
    }
    v.valid = true;
    v
}

impl Exchange {
    /// Prepares a presentation of one of the holder's licences in an approved scenario.
    pub async fn present(&self, caller: &Caller, identifier: &str, scenario_id: i64) -> Result<Prepared, ServiceError> {
        let h = holder_of_token(&caller.principal)?;
        let fe = self.vouching_front_end(h).await?;
        if !fe.scenario_ids.contains(&scenario_id) {
            return Err(ServiceError::PermissionDenied(format!(
                "front end {} is not registered to serve scenario {scenario_id}",
                fe.id
            )));
        }
        let scenario = self.approved_scenario(scenario_id).await?;
        let licence = self.own_licence(h, identifier).await?;
        if !scenario.type_codes.contains(&licence.type_code) {
            return Err(ServiceError::FailedPrecondition(format!(
                "scenario {scenario_id} is not for licence type {}",
                licence.type_code
            )));
        }
        if licence.status != LicenceStatus::Valid {
            return Err(ServiceError::FailedPrecondition(format!(
                "licence {} is {}: only a licence in force can be presented",
                licence.identifier,
                licence.status.name()
            )));
        }
        let jwk = serde_json::to_string(&fe.jwk).map_err(ServiceError::internal)?;
        let scenario_json = scenario.claim().to_string();
        let lifetime = u32::try_from(PRESENTATION_LIFETIME.whole_seconds()).unwrap_or(300);
        let (full, _kid) = self.signing.selective_disclosure(&licence.jws, &jwk, &scenario_json, lifetime).await?;
        let p = Presentation::parse(&full)
            .map_err(ServiceError::internal)?
            .disclosing(|n| scenario.fields.iter().any(|f| f == n));
        let disclosed: Vec<String> = p.disclosures.iter().map(|d| d.name.clone()).collect();
        let nonce = zhengzhao_crypto::b64url(&zhengzhao_crypto::random_bytes::<18>());
        let at = now();
        let expires_at = at + PRESENTATION_LIFETIME;
        let digest = holder_digest(&h.id_type, &h.id_number);
        {
            let mut conn = self.db.pool.acquire().await?;
            rows::insert_presentation(
                &mut conn,
                &nonce,
                &licence.identifier,
                scenario_id,
                fe.id,
                &digest,
                at,
                expires_at,
            )
            .await?;
        }
        let doc = document_of(&licence)?;
        let r =
            with_licence(holder_record(caller, h, &format!("present in scenario {scenario_id}")), &licence, Some(&doc));
        self.writer.write(Job::Records(vec![r])).await?;
        tracing::info!(identifier = %licence.identifier, scenario = scenario_id, front_end = fe.id, "presentation prepared");
        Ok(Prepared { sd_jwt: p.without_key_binding(), nonce, audience: scenario.audience(), expires_at, disclosed })
    }

    async fn approved_scenario(&self, id: i64) -> Result<Scenario, ServiceError> {
        let mut conn = self.db.pool.acquire().await?;
        match rows::load_scenario(&mut conn, id).await? {
            Some(s) if s.state == ScenarioState::Approved => Ok(s),
            Some(s) => {
                Err(ServiceError::FailedPrecondition(format!("scenario {id} is {}, not approved", s.state.as_str())))
            }
            None => Err(ServiceError::NotFound(format!("no scenario {id}"))),
        }
    }

    /// Verifies a presentation online (see the module documentation). A
    /// well-formed request always gets a verdict; only a first, otherwise
    /// valid verification uses the presentation up.
    pub async fn verify_presentation(&self, who: &Principal, text: &str) -> Result<PresentationVerdict, ServiceError> {
        authorize(who, &Action::VerifyPresentation)?;
        if text.len() > sdjwt::MAX_PRESENTATION_LEN {
            return Err(ServiceError::invalid(
                "presentation",
                format!("at most {} bytes", sdjwt::MAX_PRESENTATION_LEN),
            ));
        }
        let keys = self.signing.public_keys(None).await?;
        let at = now();
        let mut v = check_offline(text, &keys, at);
        v.offline = false;
        if !v.valid {
            return Ok(v);
        }
        let mut conn = self.db.pool.acquire().await?;
        match rows::load_scenario(&mut conn, v.scenario_id).await? {
            Some(s) if s.state == ScenarioState::Approved => {}
            _ => {
                let why = format!("scenario {} is not an approved scenario", v.scenario_id);
                return Ok(v.fail(Failed::Scenario, why));
            }
        }
        let Some(p) = rows::load_presentation(&mut conn, &v.nonce).await? else {
            return Ok(v.fail(Failed::Binding, "the library handed out no such nonce"));
        };
        v.front_end_id = p.front_end_id;
        let bound_key = Presentation::parse(text).ok().and_then(|p| {
            zhengzhao_crypto::jws::parse(&p.issuer_jwt).ok().and_then(|j| {
                serde_json::from_slice::<serde_json::Value>(&j.payload).ok().map(|c| c["cnf"]["jwk"].clone())
            })
        });
        let fe = rows::load_front_end(&mut conn, p.front_end_id).await?;
        if p.identifier != v.identifier
            || p.scenario_id != v.scenario_id
            || fe.as_ref().map(|f| &f.jwk) != bound_key.as_ref()
        {
            return Ok(v.fail(Failed::Binding, "the nonce was handed out for another licence, scenario or front end"));
        }
        if !fe.as_ref().is_some_and(|f| f.active) {
            return Ok(v.fail(Failed::Binding, format!("front end {} is suspended", p.front_end_id)));
        }
        if !rows::use_presentation(&mut conn, &v.nonce, &who.actor(), at).await? {
            let when = rows::load_presentation(&mut conn, &v.nonce).await?.and_then(|p| p.used_at);
            let reason = match when {
                Some(t) => format!(
                    "already verified at {} (a presentation is good for one use)",
                    zhengzhao_store::format_time(t)
                ),
                None => "already used".into(),
            };
            return Ok(v.fail(Failed::Replayed, reason));
        }
        drop(conn);
        match self.issuance.get(&v.identifier).await {
            Ok(l) => {
                v.status = Some(l.status);
                if l.status != LicenceStatus::Valid {
                    let why = format!("the licence is now {}", l.status.name());
                    return Ok(v.fail(Failed::Status, why));
                }
            }
            Err(ServiceError::NotFound(_)) => return Ok(v.fail(Failed::Status, "the library holds no such licence")),
            Err(e) => return Err(e),
        }
        tracing::info!(identifier = %v.identifier, scenario = v.scenario_id, by = %who.actor(), "presentation verified");
        Ok(v)
    }
}
