//! Holders (持证主体): their category, ID type codes (GB/T 36903 annex A) and
//! ID numbers, validated per type and masked wherever they are logged.

use std::fmt;

use crate::citizen_id::CitizenId;
use crate::text::BoundedText;
use crate::uscc::Uscc;
use crate::violation::FieldViolation;

/// Holder category of a licence type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderCategory {
    /// 自然人
    NaturalPerson,
    /// 法人和其他组织
    LegalPerson,
}

impl HolderCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            HolderCategory::NaturalPerson => "natural_person",
            HolderCategory::LegalPerson => "legal_person",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "natural_person" => Some(HolderCategory::NaturalPerson),
            "legal_person" => Some(HolderCategory::LegalPerson),
            _ => None,
        }
    }
}

/// Holder ID type (GB/T 36903 annex A).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolderIdType {
    /// 001 统一社会信用代码
    Uscc,
    /// 099 其他组织代码
    OtherOrganisation,
    /// 111 居民身份证
    CitizenId,
    /// 114, 115, 118, 119, 120, 122: military and armed-police IDs
    Military(u16),
    /// 411 外交护照
    DiplomaticPassport,
    /// 412 公务护照
    ServicePassport,
    /// 413 因公普通护照
    OfficialOrdinaryPassport,
    /// 414 普通护照
    OrdinaryPassport,
    /// 511 台湾居民来往大陆通行证
    TaiwanTravelPermit,
    /// 516 港澳居民来往内地通行证
    HongKongMacaoTravelPermit,
    /// 999 其他个人证件
    OtherPersonal,
}

impl HolderIdType {
    pub fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "001" => HolderIdType::Uscc,
            "099" => HolderIdType::OtherOrganisation,
            "111" => HolderIdType::CitizenId,
            "114" | "115" | "118" | "119" | "120" | "122" => HolderIdType::Military(code.parse().ok()?),
            "411" => HolderIdType::DiplomaticPassport,
            "412" => HolderIdType::ServicePassport,
            "413" => HolderIdType::OfficialOrdinaryPassport,
            "414" => HolderIdType::OrdinaryPassport,
            "511" => HolderIdType::TaiwanTravelPermit,
            "516" => HolderIdType::HongKongMacaoTravelPermit,
            "999" => HolderIdType::OtherPersonal,
            _ => return None,
        })
    }

    pub fn code(self) -> String {
        match self {
            HolderIdType::Uscc => "001".into(),
            HolderIdType::OtherOrganisation => "099".into(),
            HolderIdType::CitizenId => "111".into(),
            HolderIdType::Military(n) => format!("{n:03}"),
            HolderIdType::DiplomaticPassport => "411".into(),
            HolderIdType::ServicePassport => "412".into(),
            HolderIdType::OfficialOrdinaryPassport => "413".into(),
            HolderIdType::OrdinaryPassport => "414".into(),
            HolderIdType::TaiwanTravelPermit => "511".into(),
            HolderIdType::HongKongMacaoTravelPermit => "516".into(),
            HolderIdType::OtherPersonal => "999".into(),
        }
    }

    /// The holder category this kind of ID identifies.
    pub fn category(self) -> HolderCategory {
        match self {
            HolderIdType::Uscc | HolderIdType::OtherOrganisation => HolderCategory::LegalPerson,
            _ => HolderCategory::NaturalPerson,
        }
    }
}

/// A holder as written on a licence: name, ID type code and ID number.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holder {
    pub name: String,
    pub id_type_code: String,
    pub id_number: String,
}

/// Longest holder name or non-standard ID number accepted.
pub const MAX_HOLDER_TEXT: usize = 200;

impl Holder {
    /// Validates the holder for a licence type of `category` as of `today`
    /// (China Standard Time); the ID number is checked against its type: a
    /// citizen ID's check character, birth date (from 1900 to today) and
    /// province, a unified social credit code's check character, registration
    /// department and organisation category. A citizen ID's `x` is upper-cased.
    pub fn validate(&mut self, category: HolderCategory, today: time::Date) -> Vec<FieldViolation> {
        let mut out = Vec::new();
        if let Err(e) = BoundedText::<MAX_HOLDER_TEXT>::check(&self.name) {
            out.push(FieldViolation::new("holder.name", e.to_string()));
        }
        let Some(kind) = HolderIdType::from_code(&self.id_type_code) else {
            out.push(FieldViolation::new(
                "holder.id_type_code",
                format!("{:?} is not a GB/T 36903 holder ID type code", self.id_type_code),
            ));
            return out;
        };
        if kind.category() != category {
            out.push(FieldViolation::new(
                "holder.id_type_code",
                format!(
                    "ID type {} identifies a {} but this licence type is for a {}",
                    self.id_type_code,
                    kind.category().as_str(),
                    category.as_str()
                ),
            ));
        }
        match kind {
            HolderIdType::CitizenId => match CitizenId::parse(&self.id_number, today) {
                Ok(id) => self.id_number = id.as_str().to_owned(),
                Err(e) => {
                    out.push(FieldViolation::new("holder.id_number", format!("not a valid citizen ID number: {e}")))
                }
            },
            HolderIdType::Uscc => {
                if let Err(e) = Uscc::parse(&self.id_number) {
                    out.push(FieldViolation::new(
                        "holder.id_number",
                        format!("not a valid unified social credit code: {e}"),
                    ));
                }
            }
            _ => {
                let n = self.id_number.chars().count();
                if n == 0 || n > 64 || !self.id_number.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    out.push(FieldViolation::new("holder.id_number", "1 to 64 letters, digits or hyphens"));
                }
            }
        }
        out
    }
}

