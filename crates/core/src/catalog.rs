//! Licence types as the catalogue defines them (GB/T 36902): type code,
//! authorities, holder category, validity range, and the face template every
//! licence of the type is checked against; and which of a type's own fields
//! a revision may change.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::Date;

use crate::holder::HolderCategory;
pub use crate::template::{FaceTemplate, FieldDefinition, FieldKind};
use crate::text::Name;
use crate::uscc::Uscc;
use crate::violation::{FieldViolation, Violations};

/// A 21-character licence type code: the defining authority's unified social
/// credit code followed by a 3-digit number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeCode(String);

impl TypeCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.chars().count() != 21 || !s.is_ascii() {
            return Err(format!("must be 21 letters and digits, got {:?}", s));
        }
        Uscc::parse(&s[..18]).map_err(|e| format!("first 18 characters are not a unified social credit code: {e}"))?;
        if !s[18..].bytes().all(|b| b.is_ascii_digit()) {
            return Err("last 3 characters must be digits".into());
        }
        Ok(TypeCode(s.to_owned()))
    }

    /// The type code numbered `n` (0..=999) under a defining authority.
    pub fn new(authority: &Uscc, n: u16) -> Result<Self, String> {
        if n > 999 {
            return Err("type number must be at most 999".into());
        }
        Ok(TypeCode(format!("{}{n:03}", authority.as_str())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The defining authority's code (first 18 characters).
    pub fn authority(&self) -> &str {
        &self.0[..18]
    }
}

impl fmt::Display for TypeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Level of a defining or issuing authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorityLevel {
    National,
    Provincial,
    City,
    District,
    Township,
    Other,
}

/// A defining or issuing authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authority {
    pub name: String,
    pub code: String,
    pub level: AuthorityLevel,
}

/// How long a licence of a type is valid: `N/Y`, `N/M`, `N/D` or `long-term`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidityRange {
    LongTerm,
    Years(u32),
    Months(u32),
    Days(u32),
}

impl ValidityRange {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "long-term" {
            return Ok(ValidityRange::LongTerm);
        }
        let err = || format!("{s:?} is not a validity range: use N/Y, N/M, N/D or long-term");
        let (n, unit) = s.split_once('/').ok_or_else(err)?;
        let n: u32 = n.parse().map_err(|_| err())?;
        if n == 0 || n > 100 * 366 {
            return Err(err());
        }
        match unit {
            "Y" if n <= 100 => Ok(ValidityRange::Years(n)),
            "M" if n <= 1200 => Ok(ValidityRange::Months(n)),
            "D" => Ok(ValidityRange::Days(n)),
            _ => Err(err()),
        }
    }

    /// The last day of validity for a licence valid from `from`: `from` plus
    /// the range, minus one day (validity dates are inclusive). `None` for long-term.
    pub fn end_date(self, from: Date) -> Option<Date> {
        let add_months = |months: u32| -> Option<Date> {
            let total = from.year() * 12 + (from.month() as i32 - 1) + months as i32;
            let (year, month0) = (total.div_euclid(12), total.rem_euclid(12));
            let month = time::Month::try_from(month0 as u8 + 1).ok()?;
            let day = from.day().min(month.length(year));
            Date::from_calendar_date(year, month, day).ok()
        };
        let end = match self {
            ValidityRange::LongTerm => return None,
            ValidityRange::Years(n) => add_months(n * 12)?,
            ValidityRange::Months(n) => add_months(n)?,
            ValidityRange::Days(n) => from.checked_add(time::Duration::days(i64::from(n)))?,
        };
        end.previous_day()
    }
}

impl fmt::Display for ValidityRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidityRange::LongTerm => f.write_str("long-term"),
            ValidityRange::Years(n) => write!(f, "{n}/Y"),
            ValidityRange::Months(n) => write!(f, "{n}/M"),
            ValidityRange::Days(n) => write!(f, "{n}/D"),
        }
    }
}

impl Serialize for ValidityRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ValidityRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ValidityRange::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A government service item (事项) a licence type relates to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceItem {
    pub name: String,
    pub code: String,
}

/// What an administrator writes to define a licence type (GB/T 36902).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceTypeDefinition {
    /// Empty to have the catalogue assign the next number under the defining authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub name: String,
    pub defining_authority: Authority,
    /// Related service items (关联事项).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_items: Vec<ServiceItem>,
    pub holder_category: HolderCategory,
    pub validity: ValidityRange,
    pub issuing_level: AuthorityLevel,
    pub issuers: Vec<String>,
    pub template: FaceTemplate,
    /// How many days after its end an expired licence of this type may still
    /// be renewed (延续); 0 means only before it expires.
    #[serde(default = "default_renewal_window_days")]
    pub renewal_window_days: u32,
    /// Whether a failed annual review or inspection (不合格) puts a licence of
    /// this type out of force until a later one passes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed_check_invalidates: bool,
}

