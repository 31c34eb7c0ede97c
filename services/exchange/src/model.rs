//! Usage lists as the exchange keeps them: entries, applications, changes,
//! and the checks on what callers ask for (the edge refuses, the store only
//! ever holds what passed).

use time::{Date, OffsetDateTime};
use zhengzhao_core::date::{format_date, parse_date};
use zhengzhao_core::{FieldViolation, UseCause, Violations};

/// Longest purpose text of an entry or application.
pub const MAX_PURPOSE: usize = 200;
/// Most face fields an entry may name.
pub const MAX_FIELDS: usize = 100;
/// Most types or service items one application may name.
pub const MAX_APPLICATION_ITEMS: usize = 50;
/// Longest service item code or case number.
pub const MAX_REFERENCE: usize = 64;

/// The level of a consuming agency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// An agency of the city (or its districts).
    City,
    /// A provincial agency, through the city (art. 10).
    Province,
    /// A ministry-level agency, through the city.
    Ministry,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::City => "city",
            Level::Province => "province",
            Level::Ministry => "ministry",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "city" => Some(Level::City),
            "province" => Some(Level::Province),
            "ministry" => Some(Level::Ministry),
            _ => None,
        }
    }
}

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Active,
    Suspended,
    Ended,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Active => "active",
            EntryState::Suspended => "suspended",
            EntryState::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(EntryState::Active),
            "suspended" => Some(EntryState::Suspended),
            "ended" => Some(EntryState::Ended),
            _ => None,
        }
    }
}

/// Where an application stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplicationState {
    Pending,
    Approved,
    Refused,
}

impl ApplicationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplicationState::Pending => "pending",
            ApplicationState::Approved => "approved",
            ApplicationState::Refused => "refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(ApplicationState::Pending),
            "approved" => Some(ApplicationState::Approved),
            "refused" => Some(ApplicationState::Refused),
            _ => None,
        }
    }
}

/// What an entry grants (and an application asks for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub purpose: String,
    /// Face field keys the agency sees; empty with `all_fields`.
    pub fields: Vec<String>,
    pub all_fields: bool,
    /// First day in force (China Standard Time).
    pub from: Date,
    /// Last day in force; None for open-ended.
    pub until: Option<Date>,
}

/// Terms as a caller sends them, unchecked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermsRequest {
    pub purpose: String,
    pub fields: Vec<String>,
    pub all_fields: bool,
    pub effective_from: String,
    pub effective_until: String,
}

impl TermsRequest {
    /// Checks the terms as of `today`: a purpose, fields or all fields (not
    /// both), dates in order and not wholly in the past. Field names are
    /// checked against the licence type separately.
    pub fn check(&self, today: Date) -> Result<Terms, Violations> {
        let mut out = Vec::new();
        let purpose = self.purpose.trim();
        if purpose.is_empty() {
            out.push(FieldViolation::new("terms.purpose", "required: what the licences are used for"));
        } else if zhengzhao_core::text::BoundedText::<MAX_PURPOSE>::check(purpose).is_err() {
            out.push(FieldViolation::new(
                "terms.purpose",
                format!("at most {MAX_PURPOSE} characters, no control characters"),
            ));
        }
        let mut fields: Vec<String> = Vec::new();
        match (self.all_fields, self.fields.is_empty()) {
            (true, false) => out.push(FieldViolation::new("terms.fields", "name fields or all_fields, not both")),
            (false, true) => out.push(FieldViolation::new(
                "terms.fields",
                "name the face fields the agency needs, or all_fields for the whole licence",
            )),
            _ => {}
        }
        if self.fields.len() > MAX_FIELDS {
            out.push(FieldViolation::new("terms.fields", format!("at most {MAX_FIELDS}")));
        } else {
            for (i, f) in self.fields.iter().enumerate() {
                let valid = !f.is_empty()
                    && f.len() <= 64
                    && f.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !valid {
                    out.push(FieldViolation::new(format!("terms.fields[{i}]"), "not a face field key"));
                } else if fields.contains(f) {
                    out.push(FieldViolation::new(format!("terms.fields[{i}]"), "listed twice"));
                } else {
                    fields.push(f.clone());
                }
            }
        }
        let from = match self.effective_from.as_str() {
            "" => Some(today),
            s => parse_date(s).map_err(|e| out.push(FieldViolation::new("terms.effective_from", e))).ok(),
        };
        let until = match self.effective_until.as_str() {
            "" => Some(None),
            s => parse_date(s).map(Some).map_err(|e| out.push(FieldViolation::new("terms.effective_until", e))).ok(),
        };
        if let (Some(from), Some(Some(until))) = (from, until) {
            if until < from {
                out.push(FieldViolation::new("terms.effective_until", "before effective_from"));
            } else if until < today {
                out.push(FieldViolation::new("terms.effective_until", "already past"));
            }
        }
        match (from, until) {
            (Some(from), Some(until)) if out.is_empty() => {
                Ok(Terms { purpose: purpose.to_owned(), fields, all_fields: self.all_fields, from, until })
            }
            _ => Err(Violations(out)),
        }
    }
}

