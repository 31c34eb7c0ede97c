//! The one authorization policy. Every service asks [`authorize`] before it
//! acts; the table below is the whole of who may do what.

use crate::{Principal, Role, ServiceName};

/// Something a caller wants to do, with what the decision depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Define or change licence types.
    ManageCatalog,
    /// Read licence types.
    ReadCatalog,
    /// Issue a licence as `issuer`.
    IssueLicence { issuer: &'a str },
    /// Record a lifecycle event on a licence issued by `issuer`.
    ChangeLicence { issuer: &'a str },
    /// Force the cancellation of an encumbered licence issued by `issuer`.
    ForceCancel { issuer: &'a str },
    /// Read a licence (and its history) issued by `issuer`, outside the exchange.
    ReadLicence { issuer: &'a str },
    /// Have a document signed with `issuer`'s key.
    SignDocument { issuer: &'a str },
    /// Read public keys.
    ReadPublicKeys,
    /// Watch the signing service's key events (public-key caches).
    WatchKeyEvents,
    /// Read how a service is serving (read replica lag).
    ReadServiceStatus,
    /// Create, rotate, retire or mark compromised an issuer key.
    ManageKeys,
    /// Read the transparency log's checkpoints and consistency proofs.
    ReadLog,
    /// Verify a licence.
    Verify,
    /// Use a licence through the exchange (the usage list decides which).
    UseLicence,
    /// Read the usage log.
    ReadUsageLog,
    /// Add, suspend, resume or end usage-list entries; decide applications.
    ManageUsageList,
    /// Apply for usage-list entries for the caller's own agency.
    ApplyForUsage,
    /// Read `agency`'s usage list, applications and their changes.
    ReadUsageList { agency: &'a str },
    /// List a holder's licences by holder ID, across issuers.
    FindHolderLicences,
    /// Register, suspend or resume front ends (portals, approved mobile ends);
    /// set reminder windows.
    ManageFrontEnds,
    /// Read the registered front ends.
    ReadFrontEnds,
    /// Exchange a front end's own token for a holder token (the caller has
    /// authenticated the holder).
    HolderLogin,
    /// Act as a holder on the holder's own licences (a holder token).
    ActAsHolder,
    /// Propose a presentation scenario for the caller's own agency.
    ProposeScenario,
    /// Approve or refuse presentation scenarios (the management body).
    DecideScenario,
    /// Read presentation scenarios.
    ReadScenarios,
    /// Verify a holder's presentation at a counter.
    VerifyPresentation,
    /// Have a licence signed by `issuer` turned into an SD-JWT with `issuer`'s key.
    MakeSelectiveDisclosure { issuer: &'a str },
    /// Read the gateway's routing table.
    ReadRoutes,
    /// Follow the change feed.
    WatchChanges,
    /// Read a library's feed with its licence rows for replication (a
    /// district's, by the sync job; a city's replica, for an audit).
    ReadReplicaFeed,
    /// Apply a district's feed to the city as a replica.
    ApplyReplica,
    /// Resume a district's stopped sync.
    ResumeReplica,
    /// Record a district's published issuer keys on the city.
    ImportPublicKeys,
    /// Bring the catalogue in line with the city's (districts follow it).
    FollowCatalogue,
    /// Record or update an outage of `issuer`.
    ManageOutage { issuer: &'a str },
    /// Read outages of `issuer`.
    ReadOutages { issuer: &'a str },
    /// Revoke a bearer token by its ID.
    RevokeToken,
    /// Read the list of revoked tokens (every process refreshes its denylist from it).
    ReadRevokedTokens,
}

/// A refusal, saying why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl From<Denied> for tonic::Status {
    fn from(d: Denied) -> Self {
        tonic::Status::permission_denied(d.0)
    }
}

/// Decides whether `principal` may perform `action`.
pub fn authorize(principal: &Principal, action: &Action<'_>) -> Result<(), Denied> {
    use Action as A;
    use Role as R;
    let role = principal.role;
    let own = |issuer: &str| principal.agency == issuer;
    let allowed = match action {
        A::ManageCatalog => role == R::Admin,
        A::ReadCatalog | A::ReadPublicKeys | A::Verify | A::ReadRoutes | A::ReadLog => true,
        A::ManageKeys => role == R::Admin,
        // Only the services that cache public keys: a watcher holds back
        // every key change until it acknowledges, so nobody else may be one.
        A::WatchKeyEvents => matches!(role, R::Service(ServiceName::Verification | ServiceName::Exchange)),
        A::ReadServiceStatus => matches!(role, R::Admin | R::Auditor),
        A::IssueLicence { issuer } | A::ChangeLicence { issuer } => role == R::Issuer && own(issuer),
        A::ForceCancel { .. } => role == R::Admin,
        A::ReadLicence { issuer } => match role {
            R::Issuer => own(issuer),
            R::Admin | R::Auditor | R::Sync => true,
            R::Service(s) => matches!(s, ServiceName::Verification | ServiceName::Exchange | ServiceName::Gateway),
            R::Consumer | R::Portal | R::Holder => false,
        },
        // Issuance signs for any issuer (its own policy decided who may
        // issue); the exchange signs annotated copies as the library only.
        A::SignDocument { issuer } => {
            role == R::Service(ServiceName::Issuance) || (role == R::Service(ServiceName::Exchange) && own(issuer))
        }
        A::UseLicence => role == R::Consumer,
        A::ReadUsageLog => matches!(role, R::Admin | R::Auditor),
        A::ManageUsageList => role == R::Admin,
        A::ApplyForUsage => role == R::Consumer,
        A::ReadUsageList { agency } => matches!(role, R::Admin | R::Auditor) || (role == R::Consumer && own(agency)),
        // Only through the exchange, which logs every lookup (art. 14, 17):
        // nobody, not even an administrator, lists a holder's licences unseen.
        A::FindHolderLicences => role == R::Service(ServiceName::Exchange),
        A::ManageOutage { issuer } => role == R::Admin || (role == R::Issuer && own(issuer)),
        A::ReadOutages { issuer } => matches!(role, R::Admin | R::Auditor) || (role == R::Issuer && own(issuer)),
        A::WatchChanges => match role {
            R::Admin | R::Auditor | R::Sync => true,
            R::Service(s) => matches!(s, ServiceName::Verification | ServiceName::Exchange | ServiceName::Gateway),
            R::Issuer | R::Consumer | R::Portal | R::Holder => false,
        },
        A::ReadReplicaFeed => matches!(role, R::Sync | R::Admin | R::Auditor),
        A::ApplyReplica | A::ImportPublicKeys => role == R::Sync,
        A::ResumeReplica => role == R::Admin,
        A::FollowCatalogue => matches!(role, R::Admin | R::Sync),
        A::ManageFrontEnds => role == R::Admin,
        A::ReadFrontEnds => matches!(role, R::Admin | R::Auditor | R::Portal),
        A::HolderLogin => role == R::Portal,
        A::ActAsHolder => role == R::Holder && principal.holder.is_some(),
        A::ProposeScenario => role == R::Consumer,
        A::DecideScenario => role == R::Admin,
        A::ReadScenarios => !matches!(role, R::Sync),
        A::VerifyPresentation => {
            matches!(role, R::Consumer | R::Admin | R::Auditor | R::Service(ServiceName::Gateway))
        }
        // Only from a licence the issuer's key signed, which the signing
        // service checks: the exchange cannot make one up.
        A::MakeSelectiveDisclosure { .. } => role == R::Service(ServiceName::Exchange),
        A::RevokeToken => role == R::Admin,
        A::ReadRevokedTokens => matches!(role, R::Admin | R::Auditor | R::Service(_)),
    };
    if allowed { Ok(()) } else { Err(Denied(format!("{} may not {}", principal.actor(), describe(action)))) }
}

fn describe(action: &Action<'_>) -> String {
    match action {
        Action::ManageCatalog => "define or publish licence types".into(),
        Action::ReadCatalog => "read the catalogue".into(),
        Action::IssueLicence { issuer } => format!("issue licences as {issuer}"),
        Action::ChangeLicence { issuer } => format!("change licences issued by {issuer}"),
        Action::ForceCancel { issuer } => format!("force the cancellation of licences issued by {issuer}"),
        Action::ReadLicence { issuer } => format!("read licences issued by {issuer} outside the exchange"),
        Action::SignDocument { issuer } => format!("ask for signatures as {issuer}"),
        Action::ReadPublicKeys => "read public keys".into(),
        Action::WatchKeyEvents => "watch key events".into(),
        Action::ReadServiceStatus => "read service status".into(),
        Action::ManageKeys => "manage issuer keys".into(),
        Action::ReadLog => "read the transparency log".into(),
        Action::Verify => "verify licences".into(),
        Action::UseLicence => "use licences through the exchange".into(),
        Action::ReadUsageLog => "read the usage log".into(),
        Action::ManageUsageList => "manage usage lists".into(),
        Action::ApplyForUsage => "apply for usage-list entries".into(),
        Action::ReadUsageList { agency } => format!("read the usage list of {agency}"),
        Action::FindHolderLicences => "list a holder's licences across issuers".into(),
        Action::ReadReplicaFeed => "read the feed for replication".into(),
        Action::ApplyReplica => "apply a district's feed to the city".into(),
        Action::ResumeReplica => "resume a district's sync".into(),
        Action::ImportPublicKeys => "record a district's issuer keys".into(),
        Action::FollowCatalogue => "bring the catalogue in line with the city's".into(),
        Action::ManageFrontEnds => "register front ends".into(),
        Action::ReadFrontEnds => "read the registered front ends".into(),
        Action::HolderLogin => "log holders in (a registered front end's token only)".into(),
        Action::ActAsHolder => "act as a holder (a holder token only)".into(),
        Action::ProposeScenario => "propose presentation scenarios".into(),
        Action::DecideScenario => "approve or refuse presentation scenarios".into(),
        Action::ReadScenarios => "read presentation scenarios".into(),
        Action::VerifyPresentation => "verify presentations".into(),
        Action::MakeSelectiveDisclosure { issuer } => format!("make selective-disclosure licences of {issuer}"),
        Action::ReadRoutes => "read the gateway routes".into(),
        Action::WatchChanges => "follow the change feed".into(),
        Action::ManageOutage { issuer } => format!("record outages of {issuer}"),
        Action::ReadOutages { issuer } => format!("read outages of {issuer}"),
        Action::RevokeToken => "revoke tokens".into(),
        Action::ReadRevokedTokens => "read the revoked tokens".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "91350100M000100Y43";
    const B: &str = "11100000000013338W";

    fn p(role: Role, agency: &str) -> Principal {
        Principal { agency: agency.into(), role, token_id: "t".into(), operator: String::new(), holder: None }
    }

    #[test]
    fn the_table() {
        use Action as X;
        use Role::*;
        let svc = |s| Service(s);
        // (principal role, principal agency, action, allowed)
        let cases: Vec<(Role, &str, Action<'_>, bool)> = vec![
            (Admin, A, X::ManageCatalog, true),
            (Issuer, A, X::ManageCatalog, false),
            (Consumer, A, X::ManageCatalog, false),
            (Consumer, A, X::ReadCatalog, true),
            (Issuer, A, X::IssueLicence { issuer: A }, true),
            (Issuer, A, X::IssueLicence { issuer: B }, false),
            (Admin, A, X::IssueLicence { issuer: A }, false),
            (Consumer, A, X::IssueLicence { issuer: A }, false),
            (Issuer, A, X::ChangeLicence { issuer: A }, true),
            (Issuer, B, X::ChangeLicence { issuer: A }, false),
            (Consumer, A, X::ChangeLicence { issuer: A }, false),
            (Admin, B, X::ForceCancel { issuer: A }, true),
            (Issuer, A, X::ForceCancel { issuer: A }, false),
            (Auditor, B, X::ForceCancel { issuer: A }, false),
            (Issuer, A, X::ReadLicence { issuer: A }, true),
            (Issuer, B, X::ReadLicence { issuer: A }, false),
            (Consumer, A, X::ReadLicence { issuer: A }, false),
            (Portal, A, X::ReadLicence { issuer: A }, false),
            (Auditor, B, X::ReadLicence { issuer: A }, true),
            (svc(ServiceName::Verification), B, X::ReadLicence { issuer: A }, true),
            (svc(ServiceName::Exchange), B, X::ReadLicence { issuer: A }, true),
            (svc(ServiceName::Signing), B, X::ReadLicence { issuer: A }, false),
            (svc(ServiceName::Issuance), B, X::SignDocument { issuer: A }, true),
            (svc(ServiceName::Exchange), B, X::SignDocument { issuer: B }, true),
            (svc(ServiceName::Exchange), B, X::SignDocument { issuer: A }, false),
            (Issuer, A, X::SignDocument { issuer: A }, false),
            (Admin, A, X::SignDocument { issuer: A }, false),
            (Admin, A, X::ManageUsageList, true),
            (Consumer, A, X::ManageUsageList, false),
            (Auditor, A, X::ManageUsageList, false),
            (Consumer, A, X::ApplyForUsage, true),
            (Issuer, A, X::ApplyForUsage, false),
            (Admin, A, X::ApplyForUsage, false),
            (Consumer, A, X::ReadUsageList { agency: A }, true),
            (Consumer, A, X::ReadUsageList { agency: B }, false),
            (Auditor, A, X::ReadUsageList { agency: B }, true),
            (Issuer, A, X::ReadUsageList { agency: A }, false),
            (svc(ServiceName::Exchange), B, X::FindHolderLicences, true),
            (Consumer, A, X::FindHolderLicences, false),
            (Issuer, A, X::FindHolderLicences, false),
            (Portal, A, X::FindHolderLicences, false),
            (Admin, A, X::FindHolderLicences, false),
            (Auditor, A, X::FindHolderLicences, false),
            (Admin, A, X::ManageKeys, true),
            (Issuer, A, X::ManageKeys, false),
            (svc(ServiceName::Issuance), A, X::ManageKeys, false),
            (Consumer, A, X::ReadLog, true),
            (Consumer, A, X::Verify, true),
            (Portal, A, X::ReadPublicKeys, true),
            (Admin, A, X::WatchKeyEvents, false),
            (Admin, A, X::ReadServiceStatus, true),
            (Auditor, A, X::ReadServiceStatus, true),
            (Consumer, A, X::ReadServiceStatus, false),
            (Issuer, A, X::ReadServiceStatus, false),
            (svc(ServiceName::Verification), B, X::WatchKeyEvents, true),
            (svc(ServiceName::Exchange), B, X::WatchKeyEvents, true),
            (svc(ServiceName::Issuance), B, X::WatchKeyEvents, false),
            (Consumer, A, X::WatchKeyEvents, false),
            (Consumer, A, X::UseLicence, true),
            (Issuer, A, X::UseLicence, false),
            (Admin, A, X::ReadUsageLog, true),
            (Auditor, A, X::ReadUsageLog, true),
            (Consumer, A, X::ReadUsageLog, false),
            (Sync, A, X::WatchChanges, true),
            (Sync, A, X::ReadReplicaFeed, true),
            (Sync, A, X::ApplyReplica, true),
            (Admin, A, X::ApplyReplica, false),
            (Issuer, A, X::ReadReplicaFeed, false),
            (Consumer, A, X::ReadReplicaFeed, false),
            (Auditor, A, X::ReadReplicaFeed, true),
            (Admin, A, X::ResumeReplica, true),
            (Sync, A, X::ResumeReplica, false),
            (Sync, A, X::ImportPublicKeys, true),
            (Admin, A, X::ImportPublicKeys, false),
            (Sync, A, X::FollowCatalogue, true),
            (Issuer, A, X::FollowCatalogue, false),
            (Sync, A, X::ManageCatalog, false),
            (Auditor, A, X::WatchChanges, true),
            (Issuer, A, X::WatchChanges, false),
            (Consumer, A, X::WatchChanges, false),
            (svc(ServiceName::Verification), A, X::WatchChanges, true),
            (Issuer, A, X::ManageOutage { issuer: A }, true),
            (Issuer, B, X::ManageOutage { issuer: A }, false),
            (Admin, B, X::ManageOutage { issuer: A }, true),
            (Consumer, A, X::ManageOutage { issuer: A }, false),
            (Auditor, B, X::ReadOutages { issuer: A }, true),
            (Issuer, B, X::ReadOutages { issuer: A }, false),
            (Admin, A, X::RevokeToken, true),
            (Issuer, A, X::RevokeToken, false),
            (Consumer, A, X::RevokeToken, false),
            (Auditor, A, X::RevokeToken, false),
            (Sync, A, X::RevokeToken, false),
            (svc(ServiceName::Gateway), A, X::RevokeToken, false),
            (Admin, A, X::ReadRevokedTokens, true),
            (Auditor, A, X::ReadRevokedTokens, true),
            (svc(ServiceName::Verification), A, X::ReadRevokedTokens, true),
            (svc(ServiceName::Gateway), A, X::ReadRevokedTokens, true),
            (Issuer, A, X::ReadRevokedTokens, false),
            (Consumer, A, X::ReadRevokedTokens, false),
            (Portal, A, X::ReadRevokedTokens, false),
            (Sync, A, X::ReadRevokedTokens, false),
        ];
        for (role, agency, action, allowed) in cases {
            let got = authorize(&p(role, agency), &action);
            assert_eq!(got.is_ok(), allowed, "{role} at {agency} on {action:?}: {got:?}");
        }
    }
}
