//! The transparency log on the wire: checkpoints and logged events with
//! their audit paths (`issuance.v1`).

use zhengzhao_crypto::translog::{Checkpoint, LogLeaf, LoggedEvent};

use super::timestamp;
use crate::ServiceError;
use crate::issuance::v1 as pb;

impl From<&Checkpoint> for pb::Checkpoint {
    fn from(c: &Checkpoint) -> Self {
        pb::Checkpoint {
            origin: c.origin.clone(),
            tree_size: c.tree_size,
            root_hash: c.root_hash.to_vec(),
            timestamp: Some(timestamp(c.timestamp)),
            jws: c.jws.clone(),
        }
    }
}

impl From<&LoggedEvent> for pb::LoggedEvent {
    fn from(e: &LoggedEvent) -> Self {
        pb::LoggedEvent {
            leaf_index: e.leaf.log_index,
            leaf: e.leaf.to_bytes(),
            audit_path: e.audit_path.iter().map(|h| h.to_vec()).collect(),
            leaf_hash: e.leaf.hash().to_vec(),
        }
    }
}

/// A logged event proven by its leaf hash alone: for callers who may not
/// read the licence's history (no actor, reason or details).
pub fn logged_event_hash_only(e: &LoggedEvent) -> pb::LoggedEvent {
    pb::LoggedEvent { leaf: Vec::new(), ..pb::LoggedEvent::from(e) }
}

/// A logged event as received; the leaf must be well-formed and name its index.
impl TryFrom<pb::LoggedEvent> for LoggedEvent {
    type Error = ServiceError;

    fn try_from(e: pb::LoggedEvent) -> Result<Self, ServiceError> {
        let leaf: LogLeaf =
            serde_json::from_slice(&e.leaf).map_err(|x| ServiceError::invalid("leaf", x.to_string()))?;
        if leaf.log_index != e.leaf_index {
            return Err(ServiceError::invalid("leaf_index", "differs from the leaf's own log_index"));
        }
        let audit_path = e
            .audit_path
            .into_iter()
            .map(|h| h.try_into().map_err(|_| ServiceError::invalid("audit_path", "hashes are 32 bytes")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LoggedEvent { leaf, audit_path })
    }
}