/// One line of an agency's usage list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub agency_code: String,
    pub level: Level,
    pub type_code: String,
    pub service_item_code: String,
    pub terms: Terms,
    pub state: EntryState,
    pub application_id: Option<i64>,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

impl Entry {
    /// Active and within its dates on `today`.
    pub fn effective(&self, today: Date) -> bool {
        self.state == EntryState::Active && self.terms.from <= today && self.terms.until.is_none_or(|u| today <= u)
    }

    /// Why the entry does not grant a use on `today`, if it does not.
    pub fn why_not_effective(&self, today: Date) -> Option<String> {
        match self.state {
            EntryState::Suspended => Some(format!("usage-list entry {} is suspended", self.id)),
            EntryState::Ended => Some(format!("usage-list entry {} has ended", self.id)),
            EntryState::Active if self.terms.from > today => {
                Some(format!("usage-list entry {} takes effect on {}", self.id, format_date(self.terms.from)))
            }
            EntryState::Active => match self.terms.until {
                Some(u) if u < today => Some(format!("usage-list entry {} ended on {}", self.id, format_date(u))),
                _ => None,
            },
        }
    }

    /// Whether the agency sees face field `key`.
    pub fn shows(&self, key: &str) -> bool {
        self.terms.all_fields || self.terms.fields.iter().any(|f| f == key)
    }
}

/// An agency's application for entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: i64,
    pub agency_code: String,
    pub level: Level,
    pub type_codes: Vec<String>,
    pub service_item_codes: Vec<String>,
    pub terms: Terms,
    pub state: ApplicationState,
    pub applied_by: String,
    pub applied_at: OffsetDateTime,
    pub decided_by: String,
    pub decided_at: Option<OffsetDateTime>,
    pub decision_reason: String,
    pub entry_ids: Vec<i64>,
}

/// One change to a usage list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub id: i64,
    pub action: String,
    pub entry_id: Option<i64>,
    pub application_id: Option<i64>,
    pub agency_code: String,
    pub actor: String,
    pub operator: String,
    pub reason: String,
    pub details_json: String,
    pub at: OffsetDateTime,
}

/// What every use names: a cause, a service item and a case number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UseContext {
    pub use_cause: String,
    pub service_item_code: String,
    pub case_number: String,
}

