//! The catalogue service: licence types and their face templates (GB/T 36902).
//! Administrators define and publish types; everyone else reads them.

#![forbid(unsafe_code)]

pub mod client;
pub mod grpc;

use std::sync::Arc;

use sqlx::Row;
use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::{LicenceTypeDefinition, TypeCode, Uscc};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, Migrations, StoreConfig, StoreError, format_time, now, parse_time};

pub use client::CatalogClient;

static PG: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// This service's migrations.
pub static MIGRATIONS: Migrations = Migrations { postgres: &PG, sqlite: &SQLITE };

/// Lifecycle of a licence type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeStatus {
    Draft,
    Published,
    Retired,
}

impl TypeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TypeStatus::Draft => "draft",
            TypeStatus::Published => "published",
            TypeStatus::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Result<Self, ServiceError> {
        match s {
            "draft" => Ok(TypeStatus::Draft),
            "published" => Ok(TypeStatus::Published),
            "retired" => Ok(TypeStatus::Retired),
            other => Err(ServiceError::internal(format!("unknown type status {other:?} in database"))),
        }
    }
}

/// A licence type as the catalogue holds it; `definition.code` is always set.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenceTypeRecord {
    pub definition: LicenceTypeDefinition,
    pub status: TypeStatus,
    pub created_at: OffsetDateTime,
    pub published_at: Option<OffsetDateTime>,
}

impl LicenceTypeRecord {
    pub fn code(&self) -> &str {
        self.definition.code.as_deref().unwrap_or_default()
    }
}

/// Largest page of a listing.
pub const MAX_PAGE_SIZE: u32 = 500;

/// The catalogue over its own tables.
#[derive(Debug)]
pub struct Catalog {
    db: Db,
}

fn db_err(e: sqlx::Error) -> ServiceError {
    ServiceError::internal(e)
}

impl Catalog {
    pub async fn open(store: &StoreConfig) -> Result<Arc<Self>, StoreError> {
        let db = zhengzhao_store::open(store, "catalog", &MIGRATIONS).await?;
        Ok(Arc::new(Catalog { db }))
    }

    /// Creates a type as a draft; assigns the next code under its defining
    /// authority when none is given.
    pub async fn create(
        &self,
        who: &Principal,
        mut def: LicenceTypeDefinition,
    ) -> Result<LicenceTypeRecord, ServiceError> {
        authorize(who, &Action::ManageCatalog)?;
        def.validate()?;
        def.template.version = 1;
        let mut tx = self.db.pool.begin().await.map_err(db_err)?;
        let code = match &def.code {
            Some(c) => c.clone(),
            None => {
                let last: Option<String> = sqlx::query_scalar(
                    "SELECT code FROM licence_types WHERE authority_code = $1 ORDER BY code DESC LIMIT 1",
                )
                .bind(&def.defining_authority.code)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
                let next = last.and_then(|c| c[18..].parse::<u16>().ok()).map_or(1, |n| n + 1);
                let authority = Uscc::parse(&def.defining_authority.code)
                    .map_err(|e| ServiceError::invalid("defining_authority.code", e.to_string()))?;
                TypeCode::new(&authority, next)
                    .map_err(|_| {
                        ServiceError::FailedPrecondition("the defining authority already has 999 types".into())
                    })?
                    .to_string()
            }
        };
        def.code = Some(code.clone());
        let at = now();
        let definition_json = serde_json::to_string(&def).map_err(ServiceError::internal)?;
        let template_json = serde_json::to_string(&def.template).map_err(ServiceError::internal)?;
        let inserted = sqlx::query(
            "INSERT INTO licence_types (code, authority_code, name, status, definition_json, template_version, created_at)
             VALUES ($1, $2, $3, 'draft', $4, 1, $5)",
        )
        .bind(&code)
        .bind(&def.defining_authority.code)
        .bind(&def.name)
        .bind(&definition_json)
        .bind(format_time(at))
        .execute(&mut *tx)
        .await;
        if let Err(e) = inserted {
            return Err(if zhengzhao_store::is_unique_violation(&e) {
                ServiceError::AlreadyExists(format!("licence type {code} already exists"))
            } else {
                db_err(e)
            });
        }
        sqlx::query(
            "INSERT INTO template_versions (type_code, version, template_json, created_at) VALUES ($1, 1, $2, $3)",
        )
        .bind(&code)
        .bind(&template_json)
        .bind(format_time(at))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        record_change(&mut tx, &code, who, "create", &definition_json).await?;
        tx.commit().await.map_err(db_err)?;
        tracing::info!(type_code = %code, actor = %who.actor(), "licence type created");
        Ok(LicenceTypeRecord { definition: def, status: TypeStatus::Draft, created_at: at, published_at: None })
    }

