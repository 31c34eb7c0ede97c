//! Licence status and the lifecycle state machine, as one transition table.

use std::fmt;

use time::Date;

/// Licence status; the numbers are the common GB/T 36903 status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LicenceStatus {
    /// 01 有效
    Valid,
    /// 02 暂扣
    Seized,
    /// 03 撤销
    Withdrawn,
    /// 04 注销
    Cancelled,
    /// 05 失效
    Expired,
    /// 06 转出
    TransferredOut,
    /// 07 吊销
    Revoked,
    /// 99 其他
    Other,
}

impl LicenceStatus {
    pub const ALL: [LicenceStatus; 8] = [
        LicenceStatus::Valid,
        LicenceStatus::Seized,
        LicenceStatus::Withdrawn,
        LicenceStatus::Cancelled,
        LicenceStatus::Expired,
        LicenceStatus::TransferredOut,
        LicenceStatus::Revoked,
        LicenceStatus::Other,
    ];

    /// The two-digit status code.
    pub fn code(self) -> &'static str {
        match self {
            LicenceStatus::Valid => "01",
            LicenceStatus::Seized => "02",
            LicenceStatus::Withdrawn => "03",
            LicenceStatus::Cancelled => "04",
            LicenceStatus::Expired => "05",
            LicenceStatus::TransferredOut => "06",
            LicenceStatus::Revoked => "07",
            LicenceStatus::Other => "99",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            LicenceStatus::Valid => "valid",
            LicenceStatus::Seized => "seized",
            LicenceStatus::Withdrawn => "withdrawn",
            LicenceStatus::Cancelled => "cancelled",
            LicenceStatus::Expired => "expired",
            LicenceStatus::TransferredOut => "transferred_out",
            LicenceStatus::Revoked => "revoked",
            LicenceStatus::Other => "other",
        }
    }

    /// Status as of `today`: a valid licence past its end date reads as expired,
    /// whether or not the expiry has been recorded yet.
    pub fn effective(self, valid_until: Option<Date>, today: Date) -> Self {
        match (self, valid_until) {
            (LicenceStatus::Valid, Some(end)) if today > end => LicenceStatus::Expired,
            _ => self,
        }
    }
}

impl fmt::Display for LicenceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// A lifecycle action an issuer records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleAction {
    /// 新发: the first version of a licence.
    Issue,
    /// 注销
    Cancel,
    /// 撤销
    Withdraw,
    /// 吊销
    Revoke,
}

impl LifecycleAction {
    pub fn name(self) -> &'static str {
        match self {
            LifecycleAction::Issue => "issue",
            LifecycleAction::Cancel => "cancel",
            LifecycleAction::Withdraw => "withdraw",
            LifecycleAction::Revoke => "revoke",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [LifecycleAction::Issue, LifecycleAction::Cancel, LifecycleAction::Withdraw, LifecycleAction::Revoke]
            .into_iter()
            .find(|a| a.name() == s)
    }
}

use LicenceStatus as S;
use LifecycleAction as A;

/// The one transition table: (status before, action, status after). `None`
/// before means the licence does not exist yet.
pub const TRANSITIONS: &[(Option<LicenceStatus>, LifecycleAction, LicenceStatus)] = &[
    (None, A::Issue, S::Valid),
    (Some(S::Valid), A::Cancel, S::Cancelled),
    (Some(S::Seized), A::Cancel, S::Cancelled),
    (Some(S::Expired), A::Cancel, S::Cancelled),
    (Some(S::Valid), A::Withdraw, S::Withdrawn),
    (Some(S::Seized), A::Withdraw, S::Withdrawn),
    (Some(S::Expired), A::Withdraw, S::Withdrawn),
    (Some(S::Valid), A::Revoke, S::Revoked),
    (Some(S::Seized), A::Revoke, S::Revoked),
];

/// An action the table does not allow from the current status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a licence whose status is {}", from.map(|s| s.to_string()).unwrap_or_else(|| "absent".into()))]
pub struct TransitionError {
    pub from: Option<LicenceStatus>,
    pub action: &'static str,
}

/// The status after `action` from `from` (the effective status), or why not.
pub fn transition(from: Option<LicenceStatus>, action: LifecycleAction) -> Result<LicenceStatus, TransitionError> {
    TRANSITIONS
        .iter()
        .find(|(f, a, _)| *f == from && *a == action)
        .map(|(_, _, to)| *to)
        .ok_or(TransitionError { from, action: action.name() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn table_decides() {
        assert_eq!(transition(None, A::Issue), Ok(S::Valid));
        assert_eq!(transition(Some(S::Valid), A::Cancel), Ok(S::Cancelled));
        let e = transition(Some(S::Cancelled), A::Cancel).unwrap_err();
        assert_eq!(e.to_string(), "cannot cancel a licence whose status is cancelled (04)");
        assert!(transition(Some(S::Valid), A::Issue).is_err());
        assert!(transition(None, A::Cancel).is_err());
        assert!(transition(Some(S::Revoked), A::Revoke).is_err());
    }

    #[test]
    fn no_terminal_status_has_a_way_out() {
        for terminal in [S::Cancelled, S::Withdrawn, S::Revoked] {
            assert!(TRANSITIONS.iter().all(|(f, _, _)| *f != Some(terminal)), "{terminal}");
        }
    }

    #[test]
    fn table_is_a_function() {
        for (i, (f, a, _)) in TRANSITIONS.iter().enumerate() {
            assert!(TRANSITIONS[i + 1..].iter().all(|(f2, a2, _)| (f2, a2) != (f, a)));
        }
    }

    #[test]
    fn expiry_is_derived_at_read_time() {
        let end = Some(date!(2026 - 06 - 30));
        assert_eq!(S::Valid.effective(end, date!(2026 - 06 - 30)), S::Valid);
        assert_eq!(S::Valid.effective(end, date!(2026 - 07 - 01)), S::Expired);
        assert_eq!(S::Valid.effective(None, date!(2099 - 01 - 01)), S::Valid);
        assert_eq!(S::Cancelled.effective(end, date!(2027 - 01 - 01)), S::Cancelled);
    }

    #[test]
    fn codes_round_trip() {
        for s in S::ALL {
            assert_eq!(S::from_code(s.code()), Some(s));
        }
    }
}
