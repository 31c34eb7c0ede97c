//! Example documents the CLI prints: a licence-type definition and a licence
//! that is valid for a given type.

use std::collections::BTreeMap;

use regex_syntax::hir::{Class, Hir, HirKind};
use zhengzhao_core::{FieldKind, Holder, HolderCategory, LicenceDraft, LicenceTypeDefinition};

/// Issuer used by the example definition unless another is given.
pub const EXAMPLE_ISSUER: &str = "91350100M000100Y43";

/// A valid licence-type definition, issued by `issuer`.
pub fn definition(issuer: &str) -> anyhow::Result<LicenceTypeDefinition> {
    let def: LicenceTypeDefinition = serde_json::from_value(serde_json::json!({
        "name": "食品经营许可证",
        "defining_authority": {"name": "国家市场监督管理总局", "code": "11100000000013338W", "level": "national"},
        "service_items": [{"name": "食品经营许可", "code": "11100000000013338W3000111005000"}],
        "holder_category": "legal_person",
        "validity": "5/Y",
        "issuing_level": "district",
        "issuers": [issuer],
        "template": {"fields": [
            {"key": "business_scope", "label": "经营项目", "kind": "text", "required": true, "max_length": 200},
            {"key": "premises", "label": "经营场所", "kind": "text", "required": true, "max_length": 200},
            {"key": "permit_number", "label": "许可证编号", "kind": "text", "required": true, "pattern": "JY[0-9]{14}"},
            {"key": "daily_supervisor", "label": "日常监督管理机构", "kind": "text"},
            {"key": "approved_on", "label": "批准日期", "kind": "date"},
            {"key": "staff_count", "label": "从业人员数", "kind": "integer"},
            {"key": "main_format", "label": "主体业态", "kind": "enumeration", "required": true,
             "values": ["食品销售经营者", "餐饮服务经营者", "单位食堂"]},
            {"key": "registered_capital", "label": "注册资本（万元）", "kind": "decimal", "max_scale": 2},
            {"key": "online_sales", "label": "网络经营", "kind": "boolean"},
            {"key": "floor_plan", "label": "经营场所平面图", "kind": "attachment"}
        ]}
    }))?;
    def.validate()?;
    Ok(def)
}

/// A value that satisfies `pattern` (and `max_length`): the shortest the
/// pattern allows, each class giving one of its first printable characters
/// in turn (`JY[0-9]{14}` gives `JY01234567890123`).
fn matching(pattern: &str, max_length: Option<u32>) -> anyhow::Result<String> {
    let hir = regex_syntax::Parser::new().parse(pattern).map_err(|e| anyhow::anyhow!("pattern {pattern}: {e}"))?;
    let mut value = Shortest::default();
    if !value.push(&hir) || max_length.is_some_and(|m| value.text.chars().count() > m as usize) {
        anyhow::bail!("could not make an example value for pattern {pattern}");
    }
    Ok(value.text)
}

/// The shortest text a pattern matches, built up piece by piece.
#[derive(Default)]
struct Shortest {
    text: String,
    /// How many classes have given a character so far.
    classes: usize,
}

