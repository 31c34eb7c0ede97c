//! JWS compact serialisation (RFC 7515) over an arbitrary payload.

use serde::{Deserialize, Serialize};

use crate::{b64url, b64url_decode};

/// The protected header Zhengzhao writes and reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwsHeader {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// When the signature was made (seconds since the epoch); set by the
    /// signing service, read when a key is marked compromised as of a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The signing key's certificate chain from its CA, leaf first
    /// (RFC 7515 §4.1.6), when the key has been certified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

/// Why a string is not a JWS we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("a JWS compact serialisation has three dot-separated parts")]
    Shape,
    #[error("{0} is not base64url")]
    Encoding(&'static str),
    #[error("protected header is not valid JSON: {0}")]
    Header(String),
    #[error("JWS larger than {0} bytes")]
    TooLarge(usize),
}

/// Largest JWS accepted for parsing.
pub const MAX_JWS_LEN: usize = 1 << 20;

/// A JWS split into its parts; the signature is not checked here.
#[derive(Debug, Clone)]
pub struct ParsedJws {
    pub header: JwsHeader,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// `BASE64URL(header) . BASE64URL(payload)`: the bytes the signature covers.
    pub signing_input: String,
}

/// The signing input for `header` and `payload`.
pub fn signing_input(header: &JwsHeader, payload: &[u8]) -> String {
    // A header of strings always serialises.
    let header_json = serde_json::to_vec(header).unwrap_or_default();
    format!("{}.{}", b64url(&header_json), b64url(payload))
}

/// Assembles a compact JWS from its signing input and signature.
pub fn assemble(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", b64url(signature))
}

/// Splits and decodes a compact JWS.
pub fn parse(compact: &str) -> Result<ParsedJws, JwsError> {
    if compact.len() > MAX_JWS_LEN {
        return Err(JwsError::TooLarge(MAX_JWS_LEN));
    }
    let compact = compact.trim();
    let mut parts = compact.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwsError::Shape);
    };
    let header_bytes = b64url_decode(h).map_err(|_| JwsError::Encoding("header"))?;
    let header: JwsHeader = serde_json::from_slice(&header_bytes).map_err(|e| JwsError::Header(e.to_string()))?;
    let payload = b64url_decode(p).map_err(|_| JwsError::Encoding("payload"))?;
    let signature = b64url_decode(s).map_err(|_| JwsError::Encoding("signature"))?;
    Ok(ParsedJws { header, payload, signature, signing_input: format!("{h}.{p}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::es256::Es256KeyPair;
    use proptest::prelude::*;

    #[test]
    fn round_trip_with_es256() {
        let key = Es256KeyPair::generate();
        let header = JwsHeader { alg: "ES256".into(), kid: Some("k".into()), typ: None, iat: None, x5c: None };
        let input = signing_input(&header, b"{\"a\":1}");
        let jws = assemble(&input, &key.sign(input.as_bytes()));
        let parsed = parse(&jws).unwrap();
        assert_eq!(parsed.header, header);
        assert_eq!(parsed.payload, b"{\"a\":1}");
        assert!(key.public_key().verify(parsed.signing_input.as_bytes(), &parsed.signature));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*", a in "[A-Za-z0-9_-]{0,40}", b in "[A-Za-z0-9_-]{0,40}") {
            let _ = parse(&s);
            let _ = parse(&format!("{a}.{b}.{a}"));
        }

        #[test]
        fn payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let header = JwsHeader { alg: "ES256".into(), kid: None, typ: None, iat: None, x5c: None };
            let input = signing_input(&header, &payload);
            let parsed = parse(&assemble(&input, b"sig")).unwrap();
            prop_assert_eq!(parsed.payload, payload);
            prop_assert_eq!(parsed.signature, b"sig".to_vec());
        }
    }
}
