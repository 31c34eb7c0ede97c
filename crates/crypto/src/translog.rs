//! The checks of a transparency log (RFC 6962/9162) anyone can run: a
//! leaf is the RFC 8785 canonical JSON of [`LogLeaf`] (an event as stored
//! plus the SHA-256 of the licence's JWS); a checkpoint is a JWS over the
//! tree's size, root and time; [`verify_checkpoint`] and [`check_inclusion`]
//! say whether a licence's logged events vouch for what a library holds.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zhengzhao_core::date::{format_time, parse_time};
use zhengzhao_core::{EventDetails, EventRecord};

use crate::merkle::{self, Hash};
use crate::{Es256PublicKey, b64url, b64url_decode, jws};

/// The JWS `typ` of a checkpoint.
pub const CHECKPOINT_TYP: &str = "zhengzhao-checkpoint";

/// One leaf: an event and the licence document it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLeaf {
    pub log_index: u64,
    pub identifier: String,
    pub kind: String,
    pub status_after: String,
    pub actor: String,
    pub reason: String,
    pub details: EventDetails,
    pub backfill: bool,
    pub occurred_at: String,
    pub recorded_at: String,
    /// Lower-case hex SHA-256 of the licence's JWS compact serialisation.
    pub jws_sha256: String,
}

impl LogLeaf {
    /// The leaf of `event` at `log_index`, about the licence signed as `jws`.
    pub fn of(event: &EventRecord, log_index: u64, jws: &str) -> Self {
        LogLeaf {
            log_index,
            identifier: event.identifier.clone(),
            kind: event.kind.name().to_owned(),
            status_after: event.status_after.name().to_owned(),
            actor: event.actor.clone(),
            reason: event.reason.clone(),
            details: event.details.clone(),
            backfill: event.backfill,
            occurred_at: format_time(event.occurred_at),
            recorded_at: format_time(event.recorded_at),
            jws_sha256: jws_digest(jws),
        }
    }

    /// The leaf's bytes: RFC 8785 canonical JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, booleans and integers always canonicalises.
        zhengzhao_core::canonical_json(self).unwrap_or_default()
    }

    /// `SHA-256(0x00 || bytes)`.
    pub fn hash(&self) -> Hash {
        merkle::leaf_hash(&self.to_bytes())
    }
}

/// Lower-case hex SHA-256 of a JWS.
pub fn jws_digest(jws: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(jws.as_bytes()))
}

/// A signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub timestamp: OffsetDateTime,
    /// The JWS (ES256, library key) over the canonical JSON of the above.
    pub jws: String,
}

/// What a checkpoint signs, as RFC 8785 canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointBody {
    pub origin: String,
    pub tree_size: u64,
    /// Base64url of the root hash.
    pub root_hash: String,
    pub timestamp: String,
}

impl CheckpointBody {
    /// The body of a checkpoint of `origin`'s log at `tree_size`.
    pub fn new(origin: &str, tree_size: u64, root: &Hash, timestamp: OffsetDateTime) -> Self {
        CheckpointBody {
            origin: origin.to_owned(),
            tree_size,
            root_hash: b64url(root),
            timestamp: format_time(timestamp),
        }
    }

    /// The body of a checkpoint, unverified (one the log itself stored).
    pub fn read_unverified(compact: &str) -> Option<Self> {
        jws::parse(compact).ok().and_then(|p| serde_json::from_slice(&p.payload).ok())
    }
}

/// JWS type of a witness's cosignature of another log's checkpoint.
pub const COSIGNATURE_TYP: &str = "zhengzhao-cosignature";

/// What a witness (the city) signs when it has verified a district
/// checkpoint: the checkpoint's body, the witness's own log origin and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cosignature {
    pub origin: String,
    pub tree_size: u64,
    /// Base64url of the root hash.
    pub root_hash: String,
    pub timestamp: String,
    pub witness: String,
    pub cosigned_at: String,
}

