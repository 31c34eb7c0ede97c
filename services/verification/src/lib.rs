//! The verification service (核验): checks that a licence is genuine (its
//! issuer key signed exactly this document) and currently in force, and says
//! which of the distinct outcomes applies — never just a boolean.

#![forbid(unsafe_code)]

pub mod certificates;
pub mod grpc;

use std::sync::Arc;

use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_clients::{IssuanceClient, SigningClient};
use zhengzhao_core::clock::Clock;
use zhengzhao_core::date::{format_date, read_date as parse_date};
use zhengzhao_core::record::started;
use zhengzhao_core::{LicenceDocument, LicenceId, LicenceRecord, LicenceStatus};
use zhengzhao_crypto::translog::{Checkpoint, LoggedEvent, check_inclusion, verify_checkpoint};
use zhengzhao_crypto::{Algorithm, Es256PublicKey, jws};
use zhengzhao_proto::ServiceError;

/// How many replacements a pending version's chain is followed through.
const MAX_CHAIN: usize = 16;

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    NotYetValid,
    Expired,
    Seized,
    Cancelled,
    Withdrawn,
    Revoked,
    NotInForce,
    SignatureInvalid,
    KeyUnknown,
    NotFound,
    Malformed,
    Mismatch,
    Superseded,
    ReportedLost,
    KeyCompromised,
    LogMismatch,
    CertificateInvalid,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 18] = [
        Outcome::Valid,
        Outcome::NotYetValid,
        Outcome::Expired,
        Outcome::Seized,
        Outcome::Cancelled,
        Outcome::Withdrawn,
        Outcome::Revoked,
        Outcome::NotInForce,
        Outcome::SignatureInvalid,
        Outcome::KeyUnknown,
        Outcome::NotFound,
        Outcome::Malformed,
        Outcome::Mismatch,
        Outcome::Superseded,
        Outcome::ReportedLost,
        Outcome::KeyCompromised,
        Outcome::LogMismatch,
        Outcome::CertificateInvalid,
    ];

    /// Counts one verification with this outcome
    /// (`zhengzhao_verifications_total{outcome}`, the name with `_` for spaces).
    pub fn count(self) {
        COUNTED[self as usize].inc();
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::NotYetValid => "not yet valid",
            Outcome::Expired => "expired",
            Outcome::Seized => "seized",
            Outcome::Cancelled => "cancelled",
            Outcome::Withdrawn => "withdrawn",
            Outcome::Revoked => "revoked",
            Outcome::NotInForce => "not in force",
            Outcome::SignatureInvalid => "signature invalid",
            Outcome::KeyUnknown => "key unknown",
            Outcome::NotFound => "not found",
            Outcome::Malformed => "malformed",
            Outcome::Mismatch => "mismatch",
            Outcome::Superseded => "superseded",
            Outcome::ReportedLost => "reported lost",
            Outcome::KeyCompromised => "key compromised",
            Outcome::LogMismatch => "log mismatch",
            Outcome::CertificateInvalid => "certificate invalid",
        }
    }
}

/// One counter per outcome, in [`Outcome::ALL`]'s order (which is the
/// declaration order, so `outcome as usize` indexes it).
static COUNTED: std::sync::LazyLock<Vec<prometheus::IntCounter>> = std::sync::LazyLock::new(|| {
    Outcome::ALL
        .iter()
        .map(|o| {
            zhengzhao_telemetry::domain::DOMAIN.verifications.with_label_values(&[o.name().replace(' ', "_").as_str()])
        })
        .collect()
});

/// The result of one verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub identifier: String,
    pub status: Option<LicenceStatus>,
    pub key_id: String,
    pub detail: String,
    pub checked_at: OffsetDateTime,
    /// When asked for: the transparency-log proof the verdict was checked against.
    pub log: Option<LogProof>,
    /// With [`Outcome::CertificateInvalid`]: the certificate problem.
    pub certificate: Option<zhengzhao_crypto::x509::CertProblem>,
}

/// A licence's logged events proven against a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LogProof {
    pub checkpoint: Checkpoint,
    pub events: Vec<LoggedEvent>,
    pub library_jwk: serde_json::Value,
    /// Whether the caller may see the leaves themselves (they name actors
    /// and reasons); otherwise only leaf hashes and audit paths are shown.
    pub leaves_visible: bool,
}

