//! Administrative division codes (行政区划代码, GB/T 2260): the current codes,
//! from a table compiled in (`data/gbt2260.tsv`, see `data/README.md` for its
//! source package, version and licence), and the two checks built on them.
//!
//! - A licence's jurisdiction area code (属地编码) names a division as it is
//!   today: it must be a current province-, prefecture- or county-level code.
//! - A citizen ID's address code (digits 1-6) names the county where the
//!   number was issued, possibly decades ago; counties are merged, renamed
//!   and renumbered, and the number keeps its old code for life. So only what
//!   never changes is checked: digits 1-2 name a real province-level division
//!   and digits 3-4 are not `00` (a province is never a place of household
//!   registration). Digits 3-6 are not looked up: a prefecture or county code
//!   the table does not know (retired since) is accepted.

use std::collections::BTreeMap;
use std::sync::LazyLock;

const TABLE: &str = include_str!("../data/gbt2260.tsv");

/// Code → name of every current division in the table.
static DIVISIONS: LazyLock<BTreeMap<&'static str, &'static str>> = LazyLock::new(|| {
    TABLE.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(|l| l.split_once('\t')).collect()
});

fn six_digits(code: &str) -> bool {
    code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The name of a current division code (`"350102"` → `"鼓楼区"`).
pub fn name(code: &str) -> Option<&'static str> {
    DIVISIONS.get(code).copied()
}

/// Whether `code` is a current GB/T 2260 code (province, prefecture or county).
pub fn is_current(code: &str) -> bool {
    six_digits(code) && DIVISIONS.contains_key(code)
}

/// The province-level division named by the first two digits, if any
/// (`"35"` → `"福建省"`).
pub fn province(prefix: &str) -> Option<&'static str> {
    if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name(&format!("{prefix}0000"))
}

/// Checks a licence's jurisdiction area code: a current division code.
pub fn check_area_code(code: &str) -> Result<(), String> {
    if !six_digits(code) {
        return Err(format!("{code:?} is not 6 digits"));
    }
    if is_current(code) {
        return Ok(());
    }
    Err(match province(&code[..2]) {
        Some(p) => format!("{code} is not a current GB/T 2260 division code (no such division in {p})"),
        None => format!("{code} is not a current GB/T 2260 division code ({} is not a province)", &code[..2]),
    })
}

/// Checks a citizen ID's address code (see the module docs for exactly what).
pub fn check_address_code(code: &str) -> Result<(), String> {
    if !six_digits(code) {
        return Err(format!("address code {code:?} is not 6 digits"));
    }
    if province(&code[..2]).is_none() {
        return Err(format!("address code {code}: {} is not a GB/T 2260 province", &code[..2]));
    }
    if &code[2..4] == "00" {
        return Err(format!("address code {code} names a province, not a place of household registration"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_table_loads_and_knows_the_levels() {
        assert!(DIVISIONS.len() > 3000, "{}", DIVISIONS.len());
        assert_eq!(name("350000"), Some("福建省"));
        assert_eq!(name("350100"), Some("福州市"));
        assert_eq!(name("350102"), Some("鼓楼区"));
        assert_eq!(name("110105"), Some("朝阳区"));
        assert_eq!(province("81"), Some("香港特别行政区"));
        assert!(
            TABLE
                .lines()
                .filter(|l| !l.starts_with('#'))
                .all(|l| l.split_once('\t').is_some_and(|(c, n)| six_digits(c) && !n.is_empty()))
        );
    }

    #[test]
    fn area_codes_must_be_current() {
        for ok in ["350102", "350100", "350000", "110105", "460400"] {
            check_area_code(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert!(check_area_code("999999").unwrap_err().contains("99 is not a province"));
        assert!(check_area_code("000000").unwrap_err().contains("00 is not a province"));
        assert!(check_area_code("350199").unwrap_err().contains("no such division in 福建省"));
        assert!(check_area_code("35").unwrap_err().contains("6 digits"));
        assert!(check_area_code("35010A").is_err());
    }

    #[test]
    fn address_codes_check_the_province_and_accept_retired_counties() {
        // 110105 is current; 110224 (大兴县, now 110115) and 422101 (a
        // retired prefecture's county) were retired long ago.
        for ok in ["110105", "110224", "422101", "350199"] {
            check_address_code(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert!(check_address_code("000000").unwrap_err().contains("00 is not a GB/T 2260 province"));
        assert!(check_address_code("999999").unwrap_err().contains("99 is not"));
        assert!(check_address_code("910105").is_err());
        assert!(check_address_code("350000").unwrap_err().contains("names a province"));
    }

    proptest! {
        #[test]
        fn every_current_county_is_an_area_code_and_an_address_code(i in any::<prop::sample::Index>()) {
            let codes: Vec<&str> = DIVISIONS.keys().copied().filter(|c| !c.ends_with("00")).collect();
            let code = codes[i.index(codes.len())];
            prop_assert!(check_area_code(code).is_ok());
            prop_assert!(check_address_code(code).is_ok());
        }

        #[test]
        fn codes_under_an_unknown_province_are_refused(p in 0u32..100, rest in 0u32..10_000) {
            let prefix = format!("{p:02}");
            prop_assume!(province(&prefix).is_none());
            let code = format!("{prefix}{rest:04}");
            prop_assert!(check_area_code(&code).is_err());
            prop_assert!(check_address_code(&code).is_err());
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = check_area_code(&s);
            let _ = check_address_code(&s);
            let _ = province(&s);
        }
    }
}
