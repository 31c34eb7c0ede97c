//! Records as the services hold them and hand to each other: licences and
//! their lifecycle events (issuance), licence types (catalog). Plain data,
//! read back from a service's tables or from the wire.

use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use crate::date::read_date;
use crate::{LicenceState, LicenceStatus, LicenceTypeDefinition, LifecycleAction};

/// A licence as the library holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenceRecord {
    pub identifier: String,
    pub type_code: String,
    pub issuer_code: String,
    pub template_version: u32,
    /// Status as of the read (expiry derived from `valid_until`).
    pub status: LicenceStatus,
    /// Status as recorded.
    pub stored_status: LicenceStatus,
    pub reported_lost: bool,
    pub mortgaged: bool,
    pub superseded_by: Option<String>,
    /// While superseded: the day the successor takes effect. Until then this
    /// version stays in force (its `status` reads valid).
    pub successor_from: Option<Date>,
    pub replaces: Option<String>,
    /// The latest annual review or inspection.
    pub last_check: Option<LastCheck>,
    pub valid_until: Option<Date>,
    pub document_json: String,
    pub jws: String,
    pub key_id: String,
    pub recorded_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl LicenceRecord {
    /// The state the transition table works on: a version replaced by a
    /// successor takes no more events, even while it stays in force.
    pub fn state(&self) -> LicenceState {
        let status = if self.superseded_by.is_some() { LicenceStatus::Superseded } else { self.status };
        LicenceState { status, lost: self.reported_lost, mortgaged: self.mortgaged }
    }

    /// Whether this version was replaced but stays in force until its
    /// successor takes effect.
    pub fn awaiting_successor(&self) -> bool {
        self.superseded_by.is_some() && self.status == LicenceStatus::Valid
    }
}

/// The latest annual review (年审) or inspection (年检) of a licence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    pub kind: LifecycleAction,
    pub result: String,
    /// Failed, and its type says a failed check puts the licence out of force.
    pub invalidates: bool,
}

impl LastCheck {
    /// Whether the check failed (不合格, fail).
    pub fn failed(&self) -> bool {
        crate::check_failed(&self.result)
    }
}

/// What an event carries beyond its kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due_date: Option<String>,
    /// For change and renewal: the other version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related_identifier: Option<String>,
    /// A cancellation an administrator forced on an encumbered licence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<bool>,
}

/// One lifecycle event, which is also one entry of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub sequence: i64,
    pub identifier: String,
    pub kind: LifecycleAction,
    pub status_after: LicenceStatus,
    pub actor: String,
    pub reason: String,
    pub details: EventDetails,
    pub backfill: bool,
    pub occurred_at: OffsetDateTime,
    pub recorded_at: OffsetDateTime,
}

/// An event with the type and issuer of its licence, as the feed streams it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEntry {
    pub event: EventRecord,
    pub type_code: String,
    pub issuer_code: String,
}

/// Whether the document's validity has started by `today`.
pub fn started(document_json: &str, today: Date) -> bool {
    crate::LicenceDocument::from_json(document_json.as_bytes())
        .ok()
        .and_then(|d| read_date(&d.valid_from).ok())
        .is_some_and(|from| from <= today)
}

/// Lifecycle of a licence type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(TypeStatus::Draft),
            "published" => Some(TypeStatus::Published),
            "retired" => Some(TypeStatus::Retired),
            _ => None,
        }
    }
}

/// A licence type as the catalogue holds it; `definition.code` is always set
/// and `definition.template` is the version asked for (the current one by default).
#[derive(Debug, Clone, PartialEq)]
pub struct LicenceTypeRecord {
    pub definition: LicenceTypeDefinition,
    pub status: TypeStatus,
    /// The type's current template version.
    pub current_version: u32,
    pub created_at: OffsetDateTime,
    pub published_at: Option<OffsetDateTime>,
    pub retired_at: Option<OffsetDateTime>,
}

impl LicenceTypeRecord {
    pub fn code(&self) -> &str {
        self.definition.code.as_deref().unwrap_or_default()
    }
}

/// Most licence types one holder lookup may name.
pub const MAX_QUERY_TYPES: usize = 50;

/// A lookup of one holder's licences by holder ID, in identifier order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolderQuery {
    /// GB/T 36903 holder ID type code.
    pub holder_id_type: String,
    pub holder_id_number: String,
    /// Only these licence types; empty for all.
    pub type_codes: Vec<String>,
    /// Only licences in this status as of today.
    pub status: Option<crate::LicenceStatus>,
    pub page_size: u32,
    /// Empty for the first page; else the last identifier of the previous page.
    pub page_token: String,
}

impl HolderQuery {
    /// Checks the query at the edge: the holder ID's shape, the type codes
    /// (at most [`MAX_QUERY_TYPES`], each 21 characters), the page token.
    /// Returns the holder ID number as stored (a citizen ID's `x` upper-cased).
    pub fn check(&self) -> Result<String, crate::Violations> {
        let number =
            crate::parse_holder_id("holder_id_type", "holder_id_number", &self.holder_id_type, &self.holder_id_number)?;
        if self.type_codes.len() > MAX_QUERY_TYPES {
            return Err(crate::Violations::single("type_codes", format!("at most {MAX_QUERY_TYPES}")));
        }
        for (i, code) in self.type_codes.iter().enumerate() {
            if let Err(e) = crate::TypeCode::parse(code) {
                return Err(crate::Violations::single(format!("type_codes[{i}]"), e));
            }
        }
        if self.page_token.chars().count() > 128 || self.page_token.chars().any(char::is_control) {
            return Err(crate::Violations::single("page_token", "not a token this listing returned"));
        }
        Ok(number)
    }
}
