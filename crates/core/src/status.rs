//! Licence status and the lifecycle state machine, as one transition table.
//!
//! A licence's state is its status plus two encumbrances that can hold in
//! more than one status: reported lost (挂失) and mortgaged (抵押).

use std::fmt;

use time::Date;

/// Licence status. `code` gives the common GB/T 36903 status code.
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
    /// 05 失效 (validity ended)
    Expired,
    /// 06 转出
    TransferredOut,
    /// 07 吊销
    Revoked,
    /// 99 其他
    Other,
    /// Replaced by a newer version after a change or renewal; reported as 05 失效.
    Superseded,
}

impl LicenceStatus {
    pub const ALL: [LicenceStatus; 9] = [
        LicenceStatus::Valid,
        LicenceStatus::Seized,
        LicenceStatus::Withdrawn,
        LicenceStatus::Cancelled,
        LicenceStatus::Expired,
        LicenceStatus::TransferredOut,
        LicenceStatus::Revoked,
        LicenceStatus::Other,
        LicenceStatus::Superseded,
    ];

    /// The two-digit GB/T 36903 status code.
    pub fn code(self) -> &'static str {
        match self {
            LicenceStatus::Valid => "01",
            LicenceStatus::Seized => "02",
            LicenceStatus::Withdrawn => "03",
            LicenceStatus::Cancelled => "04",
            LicenceStatus::Expired | LicenceStatus::Superseded => "05",
            LicenceStatus::TransferredOut => "06",
            LicenceStatus::Revoked => "07",
            LicenceStatus::Other => "99",
        }
    }

    /// The status a code names (05 reads as expired).
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name stored and shown.
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
            LicenceStatus::Superseded => "superseded",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
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

/// A licence's state: status and encumbrances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LicenceState {
    pub status: LicenceStatus,
    /// 挂失: reported lost by the holder.
    pub lost: bool,
    /// 抵押: mortgaged.
    pub mortgaged: bool,
}

impl LicenceState {
    pub fn new(status: LicenceStatus) -> Self {
        LicenceState { status, lost: false, mortgaged: false }
    }
}

impl fmt::Display for LicenceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if self.lost {
            f.write_str(", reported lost")?;
        }
        if self.mortgaged {
            f.write_str(", mortgaged")?;
        }
        Ok(())
    }
}

/// A lifecycle event an issuer (or the library) records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LifecycleAction {
    /// 新发: the first version of a licence.
    Issue,
    /// 变更: a new version replaces this one.
    Change,
    /// 延续: a new version with a new validity period replaces this one.
    Renew,
    /// 年审, with a result and the next due date.
    Review,
    /// 年检, with a result and the next due date.
    Inspect,
    /// 挂失
    ReportLoss,
    /// 解除挂失
    WithdrawLoss,
    /// 抵押
    Mortgage,
    /// 解除抵押
    Release,
    /// 暂扣
    Seize,
    /// 发还 (return after seizure)
    Return,
    /// 注销
    Cancel,
    /// 撤销
    Withdraw,
    /// 吊销
    Revoke,
    /// 失效: the validity period ended (recorded by the library).
    Expire,
}

impl LifecycleAction {
    pub const ALL: [LifecycleAction; 15] = [
        LifecycleAction::Issue,
        LifecycleAction::Change,
        LifecycleAction::Renew,
        LifecycleAction::Review,
        LifecycleAction::Inspect,
        LifecycleAction::ReportLoss,
        LifecycleAction::WithdrawLoss,
        LifecycleAction::Mortgage,
        LifecycleAction::Release,
        LifecycleAction::Seize,
        LifecycleAction::Return,
        LifecycleAction::Cancel,
        LifecycleAction::Withdraw,
        LifecycleAction::Revoke,
        LifecycleAction::Expire,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LifecycleAction::Issue => "issue",
            LifecycleAction::Change => "change",
            LifecycleAction::Renew => "renew",
            LifecycleAction::Review => "review",
            LifecycleAction::Inspect => "inspect",
            LifecycleAction::ReportLoss => "report_loss",
            LifecycleAction::WithdrawLoss => "withdraw_loss",
            LifecycleAction::Mortgage => "mortgage",
            LifecycleAction::Release => "release",
            LifecycleAction::Seize => "seize",
            LifecycleAction::Return => "return",
            LifecycleAction::Cancel => "cancel",
            LifecycleAction::Withdraw => "withdraw",
            LifecycleAction::Revoke => "revoke",
            LifecycleAction::Expire => "expire",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The operation code seen in deployed systems, where there is one.
    pub fn operation_code(self) -> Option<&'static str> {
        match self {
            LifecycleAction::Issue => Some("01"),
            LifecycleAction::Renew => Some("02"),
            LifecycleAction::Seize => Some("03"),
            LifecycleAction::Expire => Some("04"),
            LifecycleAction::Cancel => Some("05"),
            LifecycleAction::Return => Some("06"),
            LifecycleAction::Change => Some("08"),
            _ => None,
        }
    }

