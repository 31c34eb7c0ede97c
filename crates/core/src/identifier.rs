//! Licence identifier (证照标识, GB/T 36904):
//! `1.2.156.3005.2.<type code>.<issuer code>.<serial>.<version>.<check>`.

use std::fmt;
use std::str::FromStr;

use crate::catalog::TypeCode;
use crate::mod3736;
use crate::uscc::Uscc;

/// The fixed OID root of every licence identifier.
pub const ROOT: &str = "1.2.156.3005.2";
/// Longest serial accepted. The standard's maximum is unconfirmed; deployed
/// serials are 7 to 32 characters.
pub const MAX_SERIAL_LEN: usize = 64;

/// Whether an identifier's check character is the standard one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckForm {
    Standard,
    /// Any other check character on an otherwise well-formed identifier:
    /// deployed systems computed it in more than one non-standard way (letters
    /// valued one too high is only one of them). Accepted only where
    /// explicitly allowed, kept verbatim, and flagged; the standard character
    /// is [`LicenceId::standard_check`].
    Legacy,
}

/// The issuer segment: a unified social credit code, or (in some deployed
/// systems) a 6-digit area code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IssuerCode {
    Uscc(Uscc),
    AreaCode(String),
}

impl IssuerCode {
    pub fn as_str(&self) -> &str {
        match self {
            IssuerCode::Uscc(u) => u.as_str(),
            IssuerCode::AreaCode(a) => a,
        }
    }
}

/// Why a string is not a licence identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must start with {ROOT}")]
    Root,
    #[error("must have 5 segments after the root, found {0}")]
    Segments(usize),
    #[error("type code: {0}")]
    TypeCode(String),
    #[error("issuer code must be a unified social credit code or a 6-digit area code: {0}")]
    Issuer(String),
    #[error("serial must be 1 to {MAX_SERIAL_LEN} upper-case letters or digits")]
    Serial,
    #[error("version must be 3 digits from 001")]
    Version,
    #[error("check character must be one upper-case letter or digit")]
    CheckShape,
    /// Well formed but for the check character: a legacy identifier, refused
    /// where legacy ones are not allowed.
    #[error("check character should be {expected}, got {found} (a legacy identifier, not allowed here)")]
    Check { expected: char, found: char },
}

/// A parsed, valid licence identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LicenceId {
    type_code: TypeCode,
    issuer: IssuerCode,
    serial: String,
    version: u16,
    check: char,
    /// The standard check character (equal to `check` unless legacy).
    standard: char,
    form: CheckForm,
}

