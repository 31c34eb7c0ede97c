//! Unified social credit code (统一社会信用代码, GB 32100-2015): 18 characters
//! from `0-9A-HJ-NPQRTUWXY`, the last a check character (weights 3^i mod 31,
//! modulus 31).

use std::fmt;
use std::str::FromStr;

const ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// Why a string is not a unified social credit code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    #[error("must be 18 characters, got {0}")]
    Length(usize),
    #[error("character {0:?} at position {1} is not allowed (0-9 and A-Y except I, O, S, V, Z)")]
    Character(char, usize),
    #[error("check character should be {expected}, got {found}")]
    Check { expected: char, found: char },
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
        Ok(Uscc(s.to_owned()))
    }

    /// Completes a 17-character body with its check character.
    pub fn from_body(body: &str) -> Result<Self, UsccError> {
        let expected = check_char(body).ok_or(UsccError::Length(body.chars().count() + 1))?;
        Ok(Uscc(format!("{body}{expected}")))
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

    #[test]
    fn accepts_published_codes() {
        // Codes printed on public business licences and government sites.
        for code in ["91350100M000100Y43", "11100000000013338W", "91110000802100433B"] {
            Uscc::parse(code).unwrap_or_else(|e| panic!("{code}: {e}"));
        }
    }

    #[test]
    fn refuses_wrong_check_length_and_letters() {
        assert!(matches!(Uscc::parse("91350100M000100Y44"), Err(UsccError::Check { .. })));
        assert!(matches!(Uscc::parse("91350100M000100Y4"), Err(UsccError::Length(17))));
        assert!(matches!(Uscc::parse("91350100M000I00Y43"), Err(UsccError::Character('I', 13))));
    }

    proptest! {
        #[test]
        fn from_body_round_trips(body in "[0-9A-HJ-NPQRTUWXY]{17}") {
            let code = Uscc::from_body(&body).unwrap();
            prop_assert_eq!(Uscc::parse(code.as_str()).unwrap(), code.clone());
            prop_assert_eq!(code.to_string().parse::<Uscc>().unwrap(), code);
        }

        #[test]
        fn never_panics(s in ".*") {
            let _ = Uscc::parse(&s);
            let _ = Uscc::from_body(&s);
        }
    }
}