impl Cosignature {
    pub fn of(c: &Checkpoint, witness: &str, at: OffsetDateTime) -> Self {
        Cosignature {
            origin: c.origin.clone(),
            tree_size: c.tree_size,
            root_hash: b64url(&c.root_hash),
            timestamp: format_time(c.timestamp),
            witness: witness.to_owned(),
            cosigned_at: format_time(at),
        }
    }
}

/// Checks a cosignature under the witness's log key and reads it.
pub fn verify_cosignature(compact: &str, witness: &Es256PublicKey) -> Result<Cosignature, String> {
    let parsed = jws::parse(compact).map_err(|e| format!("not a cosignature: {e}"))?;
    if parsed.header.alg != "ES256" || parsed.header.typ.as_deref() != Some(COSIGNATURE_TYP) {
        return Err("not a cosignature: wrong alg or typ".into());
    }
    if !witness.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
        return Err("the cosignature does not verify under the witness's key".into());
    }
    serde_json::from_slice(&parsed.payload).map_err(|e| format!("unreadable cosignature: {e}"))
}

/// Checks a checkpoint's signature under the library key and reads it.
pub fn verify_checkpoint(compact: &str, library: &Es256PublicKey) -> Result<Checkpoint, String> {
    let parsed = jws::parse(compact).map_err(|e| format!("not a checkpoint: {e}"))?;
    if parsed.header.alg != "ES256" || parsed.header.typ.as_deref() != Some(CHECKPOINT_TYP) {
        return Err("not a checkpoint: wrong alg or typ".into());
    }
    if !library.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
        return Err("the checkpoint's signature does not verify under the library key".into());
    }
    let body: CheckpointBody =
        serde_json::from_slice(&parsed.payload).map_err(|e| format!("unreadable checkpoint: {e}"))?;
    let root: Hash = b64url_decode(&body.root_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("unreadable checkpoint: root_hash is not 32 base64url bytes")?;
    let timestamp = parse_time(&body.timestamp).ok_or("unreadable checkpoint: timestamp")?;
    Ok(Checkpoint {
        origin: body.origin,
        tree_size: body.tree_size,
        root_hash: root,
        timestamp,
        jws: compact.to_owned(),
    })
}

/// An event with its leaf and audit path against a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub leaf: LogLeaf,
    pub audit_path: Vec<Hash>,
}

/// Why a licence's log entries do not vouch for what the library holds.
pub fn check_inclusion(
    checkpoint: &Checkpoint,
    identifier: &str,
    jws: &str,
    stored_status: &str,
    events: &[LoggedEvent],
) -> Result<(), String> {
    let Some(last) = events.last() else {
        return Err(format!("no event of {identifier} is in the log at size {}", checkpoint.tree_size));
    };
    let digest = jws_digest(jws);
    for e in events {
        let leaf = &e.leaf;
        if leaf.identifier != identifier {
            return Err(format!("log entry {} is about {}, not {identifier}", leaf.log_index, leaf.identifier));
        }
        if leaf.jws_sha256 != digest {
            return Err(format!("log entry {} logged a different signed document", leaf.log_index));
        }
        if !merkle::verify_inclusion(
            leaf.log_index,
            checkpoint.tree_size,
            &leaf.hash(),
            &e.audit_path,
            &checkpoint.root_hash,
        ) {
            return Err(format!(
                "event {} ({}) as the library now holds it is not in the log at size {}",
                leaf.log_index, leaf.kind, checkpoint.tree_size
            ));
        }
    }
    // Expiry is derived from the signed validity end date until the expiry
    // job records it, so "expired" may follow a logged "valid".
    let derived_expiry = stored_status == "expired" && last.leaf.status_after == "valid";
    if last.leaf.status_after != stored_status && !derived_expiry {
        return Err(format!(
            "the library records status {stored_status} but the last logged event says {}",
            last.leaf.status_after
        ));
    }
    Ok(())
}
