//! Face templates (照面模板): the typed fields of a licence face, the check
//! of a licence's face values against them, and the rule for which template
//! changes keep existing licences valid.
//!
//! Value formats: text (optionally bounded by `max_length` and a full-match
//! `pattern`), date `YYYY-MM-DD`, integer (64-bit, canonical: an optional
//! leading `-`, no `+`, no leading zeros, `0` but not `-0`; optionally bounded
//! by `min` and `max`), decimal `-?digits[.digits]` (at most `max_scale`
//! digits after the point), enumeration (one of `values`), boolean
//! `true`/`false`, and attachment reference `sha256:<64 lower-case hex>` (the
//! digest of the attached file). A required field must be present and not
//! blank (a value of spaces only is missing).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::date::parse_date;
use crate::text::BoundedText;
use crate::violation::{FieldViolation, Violations};

/// Type of a face field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Text,
    Date,
    Integer,
    Decimal,
    Enumeration,
    Boolean,
    Attachment,
}

impl FieldKind {
    pub const ALL: [FieldKind; 7] = [
        FieldKind::Text,
        FieldKind::Date,
        FieldKind::Integer,
        FieldKind::Decimal,
        FieldKind::Enumeration,
        FieldKind::Boolean,
        FieldKind::Attachment,
    ];
}

/// One face field (照面信息项).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDefinition {
    /// Key used in licence documents: `a-z` first, then `a-z`, `0-9`, `_`.
    pub key: String,
    /// Display label, in Chinese.
    pub label: String,
    pub kind: FieldKind,
    #[serde(default)]
    pub required: bool,
    /// Display order, from 1; all 0 (omitted) means the order of the list.
    #[serde(default)]
    pub order: u32,
    /// Maximum length in characters (text only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Regular expression the whole value must match (text only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// The allowed values (enumeration only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Most digits after the decimal point (decimal only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale: Option<u32>,
    /// Smallest value allowed (integer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    /// Largest value allowed (integer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

impl FieldDefinition {
    /// An optional field of `kind` with no limits: the start of a definition.
    pub fn new(key: impl Into<String>, label: impl Into<String>, kind: FieldKind) -> Self {
        FieldDefinition {
            key: key.into(),
            label: label.into(),
            kind,
            required: false,
            order: 0,
            max_length: None,
            pattern: None,
            values: Vec::new(),
            max_scale: None,
            min: None,
            max: None,
        }
    }
}

/// Most fields a template may define.
pub const MAX_FIELDS: usize = 200;
/// Longest face field value accepted, whatever the template says.
pub const MAX_VALUE_LEN: usize = 4000;
/// Most values an enumeration may list.
pub const MAX_ENUM_VALUES: usize = 500;
/// Longest field label, in characters.
pub const MAX_LABEL: usize = 100;

/// A face template: the fields of a licence face, and the version that
/// licences issued under it record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceTemplate {
    /// Set by the catalogue; 1 for the first version.
    #[serde(default)]
    pub version: u32,
    pub fields: Vec<FieldDefinition>,
}

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some('a'..='z'))
        && k.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An unknown face-field key as named in a violation: at most 64 bytes (the
/// longest valid key), cut on a character boundary and marked with `…`.
fn shorten_key(k: &str) -> String {
    if k.len() <= 64 {
        return k.to_owned();
    }
    let mut end = 64;
    while !k.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &k[..end])
}

fn has_han(s: &str) -> bool {
    s.chars().any(|c| matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F))
}

/// The full-match regex of `pattern`, compiled once per thread (templates are
/// checked once per licence, and bulk imports check millions).
fn full_match(pattern: &str) -> Option<regex::Regex> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static COMPILED: RefCell<HashMap<String, Option<regex::Regex>>> = RefCell::new(HashMap::new());
    }
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(hit) = cache.get(pattern) {
            return hit.clone();
        }
        if cache.len() >= 1024 {
            cache.clear();
        }
        let compiled = regex::Regex::new(&format!("^(?:{pattern})$")).ok();
        cache.insert(pattern.to_owned(), compiled.clone());
        compiled
    })
}

