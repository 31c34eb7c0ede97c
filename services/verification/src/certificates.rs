//! Issuer certificates as a verifier checks them: with trust anchors
//! configured (`verification.trust_anchors`, and CRLs in
//! `verification.crls`), every signature's key must carry a chain from a
//! trusted CA that vouched for it at the signing time. Without anchors,
//! nothing here is checked (keys are trusted as the library publishes them).
//!
//! A chain is checked against the anchors and CRLs once and the result kept
//! (bounded); each signature then costs only a comparison of times.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zhengzhao_crypto::IssuerPublicKey;
use zhengzhao_crypto::x509::{CertProblem, Chain, ChainFacts, TrustAnchors};

/// Chains whose checks are kept.
const KEPT: usize = 1024;

/// A verifier's certificate policy.
pub struct Certificates {
    anchors: TrustAnchors,
    checked: quick_cache::sync::Cache<[u8; 32], Arc<Result<ChainFacts, CertProblem>>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("required", &!self.anchors.is_empty()).finish()
    }
}

impl Default for Certificates {
    fn default() -> Self {
        Certificates::new(TrustAnchors::default())
    }
}

impl Certificates {
    /// From the files `config` names; a stale CRL is logged, and still applied.
    pub fn from_config(config: &zhengzhao_config::VerificationConfig) -> Result<Self, String> {
        let read = |p: &std::path::PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let anchors = config
            .trust_anchors
            .iter()
            .map(|p| read(p).map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        let crls = config.crls.iter().map(read).collect::<Result<Vec<_>, _>>()?;
        if anchors.is_empty() && !crls.is_empty() {
            return Err("verification.crls given without verification.trust_anchors".into());
        }
        let anchors = TrustAnchors::new(&anchors, &crls).map_err(|e| format!("verification: {e}"))?;
        for stale in anchors.stale_crls(OffsetDateTime::now_utc()) {
            tracing::warn!(crl = %stale, "a certificate revocation list is past its next update: load a fresh one");
        }
        if !anchors.is_empty() {
            tracing::info!(
                anchors = config.trust_anchors.len(),
                crls = config.crls.len(),
                "issuer certificates required"
            );
        }
        Ok(Certificates::new(anchors))
    }

    pub fn new(anchors: TrustAnchors) -> Self {
        Certificates { anchors, checked: quick_cache::sync::Cache::new(KEPT) }
    }

    /// Whether keys must carry a certificate (anchors are configured).
    pub fn required(&self) -> bool {
        !self.anchors.is_empty()
    }

    /// Whether the chain the signature carries (`x5c` in its header) or,
    /// failing that, the one its key's JWK carries vouches for `key` of
    /// `issuer_code` at `signed_at`. A compromise revoking the key's
    /// published chain also holds against any other chain the signature
    /// carries for the same key.
    pub fn check(
        &self,
        header_x5c: Option<&[String]>,
        jwk: &serde_json::Value,
        key: &IssuerPublicKey,
        issuer_code: &str,
        signed_at: Option<OffsetDateTime>,
    ) -> Result<(), CertProblem> {
        if !self.required() {
            return Ok(());
        }
        let published: Option<Vec<String>> = jwk
            .get("x5c")
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
            .map_err(|_| CertProblem::Malformed("the key's published x5c is not a list of certificates".into()))?;
        let x5c = header_x5c.or(published.as_deref()).ok_or_else(|| {
            CertProblem::Missing(
                "the signing key carries no certificate from a CA, and this verifier requires one".into(),
            )
        })?;
        let signed_at = signed_at.ok_or_else(|| {
            CertProblem::Malformed("the signature states no time (iat) to check its certificate against".into())
        })?;
        if let Some(p) = published.as_deref().filter(|p| *p != x5c)
            && let Ok(facts) = self.facts(p, key, issuer_code).as_ref()
            && let Some(r) = facts.revoked.as_ref().filter(|r| r.from.is_none())
        {
            return Err(CertProblem::Revoked(format!("the key's published certificate: {}", r.detail)));
        }
        match self.facts(x5c, key, issuer_code).as_ref() {
            Ok(f) => f.check_at(signed_at),
            Err(p) => Err(p.clone()),
        }
    }

    fn facts(&self, x5c: &[String], key: &IssuerPublicKey, issuer_code: &str) -> Arc<Result<ChainFacts, CertProblem>> {
        let mut h = Sha256::new();
        h.update(key.algorithm().jws_alg().as_bytes());
        h.update([0]);
        h.update(key.sec1());
        h.update(issuer_code.as_bytes());
        h.update([0]);
        for c in x5c {
            h.update((c.len() as u64).to_be_bytes());
            h.update(c.as_bytes());
        }
        let id: [u8; 32] = h.finalize().into();
        if let Some(f) = self.checked.get(&id) {
            return f;
        }
        let facts = Arc::new(Chain::from_x5c(x5c).and_then(|chain| self.anchors.evaluate(&chain, key, issuer_code)));
        self.checked.insert(id, facts.clone());
        facts
    }
}