impl Verdict {
    fn new(outcome: Outcome, identifier: &str, key_id: &str, detail: impl Into<String>) -> Self {
        Verdict {
            outcome,
            identifier: identifier.to_owned(),
            status: None,
            key_id: key_id.to_owned(),
            detail: detail.into(),
            checked_at: OffsetDateTime::now_utc(),
            log: None,
            certificate: None,
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The verification service.
pub struct Verification {
    issuance: IssuanceClient,
    signing: SigningClient,
    /// "Today", for validity.
    clock: Clock,
    /// Which CAs vouch for issuer keys, if any are required to.
    certificates: certificates::Certificates,
}

impl std::fmt::Debug for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verification(..)")
    }
}

impl Verification {
    /// `certificates`: the trust anchors and CRLs issuer keys' certificates
    /// are checked against (none configured: not checked).
    pub fn new(
        issuance: IssuanceClient,
        signing: SigningClient,
        clock: Clock,
        certificates: certificates::Certificates,
    ) -> Arc<Self> {
        // Every outcome's series is on /metrics from the start.
        std::sync::LazyLock::force(&COUNTED);
        Arc::new(Verification { issuance, signing, clock, certificates })
    }

    /// Verifies the licence the library holds under `identifier`; with
    /// `include_proof`, also checks (and returns) the proof that its events,
    /// as the library now holds them, are in the transparency log.
    pub async fn verify_identifier(
        &self,
        who: &Principal,
        identifier: &str,
        include_proof: bool,
    ) -> Result<Verdict, ServiceError> {
        authorize(who, &Action::Verify)?;
        LicenceId::parse_held("identifier", identifier)?;
        // A proof is checked against the primary's log, so the licence is
        // read there too; a plain verdict may come from a read replica.
        let read = if include_proof {
            self.issuance.get(identifier).await
        } else {
            self.issuance.get_lagging(identifier).await
        };
        let licence = match read {
            Ok(l) => l,
            Err(ServiceError::NotFound(_)) => {
                return Ok(Verdict::new(
                    Outcome::NotFound,
                    identifier,
                    "",
                    "the library holds no licence with this identifier",
                ));
            }
            Err(e) => return Err(e),
        };
        let jws = licence.jws.clone();
        let mut verdict = self.check(&jws, Some(licence.clone())).await?;
        if include_proof && verdict.status.is_some() {
            let visible = authorize(who, &Action::ReadLicence { issuer: &licence.issuer_code }).is_ok();
            self.check_log(&mut verdict, licence, visible).await?;
        }
        Ok(verdict)
    }

    /// Proves `licence`'s events against the latest checkpoint. An event
    /// appended between reading the licence and the checkpoint can make the
    /// two disagree, so a mismatch is checked once more with fresh reads.
    async fn check_log(
        &self,
        verdict: &mut Verdict,
        mut licence: LicenceRecord,
        leaves_visible: bool,
    ) -> Result<(), ServiceError> {
        for attempt in 0..2 {
            let (signed, jwk) = self.issuance.checkpoint().await?;
            let library = Es256PublicKey::from_jwk(&jwk).map_err(ServiceError::internal)?;
            let checkpoint = verify_checkpoint(&signed, &library).map_err(ServiceError::internal)?;
            let events = self.issuance.inclusion_proof(&licence.identifier, checkpoint.tree_size).await?;
            let checked =
                check_inclusion(&checkpoint, &licence.identifier, &licence.jws, licence.stored_status.name(), &events);
            verdict.log = Some(LogProof { checkpoint, events, library_jwk: jwk, leaves_visible });
            match checked {
                Ok(()) => return Ok(()),
                Err(why) if attempt == 1 => {
                    verdict.outcome = Outcome::LogMismatch;
                    verdict.detail = format!("the transparency log contradicts the library's records: {why}");
                }
                Err(_) => licence = self.issuance.get(&licence.identifier).await?,
            }
        }
        Ok(())
    }

    /// Verifies a submitted JWS and the current status of the licence it carries.
    pub async fn verify_document(&self, who: &Principal, compact: &str) -> Result<Verdict, ServiceError> {
        authorize(who, &Action::Verify)?;
        if compact.trim().is_empty() {
            return Err(ServiceError::invalid("jws", "required"));
        }
        self.check(compact, None).await
    }

