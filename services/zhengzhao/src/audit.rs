//! `zhengzhao audit`: checks a library's transparency log from the outside.
//! Given a checkpoint saved earlier, it fetches the current one, checks both
//! signatures under the library key, checks the log only grew (RFC 6962
//! consistency proof), and for each licence in a list checks that every event
//! the library now shows for it, and its signed document and status, are what
//! the log recorded (inclusion proofs). Any rewrite of history fails loudly.

use tonic::service::Interceptor;
use tonic::transport::Channel;
use zhengzhao_crypto::Es256PublicKey;
use zhengzhao_crypto::merkle::{self, Hash};
use zhengzhao_issuance::translog::{Checkpoint, check_inclusion, verify_checkpoint};
use zhengzhao_proto::issuance::v1 as pb;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;

/// What an audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// The checkpoint audited from.
    pub from_size: u64,
    /// The library's current checkpoint (JWS), to keep for the next audit.
    pub current: String,
    pub current_size: u64,
    /// Licences whose events were all proven.
    pub licences_checked: usize,
    /// Every failure, one line each; empty means the audit passed.
    pub failures: Vec<String>,
}

impl AuditReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Checks that `compact` is a checkpoint in form (a JWS of type
/// `zhengzhao-checkpoint` whose payload names an origin, a tree size, a root
/// hash and a time), without checking its signature. The auditor's own saved
/// checkpoint failing this is their input error, not the library's.
pub fn read_checkpoint(compact: &str) -> Result<(), String> {
    let compact = compact.trim();
    if compact.is_empty() {
        return Err("the file is empty, not a checkpoint".into());
    }
    let parsed = zhengzhao_crypto::jws::parse(compact).map_err(|e| format!("not a checkpoint: {e}"))?;
    let typ = parsed.header.typ.as_deref().unwrap_or("none");
    if typ != zhengzhao_issuance::translog::CHECKPOINT_TYP {
        return Err(format!("not a checkpoint: a JWS of type {typ:?}"));
    }
    let body: serde_json::Value =
        serde_json::from_slice(&parsed.payload).map_err(|e| format!("not a checkpoint: unreadable payload: {e}"))?;
    let has = |k: &str, number: bool| body.get(k).is_some_and(|v| if number { v.is_u64() } else { v.is_string() });
    if !(has("origin", false) && has("tree_size", true) && has("root_hash", false) && has("timestamp", false)) {
        return Err("not a checkpoint: the payload lacks origin, tree_size, root_hash or timestamp".into());
    }
    Ok(())
}

fn hashes(list: Vec<Vec<u8>>) -> Result<Vec<Hash>, String> {
    list.into_iter().map(|h| h.try_into().map_err(|_| "a proof hash is not 32 bytes".to_owned())).collect()
}

/// Audits the library behind `client` from the checkpoint `from` (a JWS), for
/// the licences `identifiers`. `pinned` is the library key the auditor trusts;
/// without it the key the library serves is used (and reported).
pub async fn audit<I: Interceptor>(
    client: &mut IssuanceServiceClient<tonic::service::interceptor::InterceptedService<Channel, I>>,
    from: &str,
    identifiers: &[String],
    pinned: Option<&serde_json::Value>,
) -> anyhow::Result<AuditReport> {
    let mut report = AuditReport::default();
    let current = client.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner();
    let served: serde_json::Value = serde_json::from_str(&current.library_jwk_json)?;
    let library_jwk = match pinned {
        Some(p) => {
            if (p.get("x"), p.get("y")) != (served.get("x"), served.get("y")) {
                report.failures.push("the library signs checkpoints with a different key than the pinned one".into());
            }
            p.clone()
        }
        None => served,
    };
    let key = Es256PublicKey::from_jwk(&library_jwk).map_err(|e| anyhow::anyhow!("library key: {e}"))?;
    let old = match verify_checkpoint(from.trim(), &key) {
        Ok(c) => c,
        Err(e) => {
            report.failures.push(format!("the earlier checkpoint: {e}"));
            return Ok(report);
        }
    };
    report.from_size = old.tree_size;
    let new_jws = current.checkpoint.map(|c| c.jws).unwrap_or_default();
    let new = match verify_checkpoint(&new_jws, &key) {
        Ok(c) => c,
        Err(e) => {
            report.failures.push(format!("the current checkpoint: {e}"));
            return Ok(report);
        }
    };
    report.current = new_jws;
    report.current_size = new.tree_size;
    check_consistency(client, &old, &new, &mut report).await?;
    for id in identifiers {
        match check_licence(client, &new, id).await {
            Ok(()) => report.licences_checked += 1,
            Err(e) => report.failures.push(format!("{id}: {e}")),
        }
    }
    Ok(report)
}

async fn check_consistency<I: Interceptor>(
    client: &mut IssuanceServiceClient<tonic::service::interceptor::InterceptedService<Channel, I>>,
    old: &Checkpoint,
    new: &Checkpoint,
    report: &mut AuditReport,
) -> anyhow::Result<()> {
    if old.origin != new.origin {
        report.failures.push(format!("the log is now {:?}, not {:?}", new.origin, old.origin));
        return Ok(());
    }
    if new.tree_size < old.tree_size {
        report
            .failures
            .push(format!("the log shrank from {} to {} leaves: history was removed", old.tree_size, new.tree_size));
        return Ok(());
    }
    let proof = client
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            first_tree_size: old.tree_size,
            second_tree_size: new.tree_size,
        })
        .await;
    let proof = match proof {
        Ok(p) => hashes(p.into_inner().hashes).map_err(anyhow::Error::msg)?,
        Err(s) => {
            report.failures.push(format!(
                "no consistency proof from {} to {}: {}",
                old.tree_size,
                new.tree_size,
                s.message()
            ));
            return Ok(());
        }
    };
    if !merkle::verify_consistency(old.tree_size, new.tree_size, &old.root_hash, &new.root_hash, &proof) {
        report.failures.push(format!(
            "the log at {} leaves is not an extension of the log at {} leaves: history was rewritten",
            new.tree_size, old.tree_size
        ));
    }
    Ok(())
}

async fn check_licence<I: Interceptor>(
    client: &mut IssuanceServiceClient<tonic::service::interceptor::InterceptedService<Channel, I>>,
    checkpoint: &Checkpoint,
    identifier: &str,
) -> Result<(), String> {
    let licence = client
        .get_licence(pb::GetLicenceRequest { identifier: identifier.to_owned(), ..Default::default() })
        .await
        .map_err(|s| format!("cannot read the licence: {}", s.message()))?
        .into_inner()
        .licence
        .ok_or("the library returned no licence")?;
    let licence = zhengzhao_core::LicenceRecord::try_from(licence).map_err(|e| e.to_string())?;
    let proof = client
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            identifier: identifier.to_owned(),
            tree_size: checkpoint.tree_size,
        })
        .await
        .map_err(|s| format!("no inclusion proof: {}", s.message()))?
        .into_inner();
    let events = proof
        .events
        .into_iter()
        .map(zhengzhao_crypto::translog::LoggedEvent::try_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unreadable proof: {e}"))?;
    check_inclusion(checkpoint, identifier, &licence.jws, licence.stored_status.name(), &events)
}