    /// Publishes a draft type. Publishing a published type changes nothing.
    pub async fn publish(&self, who: &Principal, code: &str) -> Result<LicenceTypeRecord, ServiceError> {
        authorize(who, &Action::ManageCatalog)?;
        let current = self.fetch(code).await?;
        match current.status {
            TypeStatus::Published => return Ok(current),
            TypeStatus::Retired => {
                return Err(ServiceError::FailedPrecondition(format!("licence type {code} is retired")));
            }
            TypeStatus::Draft => {}
        }
        let at = now();
        let mut tx = self.db.pool.begin().await.map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE licence_types SET status = 'published', published_at = $2 WHERE code = $1 AND status = 'draft'",
        )
        .bind(code)
        .bind(format_time(at))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if done.rows_affected() == 1 {
            record_change(&mut tx, code, who, "publish", "{}").await?;
        }
        tx.commit().await.map_err(db_err)?;
        tracing::info!(type_code = %code, actor = %who.actor(), "licence type published");
        self.fetch(code).await
    }

    pub async fn get(&self, who: &Principal, code: &str) -> Result<LicenceTypeRecord, ServiceError> {
        authorize(who, &Action::ReadCatalog)?;
        self.fetch(code).await
    }

    /// One page of types ordered by code, and the token of the next page.
    pub async fn list(
        &self,
        who: &Principal,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<LicenceTypeRecord>, String), ServiceError> {
        authorize(who, &Action::ReadCatalog)?;
        let size = match page_size {
            0 => 100,
            n if n > MAX_PAGE_SIZE => {
                return Err(ServiceError::invalid("page_size", format!("at most {MAX_PAGE_SIZE}")));
            }
            n => n,
        };
        if !page_token.is_empty() {
            TypeCode::parse(page_token)
                .map_err(|_| ServiceError::invalid("page_token", "not a token this listing returned"))?;
        }
        let rows = sqlx::query(
            "SELECT code, status, definition_json, created_at, published_at FROM licence_types
             WHERE code > $1 ORDER BY code LIMIT $2",
        )
        .bind(page_token)
        .bind(i64::from(size) + 1)
        .fetch_all(&self.db.pool)
        .await
        .map_err(db_err)?;
        let mut out = rows.iter().map(row_to_record).collect::<Result<Vec<_>, _>>()?;
        let next = if out.len() > size as usize {
            out.truncate(size as usize);
            out.last().map(|r| r.code().to_owned()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((out, next))
    }

    async fn fetch(&self, code: &str) -> Result<LicenceTypeRecord, ServiceError> {
        TypeCode::parse(code).map_err(|e| ServiceError::invalid("code", e))?;
        let row = sqlx::query(
            "SELECT code, status, definition_json, created_at, published_at FROM licence_types WHERE code = $1",
        )
        .bind(code)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(db_err)?
        .ok_or_else(|| ServiceError::NotFound(format!("no licence type {code}")))?;
        row_to_record(&row)
    }
}

async fn record_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    code: &str,
    who: &Principal,
    change: &str,
    detail_json: &str,
) -> Result<(), ServiceError> {
    sqlx::query(
        "INSERT INTO catalog_changes (type_code, actor, change, detail_json, recorded_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(code)
    .bind(who.actor())
    .bind(change)
    .bind(detail_json)
    .bind(format_time(now()))
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

fn row_to_record(row: &sqlx::any::AnyRow) -> Result<LicenceTypeRecord, ServiceError> {
    let get = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let definition: LicenceTypeDefinition =
        serde_json::from_str(&get("definition_json")?).map_err(ServiceError::internal)?;
    let published_at: Option<String> = row.try_get("published_at").map_err(db_err)?;
    Ok(LicenceTypeRecord {
        definition,
        status: TypeStatus::parse(&get("status")?)?,
        created_at: parse_time(&get("created_at")?).ok_or_else(|| ServiceError::internal("bad created_at"))?,
        published_at: published_at.as_deref().and_then(parse_time),
    })
}