impl UseContext {
    /// All three are required; the cause at most 200 characters, the others 64.
    pub fn check(&self) -> Result<(), Violations> {
        let mut out = Vec::new();
        if let Err(v) = UseCause::parse_field("use.use_cause", &self.use_cause) {
            out.extend(v.0);
        }
        for (field, v, what) in [
            ("use.service_item_code", &self.service_item_code, "the service item (事项编码) the use serves"),
            ("use.case_number", &self.case_number, "the case (办件编号) the use serves"),
        ] {
            if v.trim().is_empty() {
                out.push(FieldViolation::new(field, format!("required: {what}")));
            } else if reference_invalid(v) {
                out.push(FieldViolation::new(
                    field,
                    format!("at most {MAX_REFERENCE} characters, no control characters"),
                ));
            }
        }
        if out.is_empty() { Ok(()) } else { Err(Violations(out)) }
    }
}

/// A service item code, case number or similar reference is too long or
/// holds control characters or surrounding blanks.
pub fn reference_invalid(v: &str) -> bool {
    v.chars().count() > MAX_REFERENCE || v.chars().any(char::is_control) || v.trim() != v
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn terms() -> TermsRequest {
        TermsRequest { purpose: "办理许可".into(), fields: vec!["business_scope".into()], ..Default::default() }
    }

    #[test]
    fn terms_are_checked() {
        let today = date!(2026 - 12 - 05);
        let t = terms().check(today).unwrap();
        assert_eq!((t.from, t.until), (today, None));
        let both = TermsRequest { all_fields: true, ..terms() };
        assert!(both.check(today).unwrap_err().names("terms.fields"));
        let neither = TermsRequest { fields: vec![], ..terms() };
        assert!(neither.check(today).unwrap_err().names("terms.fields"));
        let past =
            TermsRequest { effective_from: "2020-01-01".into(), effective_until: "2020-02-01".into(), ..terms() };
        assert!(past.check(today).unwrap_err().names("terms.effective_until"));
        let reversed =
            TermsRequest { effective_from: "2027-02-01".into(), effective_until: "2027-01-01".into(), ..terms() };
        assert!(reversed.check(today).unwrap_err().names("terms.effective_until"));
        let bad_field = TermsRequest { fields: vec!["Bad\nKey".into()], ..terms() };
        assert!(bad_field.check(today).unwrap_err().names("terms.fields[0]"));
        let blank = TermsRequest { purpose: " ".into(), ..terms() };
        assert!(blank.check(today).unwrap_err().names("terms.purpose"));
        let year_minus_one = TermsRequest { effective_from: "-0001-01-01".into(), ..terms() };
        assert!(year_minus_one.check(today).unwrap_err().names("terms.effective_from"));
    }

    #[test]
    fn an_entry_is_effective_within_its_dates_while_active() {
        let today = date!(2026 - 12 - 05);
        let mut e = Entry {
            id: 1,
            agency_code: "A".into(),
            level: Level::City,
            type_code: "T".into(),
            service_item_code: "S".into(),
            terms: terms().check(today).unwrap(),
            state: EntryState::Active,
            application_id: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
            created_by: "admin".into(),
        };
        assert!(e.effective(today) && e.why_not_effective(today).is_none());
        e.terms.until = Some(date!(2026 - 12 - 04));
        assert!(!e.effective(today) && e.why_not_effective(today).unwrap().contains("ended on 2026-12-04"));
        e.terms.until = None;
        e.state = EntryState::Suspended;
        assert!(e.why_not_effective(today).unwrap().contains("suspended"));
        assert!(e.shows("business_scope") && !e.shows("capital"));
    }

    #[test]
    fn a_use_names_cause_item_and_case() {
        let ok = UseContext { use_cause: "审批".into(), service_item_code: "S1".into(), case_number: "C1".into() };
        ok.check().unwrap();
        let none = UseContext::default().check().unwrap_err();
        assert!(none.names("use.use_cause") && none.names("use.service_item_code") && none.names("use.case_number"));
        let newline = UseContext { case_number: "C1\nX".into(), ..ok.clone() };
        assert!(newline.check().unwrap_err().names("use.case_number"));
        let long = UseContext { use_cause: "因".repeat(201), ..ok };
        assert!(long.check().unwrap_err().names("use.use_cause"));
    }
}
