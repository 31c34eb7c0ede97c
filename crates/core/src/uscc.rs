//! Unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters
//! from `0-9A-HJ-NPQRTUWXY`, the last a check character (weights 3^i mod 31,
//! modulus 31). The first character is the registration department and the
//! second the organisation category within it; both must exist (see
//! [`CATEGORIES`]). Characters 3-8 (the registering authority's division)
//! and 9-17 (the organisation code) are not checked beyond the alphabet.

use std::fmt;
use std::str::FromStr;

const ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// The registration departments (登记管理部门, character 1) and the
/// organisation categories (机构类别, character 2) each allows.
///
/// GB 32100-2015 table 1 defined 1, 5, 9 and Y; the departments 2-8, A and
/// N were added to the code table by the national code-assignment authority
/// afterwards, and codes under them are in circulation (law firms `31…`,
/// village collectives `N2…`), so they are listed too.
pub const CATEGORIES: &[(char, &str, &str)] = &[
    // 机构编制: 1 机关, 2 事业单位, 3 中央编办直接管理机构编制的群众团体, 9 其他
    ('1', "机构编制", "1239"),
    // 外交: 1 外国常驻新闻机构, 9 其他
    ('2', "外交", "19"),
    // 司法行政: 1 律师执业机构, 2 公证处, 3 基层法律服务所, 4 司法鉴定机构, 5 仲裁委员会, 9 其他
    ('3', "司法行政", "123459"),
    // 文化: 1 外国在华文化中心, 9 其他
    ('4', "文化", "19"),
    // 民政: 1 社会团体, 2 民办非企业单位, 3 基金会, 9 其他
    ('5', "民政", "1239"),
    // 旅游: 1 外国旅游部门常驻代表机构, 2 港澳台地区旅游部门常驻内地（大陆）代表机构, 9 其他
    ('6', "旅游", "129"),
    // 宗教: 1 宗教活动场所, 2 宗教院校, 9 其他
    ('7', "宗教", "129"),
    // 工会: 1 基层工会, 9 其他
    ('8', "工会", "19"),
    // 工商 / 市场监管: 1 企业, 2 个体工商户, 3 农民专业合作社
    ('9', "工商", "123"),
    // 中央军委改革和编制办公室: 1 军队事业单位, 9 其他
    ('A', "中央军委改革和编制办公室", "19"),
    // 农业: 1 组级, 2 村级, 3 乡镇级集体经济组织, 9 其他
    ('N', "农业", "1239"),
    // 其他: no categories, always 1
    ('Y', "其他", "1"),
];

/// Checks characters 1 and 2 against [`CATEGORIES`].
fn check_department(department: char, category: char) -> Result<(), UsccError> {
    let Some((_, name, allowed)) = CATEGORIES.iter().find(|(d, _, _)| *d == department) else {
        return Err(UsccError::Department(department));
    };
    if !allowed.contains(category) {
        return Err(UsccError::Category { department, name, category, allowed });
    }
    Ok(())
}

/// Why a string is not a unified social credit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    #[error("must be 18 characters, got {0}")]
    Length(usize),
    #[error("character {0:?} at position {1} is not allowed (0-9 and A-Y except I, O, S, V, Z)")]
    Character(char, usize),
    #[error("check character should be {expected}, got {found}")]
    Check { expected: char, found: char },
    #[error("registration department {0:?} (character 1) does not exist: GB 32100 has 1-9, A, N and Y")]
    Department(char),
    #[error(
        "organisation category {category:?} (character 2) does not exist under registration department \
         {department} ({name}): it allows {allowed}"
    )]
    Category { department: char, name: &'static str, category: char, allowed: &'static str },
}

/// A validated unified social credit code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uscc(String);

fn value(c: char) -> Option<u32> {
    ALPHABET.find(c).map(|i| i as u32)
}

/// The check character for the first 17 characters, if they are all in the alphabet.
pub fn check_char(first17: &str) -> Option<char> {
    let mut sum = 0u32;
    let mut n = 0;
    for (c, w) in first17.chars().zip(WEIGHTS) {
        sum += value(c)? * w;
        n += 1;
    }
    if n != 17 || first17.chars().count() != 17 {
        return None;
    }
    let check = (31 - sum % 31) % 31;
    ALPHABET.chars().nth(check as usize)
}