/// A holder ID as a caller names it to look a holder up: a GB/T 36903 type
/// code and a number of the shape that type takes (a citizen ID's `x`
/// upper-cased, so it matches what the library stored). Returns the number
/// as stored; a violation names `type_field` or `number_field`.
pub fn parse_holder_id(
    type_field: &str,
    number_field: &str,
    type_code: &str,
    number: &str,
) -> Result<String, crate::Violations> {
    let Some(kind) = HolderIdType::from_code(type_code) else {
        return Err(crate::Violations::single(
            type_field,
            format!("{:?} is not a GB/T 36903 holder ID type code", clip(type_code)),
        ));
    };
    let n = number.chars().count();
    if n == 0 || n > 64 || !number.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(crate::Violations::single(number_field, "1 to 64 letters, digits or hyphens"));
    }
    Ok(match kind {
        HolderIdType::CitizenId => number.to_ascii_uppercase(),
        _ => number.to_owned(),
    })
}

fn clip(s: &str) -> String {
    s.chars().take(16).collect()
}

/// Never prints the full ID number.
impl fmt::Debug for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Holder")
            .field("name", &self.name)
            .field("id_type_code", &self.id_type_code)
            .field("id_number", &mask_id_number(&self.id_number))
            .finish()
    }
}

/// Masks an ID number for logs: keeps the first 3 and last 2 characters of
/// numbers longer than 8, masks everything else.
pub fn mask_id_number(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    if n <= 8 {
        return "*".repeat(n);
    }
    chars.iter().enumerate().map(|(i, c)| if i < 3 || i >= n - 2 { *c } else { '*' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TODAY: time::Date = time::macros::date!(2026 - 11 - 27);

    fn holder(code: &str, number: &str) -> Holder {
        Holder { name: "张三".into(), id_type_code: code.into(), id_number: number.into() }
    }

    #[test]
    fn validates_id_numbers_by_type() {
        assert!(holder("111", "11010519491231002x").validate(HolderCategory::NaturalPerson, TODAY).is_empty());
        assert!(holder("001", "91350100M000100Y43").validate(HolderCategory::LegalPerson, TODAY).is_empty());
        assert!(holder("414", "E12345678").validate(HolderCategory::NaturalPerson, TODAY).is_empty());
        let bad = holder("111", "110105194912310021").validate(HolderCategory::NaturalPerson, TODAY);
        assert_eq!(bad[0].field, "holder.id_number");
        let wrong_category = holder("111", "11010519491231002X").validate(HolderCategory::LegalPerson, TODAY);
        assert_eq!(wrong_category[0].field, "holder.id_type_code");
        let unknown = holder("123", "x").validate(HolderCategory::NaturalPerson, TODAY);
        assert_eq!(unknown[0].field, "holder.id_type_code");
    }

    #[test]
    fn impossible_id_numbers_are_refused_saying_which_part() {
        let says = |h: Holder, category| {
            let mut h = h;
            let v = h.validate(category, TODAY);
            assert_eq!(v.len(), 1, "{v:?}");
            assert_eq!(v[0].field, "holder.id_number");
            v[0].description.clone()
        };
        let body = "11010520990101002";
        let id = format!("{body}{}", crate::citizen_id::check_char(body).unwrap());
        assert!(says(holder("111", &id), HolderCategory::NaturalPerson).contains("after today (2026-11-27)"));
        let body = "00000019491231002";
        let id = format!("{body}{}", crate::citizen_id::check_char(body).unwrap());
        assert!(says(holder("111", &id), HolderCategory::NaturalPerson).contains("00 is not a GB/T 2260 province"));
        let d = says(holder("001", "00350100M000100Y4F"), HolderCategory::LegalPerson);
        assert!(d.contains("registration department '0'"), "{d}");
    }

    #[test]
    fn normalises_citizen_id_check_letter() {
        let mut h = holder("111", "11010519491231002x");
        assert!(h.validate(HolderCategory::NaturalPerson, TODAY).is_empty());
        assert_eq!(h.id_number, "11010519491231002X");
    }

    #[test]
    fn masks() {
        assert_eq!(mask_id_number("11010519491231002X"), "110*************2X");
        assert_eq!(mask_id_number("E1234567"), "********");
        assert!(!format!("{:?}", holder("111", "11010519491231002X")).contains("19491231"));
    }

    #[test]
    fn every_code_round_trips() {
        for code in [
            "001", "099", "111", "114", "115", "118", "119", "120", "122", "411", "412", "413", "414", "511", "516",
            "999",
        ] {
            assert_eq!(HolderIdType::from_code(code).unwrap().code(), code);
        }
    }

    proptest! {
        #[test]
        fn mask_never_reveals_the_middle(s in "[0-9A-Z]{9,30}") {
            let m = mask_id_number(&s);
            prop_assert_eq!(m.chars().count(), s.chars().count());
            prop_assert!(m.chars().skip(3).take(s.len() - 5).all(|c| c == '*'));
        }

        #[test]
        fn validate_never_panics(name in ".*", code in ".{0,4}", number in ".*") {
            let mut h = Holder { name, id_type_code: code, id_number: number };
            let _ = h.validate(HolderCategory::NaturalPerson, TODAY);
        }
    }
}
