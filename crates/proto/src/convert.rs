//! Conversions between wire types and domain types. Wire-to-domain is where
//! validation happens: a field that cannot be converted is a field violation.

pub mod keys;
pub mod licence;
pub mod licence_type;
pub mod log;

pub use keys::algorithm_from_wire;
pub use licence::action_from_wire;
pub use licence_type::type_status_from_wire;
pub use log::logged_event_hash_only;

use time::OffsetDateTime;
use zhengzhao_core as core;
use zhengzhao_core::{FieldViolation, Violations};

use crate::catalog::v1 as pb;
use crate::common::v1 as common;

/// A wire timestamp from a domain time.
pub fn timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.unix_timestamp(), nanos: t.nanosecond() as i32 }
}

/// A domain time from a wire timestamp, or why not: every instant a caller
/// supplies lies in [`core::date::check_instant`]'s range, so whatever is
/// accepted can be stored and read back.
pub fn from_timestamp(field: &str, t: &prost_types::Timestamp) -> Result<OffsetDateTime, ServiceErrorAlias> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(crate::ServiceError::invalid(field, "nanos must be 0 to 999999999"));
    }
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    let range = |t| core::date::check_instant(t).map_err(|e| crate::ServiceError::invalid(field, e));
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => range(t),
        // Beyond what the time crate represents: far outside the range too.
        Err(_) => range(OffsetDateTime::UNIX_EPOCH - time::Duration::days(365 * 100)),
    }
}

/// A domain time from a timestamp another service returned (a record it
/// holds): only checked to be representable, since rows an older version
/// stored outside [`from_timestamp`]'s range must still read.
pub fn stored_timestamp(field: &str, t: &prost_types::Timestamp) -> Result<OffsetDateTime, ServiceErrorAlias> {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(|_| crate::ServiceError::internal(format!("{field}: timestamp not representable")))
}

type ServiceErrorAlias = crate::ServiceError;

pub fn status_to_wire(s: core::LicenceStatus) -> common::LicenceStatus {
    use core::LicenceStatus as S;
    match s {
        S::Valid => common::LicenceStatus::Valid,
        S::Seized => common::LicenceStatus::Seized,
        S::Withdrawn => common::LicenceStatus::Withdrawn,
        S::Cancelled => common::LicenceStatus::Cancelled,
        S::Expired => common::LicenceStatus::Expired,
        S::TransferredOut => common::LicenceStatus::TransferredOut,
        S::Revoked => common::LicenceStatus::Revoked,
        S::Other => common::LicenceStatus::Other,
        S::Superseded => common::LicenceStatus::Superseded,
    }
}

pub fn status_from_wire(s: common::LicenceStatus) -> Option<core::LicenceStatus> {
    use core::LicenceStatus as S;
    Some(match s {
        common::LicenceStatus::Unspecified => return None,
        common::LicenceStatus::Valid => S::Valid,
        common::LicenceStatus::Seized => S::Seized,
        common::LicenceStatus::Withdrawn => S::Withdrawn,
        common::LicenceStatus::Cancelled => S::Cancelled,
        common::LicenceStatus::Expired => S::Expired,
        common::LicenceStatus::TransferredOut => S::TransferredOut,
        common::LicenceStatus::Revoked => S::Revoked,
        common::LicenceStatus::Other => S::Other,
        common::LicenceStatus::Superseded => S::Superseded,
    })
}

/// A status filter from the wire: unspecified (0) for none, an unknown value refused.
pub fn status_filter(field: &str, v: i32) -> Result<Option<core::LicenceStatus>, ServiceErrorAlias> {
    let s = common::LicenceStatus::try_from(v)
        .map_err(|_| crate::ServiceError::invalid(field, format!("{v} is not a licence status")))?;
    Ok(status_from_wire(s))
}

pub fn category_to_wire(c: core::HolderCategory) -> common::HolderCategory {
    match c {
        core::HolderCategory::NaturalPerson => common::HolderCategory::NaturalPerson,
        core::HolderCategory::LegalPerson => common::HolderCategory::LegalPerson,
    }
}