impl Uscc {
    pub fn parse(s: &str) -> Result<Self, UsccError> {
        let len = s.chars().count();
        if len != 18 {
            return Err(UsccError::Length(len));
        }
        for (i, c) in s.chars().enumerate() {
            if value(c).is_none() {
                return Err(UsccError::Character(c, i + 1));
            }
        }
        let expected = check_char(&s[..17]).ok_or(UsccError::Length(len))?;
        let found = s[17..].chars().next().ok_or(UsccError::Length(len))?;
        if expected != found {
            return Err(UsccError::Check { expected, found });
        }
        let mut chars = s.chars();
        if let (Some(department), Some(category)) = (chars.next(), chars.next()) {
            check_department(department, category)?;
        }
        Ok(Uscc(s.to_owned()))
    }

    /// Completes a 17-character body with its check character; the result
    /// is checked like [`Uscc::parse`].
    pub fn from_body(body: &str) -> Result<Self, UsccError> {
        let expected = check_char(body).ok_or(UsccError::Length(body.chars().count() + 1))?;
        Uscc::parse(&format!("{body}{expected}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Uscc {
    type Err = UsccError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Uscc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Uscc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Uscc::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A strategy for the first two characters of a possible code.
    fn department_and_category() -> impl Strategy<Value = String> {
        let pairs: Vec<String> =
            CATEGORIES.iter().flat_map(|(d, _, cats)| cats.chars().map(move |c| format!("{d}{c}"))).collect();
        prop::sample::select(pairs)
    }

    #[test]
    fn accepts_published_codes() {
        // Codes printed on public business licences and government sites,
        // and the development library's default administrator.
        for code in ["91350100M000100Y43", "11100000000013338W", "91110000802100433B", "12100000400010275N"] {
            Uscc::parse(code).unwrap_or_else(|e| panic!("{code}: {e}"));
        }
        assert!(Uscc::from_body("11100000MB0000000").is_ok());
    }

    #[test]
    fn refuses_wrong_check_length_and_letters() {
        assert!(matches!(Uscc::parse("91350100M000100Y44"), Err(UsccError::Check { .. })));
        assert!(matches!(Uscc::parse("91350100M000100Y4"), Err(UsccError::Length(17))));
        assert!(matches!(Uscc::parse("91350100M000100Y43I"), Err(UsccError::Length(19))));
        assert!(matches!(Uscc::parse("91350100M000I00Y43"), Err(UsccError::Character('I', 13))));
    }

    #[test]
    fn refuses_departments_and_categories_that_do_not_exist() {
        // The right check character, but department 0 and category 0.
        let e = Uscc::parse("00350100M000100Y4F").unwrap_err();
        assert_eq!(e, UsccError::Department('0'));
        assert!(e.to_string().contains("registration department '0' (character 1) does not exist"), "{e}");
        let e = Uscc::from_body("94350100M000100Y4").unwrap_err();
        assert_eq!(
            e.to_string(),
            "organisation category '4' (character 2) does not exist under registration department 9 (工商): it allows 123"
        );
        assert!(matches!(Uscc::from_body("Y2350100M000100Y4"), Err(UsccError::Category { department: 'Y', .. })));
        assert!(Uscc::from_body("31110000MD0000000").is_ok());
        assert!(Uscc::from_body("N2350100MA0000000").is_ok());
    }

    proptest! {
        #[test]
        fn possible_codes_round_trip(head in department_and_category(), rest in "[0-9A-HJ-NPQRTUWXY]{15}") {
            let code = Uscc::from_body(&format!("{head}{rest}")).unwrap();
            prop_assert_eq!(Uscc::parse(code.as_str()).unwrap(), code.clone());
            prop_assert_eq!(code.to_string().parse::<Uscc>().unwrap(), code);
        }

        #[test]
        fn impossible_departments_and_categories_are_refused(body in "[0-9A-HJ-NPQRTUWXY]{17}") {
            let mut chars = body.chars();
            let (d, c) = (chars.next().unwrap(), chars.next().unwrap());
            let possible = CATEGORIES.iter().any(|(dd, _, cats)| *dd == d && cats.contains(c));
            let known = CATEGORIES.iter().any(|(dd, _, _)| *dd == d);
            match Uscc::from_body(&body) {
                Ok(_) => prop_assert!(possible),
                Err(UsccError::Department(x)) => prop_assert!(!known && x == d),
                Err(UsccError::Category { department, category, .. }) => {
                    prop_assert!(known && !possible && department == d && category == c)
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = Uscc::parse(&s);
            let _ = Uscc::from_body(&s);
        }
    }
}
