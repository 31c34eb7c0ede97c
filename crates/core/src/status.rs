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
    /// 补发: a new version replaces one reported lost.
    Replace,
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
    pub const ALL: [LifecycleAction; 16] = [
        LifecycleAction::Issue,
        LifecycleAction::Change,
        LifecycleAction::Renew,
        LifecycleAction::Replace,
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
            LifecycleAction::Replace => "replace",
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

    /// The CLI's verb for the action (`withdraw-loss`), as messages name it.
    pub fn verb(self) -> String {
        self.name().replace('_', "-")
    }

    /// Whether the event replaces the licence by a new version.
    pub fn makes_new_version(self) -> bool {
        matches!(self, LifecycleAction::Change | LifecycleAction::Renew | LifecycleAction::Replace)
    }

    /// Whether the event lifts an encumbrance: such events reach the current
    /// version when they name one it replaced (a bank releases the pledge it
    /// registered, whatever version the licence is at now).
    pub fn lifts_encumbrance(self) -> bool {
        matches!(self, LifecycleAction::Release | LifecycleAction::WithdrawLoss | LifecycleAction::Return)
    }

    /// Whether the event carries a result and a next due date.
    pub fn is_periodic_check(self) -> bool {
        matches!(self, LifecycleAction::Review | LifecycleAction::Inspect)
    }
}

/// Whether a review or inspection result is a failure: 不合格, or `fail`
/// / `failed` (any case); every other result counts as passed.
pub fn check_failed(result: &str) -> bool {
    let r = result.trim();
    r == "不合格" || r.eq_ignore_ascii_case("fail") || r.eq_ignore_ascii_case("failed")
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
    /// Encumbrances that must hold (`true`) or must not (`false`).
    pub requires: &'static [(Encumbrance, bool)],
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
    requires: &'static [(Encumbrance, bool)],
    to: Option<LicenceStatus>,
    sets: Option<(Encumbrance, bool)>,
) -> Rule {
    Rule { action, from, requires, to, sets }
}

/// The one transition table. Issue is the only action allowed on a licence
/// that does not exist yet, and it leads to valid. A mortgage carries over
/// to the version a change, renewal or replacement makes (the issuance
/// service copies it); seized and lost licences are neither changed nor
/// renewed (return or withdraw the loss first, or replace a lost one).
pub const TRANSITIONS: &[Rule] = &[
    rule(A::Change, &[S::Valid], &[(Lost, false)], Some(S::Superseded), None),
    rule(A::Renew, &[S::Valid], &[(Lost, false)], Some(S::Superseded), None),
    // An expired licence may be renewed even if it expired while reported lost.
    rule(A::Renew, &[S::Expired], &[], Some(S::Superseded), None),
    rule(A::Replace, &[S::Valid], &[(Lost, true)], Some(S::Superseded), None),
    rule(A::Review, &[S::Valid], &[], None, None),
    rule(A::Inspect, &[S::Valid], &[], None, None),
    rule(A::ReportLoss, &[S::Valid, S::Seized], &[(Lost, false)], None, Some((Lost, true))),
    rule(A::WithdrawLoss, &[S::Valid, S::Seized, S::Expired], &[(Lost, true)], None, Some((Lost, false))),
    rule(A::Mortgage, &[S::Valid], &[(Mortgaged, false), (Lost, false)], None, Some((Mortgaged, true))),
    rule(A::Release, &[S::Valid, S::Seized, S::Expired], &[(Mortgaged, true)], None, Some((Mortgaged, false))),
    rule(A::Seize, &[S::Valid], &[], Some(S::Seized), None),
    rule(A::Return, &[S::Seized], &[], Some(S::Valid), None),
    // Cancellation (at the holder's request) waits for the pledge to be
    // released; an administrator may force it (recorded as forced).
    rule(A::Cancel, &[S::Valid, S::Seized, S::Expired], &[(Mortgaged, false)], Some(S::Cancelled), None),
    rule(A::Withdraw, &[S::Valid, S::Seized, S::Expired], &[], Some(S::Withdrawn), None),
    rule(A::Revoke, &[S::Valid, S::Seized], &[], Some(S::Revoked), None),
    rule(A::Expire, &[S::Valid], &[], Some(S::Expired), None),
];

/// An action the table does not allow from the current state, saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TransitionError {
    pub from: Option<LicenceState>,
    pub action: &'static str,
    pub reason: String,
}

fn holds(state: &LicenceState, e: Encumbrance) -> bool {
    match e {
        Lost => state.lost,
        Mortgaged => state.mortgaged,
    }
}

