//! Who is calling and what they may do: principals and roles, signed bearer
//! tokens, the one authorization policy every service asks, and the tonic
//! interceptors that authenticate inbound calls and credential outbound ones.

#![forbid(unsafe_code)]

pub mod denylist;
pub mod policy;
pub mod token;

pub use denylist::Denylist;
pub use policy::{Action, authorize};
pub use token::{MintedToken, TokenAuthority, TokenError, TokenKey, TokenVerifier, TrustedKeys, token_kid};

use std::fmt;
use std::str::FromStr;

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// 电子证照管理机构: the library's administrator.
    Admin,
    /// 制发单位: an agency issuing licences.
    Issuer,
    /// 用证单位: an agency using licences.
    Consumer,
    /// A registered front end: the government service portal (一网通办) or
    /// an approved mobile end, which authenticates holders itself.
    Portal,
    /// One holder (持证主体), as a registered front end vouched for them: a
    /// short-lived token the exchange mints in exchange for the front end's
    /// own (`HolderLogin`); the principal's `holder` says who and through whom.
    Holder,
    /// A district library syncing to the city.
    Sync,
    /// Reads logs and histories.
    Auditor,
    /// Another Zhengzhao service calling on its own account.
    Service(ServiceName),
}

/// The Zhengzhao services, as callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceName {
    Catalog,
    Issuance,
    Signing,
    Verification,
    Exchange,
    Gateway,
}

impl ServiceName {
    /// Every service.
    pub const ALL: [ServiceName; 6] = [
        ServiceName::Catalog,
        ServiceName::Issuance,
        ServiceName::Signing,
        ServiceName::Verification,
        ServiceName::Exchange,
        ServiceName::Gateway,
    ];

    /// The service named `name` (`issuance`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Catalog => "catalog",
            ServiceName::Issuance => "issuance",
            ServiceName::Signing => "signing",
            ServiceName::Verification => "verification",
            ServiceName::Exchange => "exchange",
            ServiceName::Gateway => "gateway",
        }
    }
}

/// The roles an operator may mint tokens for (service roles are internal).
pub const OPERATOR_ROLES: [Role; 6] =
    [Role::Admin, Role::Issuer, Role::Consumer, Role::Portal, Role::Sync, Role::Auditor];

/// Longest life of a token a person holds (admin, issuer, consumer, portal, auditor).
pub const PERSON_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// Longest life of a holder's token: minutes, minted per session by the exchange.
pub const HOLDER_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Longest life of a sync peer's token: a machine job between libraries.
pub const SYNC_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(31 * 86400);
/// Longest life of a service's own token (each is sent for two minutes).
pub const SERVICE_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(600);
/// The longest lifetime any role's token may have.
pub const LONGEST_TOKEN_LIFETIME: std::time::Duration = SYNC_TOKEN_LIFETIME;

impl Role {
    /// How long a token of this role may live, checked when it is minted and
    /// when it is verified.
    pub fn max_token_lifetime(self) -> std::time::Duration {
        match self {
            Role::Admin | Role::Issuer | Role::Consumer | Role::Portal | Role::Auditor => PERSON_TOKEN_LIFETIME,
            Role::Sync => SYNC_TOKEN_LIFETIME,
            Role::Holder => HOLDER_TOKEN_LIFETIME,
            Role::Service(_) => SERVICE_TOKEN_LIFETIME,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Issuer => f.write_str("issuer"),
            Role::Consumer => f.write_str("consumer"),
            Role::Portal => f.write_str("portal"),
            Role::Holder => f.write_str("holder"),
            Role::Sync => f.write_str("sync"),
            Role::Auditor => f.write_str("auditor"),
            Role::Service(s) => write!(f, "service:{}", s.as_str()),
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "admin" => Role::Admin,
            "issuer" => Role::Issuer,
            "consumer" => Role::Consumer,
            "portal" => Role::Portal,
            "holder" => Role::Holder,
            "sync" => Role::Sync,
            "auditor" => Role::Auditor,
            "service:catalog" => Role::Service(ServiceName::Catalog),
            "service:issuance" => Role::Service(ServiceName::Issuance),
            "service:signing" => Role::Service(ServiceName::Signing),
            "service:verification" => Role::Service(ServiceName::Verification),
            "service:exchange" => Role::Service(ServiceName::Exchange),
            "service:gateway" => Role::Service(ServiceName::Gateway),
            _ => return Err(format!("unknown role {s:?}: use admin, issuer, consumer, portal, sync or auditor")),
        })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The agency's unified social credit code (the library's own for services).
    pub agency: String,
    pub role: Role,
    /// Token id, for the logs.
    pub token_id: String,
    /// The person acting (经办人) as the token names them; empty when it names none.
    pub operator: String,
    /// For a holder token: the holder and the front end that vouched for them.
    pub holder: Option<HolderIdentity>,
}

