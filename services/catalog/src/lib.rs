//! The catalogue service: licence types and their versioned face templates
//! (GB/T 36902). Administrators define, publish, revise (a type's own fields,
//! or its template) and retire types; everyone else reads them. Every change
//! is recorded (who, when, what). One definition (name and defining
//! authority) is one type: defining it again while it is not retired is refused.

#![forbid(unsafe_code)]

pub mod document;
pub mod error;
pub mod grpc;
pub mod revocation;
mod rows;

use std::sync::Arc;

use time::OffsetDateTime;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::{FaceTemplate, HolderCategory, LicenceTypeDefinition, Reason, TypeCode, Uscc};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, Migrations, StoreConfig, StoreError, format_time, now};

pub use document::{CatalogDocument, CatalogEntry, ImportSummary};
pub use error::CatalogError;
pub use revocation::Revocations;
use rows::{load, load_versions, record_change};
pub use zhengzhao_clients::CatalogClient;
pub use zhengzhao_core::{LicenceTypeRecord, TypeStatus};

static PG: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// This service's migrations.
pub static MIGRATIONS: Migrations = Migrations { postgres: &PG, sqlite: &SQLITE };

/// One template version and when it was published.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersionRecord {
    pub template: FaceTemplate,
    pub created_at: OffsetDateTime,
}

/// One recorded catalogue change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRecord {
    pub id: i64,
    pub code: String,
    pub actor: String,
    pub change: String,
    pub detail_json: String,
    pub recorded_at: OffsetDateTime,
}

/// Filters of a listing; empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter {
    pub name_contains: String,
    pub defining_authority_code: String,
    pub holder_category: Option<HolderCategory>,
    pub status: Option<TypeStatus>,
}

/// Largest page of a listing.
pub const MAX_PAGE_SIZE: u32 = 500;
/// Longest retirement reason.
pub const MAX_REASON: usize = Reason::MAX;

fn page_size(n: u32) -> Result<u32, ServiceError> {
    match n {
        0 => Ok(100),
        n if n > MAX_PAGE_SIZE => Err(ServiceError::invalid("page_size", format!("at most {MAX_PAGE_SIZE}"))),
        n => Ok(n),
    }
}

fn parse_code(code: &str) -> Result<TypeCode, ServiceError> {
    TypeCode::parse(code).map_err(|e| ServiceError::invalid("code", e))
}

fn not_found(code: &str) -> ServiceError {
    CatalogError::NoType(code.to_owned()).into()
}

fn already_defined(existing: &str, def: &LicenceTypeDefinition) -> ServiceError {
    CatalogError::AlreadyDefined {
        existing: existing.to_owned(),
        name: def.name.clone(),
        authority: def.defining_authority.code.clone(),
    }
    .into()
}