    /// Whether the event replaces the licence by a new version.
    pub fn makes_new_version(self) -> bool {
        matches!(self, LifecycleAction::Change | LifecycleAction::Renew)
    }

    /// Whether the event carries a result and a next due date.
    pub fn is_periodic_check(self) -> bool {
        matches!(self, LifecycleAction::Review | LifecycleAction::Inspect)
    }
}

/// An encumbrance a rule tests or changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encumbrance {
    Lost,
    Mortgaged,
}

/// One row of the transition table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub action: LifecycleAction,
    /// Statuses the action is allowed from.
    pub from: &'static [LicenceStatus],
    /// An encumbrance that must hold (`true`) or must not (`false`).
    pub requires: Option<(Encumbrance, bool)>,
    /// The status after; `None` keeps it.
    pub to: Option<LicenceStatus>,
    /// An encumbrance set (`true`) or cleared (`false`).
    pub sets: Option<(Encumbrance, bool)>,
}

use Encumbrance::{Lost, Mortgaged};
use LicenceStatus as S;
use LifecycleAction as A;

const fn rule(
    action: LifecycleAction,
    from: &'static [LicenceStatus],
    requires: Option<(Encumbrance, bool)>,
    to: Option<LicenceStatus>,
    sets: Option<(Encumbrance, bool)>,
) -> Rule {
    Rule { action, from, requires, to, sets }
}

/// The one transition table. Issue is the only action allowed on a licence
/// that does not exist yet, and it leads to valid.
pub const TRANSITIONS: &[Rule] = &[
    rule(A::Change, &[S::Valid], Some((Lost, false)), Some(S::Superseded), None),
    rule(A::Renew, &[S::Valid, S::Expired], Some((Lost, false)), Some(S::Superseded), None),
    rule(A::Review, &[S::Valid], None, None, None),
    rule(A::Inspect, &[S::Valid], None, None, None),
    rule(A::ReportLoss, &[S::Valid, S::Seized], Some((Lost, false)), None, Some((Lost, true))),
    rule(A::WithdrawLoss, &[S::Valid, S::Seized], Some((Lost, true)), None, Some((Lost, false))),
    rule(A::Mortgage, &[S::Valid], Some((Mortgaged, false)), None, Some((Mortgaged, true))),
    rule(A::Release, &[S::Valid, S::Seized, S::Expired], Some((Mortgaged, true)), None, Some((Mortgaged, false))),
    rule(A::Seize, &[S::Valid], None, Some(S::Seized), None),
    rule(A::Return, &[S::Seized], None, Some(S::Valid), None),
    rule(A::Cancel, &[S::Valid, S::Seized, S::Expired], None, Some(S::Cancelled), None),
    rule(A::Withdraw, &[S::Valid, S::Seized, S::Expired], None, Some(S::Withdrawn), None),
    rule(A::Revoke, &[S::Valid, S::Seized], None, Some(S::Revoked), None),
    rule(A::Expire, &[S::Valid], None, Some(S::Expired), None),
];

/// An action the table does not allow from the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a licence whose status is {}", from.map(|s| s.to_string()).unwrap_or_else(|| "absent".into()))]
pub struct TransitionError {
    pub from: Option<LicenceState>,
    pub action: &'static str,
}

fn holds(state: &LicenceState, e: Encumbrance) -> bool {
    match e {
        Lost => state.lost,
        Mortgaged => state.mortgaged,
    }
}