pub fn level_to_wire(l: core::AuthorityLevel) -> pb::AuthorityLevel {
    use core::AuthorityLevel as L;
    match l {
        L::National => pb::AuthorityLevel::National,
        L::Provincial => pb::AuthorityLevel::Provincial,
        L::City => pb::AuthorityLevel::City,
        L::District => pb::AuthorityLevel::District,
        L::Township => pb::AuthorityLevel::Township,
        L::Other => pb::AuthorityLevel::Other,
    }
}

fn level_from_wire(field: &str, v: i32, out: &mut Vec<FieldViolation>) -> core::AuthorityLevel {
    use core::AuthorityLevel as L;
    match pb::AuthorityLevel::try_from(v) {
        Ok(pb::AuthorityLevel::National) => L::National,
        Ok(pb::AuthorityLevel::Provincial) => L::Provincial,
        Ok(pb::AuthorityLevel::City) => L::City,
        Ok(pb::AuthorityLevel::District) => L::District,
        Ok(pb::AuthorityLevel::Township) => L::Township,
        Ok(pb::AuthorityLevel::Other) => L::Other,
        _ => {
            out.push(FieldViolation::new(field, "required: national, provincial, city, district, township or other"));
            L::Other
        }
    }
}

pub fn definition_to_wire(d: &core::LicenceTypeDefinition) -> pb::LicenceTypeDefinition {
    use pb::validity_range::Range;
    let range = match d.validity {
        core::ValidityRange::LongTerm => Range::LongTerm(true),
        core::ValidityRange::Years(n) => Range::Years(n),
        core::ValidityRange::Months(n) => Range::Months(n),
        core::ValidityRange::Days(n) => Range::Days(n),
    };
    pb::LicenceTypeDefinition {
        code: d.code.clone().unwrap_or_default(),
        name: d.name.clone(),
        defining_authority: Some(pb::Authority {
            name: d.defining_authority.name.clone(),
            code: d.defining_authority.code.clone(),
            level: level_to_wire(d.defining_authority.level) as i32,
        }),
        holder_category: category_to_wire(d.holder_category) as i32,
        validity: Some(pb::ValidityRange { range: Some(range) }),
        issuing_level: level_to_wire(d.issuing_level) as i32,
        issuers: d.issuers.clone(),
        template: Some(template_to_wire(&d.template)),
        service_items: d
            .service_items
            .iter()
            .map(|i| pb::ServiceItem { name: i.name.clone(), code: i.code.clone() })
            .collect(),
        renewal_window_days: Some(d.renewal_window_days),
        failed_check_invalidates: d.failed_check_invalidates,
    }
}

fn kind_to_wire(k: core::FieldKind) -> pb::FieldKind {
    use core::FieldKind as K;
    match k {
        K::Text => pb::FieldKind::Text,
        K::Date => pb::FieldKind::Date,
        K::Integer => pb::FieldKind::Integer,
        K::Decimal => pb::FieldKind::Decimal,
        K::Enumeration => pb::FieldKind::Enumeration,
        K::Boolean => pb::FieldKind::Boolean,
        K::Attachment => pb::FieldKind::Attachment,
    }
}

fn kind_from_wire(v: i32) -> Option<core::FieldKind> {
    use core::FieldKind as K;
    Some(match pb::FieldKind::try_from(v).ok()? {
        pb::FieldKind::Unspecified => return None,
        pb::FieldKind::Text => K::Text,
        pb::FieldKind::Date => K::Date,
        pb::FieldKind::Integer => K::Integer,
        pb::FieldKind::Decimal => K::Decimal,
        pb::FieldKind::Enumeration => K::Enumeration,
        pb::FieldKind::Boolean => K::Boolean,
        pb::FieldKind::Attachment => K::Attachment,
    })
}

pub fn template_to_wire(t: &core::FaceTemplate) -> pb::FaceTemplate {
    pb::FaceTemplate {
        version: t.version,
        fields: t
            .fields
            .iter()
            .map(|f| pb::FieldDefinition {
                key: f.key.clone(),
                label: f.label.clone(),
                kind: kind_to_wire(f.kind) as i32,
                required: f.required,
                max_length: f.max_length.unwrap_or(0),
                pattern: f.pattern.clone().unwrap_or_default(),
                order: f.order,
                values: f.values.clone(),
                max_scale: f.max_scale,
                min: f.min,
                max: f.max,
            })
            .collect(),
    }
}