impl Shortest {
    /// Appends the shortest text `hir` matches; false when there is none.
    fn push(&mut self, hir: &Hir) -> bool {
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => true,
            HirKind::Literal(lit) => std::str::from_utf8(&lit.0).map(|text| self.text.push_str(text)).is_ok(),
            HirKind::Class(Class::Unicode(class)) => {
                self.pick(class.ranges().iter().flat_map(|r| r.start()..=r.end()).filter(|c| !c.is_control()))
            }
            HirKind::Class(Class::Bytes(class)) => self.pick(
                class.ranges().iter().flat_map(|r| r.start()..=r.end()).filter(u8::is_ascii_graphic).map(char::from),
            ),
            HirKind::Repetition(rep) => (0..rep.min).all(|_| self.push(&rep.sub)),
            HirKind::Capture(capture) => self.push(&capture.sub),
            HirKind::Concat(parts) => parts.iter().all(|part| self.push(part)),
            HirKind::Alternation(branches) => branches.iter().any(|branch| {
                let mut candidate = Shortest { text: String::new(), classes: self.classes };
                let found = candidate.push(branch);
                if found {
                    self.text.push_str(&candidate.text);
                    self.classes = candidate.classes;
                }
                found
            }),
        }
    }

    /// Appends one of the first ten of `chars`, the next in turn.
    fn pick(&mut self, chars: impl Iterator<Item = char>) -> bool {
        let first: Vec<char> = chars.take(10).collect();
        let Some(&c) = first.get(self.classes % first.len().max(1)) else {
            return false;
        };
        self.text.push(c);
        self.classes += 1;
        true
    }
}

/// A licence that is valid for `def`, issued today.
pub fn draft(def: &LicenceTypeDefinition, today: &str) -> anyhow::Result<LicenceDraft> {
    let holder = match def.holder_category {
        HolderCategory::LegalPerson => Holder {
            name: "示例食品有限公司".into(),
            id_type_code: "001".into(),
            id_number: "91350100M000100Y43".into(),
        },
        HolderCategory::NaturalPerson => {
            Holder { name: "张三".into(), id_type_code: "111".into(), id_number: "11010519491231002X".into() }
        }
    };
    let mut face_fields = BTreeMap::new();
    for f in &def.template.fields {
        let value = match (f.kind, &f.pattern) {
            (FieldKind::Date, _) => today.to_owned(),
            (FieldKind::Integer, _) => "12".to_owned(),
            (FieldKind::Decimal, _) => match f.max_scale {
                Some(0) => "100".to_owned(),
                _ => "100.5".to_owned(),
            },
            (FieldKind::Enumeration, _) => f.values.first().cloned().unwrap_or_default(),
            (FieldKind::Boolean, _) => "true".to_owned(),
            (FieldKind::Attachment, _) => {
                format!("sha256:{}", "0".repeat(64))
            }
            (FieldKind::Text, Some(p)) => matching(p, f.max_length)?,
            (FieldKind::Text, None) => {
                let v = format!("示例{}", f.label);
                f.max_length.map_or(v.clone(), |m| v.chars().take(m as usize).collect())
            }
        };
        face_fields.insert(f.key.clone(), value);
    }
    let draft = LicenceDraft {
        type_code: def.code.clone().unwrap_or_default(),
        issuer_name: "示例区市场监督管理局".into(),
        serial: String::new(),
        holder,
        issue_date: today.to_owned(),
        valid_from: String::new(),
        valid_until: String::new(),
        area_code: "350102".into(),
        face_fields,
        template_version: def.template.version,
    };
    def.template.check_values(&draft.face_fields)?;
    Ok(draft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_valid() {
        let mut def = definition(EXAMPLE_ISSUER).unwrap();
        def.template.normalise();
        def.code = Some("11100000000013338W001".into());
        let mut d = draft(&def, "2026-11-27").unwrap();
        assert!(d.holder.validate(def.holder_category, time::macros::date!(2026 - 11 - 27)).is_empty());
        def.template.check_values(&d.face_fields).unwrap();
        assert_eq!(d.face_fields["permit_number"], "JY01234567890123");
    }

    #[test]
    fn pattern_values_match_their_pattern() {
        for pattern in ["JY[0-9]{14}", "[A-Z]{2}-\\d+", "(foo|ba+r)?x", "[^\\x00-\\x1f]{3}", "\\w{2,5}@(?i:zz)"] {
            let value = matching(pattern, Some(20)).unwrap();
            let full = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
            assert!(full.is_match(&value), "{value:?} does not match {pattern}");
        }
        assert!(matching("[a-z]{30}", Some(20)).is_err());
    }
}
