//! The exchange service (measures, chapter 3): consumers use licences only
//! within their usage list (用证清单) and with a use cause, service item and
//! case number; they look holders up by holder ID, and take annotated
//! copies (加注件) to view, verify and print. Every use — granted or refused —
//! is written to a tamper-evident usage log before anything is returned.
//!
//! - [`model`]: entries, applications, terms and what a use names;
//! - [`lists`]: usage-list administration, applications and their history;
//! - [`usage`]: the use path (fetch, holder lookup), decided by the list;
//! - [`copy`]: annotated copies, their PDF and download links;
//! - [`usagelog`]: the usage log as a Merkle tree, its checkpoints and queries;
//! - [`holders`]: front ends, holder tokens, the holder's own licences;
//! - [`scenarios`] and [`presentations`]: where holders show licences, and
//!   the selective-disclosure presentations staff verify;
//! - [`rows`] and `holder_rows`: the SQL; [`grpc`], [`holder_grpc`] and
//!   [`http`]: the edges.

#![forbid(unsafe_code)]

pub mod copy;
pub mod error;
pub mod grpc;
pub mod holder_grpc;
mod holder_rows;
pub mod holders;
pub mod http;
pub mod lists;
pub mod model;
pub mod presentations;
pub mod reminders;
mod rows;
pub mod scenarios;
pub mod usage;
pub mod usagelog;

use std::sync::Arc;

use zhengzhao_clients::{CatalogClient, IssuanceClient, SigningClient};
use zhengzhao_core::clock::Clock;
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, Migrations, StoreConfig};

pub use error::{ExchangeError, Refusal};
pub use usage::{Caller, UsedLicence};
pub use usagelog::{UsageFilter, UsageRecord};

static PG: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// This service's migrations.
pub static MIGRATIONS: Migrations = Migrations { postgres: &PG, sqlite: &SQLITE };

/// What the exchange needs besides its store.
pub struct ExchangeDeps {
    pub issuance: IssuanceClient,
    pub catalog: CatalogClient,
    /// Signs annotated copies and usage-log checkpoints as the library.
    pub signing: SigningClient,
    /// The library's code: the issuer whose key signs copies.
    pub agency: String,
    /// Where the plain-HTTP routes are reached from outside (no trailing slash).
    pub public_url: String,
    /// The font copies print with (loaded when the first copy is printed).
    pub font: FontSource,
    pub clock: Clock,
    /// The exchange's own credential key, which mints holder tokens (None:
    /// holder login is unavailable).
    pub holder_tokens: holders::HolderTokenKey,
}

/// The exchange over its own tables.
pub struct Exchange {
    db: Db,
    issuance: IssuanceClient,
    catalog: CatalogClient,
    signing: SigningClient,
    agency: String,
    public_url: String,
    font_source: FontSource,
    font: std::sync::OnceLock<zhengzhao_pdf::CopyFont>,
    clock: Clock,
    holder_tokens: holders::HolderTokenKey,
    /// The usage log's one writer (group commit).
    writer: usagelog::Writer,
}

/// Where the copy font comes from: the file configured, or the first of
/// the usual CJK font locations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FontSource {
    pub path: Option<std::path::PathBuf>,
    /// The face, when the file is a collection (.ttc).
    pub index: u32,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange").field("agency", &self.agency).field("public_url", &self.public_url).finish()
    }
}

impl Exchange {
    /// Opens the store, and logs any usage records written before the usage
    /// log was a Merkle tree.
    pub async fn open(store: &StoreConfig, deps: ExchangeDeps) -> Result<Arc<Self>, ServiceError> {
        let db = zhengzhao_store::open(store, "exchange", &MIGRATIONS).await.map_err(ServiceError::internal)?;
        let writer = usagelog::Writer::spawn(db.clone());
        let exchange = Arc::new(Exchange {
            writer,
            db,
            issuance: deps.issuance,
            catalog: deps.catalog,
            signing: deps.signing,
            agency: deps.agency,
            public_url: deps.public_url.trim_end_matches('/').to_owned(),
            font_source: deps.font,
            font: std::sync::OnceLock::new(),
            clock: deps.clock,
            holder_tokens: deps.holder_tokens,
        });
        exchange.catch_up_log().await?;
        Ok(exchange)
    }

    /// Today in the library's calendar (China Standard Time).
    pub fn today(&self) -> time::Date {
        self.clock.today()
    }

    /// The URL the plain-HTTP routes are reached at.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }
}

impl FontSource {
    /// Loads the font: the file named, or the first usual location.
    pub fn load(&self) -> Result<zhengzhao_pdf::CopyFont, String> {
        match &self.path {
            Some(p) => zhengzhao_pdf::CopyFont::load(p, self.index).map_err(|e| e.to_string()),
            None => zhengzhao_pdf::CopyFont::find_default().map_err(|e| e.to_string()),
        }
    }
}