    async fn check(&self, compact: &str, held: Option<LicenceRecord>) -> Result<Verdict, ServiceError> {
        let parsed = match jws::parse(compact) {
            Ok(p) => p,
            Err(e) => return Ok(Verdict::new(Outcome::Malformed, "", "", format!("not a JWS: {e}"))),
        };
        let key_id = parsed.header.kid.clone().unwrap_or_default();
        let Some(alg) = Algorithm::from_jws_alg(&parsed.header.alg) else {
            return Ok(Verdict::new(
                Outcome::Malformed,
                "",
                &key_id,
                format!("unsupported algorithm {:?}: ES256 or SM2SM3", parsed.header.alg),
            ));
        };
        let document = match LicenceDocument::from_json(&parsed.payload) {
            Ok(d) => d,
            Err(e) => {
                return Ok(Verdict::new(
                    Outcome::Malformed,
                    "",
                    &key_id,
                    format!("payload is not a licence document: {e}"),
                ));
            }
        };
        let identifier = document.identifier.clone();
        if key_id.is_empty() {
            return Ok(Verdict::new(Outcome::Malformed, &identifier, "", "the JWS header names no key (kid)"));
        }
        let keys = match zhengzhao_core::Uscc::parse(&document.issuer.code) {
            Ok(_) => self.signing.verifying_keys(Some(&document.issuer.code)).await?,
            Err(_) => Default::default(),
        };
        let Some(found) = keys.find(&key_id) else {
            return Ok(Verdict::new(
                Outcome::KeyUnknown,
                &identifier,
                &key_id,
                "the library knows no such key of the document's issuer",
            ));
        };
        let key = &found.record;
        if key.algorithm != alg {
            return Ok(Verdict::new(
                Outcome::SignatureInvalid,
                &identifier,
                &key_id,
                format!("the JWS says {alg} but key {key_id} is {}", key.algorithm),
            ));
        }
        let public = found.public.as_ref().map_err(ServiceError::internal)?;
        if !public.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
            return Ok(Verdict::new(
                Outcome::SignatureInvalid,
                &identifier,
                &key_id,
                "the signature does not verify under the issuer's key",
            ));
        }
        let signed_at = parsed.header.iat.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
        if key.distrusts(signed_at) {
            let since = key.compromised_since.map(rfc3339).unwrap_or_default();
            let when = signed_at.map_or_else(|| "at an unstated time".to_owned(), |t| format!("at {}", rfc3339(t)));
            return Ok(Verdict::new(
                Outcome::KeyCompromised,
                &identifier,
                &key_id,
                format!("signed {when} by a key compromised since {since}: not to be relied on"),
            ));
        }
        if let Err(problem) =
            self.certificates.check(parsed.header.x5c.as_deref(), &key.jwk, public, &key.issuer_code, signed_at)
        {
            let mut v = Verdict::new(
                Outcome::CertificateInvalid,
                &identifier,
                &key_id,
                format!("genuinely signed, but the key's certificate does not vouch for it: {problem}"),
            );
            v.certificate = Some(problem);
            return Ok(v);
        }
        let held = match held {
            Some(h) => h,
            None => match self.issuance.get_lagging(&identifier).await {
                Ok(l) => l,
                Err(ServiceError::NotFound(_)) | Err(ServiceError::Invalid(_)) => {
                    return Ok(Verdict::new(
                        Outcome::NotFound,
                        &identifier,
                        &key_id,
                        "genuinely signed, but the library holds no such licence",
                    ));
                }
                Err(e) => return Err(e),
            },
        };
        // The library stores documents only in their canonical form (issuance
        // and import canonicalise them, the city refuses a district's that is
        // not), so a payload equal to the held document is canonical too.
        if parsed.payload != held.document_json.as_bytes() {
            return Ok(Verdict::new(
                Outcome::Mismatch,
                &identifier,
                &key_id,
                "differs from the licence the library holds under this identifier",
            ));
        }
        let status = held.status;
        let not_started = parse_date(&document.valid_from).map(|from| from > self.clock.today()).unwrap_or(false);
        if held.awaiting_successor() {
            return self.awaiting_successor(&held, &identifier, &key_id).await;
        }
        let ended = held.valid_until.is_some_and(|end| end < self.clock.today());
        let end = document.valid_until.clone().unwrap_or_default();
        let (outcome, mut detail) = match status {
            LicenceStatus::Valid if held.reported_lost => {
                (Outcome::ReportedLost, "reported lost by its holder".to_owned())
            }
            LicenceStatus::Valid if not_started => {
                (Outcome::NotYetValid, format!("valid from {}", document.valid_from))
            }
            LicenceStatus::Valid if held.last_check.as_ref().is_some_and(|c| c.invalidates) => (
                Outcome::NotInForce,
                "not in force: its last annual check failed, and for its type that suspends it until one passes"
                    .to_owned(),
            ),
            LicenceStatus::Valid => (Outcome::Valid, "genuine and in force".to_owned()),
            LicenceStatus::Superseded => (
                Outcome::Superseded,
                format!("replaced by {}", held.superseded_by.clone().unwrap_or_else(|| "a newer version".into())),
            ),
            LicenceStatus::Expired => (Outcome::Expired, format!("validity ended {end}")),
            // Past its end, a seized licence is expired; the seizure is noted.
            LicenceStatus::Seized if ended => (Outcome::Expired, format!("validity ended {end}; also seized")),
            LicenceStatus::Seized => (Outcome::Seized, "temporarily seized".to_owned()),
            LicenceStatus::Cancelled => (Outcome::Cancelled, "cancelled by its issuer".to_owned()),
            LicenceStatus::Withdrawn => (Outcome::Withdrawn, "withdrawn by its issuer".to_owned()),
            LicenceStatus::Revoked => (Outcome::Revoked, "revoked by its issuer".to_owned()),
            other => (Outcome::NotInForce, format!("status {other}")),
        };
        if matches!(outcome, Outcome::Valid | Outcome::Expired | Outcome::Seized | Outcome::NotInForce) {
            if held.mortgaged {
                detail.push_str("; mortgaged");
            }
            if let Some(check) = held.last_check.as_ref().filter(|c| c.failed()) {
                let what = if check.kind == zhengzhao_core::LifecycleAction::Inspect { "inspection" } else { "review" };
                detail.push_str(&format!("; its last annual {what} failed ({})", check.result));
            }
        }
        let mut v = Verdict::new(outcome, &identifier, &key_id, detail);
        v.status = Some(status);
        Ok(v)
    }