/// Whether `v` is a decimal with at most `max_scale` digits after the point.
fn decimal_ok(v: &str, max_scale: Option<u32>) -> bool {
    let unsigned = v.strip_prefix('-').unwrap_or(v);
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let int_ok = !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()) && (int == "0" || !int.starts_with('0'));
    let frac_ok = frac.is_none_or(|f| {
        !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) && max_scale.is_none_or(|m| f.len() <= m as usize)
    });
    v.len() <= 40 && int_ok && frac_ok
}

/// `v` as a canonical integer: an optional `-`, then `0` or digits without a
/// leading zero, in the 64-bit range; `-0` is not canonical.
pub fn canonical_integer(v: &str) -> Option<i64> {
    let digits = v.strip_prefix('-').unwrap_or(v);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && v != "-0";
    if canonical { v.parse().ok() } else { None }
}

/// What is wrong with `v` as a value of integer field `f`, if anything.
fn integer_problem(f: &FieldDefinition, v: &str) -> Option<String> {
    let Some(n) = canonical_integer(v) else {
        // Short: a refused draft reports up to 50 of these within a byte budget.
        return Some(format!("{v:?} is not an integer (canonical: no +, no leading 0)"));
    };
    match (f.min, f.max) {
        (Some(lo), Some(hi)) if n < lo || n > hi => Some(format!("{n} is outside {lo} to {hi}")),
        (Some(lo), None) if n < lo => Some(format!("{n} is below the minimum {lo}")),
        (None, Some(hi)) if n > hi => Some(format!("{n} is above the maximum {hi}")),
        _ => None,
    }
}

