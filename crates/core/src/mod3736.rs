//! ISO/IEC 7064 MOD 37,36 hybrid check character, as GB/T 36904 uses it for
//! licence identifiers.

/// Value of an alphanumeric character: `0-9` = 0..9, `A-Z` = 10..35.
pub fn char_value(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        'A'..='Z' => Some(c as u32 - 'A' as u32 + 10),
        _ => None,
    }
}

/// The character for a value 0..35.
pub fn value_char(v: u32) -> char {
    debug_assert!(v < 36);
    if v < 10 { char::from(b'0' + v as u8) } else { char::from(b'A' + (v - 10) as u8) }
}

fn check_with(input: &str, letter_offset: u32) -> Option<char> {
    let mut p: u32 = 36;
    for c in input.chars() {
        let mut v = char_value(c)?;
        if v >= 10 {
            v += letter_offset;
        }
        let mut t = (p + v) % 36;
        if t == 0 {
            t = 36;
        }
        p = (2 * t) % 37;
    }
    Some(value_char((37 - p) % 36))
}

/// The standard check character over `input` (upper-case letters and digits
/// only), or `None` if it holds any other character.
pub fn check_char(input: &str) -> Option<char> {
    check_with(input, 0)
}

/// The check character some deployed systems computed, valuing letters one
/// too high (`A` = 11 .. `Z` = 36). Accepted on import only when allowed, and flagged.
pub fn legacy_check_char(input: &str) -> Option<char> {
    check_with(input, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn appended_check_makes_the_whole_string_verify() {
        // ISO 7064 hybrid property: processing the check character too leaves p == 1
        // (i.e. the product before doubling is 1 mod 36).
        for input in ["0", "A", "11100000000013338W011", "ABC123"] {
            let c = check_char(input).unwrap();
            let mut p: u32 = 36;
            for ch in input.chars() {
                let mut t = (p + char_value(ch).unwrap()) % 36;
                if t == 0 {
                    t = 36;
                }
                p = (2 * t) % 37;
            }
            assert_eq!((p + char_value(c).unwrap()) % 36, 1, "input {input}");
        }
    }

    #[test]
    fn legacy_differs_from_standard_when_letters_present() {
        assert_eq!(check_char("0123"), legacy_check_char("0123"));
        assert_ne!(check_char("ABC"), legacy_check_char("ABC"));
    }

    proptest! {
        #[test]
        fn any_single_substitution_is_detected(s in "[0-9A-Z]{1,40}", pos in 0usize..40, c in "[0-9A-Z]") {
            let pos = pos % s.len();
            let c = c.chars().next().unwrap();
            let mut chars: Vec<char> = s.chars().collect();
            prop_assume!(chars[pos] != c);
            let original = check_char(&s).unwrap();
            chars[pos] = c;
            let changed: String = chars.into_iter().collect();
            prop_assert_ne!(check_char(&changed).unwrap(), original);
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = check_char(&s);
            let _ = legacy_check_char(&s);
        }
    }
}