fn valid_serial(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SERIAL_LEN && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl LicenceId {
    /// A new identifier with the standard check character.
    pub fn new(type_code: TypeCode, issuer: Uscc, serial: &str, version: u16) -> Result<Self, IdError> {
        if !valid_serial(serial) {
            return Err(IdError::Serial);
        }
        if !(1..=999).contains(&version) {
            return Err(IdError::Version);
        }
        let issuer = IssuerCode::Uscc(issuer);
        let body = format!("{}{}{}{:03}", type_code.as_str(), issuer.as_str(), serial, version);
        let check = mod3736::check_char(&body).ok_or(IdError::Serial)?;
        Ok(LicenceId {
            type_code,
            issuer,
            serial: serial.to_owned(),
            version,
            check,
            standard: check,
            form: CheckForm::Standard,
        })
    }

    /// Parses an identifier with a standard check character only.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::parse_with(s, false)
    }

    /// Parses an identifier naming a held licence, the refusal naming
    /// `field`. Legacy check characters are accepted: aggregated historical
    /// licences keep theirs; new identifiers are always standard.
    pub fn parse_held(field: &str, s: &str) -> Result<Self, crate::Violations> {
        Self::parse_allowing_legacy(s).map_err(|e| crate::Violations::single(field, e.to_string()))
    }

    /// Parses an identifier, accepting any check character on an otherwise
    /// well-formed identifier: a wrong one makes it legacy (flagged by
    /// [`LicenceId::check_form`], kept verbatim). For bulk import of
    /// historical licences, and for naming licences already held.
    pub fn parse_allowing_legacy(s: &str) -> Result<Self, IdError> {
        Self::parse_with(s, true)
    }

    fn parse_with(s: &str, allow_legacy: bool) -> Result<Self, IdError> {
        let rest = s.strip_prefix(ROOT).and_then(|r| r.strip_prefix('.')).ok_or(IdError::Root)?;
        let parts: Vec<&str> = rest.split('.').collect();
        let [type_code, issuer, serial, version, check] = parts[..] else {
            return Err(IdError::Segments(parts.len()));
        };
        let type_code = TypeCode::parse(type_code).map_err(IdError::TypeCode)?;
        let issuer = if issuer.len() == 6 && issuer.bytes().all(|b| b.is_ascii_digit()) {
            IssuerCode::AreaCode(issuer.to_owned())
        } else {
            IssuerCode::Uscc(Uscc::parse(issuer).map_err(|e| IdError::Issuer(e.to_string()))?)
        };
        if !valid_serial(serial) {
            return Err(IdError::Serial);
        }
        if version.len() != 3 || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::Version);
        }
        let version: u16 = version.parse().map_err(|_| IdError::Version)?;
        if version == 0 {
            return Err(IdError::Version);
        }
        let mut check_chars = check.chars();
        let (Some(found), None) = (check_chars.next(), check_chars.next()) else {
            return Err(IdError::CheckShape);
        };
        if mod3736::char_value(found).is_none() {
            return Err(IdError::CheckShape);
        }
        let body = format!("{}{}{}{:03}", type_code.as_str(), issuer.as_str(), serial, version);
        let expected = mod3736::check_char(&body).ok_or(IdError::Serial)?;
        let form = if found == expected {
            CheckForm::Standard
        } else if allow_legacy {
            CheckForm::Legacy
        } else {
            return Err(IdError::Check { expected, found });
        };
        Ok(LicenceId { type_code, issuer, serial: serial.to_owned(), version, check: found, standard: expected, form })
    }

    pub fn type_code(&self) -> &TypeCode {
        &self.type_code
    }
    pub fn issuer(&self) -> &IssuerCode {
        &self.issuer
    }
    pub fn serial(&self) -> &str {
        &self.serial
    }
    pub fn version(&self) -> u16 {
        self.version
    }
    pub fn check(&self) -> char {
        self.check
    }
    pub fn check_form(&self) -> CheckForm {
        self.form
    }
    /// The standard check character of this identifier's body (its own
    /// check character unless it is legacy).
    pub fn standard_check(&self) -> char {
        self.standard
    }
}

impl fmt::Display for LicenceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ROOT}.{}.{}.{}.{:03}.{}",
            self.type_code.as_str(),
            self.issuer.as_str(),
            self.serial,
            self.version,
            self.check
        )
    }
}

