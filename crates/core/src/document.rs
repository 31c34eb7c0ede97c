//! The licence document: GB/T 36903 metadata and face fields as JSON, and its
//! RFC 8785 (JCS) canonical form, which is exactly what gets signed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Issuing authority as written on the licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DocumentIssuer {
    pub name: String,
    pub code: String,
}

/// Holder as written in the document (the ID number appears in full: the
/// document is what the holder's licence says).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DocumentHolder {
    pub name: String,
    pub id_type_code: String,
    pub id_number: String,
}

impl std::fmt::Debug for DocumentHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentHolder")
            .field("name", &self.name)
            .field("id_type_code", &self.id_type_code)
            .field("id_number", &crate::holder::mask_id_number(&self.id_number))
            .finish()
    }
}

/// A licence document (GB/T 36903 metadata). Dates are `YYYY-MM-DD`;
/// `validUntil` is absent for a long-term licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LicenceDocument {
    /// 证照标识
    pub identifier: String,
    /// 证照编号
    pub licence_number: String,
    /// 证照名称 (the type name)
    pub name: String,
    /// 证照类型代码
    pub type_code: String,
    pub template_version: u32,
    pub issuer: DocumentIssuer,
    pub issue_date: String,
    pub valid_from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    pub holder: DocumentHolder,
    /// 属地编码
    pub area_code: String,
    pub face_fields: BTreeMap<String, String>,
    /// Identifier of the licence this one replaces (change, renewal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// Canonical JSON failed: a value JSON cannot represent (never for documents).
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalise: {0}")]
pub struct CanonicalError(String);

/// RFC 8785 canonical JSON of any serialisable value.
///
/// Values of strings, integers within ±2^53, booleans, nulls, arrays and
/// objects whose keys are in the Basic Multilingual Plane — every document,
/// usage record and log leaf the library makes — are written directly:
/// keys sorted by UTF-16 code units (for such keys, the order of their
/// UTF-8 bytes), strings escaped as `serde_json` escapes them (exactly RFC
/// 8785's rules: `\b \t \n \f \r`, other controls as lower-case `\u00xx`,
/// `"` and `\`, nothing else), integers in plain decimal (ECMAScript's form
/// for them). Anything else (a fraction, a larger number, a key beyond the
/// BMP) goes through `serde_json_canonicalizer`; property tests hold the
/// two to the same bytes. A non-finite float (which no canonicalised type
/// holds) becomes `null`, as `serde_json::to_value` makes it.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalError> {
    let v = serde_json::to_value(value).map_err(|e| CanonicalError(e.to_string()))?;
    let mut out = Vec::with_capacity(512);
    if write_plain(&v, &mut out) {
        return Ok(out);
    }
    serde_json_canonicalizer::to_vec(&v).map_err(|e| CanonicalError(e.to_string()))
}

/// Writes `v` in canonical form if it is plain (see [`canonical_json`]);
/// false, with `out` partly written, if it is not.
fn write_plain(v: &serde_json::Value, out: &mut Vec<u8>) -> bool {
    use serde_json::Value;
    const EXACT: u64 = 1 << 53;
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) if u <= EXACT => out.extend_from_slice(u.to_string().as_bytes()),
            (None, Some(i)) if i.unsigned_abs() <= EXACT => out.extend_from_slice(i.to_string().as_bytes()),
            _ => return false,
        },
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if !write_plain(item, out) {
                    return false;
                }
            }
            out.push(b']');
        }
        Value::Object(map) => {
            if map.keys().any(|k| k.chars().any(|c| u32::from(c) > 0xFFFF)) {
                return false;
            }
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                if !write_plain(item, out) {
                    return false;
                }
            }
            out.push(b'}');
        }
    }
    true
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