/// Converts a wire template; unknown kinds are violations. The caller validates the rest.
pub fn template_from_wire(template: pb::FaceTemplate, out: &mut Vec<FieldViolation>) -> core::FaceTemplate {
    let mut fields = Vec::with_capacity(template.fields.len());
    for (i, f) in template.fields.into_iter().enumerate() {
        let kind = kind_from_wire(f.kind).unwrap_or_else(|| {
            out.push(FieldViolation::new(
                format!("template.fields[{i}].kind"),
                "required: text, date, integer, decimal, enumeration, boolean or attachment",
            ));
            core::FieldKind::Text
        });
        fields.push(core::FieldDefinition {
            key: f.key,
            label: f.label,
            kind,
            required: f.required,
            order: f.order,
            max_length: (f.max_length > 0).then_some(f.max_length),
            pattern: (!f.pattern.is_empty()).then_some(f.pattern),
            values: f.values,
            max_scale: f.max_scale,
            min: f.min,
            max: f.max,
        });
    }
    core::FaceTemplate { version: template.version, fields }
}

/// Converts and fully validates a wire definition.
pub fn definition_from_wire(mut d: pb::LicenceTypeDefinition) -> Result<core::LicenceTypeDefinition, Violations> {
    let mut out = Vec::new();
    let template = d.template.take().unwrap_or_default();
    let mut def = definition_fields(d, &mut out);
    def.template = template_from_wire(template, &mut out);
    if let Err(Violations(more)) = def.validate() {
        out.extend(more);
    }
    Violations::into_result(out).map(|()| def)
}

/// Converts and validates a wire definition's own fields, for a revision of
/// them: the template must be unset (it is left empty in the result).
pub fn definition_fields_from_wire(d: pb::LicenceTypeDefinition) -> Result<core::LicenceTypeDefinition, Violations> {
    let mut out = Vec::new();
    if d.template.is_some() {
        out.push(FieldViolation::new("template", "must be unset: revise the template with ReviseTemplate"));
    }
    let def = definition_fields(d, &mut out);
    if let Err(Violations(more)) = def.validate_fields() {
        out.extend(more);
    }
    Violations::into_result(out).map(|()| def)
}