impl FromStr for LicenceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> LicenceId {
        LicenceId::new(
            TypeCode::parse("11100000000013338W011").unwrap(),
            Uscc::parse("91350100M000100Y43").unwrap(),
            "A1B2C3D4",
            1,
        )
        .unwrap()
    }

    #[test]
    fn formats_and_parses() {
        let id = sample();
        let text = id.to_string();
        assert!(text.starts_with("1.2.156.3005.2.11100000000013338W011.91350100M000100Y43.A1B2C3D4.001."));
        assert_eq!(LicenceId::parse(&text).unwrap(), id);
        assert_eq!(id.check_form(), CheckForm::Standard);
    }

    /// `text` with its last (check) character replaced by `check`.
    fn with_check(text: &str, check: char) -> String {
        format!("{}{check}", &text[..text.len() - 1])
    }

    #[test]
    fn any_wrong_check_character_is_legacy_only_where_allowed() {
        let id = sample();
        let body = format!("{}{}{}{:03}", id.type_code().as_str(), id.issuer().as_str(), id.serial(), id.version());
        // Letters valued one too high, and a check character no known
        // computation gives: both are legacy.
        let one_high = mod3736::legacy_check_char(&body).unwrap();
        assert_ne!(one_high, id.check(), "sample must contain letters");
        let other = (0..36).map(mod3736::value_char).find(|c| *c != one_high && *c != id.check()).unwrap();
        for wrong in [one_high, other] {
            let text = with_check(&id.to_string(), wrong);
            assert_eq!(LicenceId::parse(&text), Err(IdError::Check { expected: id.check(), found: wrong }));
            let message = LicenceId::parse(&text).unwrap_err().to_string();
            assert!(message.contains(&format!("should be {}", id.check())), "{message}");
            let parsed = LicenceId::parse_allowing_legacy(&text).unwrap();
            assert_eq!(parsed.check_form(), CheckForm::Legacy);
            assert_eq!((parsed.check(), parsed.standard_check()), (wrong, id.check()));
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(LicenceId::parse(&id.to_string()).unwrap().standard_check(), id.check());
    }

    #[test]
    fn legacy_needs_a_well_formed_identifier() {
        let text = with_check(&sample().to_string(), '0');
        for bad in [
            text.replace(".001.", ".01."),
            text.replace(".001.", ".000."),
            text.replace("A1B2C3D4", "a1b2c3d4"),
            text.replace("11100000000013338W011", "11100000000013338W01"),
            text.replace("91350100M000100Y43", "91350100M000100Y44"),
            format!("{}x", &text[..text.len() - 1]),
            format!("{text}0"),
        ] {
            assert!(LicenceId::parse_allowing_legacy(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_malformed() {
        let t = sample().to_string();
        assert_eq!(LicenceId::parse(&t.replacen("1.2.156", "1.2.157", 1)), Err(IdError::Root));
        assert!(matches!(LicenceId::parse(&t.replace(".001.", ".000.")), Err(IdError::Version)));
        assert!(matches!(LicenceId::parse(&format!("{t}.X")), Err(IdError::Segments(6))));
        assert!(matches!(LicenceId::parse(&t.replace("A1B2C3D4", "a1b2")), Err(IdError::Serial)));
    }

    #[test]
    fn accepts_area_code_issuers() {
        let body = "11100000000013338W011330100ABC001";
        let check = mod3736::check_char(body).unwrap();
        let text = format!("{ROOT}.11100000000013338W011.330100.ABC.001.{check}");
        let id = LicenceId::parse(&text).unwrap();
        assert_eq!(id.issuer(), &IssuerCode::AreaCode("330100".into()));
    }

    proptest! {
        #[test]
        fn round_trips(body in "(1[1239]|5[1239]|9[123]|Y1)[0-9A-HJ-NPQRTUWXY]{15}", n in 0u16..1000, serial in "[0-9A-Z]{1,64}", version in 1u16..=999) {
            let authority = Uscc::from_body(&body).unwrap();
            let type_code = TypeCode::new(&authority, n).unwrap();
            let id = LicenceId::new(type_code, authority, &serial, version).unwrap();
            let text = id.to_string();
            prop_assert_eq!(LicenceId::parse(&text).unwrap(), id.clone());
            prop_assert_eq!(LicenceId::parse_allowing_legacy(&text).unwrap(), id);
        }

        #[test]
        fn any_wrong_check_character_parses_as_legacy_and_keeps_its_text(
            body in "(1[1239]|5[1239]|9[123]|Y1)[0-9A-HJ-NPQRTUWXY]{15}",
            n in 0u16..1000,
            area in proptest::option::of("[0-9]{6}"),
            serial in "[0-9A-Z]{1,64}",
            version in 1u16..=999,
            shift in 1u32..36,
        ) {
            let authority = Uscc::from_body(&body).unwrap();
            let type_code = TypeCode::new(&authority, n).unwrap();
            let issuer = area.unwrap_or_else(|| authority.as_str().to_owned());
            let plain = format!("{}{issuer}{serial}{version:03}", type_code.as_str());
            let standard = mod3736::check_char(&plain).unwrap();
            let wrong = mod3736::value_char((mod3736::char_value(standard).unwrap() + shift) % 36);
            let text = format!("{ROOT}.{}.{issuer}.{serial}.{version:03}.{wrong}", type_code.as_str());
            prop_assert_eq!(LicenceId::parse(&text), Err(IdError::Check { expected: standard, found: wrong }));
            let id = LicenceId::parse_allowing_legacy(&text).unwrap();
            prop_assert_eq!(id.check_form(), CheckForm::Legacy);
            prop_assert_eq!((id.check(), id.standard_check()), (wrong, standard));
            prop_assert_eq!(id.version(), version);
            prop_assert_eq!(id.serial(), serial.as_str());
            prop_assert_eq!(id.to_string(), text);
        }

        #[test]
        fn never_panics(s in ".*", tail in "[0-9A-Z.]{0,80}") {
            let _ = LicenceId::parse(&s);
            let _ = LicenceId::parse_allowing_legacy(&format!("{ROOT}.{tail}"));
        }
    }
}
