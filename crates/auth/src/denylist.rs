//! Revoked bearer tokens, by token ID (`jti`), each kept until the token
//! would have expired (plus the clock leeway), then pruned. One list per
//! process, shared by every verifier in it; the catalog service holds the
//! durable copy and the other processes refresh theirs from it.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::token::LEEWAY;

/// The tokens this process refuses although they are genuine and unexpired.
#[derive(Debug, Default)]
pub struct Denylist {
    /// Token ID to the time (seconds since the epoch) the token expires.
    entries: RwLock<HashMap<String, i64>>,
}

fn leeway() -> i64 {
    i64::try_from(LEEWAY.as_secs()).unwrap_or(i64::MAX)
}

impl Denylist {
    /// Refuses the token `token_id`, which expires at `expires_at`.
    pub fn revoke(&self, token_id: &str, expires_at: i64) {
        let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = entries.entry(token_id.to_owned()).or_insert(expires_at);
        *until = (*until).max(expires_at);
    }

    /// Whether `token_id` is revoked as of `now` (seconds since the epoch).
    pub fn is_revoked(&self, token_id: &str, now: i64) -> bool {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token_id)
            .is_some_and(|until| until.saturating_add(leeway()) > now)
    }

    /// Drops entries for tokens that have expired (with the leeway) by `now`.
    pub fn prune(&self, now: i64) {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, until| until.saturating_add(leeway()) > now);
    }

    /// How many tokens are on the list.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_until_the_token_expires_then_are_pruned() {
        let d = Denylist::default();
        d.revoke("a", 1000);
        d.revoke("b", 5000);
        assert!(d.is_revoked("a", 999));
        assert!(d.is_revoked("a", 1059), "the verifier accepts a minute past exp, so the list keeps it as long");
        assert!(!d.is_revoked("a", 1060));
        assert!(!d.is_revoked("c", 0));
        d.prune(2000);
        assert_eq!(d.len(), 1);
        assert!(d.is_revoked("b", 2000));
        // Revoking again never shortens the entry.
        d.revoke("b", 3000);
        assert!(d.is_revoked("b", 4000));
    }
}