/// Who a holder token speaks for: the holder's ID (GB/T 36903 ID type code
/// and number) and the registered front end that authenticated them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HolderIdentity {
    /// Holder ID type code (`001`, `111`, ...).
    pub id_type: String,
    pub id_number: String,
    /// The registered front end's id.
    pub front_end: i64,
}

impl Principal {
    /// `role@agency`, as events and logs record the actor.
    pub fn actor(&self) -> String {
        format!("{}@{}", self.role, self.agency)
    }

    /// Names the caller's role and agency on the current span (the call's
    /// server span): never the holder, whose ID number stays out of traces.
    pub fn record_on_span(&self) {
        let span = tracing::Span::current();
        span.record("zhengzhao.role", tracing::field::display(&self.role));
        span.record("zhengzhao.agency", self.agency.as_str());
    }

    /// A service acting on its own account inside one process.
    pub fn service(name: ServiceName, library_agency: &str) -> Self {
        Principal {
            agency: library_agency.to_owned(),
            role: Role::Service(name),
            token_id: "in-process".into(),
            operator: String::new(),
            holder: None,
        }
    }
}

/// The principal an authenticated request carries, or UNAUTHENTICATED.
pub fn principal<T>(req: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("no credentials: send authorization: Bearer <token>"))
}

/// The principal of `req`, once the policy allows it `action`. For the
/// edges that read a request before the service decides: a caller the
/// policy refuses learns nothing from its request but the refusal.
pub fn authorized<T>(req: &tonic::Request<T>, action: &policy::Action<'_>) -> Result<Principal, tonic::Status> {
    let who = principal(req)?;
    policy::authorize(&who, action)?;
    Ok(who)
}

/// As [`authorized`], for an action on one agency's things when whose they
/// are is known only once the request is read: asks whether the caller may
/// do it on its own agency's. Every role the policy allows on any agency's
/// things is allowed on its own, so a refusal here is a refusal everywhere;
/// the service still decides on the real owner.
pub fn authorized_for_own<T>(
    req: &tonic::Request<T>,
    action: impl for<'a> Fn(&'a str) -> policy::Action<'a>,
) -> Result<Principal, tonic::Status> {
    let who = principal(req)?;
    policy::authorize(&who, &action(&who.agency))?;
    Ok(who)
}

/// Authenticates inbound calls: a valid bearer token becomes a [`Principal`]
/// in the request's extensions; anything else (including a token on the
/// verifier's denylist) is UNAUTHENTICATED.
#[derive(Clone)]
pub struct Authenticate {
    verifier: std::sync::Arc<TokenVerifier>,
    limit: Option<std::sync::Arc<RateLimit>>,
}

impl Authenticate {
    pub fn new(verifier: std::sync::Arc<TokenVerifier>) -> Self {
        Authenticate { verifier, limit: None }
    }

    /// Holds each authenticated principal to `limit` (one limit per process,
    /// shared by every service in it).
    pub fn limited(mut self, limit: Option<std::sync::Arc<RateLimit>>) -> Self {
        self.limit = limit;
        self
    }
}

/// Per-principal rate limits: a token bucket per principal (role and
/// agency; a holder has one of its own besides its front end's agency's),
/// refilled at a steady rate up to a burst.
/// The services' own calls to each other are not limited.
pub struct RateLimit {
    limiter: governor::DefaultKeyedRateLimiter<String>,
    per_second: u32,
    checks: std::sync::atomic::AtomicU64,
}

/// How many checks pass between sweeps of idle principals' buckets.
const RATE_SWEEP_EVERY: u64 = 16_384;