/// The state after `action` from `from` (with the effective status), or why not.
pub fn transition(from: Option<LicenceState>, action: LifecycleAction) -> Result<LicenceState, TransitionError> {
    let refuse = || TransitionError { from, action: action.name() };
    let Some(state) = from else {
        return if action == A::Issue { Ok(LicenceState::new(S::Valid)) } else { Err(refuse()) };
    };
    let r = TRANSITIONS
        .iter()
        .find(|r| {
            r.action == action
                && r.from.contains(&state.status)
                && r.requires.is_none_or(|(e, v)| holds(&state, e) == v)
        })
        .ok_or_else(refuse)?;
    let mut next = state;
    if let Some(to) = r.to {
        next.status = to;
    }
    match r.sets {
        Some((Lost, v)) => next.lost = v,
        Some((Mortgaged, v)) => next.mortgaged = v,
        None => {}
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn st(status: LicenceStatus) -> Option<LicenceState> {
        Some(LicenceState::new(status))
    }

    #[test]
    fn table_decides() {
        assert_eq!(transition(None, A::Issue).map(|s| s.status), Ok(S::Valid));
        assert_eq!(transition(st(S::Valid), A::Cancel).map(|s| s.status), Ok(S::Cancelled));
        let e = transition(st(S::Cancelled), A::Cancel).unwrap_err();
        assert_eq!(e.to_string(), "cannot cancel a licence whose status is cancelled (04)");
        assert!(transition(st(S::Valid), A::Issue).is_err());
        assert!(transition(None, A::Cancel).is_err());
        assert!(transition(st(S::Revoked), A::Revoke).is_err());
        assert_eq!(transition(st(S::Valid), A::Seize).map(|s| s.status), Ok(S::Seized));
        assert_eq!(transition(st(S::Seized), A::Return).map(|s| s.status), Ok(S::Valid));
        assert!(transition(st(S::Valid), A::Return).is_err());
        assert_eq!(transition(st(S::Expired), A::Renew).map(|s| s.status), Ok(S::Superseded));
        assert!(transition(st(S::Superseded), A::Change).is_err());
    }

    #[test]
    fn encumbrances_come_and_go() {
        let lost = transition(st(S::Valid), A::ReportLoss).unwrap();
        assert!(lost.lost && lost.status == S::Valid);
        assert!(transition(Some(lost), A::ReportLoss).is_err());
        assert!(transition(Some(lost), A::Change).is_err(), "a lost licence is not changed");
        let e = transition(Some(lost), A::Change).unwrap_err();
        assert_eq!(e.to_string(), "cannot change a licence whose status is valid (01), reported lost");
        assert!(!transition(Some(lost), A::WithdrawLoss).unwrap().lost);
        assert!(transition(st(S::Valid), A::WithdrawLoss).is_err());
        let mortgaged = transition(st(S::Valid), A::Mortgage).unwrap();
        assert!(mortgaged.mortgaged);
        let seized = transition(Some(mortgaged), A::Seize).unwrap();
        assert!(seized.mortgaged && seized.status == S::Seized);
        assert!(!transition(Some(seized), A::Release).unwrap().mortgaged);
    }

    #[test]
    fn no_terminal_status_has_a_way_out() {
        for terminal in [S::Cancelled, S::Withdrawn, S::Revoked, S::Superseded] {
            for a in A::ALL {
                assert!(transition(st(terminal), a).is_err(), "{terminal} {a:?}");
            }
        }
    }

    #[test]
    fn table_is_a_function() {
        for a in A::ALL {
            for s in S::ALL {
                for lost in [false, true] {
                    for mortgaged in [false, true] {
                        let state = LicenceState { status: s, lost, mortgaged };
                        let matches = TRANSITIONS
                            .iter()
                            .filter(|r| {
                                r.action == a
                                    && r.from.contains(&s)
                                    && r.requires.is_none_or(|(e, v)| holds(&state, e) == v)
                            })
                            .count();
                        assert!(matches <= 1, "{a:?} from {state} matches {matches} rules");
                    }
                }
            }
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
    fn names_round_trip_and_codes_are_gbt() {
        for s in S::ALL {
            assert_eq!(S::from_name(s.name()), Some(s));
            assert_eq!(s.code().len(), 2);
        }
        for a in A::ALL {
            assert_eq!(A::from_name(a.name()), Some(a));
        }
        assert_eq!(S::from_code("05"), Some(S::Expired));
    }
}
