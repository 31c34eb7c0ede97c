//! From an issuer's draft to the licence document that gets signed: every
//! field checked against the licence type and the template version it names.

use time::Date;
use zhengzhao_core::date::{format_date, parse_date};
use zhengzhao_core::document::{DocumentHolder, DocumentIssuer};
use zhengzhao_core::{FieldViolation, LicenceDocument, LicenceDraft, LicenceId, Name, TypeCode, Uscc, Violations};
use zhengzhao_core::{LicenceTypeRecord, TypeStatus};
use zhengzhao_proto::ServiceError;

use crate::IssuanceError;

/// A serial of 16 upper-case letters and digits from the OS random source.
pub(crate) fn generate_serial() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    zhengzhao_crypto::random_bytes::<16>()
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The type must be published and list the issuer.
pub(crate) fn check_issuable(t: &LicenceTypeRecord, issuer: &str) -> Result<(), ServiceError> {
    if t.status != TypeStatus::Published {
        return Err(IssuanceError::TypeNotPublished { code: t.code().to_owned(), status: t.status.as_str() }.into());
    }
    if !t.definition.may_issue(issuer) {
        return Err(IssuanceError::NotAnIssuer { issuer: issuer.to_owned(), code: t.code().to_owned() }.into());
    }
    Ok(())
}

/// The end date: given (within the type's range) or derived from the range.
fn end_date(t: &LicenceTypeRecord, from: Date, given: &str, out: &mut Vec<FieldViolation>) -> Option<Date> {
    let validity = t.definition.validity;
    if given.is_empty() {
        return validity.end_date(from);
    }
    match parse_date(given) {
        Err(e) => {
            out.push(FieldViolation::new("valid_until", e));
            None
        }
        Ok(until) if until < from => {
            out.push(FieldViolation::new("valid_until", "before valid_from"));
            None
        }
        Ok(until) => match validity.end_date(from) {
            Some(max) if until > max => {
                out.push(FieldViolation::new(
                    "valid_until",
                    format!("beyond the type's validity range {validity} (at most {})", format_date(max)),
                ));
                None
            }
            None => {
                out.push(FieldViolation::new("valid_until", "this licence type is long-term: leave it empty"));
                None
            }
            Some(_) => Some(until),
        },
    }
}

/// Builds the document for `draft` as version `version` of its serial,
/// issued by `issuer`; `replaces` names the version it replaces. The issue
/// date may not be after `today` (China Standard Time).
pub(crate) fn build(
    t: &LicenceTypeRecord,
    draft: &mut LicenceDraft,
    issuer: &str,
    version: u16,
    replaces: Option<&str>,
    today: time::Date,
) -> Result<LicenceDocument, ServiceError> {
    let def = &t.definition;
    let type_code = TypeCode::parse(&draft.type_code).map_err(|e| ServiceError::invalid("type_code", e))?;
    let mut out: Vec<FieldViolation> = draft.holder.validate(def.holder_category, today);
    let issuer_name = Name::parse(&draft.issuer_name)
        .map_err(|e| out.push(FieldViolation::new("issuer_name", e.to_string())))
        .map(Name::into_string)
        .unwrap_or_default();
    if let Err(e) = zhengzhao_core::division::check_area_code(&draft.area_code) {
        out.push(FieldViolation::new("area_code", e));
    }
    if draft.serial.is_empty() {
        draft.serial = generate_serial();
    } else if draft.serial.len() > zhengzhao_core::identifier::MAX_SERIAL_LEN
        || !draft.serial.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        out.push(FieldViolation::new("serial", "upper-case letters and digits, at most 64"));
    }
    let issue_date = parse_date(&draft.issue_date).map_err(|e| out.push(FieldViolation::new("issue_date", e))).ok();
    if issue_date.is_some_and(|d| d > today) {
        out.push(FieldViolation::new("issue_date", format!("after today ({})", format_date(today))));
    }
    let valid_from = if draft.valid_from.is_empty() {
        issue_date
    } else {
        parse_date(&draft.valid_from).map_err(|e| out.push(FieldViolation::new("valid_from", e))).ok()
    };
    let valid_until = valid_from.and_then(|from| end_date(t, from, &draft.valid_until, &mut out));
    if let Err(Violations(more)) = def.template.check_values(&draft.face_fields) {
        out.extend(more);
    }
    Violations::into_result(out)?;
    let (Some(issue_date), Some(valid_from)) = (issue_date, valid_from) else {
        return Err(ServiceError::internal("dates validated but missing"));
    };
    let issuer_code = Uscc::parse(issuer).map_err(|e| ServiceError::invalid("issuer", e.to_string()))?;
    let id = LicenceId::new(type_code.clone(), issuer_code, &draft.serial, version)
        .map_err(|e| ServiceError::FailedPrecondition(format!("cannot make a new version: {e}")))?;
    Ok(LicenceDocument {
        identifier: id.to_string(),
        licence_number: draft.serial.clone(),
        name: def.name.clone(),
        type_code: type_code.to_string(),
        template_version: def.template.version,
        issuer: DocumentIssuer { name: issuer_name, code: issuer.to_owned() },
        issue_date: format_date(issue_date),
        valid_from: format_date(valid_from),
        valid_until: valid_until.map(format_date),
        holder: DocumentHolder {
            name: draft.holder.name.trim().to_owned(),
            id_type_code: draft.holder.id_type_code.clone(),
            id_number: draft.holder.id_number.clone(),
        },
        area_code: draft.area_code.clone(),
        face_fields: draft.face_fields.clone(),
        replaces: replaces.map(str::to_owned),
    })
}

/// The draft a held document was made from (for changes and renewals).
pub(crate) fn draft_of(doc: &LicenceDocument) -> LicenceDraft {
    LicenceDraft {
        type_code: doc.type_code.clone(),
        issuer_name: doc.issuer.name.clone(),
        serial: doc.licence_number.clone(),
        holder: zhengzhao_core::Holder {
            name: doc.holder.name.clone(),
            id_type_code: doc.holder.id_type_code.clone(),
            id_number: doc.holder.id_number.clone(),
        },
        issue_date: doc.issue_date.clone(),
        valid_from: doc.valid_from.clone(),
        valid_until: doc.valid_until.clone().unwrap_or_default(),
        area_code: doc.area_code.clone(),
        face_fields: doc.face_fields.clone(),
        template_version: doc.template_version,
    }
}
