//! What an issuer submits to issue a licence, before the library checks it
//! against the licence type and assigns its identifier.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::holder::Holder;

/// A licence to be issued (the JSON form `zhengzhao licence issue --file` reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceDraft {
    pub type_code: String,
    pub issuer_name: String,
    /// Licence number and identifier serial; empty to have one generated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial: String,
    pub holder: Holder,
    /// `YYYY-MM-DD`
    pub issue_date: String,
    /// `YYYY-MM-DD`; empty means the issue date.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub valid_from: String,
    /// `YYYY-MM-DD`; empty means derived from the type's validity range.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub valid_until: String,
    /// Jurisdiction area code (属地编码), 6 digits.
    pub area_code: String,
    pub face_fields: BTreeMap<String, String>,
    /// Template version the face fields follow; 0 (or absent) means the current one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub template_version: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}