impl RateLimit {
    /// `per_second` calls per second on average and `burst` at once; `None`
    /// (no limit) when either is 0.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        let rate = std::num::NonZeroU32::new(per_second)?;
        let burst = std::num::NonZeroU32::new(burst)?;
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Some(RateLimit {
            limiter: governor::RateLimiter::keyed(quota),
            per_second,
            checks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Counts one call of `who`: RESOURCE_EXHAUSTED, with `retry-after`
    /// (whole seconds, at least 1) in the metadata, when over its limit.
    pub fn check(&self, who: &Principal) -> Result<(), tonic::Status> {
        if matches!(who.role, Role::Service(_)) {
            return Ok(());
        }
        if self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % RATE_SWEEP_EVERY == RATE_SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        // A holder is held to its own bucket and, with every other holder
        // its front end vouches for, to the front end's agency's.
        let agency = format!("{}|{}", who.role, who.agency);
        let mut checked = self.limiter.check_key(&agency);
        if let (Ok(()), Some(h)) = (&checked, &who.holder) {
            checked = self.limiter.check_key(&format!("{agency}|{}:{}", h.id_type, h.id_number));
        }
        let Err(not_until) = checked else {
            return Ok(());
        };
        use governor::clock::Clock as _;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        let mut status = tonic::Status::resource_exhausted(format!(
            "rate limit: {} may make {} calls per second; retry after {seconds} s",
            who.role, self.per_second
        ));
        if let Ok(v) = seconds.to_string().parse() {
            status.metadata_mut().insert("retry-after", v);
        }
        Err(status)
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| tonic::Status::unauthenticated("no credentials: send authorization: Bearer <token>"))?;
        let text = header.to_str().map_err(|_| tonic::Status::unauthenticated("authorization header is not text"))?;
        let token = text
            .strip_prefix("Bearer ")
            .ok_or_else(|| tonic::Status::unauthenticated("authorization must be a Bearer token"))?;
        let principal =
            self.verifier.verify(token.trim()).map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        tracing::debug!(actor = %principal.actor(), token_id = %principal.token_id, "authenticated");
        principal.record_on_span();
        if let Some(limit) = &self.limit {
            limit.check(&principal)?;
        }
        req.extensions_mut().insert(principal);
        Ok(req)
    }
}

/// Adds a bearer token to outbound calls.
#[derive(Clone)]
pub struct BearerToken(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl BearerToken {
    pub fn new(token: &str) -> Result<Self, TokenError> {
        format!("Bearer {token}").parse().map(BearerToken).map_err(|_| TokenError::Malformed)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Credentials a service sends on its own outbound calls (split deployment):
/// a short-lived token for its service role, minted with the service's own
/// credential key (`kid` "service:NAME") and reused for a while (so the
/// receiving side verifies it once, not on every call).
#[derive(Clone)]
pub struct ServiceCredentials {
    authority: std::sync::Arc<TokenAuthority>,
    name: ServiceName,
    agency: String,
    current: std::sync::Arc<std::sync::Mutex<Option<MintedHeader>>>,
}

/// A minted service token as a header value, and when it was minted.
type MintedHeader = (std::time::Instant, tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

/// How long a service token this process mints lives.
const SERVICE_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// How long one service token is sent before a fresh one is minted: well
/// inside its lifetime, so it never arrives expired.
const SERVICE_TOKEN_REUSE: std::time::Duration = std::time::Duration::from_secs(120);

impl ServiceCredentials {
    pub fn new(authority: std::sync::Arc<TokenAuthority>, name: ServiceName, library_agency: &str) -> Self {
        ServiceCredentials { authority, name, agency: library_agency.to_owned(), current: Default::default() }
    }

    fn header(&self) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, tonic::Status> {
        let mut current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((minted, value)) = current.as_ref()
            && minted.elapsed() < SERVICE_TOKEN_REUSE
        {
            return Ok(value.clone());
        }
        let token = self
            .authority
            .mint(&self.agency, Role::Service(self.name), SERVICE_TOKEN_TTL)
            .map_err(|e| tonic::Status::internal(format!("cannot mint service token: {e}")))?;
        let value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::internal("service token is not a valid header"))?;
        *current = Some((std::time::Instant::now(), value.clone()));
        Ok(value)
    }
}

impl tonic::service::Interceptor for ServiceCredentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value = self.header()?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}