    /// A changed or renewed version before its successor takes effect: in
    /// force exactly while the successor is itself in good standing, so that
    /// at every moment one version of the licence verifies as valid.
    async fn awaiting_successor(
        &self,
        held: &LicenceRecord,
        identifier: &str,
        key_id: &str,
    ) -> Result<Verdict, ServiceError> {
        let successor_id = held.superseded_by.clone().unwrap_or_default();
        let from = held.successor_from.map(format_date).unwrap_or_default();
        // Every later version must still be waiting to take effect, and the
        // current one at the end of the chain in good standing.
        let today = self.clock.today();
        let mut successor = self.issuance.get(&successor_id).await?;
        let mut none_started = !started(&successor.document_json, today);
        for _ in 0..MAX_CHAIN {
            match successor.superseded_by.clone() {
                Some(next) => {
                    successor = self.issuance.get(&next).await?;
                    none_started &= !started(&successor.document_json, today);
                }
                None => break,
            }
        }
        let standing = none_started
            && successor.superseded_by.is_none()
            && successor.stored_status == LicenceStatus::Valid
            && !successor.reported_lost;
        let successor_id = successor.identifier.clone();
        let mut v = if standing {
            let mortgaged = if held.mortgaged || successor.mortgaged { "; mortgaged" } else { "" };
            Verdict::new(
                Outcome::Valid,
                identifier,
                key_id,
                format!("genuine and in force; replaced by {successor_id}, which takes effect on {from}{mortgaged}"),
            )
        } else {
            let state = zhengzhao_core::LicenceState {
                status: successor.stored_status,
                lost: successor.reported_lost,
                mortgaged: successor.mortgaged,
            };
            Verdict::new(
                Outcome::Superseded,
                identifier,
                key_id,
                if none_started {
                    format!("replaced by {successor_id}, which is {state}")
                } else {
                    format!("replaced by {successor_id}, whose validity has begun")
                },
            )
        };
        v.status = Some(if standing { LicenceStatus::Valid } else { LicenceStatus::Superseded });
        Ok(v)
    }
}
