//! `zhengzhao audit --usage`: checks the exchange's usage log from the
//! outside. It fetches the current usage checkpoint, checks its signature
//! under the library's key as the signing service publishes it (the JWKS),
//! reads every record up to the checkpoint's size, rebuilds each leaf and
//! the Merkle root, and compares; given an earlier checkpoint, it also
//! checks that one's signature and that the log only grew since (RFC 6962
//! consistency proof). A record deleted, altered or reordered behind the
//! service's back fails the audit.

use tonic::service::Interceptor;
use tonic::transport::Channel;
use zhengzhao_crypto::merkle::{self, Hash};
use zhengzhao_exchange::usagelog::{UsageCheckpoint, UsageLeaf};
use zhengzhao_proto::exchange::v1 as pb;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;

type Exchange<I> = ExchangeServiceClient<tonic::service::interceptor::InterceptedService<Channel, I>>;
type Signing<I> = SigningServiceClient<tonic::service::interceptor::InterceptedService<Channel, I>>;

/// What a usage-log audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageAuditReport {
    pub from_size: Option<u64>,
    /// The current checkpoint (JWS), to keep for the next audit.
    pub current: String,
    pub current_size: u64,
    /// Every failure, one line each; empty means the audit passed.
    pub failures: Vec<String>,
}

impl UsageAuditReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Checks that `compact` is a usage-log checkpoint in form, without its
/// signature (the auditor's own saved file failing this is their input error).
pub fn read_usage_checkpoint(compact: &str) -> Result<UsageCheckpoint, String> {
    let compact = compact.trim();
    if compact.is_empty() {
        return Err("the file is empty, not a usage-log checkpoint".into());
    }
    UsageCheckpoint::read(compact)
}

/// Checks `c`'s signature under the library key it names (by `kid`) among
/// the published keys of the library (the issuer the origin names).
async fn check_signature<I: Interceptor + Clone>(signing: &mut Signing<I>, c: &UsageCheckpoint) -> Result<(), String> {
    let library = c
        .origin
        .strip_prefix("zhengzhao-usage/")
        .ok_or_else(|| format!("checkpoint origin {:?} is not a usage log's", c.origin))?;
    let parsed = zhengzhao_crypto::jws::parse(&c.jws).map_err(|e| format!("unreadable checkpoint: {e}"))?;
    let kid = parsed.header.kid.clone().unwrap_or_default();
    let keys = signing
        .list_public_keys(signing::ListPublicKeysRequest { issuer_code: library.to_owned() })
        .await
        .map_err(|s| format!("cannot read the library's public keys: {}", s.message()))?
        .into_inner()
        .keys;
    let key = keys.iter().find(|k| k.key_id == kid).ok_or_else(|| {
        format!("the checkpoint of size {} names key {kid:?}, which the library does not publish", c.tree_size)
    })?;
    let jwk: serde_json::Value = serde_json::from_str(&key.jwk_json).map_err(|e| format!("key {kid}: {e}"))?;
    let public = zhengzhao_crypto::IssuerPublicKey::from_jwk(&jwk).map_err(|e| format!("key {kid}: {e}"))?;
    if !public.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
        return Err(format!("the checkpoint of size {} does not verify under the library's key {kid}", c.tree_size));
    }
    Ok(())
}

/// Audits the usage log, from the earlier checkpoint `from` if given.
pub async fn audit_usage<I: Interceptor + Clone>(
    exchange: &mut Exchange<I>,
    signing: &mut Signing<I>,
    from: Option<&str>,
) -> anyhow::Result<UsageAuditReport> {
    let mut report = UsageAuditReport::default();
    let current = exchange
        .get_usage_checkpoint(pb::GetUsageCheckpointRequest {})
        .await?
        .into_inner()
        .checkpoint
        .ok_or_else(|| anyhow::anyhow!("the library returned no usage checkpoint"))?;
    let current = match UsageCheckpoint::read(&current.jws) {
        Ok(c) => c,
        Err(e) => {
            report.failures.push(format!("the current usage checkpoint: {e}"));
            return Ok(report);
        }
    };
    report.current.clone_from(&current.jws);
    report.current_size = current.tree_size;
    if let Err(e) = check_signature(signing, &current).await {
        report.failures.push(e);
    }
    // Every record up to the checkpoint, oldest first, rebuilt into leaves.
    let mut leaves: Vec<Hash> = Vec::with_capacity(usize::try_from(current.tree_size).unwrap_or(0));
    let mut token = String::new();
    'pages: loop {
        let page = exchange
            .list_usage_log(pb::ListUsageLogRequest {
                page_size: 500,
                page_token: token,
                oldest_first: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        for r in &page.records {
            if r.log_index >= current.tree_size {
                break 'pages;
            }
            if r.log_index != leaves.len() as u64 {
                report.failures.push(format!(
                    "usage record {} has leaf index {} where {} was due: records are missing or reordered",
                    r.id,
                    r.log_index,
                    leaves.len()
                ));
                return Ok(report);
            }
            let leaf = zhengzhao_exchange::grpc::record_from_wire(r)
                .map_err(|e| e.to_string())
                .and_then(|record| UsageLeaf::of(&record, r.log_index).hash());
            match leaf {
                Ok(h) => leaves.push(h),
                Err(e) => {
                    report.failures.push(format!("usage record {} cannot be rebuilt: {e}", r.id));
                    return Ok(report);
                }
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if leaves.len() as u64 != current.tree_size {
        report.failures.push(format!(
            "the log shows {} records but its checkpoint counts {}: records were deleted",
            leaves.len(),
            current.tree_size
        ));
    } else if merkle::root(&leaves) != current.root_hash {
        report.failures.push(format!(
            "the {} records rebuilt do not give the checkpoint's root: a record was altered",
            leaves.len()
        ));
    }
    if let Some(from) = from {
        let earlier = UsageCheckpoint::read(from.trim()).map_err(|e| anyhow::anyhow!("{e}"))?;
        report.from_size = Some(earlier.tree_size);
        if let Err(e) = check_signature(signing, &earlier).await {
            report.failures.push(format!("the earlier checkpoint: {e}"));
        }
        if earlier.tree_size > current.tree_size {
            report.failures.push(format!(
                "the log shrank: the earlier checkpoint counts {} records, the current one {}",
                earlier.tree_size, current.tree_size
            ));
        } else {
            let proof = exchange
                .get_usage_consistency_proof(pb::GetUsageConsistencyProofRequest {
                    first_tree_size: earlier.tree_size,
                    second_tree_size: current.tree_size,
                })
                .await?
                .into_inner()
                .hashes;
            let proof: Result<Vec<Hash>, _> = proof.into_iter().map(Hash::try_from).collect();
            let consistent = proof.is_ok_and(|p| {
                merkle::verify_consistency(
                    earlier.tree_size,
                    current.tree_size,
                    &earlier.root_hash,
                    &current.root_hash,
                    &p,
                )
            });
            if !consistent {
                report.failures.push(format!(
                    "the log of {} records is not an extension of the earlier {}: history was rewritten",
                    current.tree_size, earlier.tree_size
                ));
            }
        }
    }
    Ok(report)
}
