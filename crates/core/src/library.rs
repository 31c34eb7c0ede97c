//! A library's name (`serve --library`): `city`, or a district's name or
//! area code, as the city knows it when it replicates the district and the
//! gateway names its members.

/// What a library name may be, for messages.
pub const LIBRARY_NAME_RULE: &str = "1 to 64 of a-z, 0-9, - and _";

/// Whether `name` is a library name ([`LIBRARY_NAME_RULE`]).
pub fn is_library_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["city", "d1", "320102", "gu-lou_district"] {
            assert!(is_library_name(ok), "{ok}");
        }
        for bad in ["", "City", "d 1", "d1\n", "区", &"x".repeat(65)] {
            assert!(!is_library_name(bad), "{bad:?}");
        }
    }
}