/// The renewal window of a type that names none.
pub const DEFAULT_RENEWAL_WINDOW_DAYS: u32 = 180;
/// The longest renewal window a type may name.
pub const MAX_RENEWAL_WINDOW_DAYS: u32 = 3650;

fn default_renewal_window_days() -> u32 {
    DEFAULT_RENEWAL_WINDOW_DAYS
}

/// The type's own fields a revision may change (by their JSON names): all but
/// the code and the template. The defining authority's code never changes
/// (the type code embeds it), and the holder category only while the type is
/// a draft.
pub const REVISABLE_FIELDS: [&str; 9] = [
    "name",
    "defining_authority",
    "service_items",
    "holder_category",
    "validity",
    "issuing_level",
    "issuers",
    "renewal_window_days",
    "failed_check_invalidates",
];

impl LicenceTypeDefinition {
    /// Validates every field; the error lists each offending one.
    pub fn validate(&self) -> Result<(), Violations> {
        let mut out = self.field_violations();
        self.template.validate_into(&mut out);
        Violations::into_result(out)
    }

    /// Validates every field but the template (for a revision of the type's
    /// own fields, which leaves the template as it is).
    pub fn validate_fields(&self) -> Result<(), Violations> {
        Violations::into_result(self.field_violations())
    }

    /// Which of [`REVISABLE_FIELDS`] differ in `new`.
    pub fn changed_fields(&self, new: &LicenceTypeDefinition) -> Vec<&'static str> {
        let (Ok(old), Ok(new)) = (serde_json::to_value(self), serde_json::to_value(new)) else {
            return REVISABLE_FIELDS.to_vec();
        };
        REVISABLE_FIELDS.into_iter().filter(|f| old.get(f) != new.get(f)).collect()
    }

    /// Checks `new` as a revision of this type's own fields (its template is
    /// not looked at) and returns the fields it changes: the code and the
    /// defining authority's code may not change, nor the holder category
    /// once the type is `published` (licences issued to holders of one
    /// category would belong to a type for the other).
    pub fn check_type_revision(
        &self,
        new: &LicenceTypeDefinition,
        published: bool,
    ) -> Result<Vec<&'static str>, Violations> {
        let mut out = Vec::new();
        if new.code.is_some() && new.code != self.code {
            out.push(FieldViolation::new("code", "a type's code never changes"));
        }
        if new.defining_authority.code != self.defining_authority.code {
            out.push(FieldViolation::new(
                "defining_authority.code",
                format!("never changes: the type code starts with it ({})", self.defining_authority.code),
            ));
        }
        if published && new.holder_category != self.holder_category {
            out.push(FieldViolation::new(
                "holder_category",
                format!(
                    "cannot change once the type is published (licences were issued to a {}): define a new type",
                    self.holder_category.as_str()
                ),
            ));
        }
        Violations::into_result(out)?;
        Ok(self.changed_fields(new))
    }

    fn field_violations(&self) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if let Err(e) = Name::check(&self.name) {
            out.push(FieldViolation::new("name", e.to_string()));
        }
        if let Err(e) = Name::check(&self.defining_authority.name) {
            out.push(FieldViolation::new("defining_authority.name", e.to_string()));
        }
        if let Err(e) = Uscc::parse(&self.defining_authority.code) {
            out.push(FieldViolation::new("defining_authority.code", e.to_string()));
        }
        if let Some(code) = &self.code {
            match TypeCode::parse(code) {
                Err(e) => out.push(FieldViolation::new("code", e)),
                Ok(tc) if tc.authority() != self.defining_authority.code => {
                    out.push(FieldViolation::new("code", "must start with the defining authority's code"))
                }
                Ok(_) => {}
            }
        }
        if self.renewal_window_days > MAX_RENEWAL_WINDOW_DAYS {
            out.push(FieldViolation::new("renewal_window_days", format!("0 to {MAX_RENEWAL_WINDOW_DAYS} days")));
        }
        let mut item_codes = BTreeSet::new();
        for (i, item) in self.service_items.iter().enumerate() {
            if let Err(e) = Name::check(&item.name) {
                out.push(FieldViolation::new(format!("service_items[{i}].name"), e.to_string()));
            }
            if item.code.is_empty()
                || item.code.len() > 64
                || !item.code.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                out.push(FieldViolation::new(
                    format!("service_items[{i}].code"),
                    "1 to 64 letters, digits, '-', '_' or '.'",
                ));
            } else if !item_codes.insert(item.code.as_str()) {
                out.push(FieldViolation::new(format!("service_items[{i}].code"), "listed twice"));
            }
        }
        if self.issuers.is_empty() {
            out.push(FieldViolation::new("issuers", "at least one issuing agency"));
        }
        let mut seen = BTreeSet::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            if let Err(e) = Uscc::parse(issuer) {
                out.push(FieldViolation::new(format!("issuers[{i}]"), e.to_string()));
            } else if !seen.insert(issuer) {
                out.push(FieldViolation::new(format!("issuers[{i}]"), "listed twice"));
            }
        }
        out
    }

    pub fn may_issue(&self, issuer: &str) -> bool {
        self.issuers.iter().any(|i| i == issuer)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::date;

    pub fn example() -> LicenceTypeDefinition {
        serde_json::from_value(serde_json::json!({
            "name": "食品经营许可证",
            "defining_authority": {"name": "国家市场监督管理总局", "code": "11100000000013338W", "level": "national"},
            "service_items": [{"name": "食品经营许可", "code": "11100000000013338W3000111005000"}],
            "holder_category": "legal_person",
            "validity": "5/Y",
            "issuing_level": "district",
            "issuers": ["91350100M000100Y43"],
            "template": {"fields": [
                {"key": "business_scope", "label": "经营项目", "kind": "text", "required": true, "max_length": 200},
                {"key": "permit_no", "label": "许可证编号", "kind": "text", "required": true, "pattern": "JY[0-9]{14}"},
                {"key": "approved_on", "label": "批准日期", "kind": "date"},
                {"key": "staff", "label": "从业人数", "kind": "integer"}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn example_is_valid() {
        example().validate().unwrap();
    }

    #[test]
    fn names_each_offending_field() {
        let mut d = example();
        d.name = String::new();
        d.defining_authority.code = "91350100M000100Y44".into();
        d.issuers.push("bad".into());
        d.template.fields[1].pattern = Some("(".into());
        d.template.fields[2].key = "business_scope".into();
        let e = d.validate().unwrap_err();
        for f in
            ["name", "defining_authority.code", "issuers[1]", "template.fields[1].pattern", "template.fields[2].key"]
        {
            assert!(e.names(f), "{f} missing from {e}");
        }
    }

    #[test]
    fn a_template_without_fields_is_refused() {
        let mut d = example();
        d.template.fields.clear();
        let e = d.validate().unwrap_err();
        assert!(e.names("template.fields"), "{e}");
        assert!(d.validate_fields().is_ok());
    }

    #[test]
    fn revisions_of_the_type_change_everything_but_code_authority_code_and_published_category() {
        let mut old = example();
        old.code = Some("11100000000013338W001".into());
        let mut new = old.clone();
        new.name = "食品经营许可证（新）".into();
        new.issuers.push("91110000802100433B".into());
        new.validity = ValidityRange::Years(10);
        new.defining_authority.name = "市场监管总局".into();
        new.template.fields.clear(); // not looked at
        assert_eq!(
            old.check_type_revision(&new, true).unwrap(),
            vec!["name", "defining_authority", "validity", "issuers"]
        );
        assert!(old.check_type_revision(&old, true).unwrap().is_empty());
        let mut code = old.clone();
        code.code = Some("11100000000013338W002".into());
        code.defining_authority.code = "12100000400010275N".into();
        code.holder_category = HolderCategory::NaturalPerson;
        let e = old.check_type_revision(&code, true).unwrap_err();
        for f in ["code", "defining_authority.code", "holder_category"] {
            assert!(e.names(f), "{f} missing from {e}");
        }
        let mut category = old.clone();
        category.holder_category = HolderCategory::NaturalPerson;
        assert_eq!(old.check_type_revision(&category, false).unwrap(), vec!["holder_category"]);
    }

    #[test]
    fn validity_end_dates() {
        assert_eq!(ValidityRange::Years(5).end_date(date!(2026 - 01 - 01)), Some(date!(2030 - 12 - 31)));
        assert_eq!(ValidityRange::Months(1).end_date(date!(2026 - 01 - 31)), Some(date!(2026 - 02 - 27)));
        assert_eq!(ValidityRange::Days(1).end_date(date!(2026 - 01 - 31)), Some(date!(2026 - 01 - 31)));
        assert_eq!(ValidityRange::Years(1).end_date(date!(2024 - 02 - 29)), Some(date!(2025 - 02 - 27)));
        assert_eq!(ValidityRange::LongTerm.end_date(date!(2026 - 01 - 01)), None);
    }

    proptest! {
        #[test]
        fn validity_round_trips(n in 1u32..=100, unit in 0..4) {
            let v = match unit { 0 => ValidityRange::Years(n), 1 => ValidityRange::Months(n), 2 => ValidityRange::Days(n), _ => ValidityRange::LongTerm };
            prop_assert_eq!(ValidityRange::parse(&v.to_string()).unwrap(), v);
        }

        #[test]
        fn parsers_never_panic(s in ".*") {
            let _ = ValidityRange::parse(&s);
            let _ = TypeCode::parse(&s);
        }

    }
}