/// Why a requirement that failed matters, in the words a user expects.
fn unmet(e: Encumbrance, required: bool) -> &'static str {
    match (e, required) {
        (Mortgaged, true) => "it is not mortgaged",
        (Mortgaged, false) => "it is mortgaged: release it first",
        (Lost, true) => "it is not reported lost",
        (Lost, false) => "it is reported lost: withdraw the loss or replace it first",
    }
}

/// The state after `action` from `from` (with the effective status), or why not.
pub fn transition(from: Option<LicenceState>, action: LifecycleAction) -> Result<LicenceState, TransitionError> {
    apply(from, action, false)
}

/// As [`transition`], ignoring the encumbrances a rule requires: an
/// administrator's forced cancellation of a mortgaged licence.
pub fn transition_forced(from: Option<LicenceState>, action: LifecycleAction) -> Result<LicenceState, TransitionError> {
    apply(from, action, true)
}

fn apply(from: Option<LicenceState>, action: LifecycleAction, forced: bool) -> Result<LicenceState, TransitionError> {
    let refuse = |reason: String| TransitionError { from, action: action.name(), reason };
    let by_status = || {
        let state = from.map(|s| s.to_string()).unwrap_or_else(|| "absent".into());
        refuse(format!("cannot {} a licence whose status is {state}", action.verb()))
    };
    let Some(state) = from else {
        return if action == A::Issue { Ok(LicenceState::new(S::Valid)) } else { Err(by_status()) };
    };
    let candidates: Vec<&Rule> =
        TRANSITIONS.iter().filter(|r| r.action == action && r.from.contains(&state.status)).collect();
    let met = |r: &&&Rule| forced || r.requires.iter().all(|&(e, v)| holds(&state, e) == v);
    let r = match candidates.iter().find(met) {
        Some(r) => *r,
        None => {
            let first_unmet = candidates
                .iter()
                .flat_map(|r| r.requires.iter())
                .find(|&&(e, v)| holds(&state, e) != v)
                .map(|&(e, v)| unmet(e, v));
            return Err(match first_unmet {
                Some(why) => refuse(format!("cannot {} this licence: {why}", action.verb())),
                None => by_status(),
            });
        }
    };
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
        assert_eq!(
            e.to_string(),
            "cannot change this licence: it is reported lost: withdraw the loss or replace it first"
        );
        assert!(!transition(Some(lost), A::WithdrawLoss).unwrap().lost);
        assert!(transition(st(S::Valid), A::WithdrawLoss).is_err());
        let mortgaged = transition(st(S::Valid), A::Mortgage).unwrap();
        assert!(mortgaged.mortgaged);
        let seized = transition(Some(mortgaged), A::Seize).unwrap();
        assert!(seized.mortgaged && seized.status == S::Seized);
        assert!(!transition(Some(seized), A::Release).unwrap().mortgaged);
    }

    #[test]
    fn encumbrances_hold_back_what_they_must() {
        let mortgaged = transition(st(S::Valid), A::Mortgage).unwrap();
        let e = transition(Some(mortgaged), A::Cancel).unwrap_err();
        assert_eq!(e.to_string(), "cannot cancel this licence: it is mortgaged: release it first");
        let forced = transition_forced(Some(mortgaged), A::Cancel).unwrap();
        assert!(forced.status == S::Cancelled && forced.mortgaged, "forced, the pledge stays on record");
        assert!(transition_forced(st(S::Revoked), A::Cancel).is_err(), "forcing never revives an ended licence");
        let lost = transition(st(S::Valid), A::ReportLoss).unwrap();
        let e = transition(Some(lost), A::Mortgage).unwrap_err();
        assert!(e.to_string().contains("reported lost"), "{e}");
        let e = transition(st(S::Valid), A::Release).unwrap_err();
        assert_eq!(e.to_string(), "cannot release this licence: it is not mortgaged");
        let e = transition(st(S::Valid), A::WithdrawLoss).unwrap_err();
        assert_eq!(e.to_string(), "cannot withdraw-loss this licence: it is not reported lost");
        assert_eq!(transition(Some(lost), A::Replace).map(|s| s.status), Ok(S::Superseded));
        assert!(transition(st(S::Valid), A::Replace).is_err(), "only a lost licence is replaced");
        let expired_lost = LicenceState { status: S::Expired, lost: true, mortgaged: false };
        assert_eq!(transition(Some(expired_lost), A::Renew).map(|s| s.status), Ok(S::Superseded));
        assert!(!transition(Some(expired_lost), A::WithdrawLoss).unwrap().lost);
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
                                    && r.requires.iter().all(|&(e, v)| holds(&state, e) == v)
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