/// A wire definition's fields but its template (left empty), conversion
/// problems added to `out`.
fn definition_fields(d: pb::LicenceTypeDefinition, out: &mut Vec<FieldViolation>) -> core::LicenceTypeDefinition {
    use pb::validity_range::Range;
    let authority = d.defining_authority.unwrap_or_default();
    let defining_level = level_from_wire("defining_authority.level", authority.level, out);
    let issuing_level = level_from_wire("issuing_level", d.issuing_level, out);
    let holder_category = match common::HolderCategory::try_from(d.holder_category) {
        Ok(common::HolderCategory::NaturalPerson) => core::HolderCategory::NaturalPerson,
        Ok(common::HolderCategory::LegalPerson) => core::HolderCategory::LegalPerson,
        _ => {
            out.push(FieldViolation::new("holder_category", "required: natural person or legal person"));
            core::HolderCategory::NaturalPerson
        }
    };
    let validity = match d.validity.and_then(|v| v.range) {
        Some(Range::LongTerm(true)) => core::ValidityRange::LongTerm,
        Some(Range::Years(n)) if (1..=100).contains(&n) => core::ValidityRange::Years(n),
        Some(Range::Months(n)) if (1..=1200).contains(&n) => core::ValidityRange::Months(n),
        Some(Range::Days(n)) if (1..=36600).contains(&n) => core::ValidityRange::Days(n),
        _ => {
            out.push(FieldViolation::new(
                "validity",
                "required: long-term, or 1-100 years, 1-1200 months or 1-36600 days",
            ));
            core::ValidityRange::LongTerm
        }
    };
    core::LicenceTypeDefinition {
        code: (!d.code.is_empty()).then_some(d.code),
        name: d.name,
        defining_authority: core::Authority { name: authority.name, code: authority.code, level: defining_level },
        service_items: d.service_items.into_iter().map(|i| core::ServiceItem { name: i.name, code: i.code }).collect(),
        holder_category,
        validity,
        issuing_level,
        issuers: d.issuers,
        template: core::FaceTemplate { version: 0, fields: Vec::new() },
        renewal_window_days: d.renewal_window_days.unwrap_or(core::catalog::DEFAULT_RENEWAL_WINDOW_DAYS),
        failed_check_invalidates: d.failed_check_invalidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_round_trip_and_unset_enums_are_named() {
        let def: core::LicenceTypeDefinition =
            serde_json::from_str(include_str!("../testdata/definition.json")).unwrap();
        let wire = definition_to_wire(&def);
        assert_eq!(definition_from_wire(wire.clone()).unwrap(), def);
        let mut bad = wire;
        bad.holder_category = 0;
        bad.validity = None;
        let e = definition_from_wire(bad).unwrap_err();
        assert!(e.names("holder_category") && e.names("validity"), "{e}");
    }

    #[test]
    fn integer_bounds_round_trip_and_fields_convert_without_a_template() {
        let mut def: core::LicenceTypeDefinition =
            serde_json::from_str(include_str!("../testdata/definition.json")).unwrap();
        let i = def.template.fields.iter().position(|f| f.kind == core::FieldKind::Integer);
        let i = i.unwrap_or_else(|| {
            def.template.fields.push(core::FieldDefinition::new("staff_count", "从业人员数", core::FieldKind::Integer));
            def.template.fields.len() - 1
        });
        def.template.fields[i].min = Some(-3);
        def.template.fields[i].max = Some(0);
        let wire = definition_to_wire(&def);
        assert_eq!(definition_from_wire(wire.clone()).unwrap(), def);
        let e = definition_fields_from_wire(wire.clone()).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(e.names("template"), "{e}");
        let fields = definition_fields_from_wire(pb::LicenceTypeDefinition { template: None, ..wire }).unwrap();
        assert!(fields.template.fields.is_empty());
        assert_eq!(fields.name, def.name);
    }

    proptest::proptest! {
        /// Over the whole wire range: a timestamp is refused naming its
        /// field, or accepted and then stored text reads back to the same
        /// instant (to the microsecond the store keeps).
        #[test]
        fn accepted_timestamps_store_and_read_back(
            seconds in proptest::prop_oneof![
                proptest::num::i64::ANY,
                // Around the accepted range's ends, and inside it.
                (-2_208_988_800i64 - 5)..(-2_208_988_800i64 + 5),
                (253_402_214_400i64 - 5)..(253_402_214_400i64 + 5),
                -2_208_988_800i64..253_402_214_400i64,
            ],
            nanos in proptest::prop_oneof![proptest::num::i32::ANY, 0i32..1_000_000_000],
        ) {
            let wire = prost_types::Timestamp { seconds, nanos };
            match from_timestamp("started_at", &wire) {
                Ok(t) => {
                    let stored = zhengzhao_store::format_time(t);
                    let back = zhengzhao_store::parse_time(&stored);
                    proptest::prop_assert!(back.is_some(), "{stored}");
                    let back = back.unwrap_or(t);
                    proptest::prop_assert!(t - back < time::Duration::microseconds(1) && back <= t);
                }
                Err(crate::ServiceError::Invalid(v)) => proptest::prop_assert!(v.names("started_at")),
                Err(other) => proptest::prop_assert!(false, "{other}"),
            }
        }
    }

    #[test]
    fn timestamps_outside_the_range_are_refused() {
        let year_minus_one = prost_types::Timestamp { seconds: -62_198_755_200, nanos: 0 };
        assert!(from_timestamp("occurred_at", &year_minus_one).is_err());
        assert!(from_timestamp("occurred_at", &prost_types::Timestamp { seconds: i64::MIN, nanos: 0 }).is_err());
        assert!(from_timestamp("occurred_at", &prost_types::Timestamp { seconds: 0, nanos: -1 }).is_err());
        assert!(from_timestamp("occurred_at", &prost_types::Timestamp { seconds: 1_800_000_000, nanos: 5 }).is_ok());
    }
}
