//! Shared steps of the consumer tests (`tests/consumers.rs`,
//! `tests/copies.rs`): the example service item, a use context, usage-list
//! entries, a fetch, the usage log, and a licence's face fields.

use zhengzhao_auth::Role;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::issuance::v1 as issuance;

use crate::fixtures::{draft, published_type_with};
use crate::{ADMIN, Library, OTHER_ISSUER};

/// The example type's service item.
pub const ITEM: &str = "11100000000013338W3000111005000";
/// A provincial agency.
pub const PROVINCE: &str = "11350000MB01234560";
/// The example licence's holder.
pub const HOLDER: &str = "91350100M000100Y43";

pub fn use_ctx(cause: &str) -> Option<exchange::UseContext> {
    Some(exchange::UseContext {
        use_cause: cause.into(),
        service_item_code: ITEM.into(),
        case_number: "2026-0001".into(),
    })
}

pub fn terms(fields: &[&str]) -> Option<exchange::UsageTerms> {
    Some(exchange::UsageTerms {
        purpose: "办理食品经营许可".into(),
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        all_fields: fields.is_empty(),
        ..Default::default()
    })
}

pub async fn add_entry(
    lib: &Library,
    agency: &str,
    type_code: &str,
    fields: &[&str],
) -> std::result::Result<exchange::UsageEntry, tonic::Status> {
    lib.exchange_as(Role::Admin, ADMIN, "王五")
        .create_usage_entry(exchange::CreateUsageEntryRequest {
            agency_code: agency.into(),
            level: 0,
            type_code: type_code.into(),
            service_item_code: ITEM.into(),
            terms: terms(fields),
        })
        .await
        .map(|r| r.into_inner().entry.unwrap_or_default())
}

pub async fn fetch(lib: &Library, agency: &str, id: &str) -> std::result::Result<exchange::UsedLicence, tonic::Status> {
    lib.exchange_as(Role::Consumer, agency, "李四")
        .fetch_licence(exchange::FetchLicenceRequest { identifier: id.into(), r#use: use_ctx("核验经营资质") })
        .await
        .map(|r| r.into_inner().used.unwrap_or_default())
}

pub async fn usage_log(lib: &Library, r: exchange::ListUsageLogRequest) -> anyhow::Result<Vec<exchange::UsageRecord>> {
    Ok(lib.exchange(Role::Auditor, ADMIN).list_usage_log(r).await?.into_inner().records)
}

pub fn face(l: &common::Licence) -> serde_json::Map<String, serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(&l.document_json).unwrap_or_default();
    doc["faceFields"].as_object().cloned().unwrap_or_default()
}

pub fn other_holder(code: &str) -> issuance::LicenceDraft {
    let mut d = draft(code);
    d.holder = Some(common::Holder {
        name: "另一家食品有限公司".into(),
        id_type_code: "001".into(),
        id_number: OTHER_ISSUER.into(),
    });
    d
}

/// A second type with the same service item, under another name.
pub async fn second_type(lib: &Library) -> anyhow::Result<String> {
    published_type_with(lib, |d| d.name = "食品小作坊登记证".into()).await
}

/// Verifies a compact JWS under the JWKS the library publishes for `issuer`.
pub async fn verify_under_jwks(lib: &Library, issuer: &str, jws: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = lib.http_get(&format!("/keys/{issuer}/jwks.json")).await?;
    anyhow::ensure!(status == 200, "JWKS: {status}");
    let jwks: serde_json::Value = serde_json::from_slice(&body)?;
    let parsed = zhengzhao_crypto::jws::parse(jws)?;
    let kid = parsed.header.kid.clone().unwrap_or_default();
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["kid"] == kid.as_str()))
        .ok_or_else(|| anyhow::anyhow!("no key {kid} in the JWKS"))?;
    let key = zhengzhao_crypto::IssuerPublicKey::from_jwk(jwk)?;
    anyhow::ensure!(key.verify(parsed.signing_input.as_bytes(), &parsed.signature), "signature does not verify");
    Ok(serde_json::from_slice(&parsed.payload)?)
}