/// The catalogue over its own tables.
#[derive(Debug)]
pub struct Catalog {
    db: Db,
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
        def.template.normalise();
        def.name = def.name.trim().to_owned();
        def.validate()?;
        def.template.version = 1;
        let mut tx = self.db.begin().await?;
        if let Some(existing) = rows::same_definition(&mut tx, &def.defining_authority.code, &def.name, "").await? {
            return Err(already_defined(&existing, &def));
        }
        let code = match &def.code {
            Some(c) => c.clone(),
            None => {
                let last: Option<String> = sqlx::query_scalar(
                    "SELECT code FROM licence_types WHERE authority_code = $1 ORDER BY code DESC LIMIT 1",
                )
                .bind(&def.defining_authority.code)
                .fetch_optional(&mut *tx)
                .await?;
                let next = last.and_then(|c| c.get(18..).and_then(|n| n.parse::<u16>().ok())).map_or(1, |n| n + 1);
                let authority = Uscc::parse(&def.defining_authority.code)
                    .map_err(|e| ServiceError::invalid("defining_authority.code", e.to_string()))?;
                TypeCode::new(&authority, next).map_err(|_| CatalogError::CodesExhausted)?.to_string()
            }
        };
        def.code = Some(code.clone());
        let at = now();
        rows::insert_type(&mut tx, &def, TypeStatus::Draft, at).await?;
        rows::insert_version(&mut tx, &code, &def.template, at).await?;
        record_change(&mut tx, &code, who, "create", &serde_json::to_string(&def).map_err(ServiceError::internal)?)
            .await?;
        tx.commit().await?;
        tracing::info!(type_code = %code, actor = %who.actor(), "licence type created");
        self.fetch(&code, 0).await
    }

    /// Publishes a draft type. Publishing a published type changes nothing.
    pub async fn publish(&self, who: &Principal, code: &str) -> Result<LicenceTypeRecord, ServiceError> {
        authorize(who, &Action::ManageCatalog)?;
        parse_code(code)?;
        let mut tx = self.db.begin().await?;
        let current = load(&mut tx, code, 0).await?.ok_or_else(|| not_found(code))?;
        match current.status {
            TypeStatus::Published => return Ok(current),
            TypeStatus::Retired => {
                return Err(CatalogError::Retired(code.to_owned()).into());
            }
            TypeStatus::Draft => {}
        }
        sqlx::query(
            "UPDATE licence_types SET status = 'published', published_at = $2 WHERE code = $1 AND status = 'draft'",
        )
        .bind(code)
        .bind(format_time(now()))
        .execute(&mut *tx)
        .await?;
        record_change(&mut tx, code, who, "publish", "{}").await?;
        tx.commit().await?;
        tracing::info!(type_code = %code, actor = %who.actor(), "licence type published");
        self.fetch(code, 0).await
    }

    /// Replaces the current template in place when that keeps every licence
    /// issued under it valid (any change is fine while the type is a draft);
    /// with `new_version`, publishes it as the next version instead.
    pub async fn revise_template(
        &self,
        who: &Principal,
        code: &str,
        mut template: FaceTemplate,
        new_version: bool,
    ) -> Result<LicenceTypeRecord, ServiceError> {
        authorize(who, &Action::ManageCatalog)?;
        parse_code(code)?;
        template.normalise();
        template.validate()?;
        let mut tx = self.db.begin().await?;
        let current = load(&mut tx, code, 0).await?.ok_or_else(|| not_found(code))?;
        if current.status == TypeStatus::Retired {
            return Err(CatalogError::Retired(code.to_owned()).into());
        }
        let version = if new_version {
            current.current_version + 1
        } else {
            if current.status == TypeStatus::Published {
                current.definition.template.check_revision(&template)?;
            }
            current.current_version
        };
        template.version = version;
        let mut def = current.definition.clone();
        def.template = template.clone();
        let at = now();
        if new_version {
            rows::insert_version(&mut tx, code, &template, at).await?;
        } else {
            rows::replace_version(&mut tx, code, &template).await?;
        }
        rows::update_definition(&mut tx, &def, current.status).await?;
        let detail = serde_json::json!({ "version": version, "new_version": new_version, "template": template });
        record_change(&mut tx, code, who, if new_version { "new_version" } else { "revise" }, &detail.to_string())
            .await?;
        tx.commit().await?;
        tracing::info!(type_code = %code, version, new_version, actor = %who.actor(), "template revised");
        self.fetch(code, 0).await
    }

    /// Revises a type's own fields (everything of `def` but its code and
    /// template, which stay): see
    /// [`LicenceTypeDefinition::check_type_revision`] for what may not
    /// change. A revision that changes nothing records nothing. Licences
    /// already issued are untouched; new issuance follows the new fields.
    pub async fn revise_type(
        &self,
        who: &Principal,
        code: &str,
        mut def: LicenceTypeDefinition,
        reason: &str,
    ) -> Result<LicenceTypeRecord, ServiceError> {
        authorize(who, &Action::ManageCatalog)?;
        parse_code(code)?;
        let reason = Reason::parse_field("reason", reason)?;
        def.name = def.name.trim().to_owned();
        def.validate_fields()?;
        let mut tx = self.db.begin().await?;
        let current = load(&mut tx, code, 0).await?.ok_or_else(|| not_found(code))?;
        if current.status == TypeStatus::Retired {
            return Err(CatalogError::Retired(code.to_owned()).into());
        }
        let changed = current.definition.check_type_revision(&def, current.status != TypeStatus::Draft)?;
        if changed.is_empty() {
            return Ok(current);
        }
        def.code = Some(code.to_owned());
        def.template = current.definition.template.clone();
        if let Some(existing) = rows::same_definition(&mut tx, &def.defining_authority.code, &def.name, code).await? {
            return Err(already_defined(&existing, &def));
        }
        rows::update_definition(&mut tx, &def, current.status).await?;
        let (before, after) = (
            serde_json::to_value(&current.definition).map_err(ServiceError::internal)?,
            serde_json::to_value(&def).map_err(ServiceError::internal)?,
        );
        let pick = |v: &serde_json::Value| -> serde_json::Map<String, serde_json::Value> {
            changed.iter().map(|f| ((*f).to_owned(), v.get(*f).cloned().unwrap_or_default())).collect()
        };
        let detail =
            serde_json::json!({ "reason": reason, "changed": changed, "before": pick(&before), "after": pick(&after) });
        record_change(&mut tx, code, who, "revise_type", &detail.to_string()).await?;
        tx.commit().await?;
        tracing::info!(type_code = %code, changed = ?changed, actor = %who.actor(), "licence type revised");
        self.fetch(code, 0).await
    }

    /// Retires a type: no new issuance; licences already issued stay valid.
    pub async fn retire(&self, who: &Principal, code: &str, reason: &str) -> Result<LicenceTypeRecord, ServiceError> {
        authorize(who, &Action::ManageCatalog)?;
        parse_code(code)?;
        let reason = Reason::parse_field("reason", reason)?;
        let mut tx = self.db.begin().await?;
        let current = load(&mut tx, code, 0).await?.ok_or_else(|| not_found(code))?;
        if current.status == TypeStatus::Retired {
            return Ok(current);
        }
        sqlx::query("UPDATE licence_types SET status = 'retired', retired_at = $2 WHERE code = $1")
            .bind(code)
            .bind(format_time(now()))
            .execute(&mut *tx)
            .await?;
        record_change(&mut tx, code, who, "retire", &serde_json::json!({ "reason": reason }).to_string()).await?;
        tx.commit().await?;
        tracing::info!(type_code = %code, actor = %who.actor(), "licence type retired");
        self.fetch(code, 0).await
    }

    /// A type with its current template, or with template `version` (0 = current).
    pub async fn get(&self, who: &Principal, code: &str, version: u32) -> Result<LicenceTypeRecord, ServiceError> {
        authorize(who, &Action::ReadCatalog)?;
        parse_code(code)?;
        self.fetch(code, version).await
    }

    /// Every template version of a type, oldest first.
    pub async fn versions(&self, who: &Principal, code: &str) -> Result<Vec<TemplateVersionRecord>, ServiceError> {
        authorize(who, &Action::ReadCatalog)?;
        parse_code(code)?;
        let mut conn = self.db.pool.acquire().await?;
        load(&mut conn, code, 0).await?.ok_or_else(|| not_found(code))?;
        load_versions(&mut conn, code).await
    }

    /// One page of types ordered by code, and the token of the next page.
    pub async fn list(
        &self,
        who: &Principal,
        filter: &TypeFilter,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<(Vec<LicenceTypeRecord>, String), ServiceError> {
        authorize(who, &Action::ReadCatalog)?;
        let size = page_size(page_size_asked)?;
        if !page_token.is_empty() {
            TypeCode::parse(page_token)
                .map_err(|_| ServiceError::invalid("page_token", "not a token this listing returned"))?;
        }
        if filter.name_contains.chars().count() > 200 {
            return Err(ServiceError::invalid("name_contains", "at most 200 characters"));
        }
        if !filter.defining_authority_code.is_empty() {
            Uscc::parse(&filter.defining_authority_code)
                .map_err(|e| ServiceError::invalid("defining_authority_code", e.to_string()))?;
        }
        let mut conn = self.db.pool.acquire().await?;
        let mut out = rows::list(&mut conn, filter, page_token, i64::from(size) + 1).await?;
        let next = if out.len() > size as usize {
            out.truncate(size as usize);
            out.last().map(|r| r.code().to_owned()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok((out, next))
    }

    /// One page of the change log, newest first, optionally of one type.
    pub async fn changes(
        &self,
        who: &Principal,
        code: &str,
        page_size_asked: u32,
        page_token: &str,
    ) -> Result<(Vec<ChangeRecord>, String), ServiceError> {
        authorize(who, &Action::ReadCatalog)?;
        if !code.is_empty() {
            parse_code(code)?;
        }
        let page = zhengzhao_core::page::Page::parse(page_size_asked, page_token, MAX_PAGE_SIZE)?;
        let mut conn = self.db.pool.acquire().await?;
        let mut out = rows::changes(&mut conn, code, page.before, page.fetch_limit()).await?;
        let next = page.finish(&mut out, |r| r.id);
        Ok((out, next))
    }

    async fn fetch(&self, code: &str, version: u32) -> Result<LicenceTypeRecord, ServiceError> {
        let mut conn = self.db.pool.acquire().await?;
        load(&mut conn, code, version).await?.ok_or_else(|| match version {
            0 => not_found(code),
            version => CatalogError::NoVersion { code: code.to_owned(), version }.into(),
        })
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }
}

/// The catalogue as other services call it in-process.
#[tonic::async_trait]
impl zhengzhao_clients::CatalogApi for Catalog {
    async fn get(&self, who: &Principal, code: &str, version: u32) -> Result<LicenceTypeRecord, ServiceError> {
        Catalog::get(self, who, code, version).await
    }
}
