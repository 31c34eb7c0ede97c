//! The exchange service: consumers use licences only with a use cause, and
//! every access — granted or refused — is written to the usage log before
//! anything is returned. (Usage lists and holder consent build on this.)

#![forbid(unsafe_code)]

pub mod grpc;

use std::sync::Arc;

use sqlx::Row;
use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_clients::IssuanceClient;
use zhengzhao_core::{LicenceId, LicenceRecord, UseCause};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, Migrations, StoreConfig, StoreError, format_time, now, parse_time};

static PG: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// This service's migrations.
pub static MIGRATIONS: Migrations = Migrations { postgres: &PG, sqlite: &SQLITE };

/// Longest use cause accepted (GB/T 36906 practice).
pub const MAX_USE_CAUSE: usize = UseCause::MAX;
/// Longest service item code or case number accepted.
pub const MAX_REFERENCE: usize = 64;
/// Longest text kept in the log from a refused request's fields.
const LOGGED_TEXT: usize = 256;
/// Largest page of the usage log.
pub const MAX_PAGE_SIZE: u32 = 500;

/// What a consumer asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UseRequest {
    pub identifier: String,
    pub use_cause: String,
    pub service_item_code: String,
    pub case_number: String,
}

/// One usage-log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRecord {
    pub id: i64,
    pub consumer_code: String,
    pub consumer_role: String,
    pub identifier: String,
    pub use_cause: String,
    pub service_item_code: String,
    pub case_number: String,
    pub granted: bool,
    pub refusal_reason: String,
    pub accessed_at: OffsetDateTime,
}

/// The exchange over its own tables.
pub struct Exchange {
    db: Db,
    issuance: IssuanceClient,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exchange(..)")
    }
}

fn clip(s: &str) -> String {
    s.chars().take(LOGGED_TEXT).collect()
}

fn check_request(r: &UseRequest) -> Result<(), ServiceError> {
    LicenceId::parse_held("identifier", &r.identifier)?;
    UseCause::parse_field("use_cause", &r.use_cause)?;
    for (field, v) in [("service_item_code", &r.service_item_code), ("case_number", &r.case_number)] {
        if v.chars().count() > MAX_REFERENCE || v.chars().any(char::is_control) {
            return Err(ServiceError::invalid(field, format!("at most {MAX_REFERENCE} characters")));
        }
    }
    Ok(())
}

impl Exchange {
    pub async fn open(store: &StoreConfig, issuance: IssuanceClient) -> Result<Arc<Self>, StoreError> {
        let db = zhengzhao_store::open(store, "exchange", &MIGRATIONS).await?;
        Ok(Arc::new(Exchange { db, issuance }))
    }

    /// Fetches a licence for use. The access is logged whatever the decision;
    /// if it cannot be logged, nothing is returned.
    pub async fn fetch(&self, who: &Principal, req: &UseRequest) -> Result<LicenceRecord, ServiceError> {
        let decision = async {
            authorize(who, &Action::UseLicence)?;
            check_request(req)?;
            self.issuance.get(&req.identifier).await
        }
        .await;
        let refusal = match &decision {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        self.log(who, req, decision.is_ok(), &refusal).await?;
        match &decision {
            Ok(_) => tracing::info!(identifier = %req.identifier, consumer = %who.actor(), "licence used"),
            Err(e) => {
                tracing::info!(identifier = %clip(&req.identifier), consumer = %who.actor(), reason = %e, "licence use refused")
            }
        }
        decision
    }

    async fn log(&self, who: &Principal, req: &UseRequest, granted: bool, refusal: &str) -> Result<(), ServiceError> {
        sqlx::query(
            "INSERT INTO usage_log (consumer_code, consumer_role, token_id, identifier, use_cause, service_item_code,
                case_number, decision, refusal_reason, accessed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&who.agency)
        .bind(who.role.to_string())
        .bind(&who.token_id)
        .bind(clip(&req.identifier))
        .bind(clip(req.use_cause.trim()))
        .bind(clip(&req.service_item_code))
        .bind(clip(&req.case_number))
        .bind(if granted { "granted" } else { "refused" })
        .bind(clip(refusal))
        .bind(format_time(now()))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// One page of the usage log, newest first, optionally for one licence.
    pub async fn usage_log(
        &self,
        who: &Principal,
        identifier: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<UsageRecord>, String), ServiceError> {
        authorize(who, &Action::ReadUsageLog)?;
        let page = zhengzhao_core::page::Page::parse(page_size, page_token, MAX_PAGE_SIZE)?;
        let rows = sqlx::query(
            "SELECT id, consumer_code, consumer_role, identifier, use_cause, service_item_code, case_number, decision,
                    refusal_reason, accessed_at
             FROM usage_log WHERE id < $1 AND ($2 = '' OR identifier = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(page.before)
        .bind(identifier)
        .bind(page.fetch_limit())
        .fetch_all(&self.db.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let s = |c: &str| r.try_get::<String, _>(c).map_err(ServiceError::from);
                Ok(UsageRecord {
                    id: r.try_get("id")?,
                    consumer_code: s("consumer_code")?,
                    consumer_role: s("consumer_role")?,
                    identifier: s("identifier")?,
                    use_cause: s("use_cause")?,
                    service_item_code: s("service_item_code")?,
                    case_number: s("case_number")?,
                    granted: s("decision")? == "granted",
                    refusal_reason: s("refusal_reason")?,
                    accessed_at: parse_time(&s("accessed_at")?)
                        .ok_or_else(|| ServiceError::internal("bad accessed_at"))?,
                })
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        let next = page.finish(&mut out, |r| r.id);
        Ok((out, next))
    }
}
