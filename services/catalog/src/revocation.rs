//! Token revocation, hosted by the catalogue (the administrator's registry):
//! an administrator revokes a bearer token by its ID (`jti`); the entry is
//! kept in the catalogue's database until the token would have expired and
//! mirrored into this process's [`Denylist`]. Other processes refresh their
//! own denylists from `ListRevokedTokens`.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use zhengzhao_auth::token::LEEWAY;
use zhengzhao_auth::{Action, Denylist, LONGEST_TOKEN_LIFETIME, Principal, authorize, principal};
use zhengzhao_core::Reason;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::auth::v1 as pb;
use zhengzhao_proto::auth::v1::token_service_server::{TokenService, TokenServiceServer};
use zhengzhao_proto::convert::{from_timestamp, timestamp};
use zhengzhao_store::{Db, format_time, now, parse_time};

use crate::Catalog;

/// Longest token ID accepted (ours are UUIDs).
pub const MAX_TOKEN_ID: usize = 128;
/// Longest revocation reason.
pub const MAX_REASON: usize = Reason::MAX;

/// One revoked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedToken {
    pub token_id: String,
    pub expires_at: OffsetDateTime,
    pub revoked_at: OffsetDateTime,
    pub actor: String,
    pub reason: String,
}

impl RevokedToken {
    pub fn to_wire(&self) -> pb::RevokedToken {
        pb::RevokedToken {
            token_id: self.token_id.clone(),
            expires_at: Some(timestamp(self.expires_at)),
            revoked_at: Some(timestamp(self.revoked_at)),
            actor: self.actor.clone(),
            reason: self.reason.clone(),
        }
    }
}

fn time_delta(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

fn bad(what: &str) -> ServiceError {
    ServiceError::internal(format!("unreadable {what} in the revoked_tokens table"))
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<RevokedToken, ServiceError> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(ServiceError::from);
    Ok(RevokedToken {
        token_id: s("token_id")?,
        expires_at: parse_time(&s("expires_at")?).ok_or_else(|| bad("expires_at"))?,
        revoked_at: parse_time(&s("revoked_at")?).ok_or_else(|| bad("revoked_at"))?,
        actor: s("actor")?,
        reason: s("reason")?,
    })
}

/// The revoked tokens, in the catalogue's database and this process's denylist.
#[derive(Debug)]
pub struct Revocations {
    db: Db,
    denylist: Arc<Denylist>,
}

impl Revocations {
    /// Over the catalogue's database, loading every unexpired entry into `denylist`.
    pub async fn open(catalog: &Catalog, denylist: Arc<Denylist>) -> Result<Arc<Self>, ServiceError> {
        let r = Arc::new(Revocations { db: catalog.db().clone(), denylist });
        r.reload().await?;
        Ok(r)
    }

    /// Revokes `token_id` until `expires_at` (unset: the longest lifetime
    /// any role's token may have, from now).
    pub async fn revoke(
        &self,
        who: &Principal,
        token_id: &str,
        expires_at: Option<OffsetDateTime>,
        reason: &str,
    ) -> Result<RevokedToken, ServiceError> {
        authorize(who, &Action::RevokeToken)?;
        let token_id = token_id.trim();
        if token_id.is_empty()
            || token_id.len() > MAX_TOKEN_ID
            || !token_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(ServiceError::invalid(
                "token_id",
                format!("the token's jti: 1 to {MAX_TOKEN_ID} letters, digits, '-', '_' or '.'"),
            ));
        }
        let reason = Reason::parse_field("reason", reason)?;
        let at = now();
        let latest = at + time_delta(LONGEST_TOKEN_LIFETIME) + time_delta(LEEWAY);
        let expires_at = match expires_at {
            None => at + time_delta(LONGEST_TOKEN_LIFETIME),
            Some(t) if t + time_delta(LEEWAY) <= at => {
                return Err(ServiceError::invalid("expires_at", "that token has already expired"));
            }
            Some(t) if t > latest => {
                return Err(ServiceError::invalid(
                    "expires_at",
                    format!(
                        "no token lives that long: at most {} from now",
                        zhengzhao_auth::token::human(LONGEST_TOKEN_LIFETIME)
                    ),
                ));
            }
            Some(t) => t,
        };
        let mut tx = self.db.begin().await?;
        // Revoking again never shortens how long the entry is kept.
        sqlx::query(
            "INSERT INTO revoked_tokens (token_id, expires_at, revoked_at, actor, reason) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (token_id) DO UPDATE SET expires_at = CASE \
             WHEN excluded.expires_at > revoked_tokens.expires_at THEN excluded.expires_at \
             ELSE revoked_tokens.expires_at END",
        )
        .bind(token_id)
        .bind(format_time(expires_at))
        .bind(format_time(at))
        .bind(who.actor())
        .bind(reason.as_str())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT token_id, expires_at, revoked_at, actor, reason FROM revoked_tokens WHERE token_id = $1",
        )
        .bind(token_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let revoked = from_row(&row)?;
        self.denylist.revoke(&revoked.token_id, revoked.expires_at.unix_timestamp());
        tracing::info!(token_id = %revoked.token_id, actor = %who.actor(), "token revoked");
        Ok(revoked)
    }

    /// The revoked tokens that have not yet expired, soonest expiry first.
    pub async fn list(&self, who: &Principal) -> Result<Vec<RevokedToken>, ServiceError> {
        authorize(who, &Action::ReadRevokedTokens)?;
        self.unexpired().await
    }

    async fn unexpired(&self) -> Result<Vec<RevokedToken>, ServiceError> {
        let cutoff = format_time(now() - time_delta(LEEWAY));
        let rows = sqlx::query(
            "SELECT token_id, expires_at, revoked_at, actor, reason FROM revoked_tokens \
             WHERE expires_at > $1 ORDER BY expires_at, token_id",
        )
        .bind(cutoff)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Adds every unexpired entry in the database to the denylist and prunes
    /// the expired ones (another catalogue replica may have revoked tokens).
    pub async fn reload(&self) -> Result<(), ServiceError> {
        for r in self.unexpired().await? {
            self.denylist.revoke(&r.token_id, r.expires_at.unix_timestamp());
        }
        self.denylist.prune(OffsetDateTime::now_utc().unix_timestamp());
        Ok(())
    }

    /// Reloads from the database every `every`, for as long as the process runs.
    pub fn spawn_reload(self: Arc<Self>, every: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %e, "cannot reload the revoked tokens");
                }
            }
        });
    }
}

/// The tonic `TokenService` over [`Revocations`].
#[derive(Debug, Clone)]
pub struct TokenGrpc(pub Arc<Revocations>);

impl TokenGrpc {
    pub fn into_server(self) -> TokenServiceServer<Self> {
        TokenServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl TokenService for TokenGrpc {
    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let who = zhengzhao_auth::authorized(&req, &Action::RevokeToken)?;
        let r = req.into_inner();
        let expires_at = r.expires_at.as_ref().map(|t| from_timestamp("expires_at", t)).transpose()?;
        let revoked = self.0.revoke(&who, &r.token_id, expires_at, &r.reason).await?;
        Ok(Response::new(pb::RevokeTokenResponse { revoked_token: Some(revoked.to_wire()) }))
    }

    async fn list_revoked_tokens(
        &self,
        req: Request<pb::ListRevokedTokensRequest>,
    ) -> Result<Response<pb::ListRevokedTokensResponse>, Status> {
        let who = principal(&req)?;
        let list = self.0.list(&who).await?;
        Ok(Response::new(pb::ListRevokedTokensResponse {
            revoked_tokens: list.iter().map(RevokedToken::to_wire).collect(),
        }))
    }
}