impl LicenceDocument {
    /// The exact bytes that are signed.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, CanonicalError> {
        canonical_json(self)
    }

    /// Parses a document (e.g. a JWS payload), refusing unknown fields.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc8785_sorting_example() {
        // RFC 8785 section 3.2.3.
        let input = r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}"#;
        let v: serde_json::Value = serde_json::from_str(input).unwrap();
        let out = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&out)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let _ = keys;
        let order = ["\r", "1", "\u{80}", "\u{f6}", "\u{20ac}", "\u{1f600}", "\u{fb33}"];
        let mut last = 0;
        for k in order {
            let pos = out.find(&format!("\"{}\"", k.replace('\r', "\\r"))).unwrap();
            assert!(pos >= last, "{k:?} out of order in {out}");
            last = pos;
        }
    }

    #[test]
    fn rfc8785_serialisation_example() {
        // RFC 8785 section 3.2.2 (numbers, literals, string escapes).
        let input = r#"{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
            "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/", "literals": [null, true, false]}"#;
        let v: serde_json::Value = serde_json::from_str(input).unwrap();
        let out = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    fn doc(fields: BTreeMap<String, String>) -> LicenceDocument {
        LicenceDocument {
            identifier: "id".into(),
            licence_number: "N1".into(),
            name: "食品经营许可证".into(),
            type_code: "11100000000013338W011".into(),
            template_version: 1,
            issuer: DocumentIssuer { name: "某区市场监督管理局".into(), code: "91350100M000100Y43".into() },
            issue_date: "2026-01-01".into(),
            valid_from: "2026-01-01".into(),
            valid_until: None,
            holder: DocumentHolder {
                name: "某公司".into(),
                id_type_code: "001".into(),
                id_number: "91350100M000100Y43".into(),
            },
            area_code: "350102".into(),
            face_fields: fields,
            replaces: None,
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let edge = (1i64 << 53) - 2..(1i64 << 53) + 3;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            edge.clone().prop_map(Value::from),
            edge.prop_map(|i| Value::from(-i)),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\u{0}-\\u{7f}\"\\\\]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner.clone(), 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                proptest::collection::btree_map("[a-zA-Z0-9\u{80}-\u{ffff}]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn plain_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        const EXACT: i64 = 1 << 53;
        let text = "[\\u{0}-\\u{7f}\\u{2028}\\u{e000}-\\u{ffff}\\u{4e00}-\\u{4e0f}]{0,6}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(Value::from),
            (-EXACT..=EXACT).prop_map(Value::from),
            prop_oneof![Just(EXACT), Just(-EXACT), Just(0)].prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(text, inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn canonical_form_round_trips_and_is_stable(fields in proptest::collection::btree_map("[a-z_]{1,8}", ".*", 0..6)) {
            let d = doc(fields);
            let bytes = d.canonical_bytes().unwrap();
            let back = LicenceDocument::from_json(&bytes).unwrap();
            prop_assert_eq!(&back, &d);
            prop_assert_eq!(back.canonical_bytes().unwrap(), bytes.clone());
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(canonical_json(&v).unwrap(), bytes);
        }

        /// `canonical_json` and `serde_json_canonicalizer` agree on any
        /// value, plain or not (keys beyond the BMP, integers around 2^53,
        /// fractions).
        #[test]
        fn canonical_json_is_rfc8785(v in json_value()) {
            let reference = serde_json_canonicalizer::to_vec(&v).unwrap();
            prop_assert_eq!(canonical_json(&v).unwrap(), reference);
        }

        /// On plain values the direct writer itself runs and gives
        /// `serde_json_canonicalizer`'s bytes (controls in keys and
        /// strings, keys up to U+FFFF, small and boundary integers).
        #[test]
        fn direct_writer_is_rfc8785(v in plain_value()) {
            let reference = serde_json_canonicalizer::to_vec(&v).unwrap();
            let mut out = Vec::new();
            prop_assert!(write_plain(&v, &mut out), "plain: {}", v);
            prop_assert_eq!(out, reference);
        }

        #[test]
        fn from_json_never_panics(s in ".*") {
            let _ = LicenceDocument::from_json(s.as_bytes());
        }
    }
}