fn attachment_ok(v: &str) -> bool {
    v.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

impl FaceTemplate {
    /// Gives every field an order from its position when none was given.
    pub fn normalise(&mut self) {
        if self.fields.iter().all(|f| f.order == 0) {
            for (i, f) in self.fields.iter_mut().enumerate() {
                f.order = u32::try_from(i + 1).unwrap_or(u32::MAX);
            }
        }
    }

    /// The fields in display order.
    pub fn in_order(&self) -> Vec<&FieldDefinition> {
        let mut v: Vec<&FieldDefinition> = self.fields.iter().collect();
        v.sort_by_key(|f| f.order);
        v
    }

    /// Validates the template's definition.
    pub fn validate(&self) -> Result<(), Violations> {
        let mut out = Vec::new();
        self.validate_into(&mut out);
        Violations::into_result(out)
    }

    pub(crate) fn validate_into(&self, out: &mut Vec<FieldViolation>) {
        if self.fields.is_empty() {
            out.push(FieldViolation::new("template.fields", "at least one field"));
        }
        if self.fields.len() > MAX_FIELDS {
            out.push(FieldViolation::new("template.fields", format!("at most {MAX_FIELDS} fields")));
        }
        let mut keys = BTreeSet::new();
        let mut orders = BTreeSet::new();
        let all_unordered = self.fields.iter().all(|f| f.order == 0);
        for (i, f) in self.fields.iter().enumerate() {
            let at = |p: &str| format!("template.fields[{i}].{p}");
            if !valid_key(&f.key) {
                out.push(FieldViolation::new(at("key"), "a-z first, then a-z, 0-9 or _, at most 64"));
            } else if !keys.insert(f.key.as_str()) {
                out.push(FieldViolation::new(at("key"), format!("duplicate key {:?}", f.key)));
            }
            if BoundedText::<MAX_LABEL>::check(&f.label).is_err() || !has_han(&f.label) {
                out.push(FieldViolation::new(at("label"), format!("1 to {MAX_LABEL} characters, in Chinese")));
            }
            if !all_unordered && (f.order == 0 || !orders.insert(f.order)) {
                out.push(FieldViolation::new(at("order"), "orders must be distinct and from 1 (or all omitted)"));
            }
            let text = f.kind == FieldKind::Text;
            if !text && (f.max_length.is_some() || f.pattern.is_some()) {
                out.push(FieldViolation::new(at("kind"), "max_length and pattern apply to text fields only"));
            }
            if f.kind != FieldKind::Enumeration && !f.values.is_empty() {
                out.push(FieldViolation::new(at("values"), "values apply to enumeration fields only"));
            }
            if f.kind != FieldKind::Decimal && f.max_scale.is_some() {
                out.push(FieldViolation::new(at("max_scale"), "max_scale applies to decimal fields only"));
            }
            if f.kind != FieldKind::Integer && (f.min.is_some() || f.max.is_some()) {
                out.push(FieldViolation::new(at("kind"), "min and max apply to integer fields only"));
            }
            if let (Some(lo), Some(hi)) = (f.min, f.max)
                && lo > hi
            {
                out.push(FieldViolation::new(at("max"), format!("max {hi} is below min {lo}")));
            }
            if f.max_length == Some(0) || f.max_length.is_some_and(|m| m as usize > MAX_VALUE_LEN) {
                out.push(FieldViolation::new(at("max_length"), format!("1 to {MAX_VALUE_LEN}")));
            }
            if f.max_scale.is_some_and(|s| s > 18) {
                out.push(FieldViolation::new(at("max_scale"), "at most 18"));
            }
            if let Some(p) = &f.pattern
                && (p.len() > 500 || full_match(p).is_none())
            {
                out.push(FieldViolation::new(at("pattern"), "not a valid regular expression (at most 500 bytes)"));
            }
            if f.kind == FieldKind::Enumeration {
                let mut seen = BTreeSet::new();
                let bad = f.values.is_empty()
                    || f.values.len() > MAX_ENUM_VALUES
                    || f.values.iter().any(|v| {
                        v.trim().is_empty()
                            || v.chars().count() > 200
                            || v.chars().any(char::is_control)
                            || !seen.insert(v)
                    });
                if bad {
                    out.push(FieldViolation::new(
                        at("values"),
                        format!("1 to {MAX_ENUM_VALUES} distinct, non-empty values of at most 200 characters"),
                    ));
                }
            }
        }
    }

    /// Checks face field values against the template; every offending field
    /// is named. A map with more entries than the template has fields is
    /// refused whole, with one violation, before any value is looked at.
    pub fn check_values(&self, values: &BTreeMap<String, String>) -> Result<(), Violations> {
        let allowed = self.fields.len().min(MAX_FIELDS);
        if values.len() > allowed {
            return Err(Violations::single(
                "face_fields",
                format!(
                    "at most {allowed} entries (the fields of template version {}), got {}",
                    self.version,
                    values.len()
                ),
            ));
        }
        let mut out = Vec::new();
        for f in &self.fields {
            let at = format!("face_fields.{}", f.key);
            let given = values.get(&f.key).filter(|v| !v.is_empty());
            if f.required && given.is_none_or(|v| v.trim().is_empty()) {
                out.push(FieldViolation::new(at, format!("required, not blank ({})", f.label)));
                continue;
            }
            let Some(v) = given else { continue };
            let n = v.chars().count();
            if n > MAX_VALUE_LEN || v.chars().any(|c| c.is_control() && c != '\n') {
                out.push(FieldViolation::new(at, format!("at most {MAX_VALUE_LEN} characters, no control characters")));
                continue;
            }
            let problem = match f.kind {
                FieldKind::Text => {
                    if let Some(max) = f.max_length.filter(|m| n > *m as usize) {
                        Some(format!("at most {max} characters, got {n}"))
                    } else if let Some(p) = &f.pattern
                        && !full_match(p).is_some_and(|r| r.is_match(v))
                    {
                        Some(format!("does not match pattern {p}"))
                    } else {
                        None
                    }
                }
                FieldKind::Date => parse_date(v).err(),
                FieldKind::Integer => integer_problem(f, v),
                FieldKind::Decimal => (!decimal_ok(v, f.max_scale)).then(|| match f.max_scale {
                    Some(s) => format!("{v:?} is not a decimal with at most {s} digits after the point"),
                    None => format!("{v:?} is not a decimal"),
                }),
                FieldKind::Enumeration => {
                    (!f.values.iter().any(|x| x == v)).then(|| format!("{v:?} is not one of {}", f.values.join(", ")))
                }
                FieldKind::Boolean => (v != "true" && v != "false").then(|| "true or false".to_owned()),
                FieldKind::Attachment => {
                    (!attachment_ok(v)).then(|| "an attachment reference sha256:<64 lower-case hex>".to_owned())
                }
            };
            if let Some(p) = problem {
                out.push(FieldViolation::new(at, p));
            }
        }
        for k in values.keys() {
            if !self.fields.iter().any(|f| &f.key == k) {
                out.push(FieldViolation::new(
                    format!("face_fields.{}", shorten_key(k)),
                    "not a field of this template",
                ));
            }
        }
        Violations::into_result(out)
    }

    /// Whether replacing this template by `new` in place keeps every licence
    /// issued under it valid; otherwise the violations, each asking for a new version.
    /// Allowed in place: new optional fields, new labels and orders, relaxed
    /// limits (a longer `max_length`, a larger `max_scale`, a lower `min`, a
    /// higher `max`, or none), removed patterns, more enumeration values.
    pub fn check_revision(&self, new: &FaceTemplate) -> Result<(), Violations> {
        let mut out = Vec::new();
        let mut say = |key: &str, why: &str| {
            out.push(FieldViolation::new(
                format!("template.fields.{key}"),
                format!("{why}: existing licences would no longer validate; publish it as a new version"),
            ));
        };
        for old in &self.fields {
            let Some(f) = new.fields.iter().find(|f| f.key == old.key) else {
                say(&old.key, "removed");
                continue;
            };
            if f.kind != old.kind {
                say(&old.key, "kind changed");
                continue;
            }
            if f.required && !old.required {
                say(&old.key, "made required");
            }
            let tighter = |o: Option<u32>, n: Option<u32>| match (o, n) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(o), Some(n)) => n < o,
            };
            if tighter(old.max_length, f.max_length) {
                say(&old.key, "max_length lowered");
            }
            if f.pattern.is_some() && f.pattern != old.pattern {
                say(&old.key, "pattern changed");
            }
            if old.values.iter().any(|v| !f.values.contains(v)) {
                say(&old.key, "enumeration values removed");
            }
            if tighter(old.max_scale, f.max_scale) {
                say(&old.key, "max_scale lowered");
            }
            // A bound is tighter when it is new or moves inwards.
            let narrower = |o: Option<i64>, n: Option<i64>, inwards: fn(i64, i64) -> bool| match (o, n) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(o), Some(n)) => inwards(o, n),
            };
            if narrower(old.min, f.min, |o, n| n > o) {
                say(&old.key, "min raised");
            }
            if narrower(old.max, f.max, |o, n| n < o) {
                say(&old.key, "max lowered");
            }
        }
        for f in &new.fields {
            if f.required && !self.fields.iter().any(|o| o.key == f.key) {
                say(&f.key, "new required field");
            }
        }
        Violations::into_result(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field(key: &str, kind: FieldKind) -> FieldDefinition {
        FieldDefinition::new(key, "字段", kind)
    }

    fn every_kind() -> FaceTemplate {
        let mut t = FaceTemplate {
            version: 1,
            fields: vec![
                FieldDefinition {
                    required: true,
                    max_length: Some(10),
                    pattern: Some("[A-Z]+".into()),
                    ..field("code", FieldKind::Text)
                },
                field("day", FieldKind::Date),
                field("count", FieldKind::Integer),
                FieldDefinition { max_scale: Some(2), ..field("amount", FieldKind::Decimal) },
                FieldDefinition { values: vec!["甲".into(), "乙".into()], ..field("grade", FieldKind::Enumeration) },
                field("active", FieldKind::Boolean),
                field("scan", FieldKind::Attachment),
            ],
        };
        t.normalise();
        t
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_kind_accepts_its_format_and_refuses_others() {
        let t = every_kind();
        t.validate().unwrap();
        let good = values(&[
            ("code", "ABC"),
            ("day", "2026-11-27"),
            ("count", "-3"),
            ("amount", "12.50"),
            ("grade", "乙"),
            ("active", "true"),
            ("scan", &format!("sha256:{}", "ab".repeat(32))),
        ]);
        t.check_values(&good).unwrap();
        let bad = values(&[
            ("code", "abc"),
            ("day", "2026-02-30"),
            ("count", "1.5"),
            ("amount", "12.505"),
            ("grade", "丙"),
            ("active", "yes"),
            ("scan", "sha256:XYZ"),
        ]);
        let e = t.check_values(&bad).unwrap_err();
        assert_eq!(e.0.len(), 7, "{e}");
        assert!(t.check_values(&values(&[("count", "1")])).unwrap_err().names("face_fields.code"));
    }

    #[test]
    fn face_field_maps_larger_than_the_template_are_refused_whole() {
        let t = every_kind();
        let n = t.fields.len();
        // As many unknown keys as the template has fields: each is named.
        let some: BTreeMap<String, String> = (0..n).map(|i| (format!("x{i}"), "1".to_owned())).collect();
        let e = t.check_values(&some).unwrap_err();
        assert!(e.names("face_fields.x0"), "{e}");
        // One more, or 100,000 more: one violation for the map.
        for extra in [n + 1, 100_000] {
            let many: BTreeMap<String, String> = (0..extra).map(|i| (format!("x{i}"), "1".to_owned())).collect();
            let e = t.check_values(&many).unwrap_err();
            assert_eq!(e.0.len(), 1, "{extra}");
            assert_eq!(e.0[0].field, "face_fields");
            assert!(e.0[0].description.contains(&format!("at most {n} entries")), "{e}");
        }
        // A long unknown key is named, shortened.
        let long = "k".repeat(70) + "字";
        let e = t.check_values(&values(&[("code", "ABC"), (&long, "1")])).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.0[0].field.len() < 80 && e.0[0].field.ends_with('…'), "{e}");
    }

    #[test]
    fn definitions_are_checked_per_kind() {
        let mut t = every_kind();
        t.fields[1].pattern = Some("x".into());
        t.fields[4].values.clear();
        t.fields[2].label = "count".into();
        t.fields[3].order = t.fields[0].order;
        let e = t.validate().unwrap_err();
        for f in [
            "template.fields[1].kind",
            "template.fields[4].values",
            "template.fields[2].label",
            "template.fields[3].order",
        ] {
            assert!(e.names(f), "{f} missing from {e}");
        }
    }

    #[test]
    fn compatible_revisions_pass_and_breaking_ones_need_a_new_version() {
        let old = every_kind();
        let mut relaxed = old.clone();
        relaxed.fields[0].max_length = Some(20);
        relaxed.fields[0].label = "代码".into();
        relaxed.fields[4].values.push("丙".into());
        relaxed.fields.push(field("note", FieldKind::Text));
        old.check_revision(&relaxed).unwrap();

        let mut breaking = old.clone();
        breaking.fields.retain(|f| f.key != "day");
        breaking.fields[1].required = true; // count
        breaking.fields[0].max_length = Some(5);
        breaking.fields[3].values.pop(); // grade
        breaking.fields.push(FieldDefinition { required: true, ..field("extra", FieldKind::Text) });
        let e = old.check_revision(&breaking).unwrap_err();
        for k in ["day", "count", "code", "grade", "extra"] {
            assert!(e.names(&format!("template.fields.{k}")), "{k} missing from {e}");
        }
    }

    #[test]
    fn required_means_not_blank() {
        let t = every_kind();
        for blank in ["", " ", "   ", "\u{3000}", "\n"] {
            let e = t.check_values(&values(&[("code", blank)])).unwrap_err();
            assert_eq!(e.0.len(), 1, "{blank:?}: {e}");
            assert!(e.0[0].description.starts_with("required, not blank"), "{e}");
        }
        // An optional text field may hold spaces; an optional field left empty is absent.
        t.check_values(&values(&[("code", "ABC"), ("count", "")])).unwrap();
    }

    #[test]
    fn integers_are_canonical_and_bounded() {
        for ok in ["0", "7", "-3", "10", "9223372036854775807", "-9223372036854775808"] {
            assert!(canonical_integer(ok).is_some(), "{ok}");
        }
        for bad in ["+3", "007", "00", "-0", "-", "", " 3", "3 ", "1.0", "9223372036854775808", "٣", "-007"] {
            assert!(canonical_integer(bad).is_none(), "{bad}");
        }
        let mut t = every_kind();
        let e = t.check_values(&values(&[("code", "ABC"), ("count", "+3")])).unwrap_err();
        assert!(
            e.names("face_fields.count")
                && e.0[0].description == "\"+3\" is not an integer (canonical: no +, no leading 0)",
            "{e}"
        );
        t.fields[2].min = Some(-5);
        t.fields[2].max = Some(5);
        t.validate().unwrap();
        for (v, ok) in [("-5", true), ("5", true), ("0", true), ("-6", false), ("6", false)] {
            assert_eq!(t.check_values(&values(&[("code", "ABC"), ("count", v)])).is_ok(), ok, "{v}");
        }
        let e = t.check_values(&values(&[("code", "ABC"), ("count", "6")])).unwrap_err();
        assert_eq!(e.0[0].description, "6 is outside -5 to 5");
        t.fields[2].min = None;
        let e = t.check_values(&values(&[("code", "ABC"), ("count", "6")])).unwrap_err();
        assert_eq!(e.0[0].description, "6 is above the maximum 5");
        t.fields[2] = FieldDefinition { min: Some(1), ..field("count", FieldKind::Integer) };
        let e = t.check_values(&values(&[("code", "ABC"), ("count", "0")])).unwrap_err();
        assert_eq!(e.0[0].description, "0 is below the minimum 1");
    }

    #[test]
    fn bounds_belong_to_integers_and_templates_need_fields() {
        let mut t = every_kind();
        t.fields[0].min = Some(1); // text
        t.fields[2].min = Some(5);
        t.fields[2].max = Some(4);
        let e = t.validate().unwrap_err();
        assert!(e.names("template.fields[0].kind") && e.names("template.fields[2].max"), "{e}");
        let empty = FaceTemplate { version: 1, fields: Vec::new() };
        let e = empty.validate().unwrap_err();
        assert_eq!(e.0, vec![FieldViolation::new("template.fields", "at least one field")]);
    }

    #[test]
    fn tighter_integer_bounds_need_a_new_version_and_looser_ones_do_not() {
        let mut old = every_kind();
        old.fields[2].min = Some(0);
        old.fields[2].max = Some(100);
        let with = |min: Option<i64>, max: Option<i64>| {
            let mut t = old.clone();
            t.fields[2].min = min;
            t.fields[2].max = max;
            t
        };
        for (min, max) in
            [(Some(0), Some(100)), (Some(-1), Some(101)), (None, None), (None, Some(100)), (Some(0), None)]
        {
            old.check_revision(&with(min, max)).unwrap_or_else(|e| panic!("{min:?}..{max:?}: {e}"));
        }
        for (min, max, why) in
            [(Some(1), Some(100), "min raised"), (Some(0), Some(99), "max lowered"), (Some(1), Some(99), "min raised")]
        {
            let e = old.check_revision(&with(min, max)).unwrap_err();
            assert!(e.names("template.fields.count") && e.0[0].description.starts_with(why), "{e}");
        }
        // A bound where there was none is tighter.
        let unbounded = with(None, None);
        assert!(unbounded.check_revision(&with(Some(i64::MIN), None)).is_err());
        assert!(unbounded.check_revision(&with(None, Some(i64::MAX))).is_err());
    }

    /// A template of random fields, and values valid for it.
    fn template_and_values() -> impl Strategy<Value = (FaceTemplate, BTreeMap<String, String>)> {
        let kind = prop::sample::select(FieldKind::ALL.to_vec());
        prop::collection::vec((kind, any::<bool>(), 1u32..30, 0u32..4), 1..8).prop_map(|specs| {
            let mut fields = Vec::new();
            let mut vals = BTreeMap::new();
            for (i, (kind, required, len, scale)) in specs.into_iter().enumerate() {
                let key = format!("f{i}");
                let mut f = FieldDefinition { required, ..field(&key, kind) };
                let v = match kind {
                    FieldKind::Text => {
                        f.max_length = Some(len);
                        f.pattern = Some("[0-9A-Z]*".into());
                        "A".repeat(len as usize)
                    }
                    FieldKind::Date => "2026-01-31".into(),
                    FieldKind::Integer => {
                        f.min = Some(1);
                        f.max = Some(30);
                        len.to_string()
                    }
                    FieldKind::Decimal => {
                        f.max_scale = Some(scale);
                        if scale == 0 { "7".into() } else { format!("7.{}", "5".repeat(scale as usize)) }
                    }
                    FieldKind::Enumeration => {
                        f.values = vec!["一".into(), "二".into()];
                        "二".into()
                    }
                    FieldKind::Boolean => "false".into(),
                    FieldKind::Attachment => format!("sha256:{}", "0f".repeat(32)),
                };
                fields.push(f);
                vals.insert(key, v);
            }
            let mut t = FaceTemplate { version: 1, fields };
            t.normalise();
            (t, vals)
        })
    }

    /// A value that is wrong for `f`.
    fn corrupt(f: &FieldDefinition) -> String {
        match f.kind {
            FieldKind::Text => "a".repeat(f.max_length.unwrap_or(1) as usize + 1),
            FieldKind::Date => "2026-13-01".into(),
            FieldKind::Integer => "1e3".into(),
            FieldKind::Decimal => format!("1.{}", "1".repeat(f.max_scale.unwrap_or(0) as usize + 1)),
            FieldKind::Enumeration => "三".into(),
            FieldKind::Boolean => "TRUE".into(),
            FieldKind::Attachment => "sha1:00".into(),
        }
    }

    proptest! {
        #[test]
        fn valid_licences_are_accepted_and_each_single_corruption_refused((t, vals) in template_and_values(), pick in any::<prop::sample::Index>()) {
            prop_assert!(t.validate().is_ok());
            prop_assert!(t.check_values(&vals).is_ok());
            let f = &t.fields[pick.index(t.fields.len())];
            let mut bad = vals.clone();
            bad.insert(f.key.clone(), corrupt(f));
            let e = t.check_values(&bad).unwrap_err();
            prop_assert_eq!(e.0.len(), 1);
            prop_assert_eq!(&e.0[0].field, &format!("face_fields.{}", f.key));
            if f.required {
                let mut missing = vals.clone();
                missing.remove(&f.key);
                let named = t.check_values(&missing).unwrap_err().names(&format!("face_fields.{}", f.key));
                prop_assert!(named);
            }
            // A template is always a compatible revision of itself.
            prop_assert!(t.check_revision(&t).is_ok());
        }

        #[test]
        fn check_values_never_panics(k in "[a-z_]{1,10}", v in ".*") {
            let _ = every_kind().check_values(&[(k, v)].into_iter().collect());
        }

        #[test]
        fn every_integer_in_canonical_form_is_accepted_and_other_spellings_refused(
            n in any::<i64>(),
            zeros in 1usize..4,
        ) {
            let text = n.to_string();
            prop_assert_eq!(canonical_integer(&text), Some(n));
            let magnitude = n.unsigned_abs().to_string();
            let sign = if n < 0 { "-" } else { "" };
            let padded = format!("{sign}{}{magnitude}", "0".repeat(zeros));
            prop_assert_eq!(canonical_integer(&padded), None);
            prop_assert_eq!(canonical_integer(&format!("+{magnitude}")), None);
            prop_assert_eq!(canonical_integer(&format!(" {text}")), None);
        }

        #[test]
        fn integers_inside_the_bounds_are_accepted_and_outside_refused(
            lo in -1000i64..1000,
            width in 0i64..1000,
            n in -3000i64..3000,
        ) {
            let hi = lo + width;
            let bounded = FieldDefinition { min: Some(lo), max: Some(hi), ..field("n", FieldKind::Integer) };
            let t = FaceTemplate { version: 1, fields: vec![bounded] };
            prop_assert!(t.validate().is_ok());
            let r = t.check_values(&values(&[("n", &n.to_string())]));
            prop_assert_eq!(r.is_ok(), (lo..=hi).contains(&n));
        }

        #[test]
        fn decimal_never_panics(v in ".*", s in proptest::option::of(0u32..20)) {
            let _ = decimal_ok(&v, s);
        }
    }
}
