//! Holders (measures art. 16, 17): front ends that vouch for them, holder
//! tokens, the holder's own licences and who used them, presentations with
//! selective disclosure (checked by the SD-JWT reference implementation),
//! the counter page in headless Chromium, and expiry reminders delivered by
//! webhook — each on SQLite and PostgreSQL.

use std::sync::{Arc, Mutex};

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_crypto::Es256KeyPair;
use zhengzhao_crypto::sdjwt::{Disclosure, Presentation};
use zhengzhao_e2e::fixtures::*;
use zhengzhao_e2e::{ADMIN, CONSUMER, Library, OTHER_ISSUER};
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::exchange::v1 as pb;
use zhengzhao_proto::issuance::v1 as issuance;

type Result = anyhow::Result<()>;

/// The example licence's holder (a company: ID type 001).
const HOLDER: &str = "91350100M000100Y43";
/// The agency running the front end (the government service portal).
const PORTAL: &str = "11350000MB01234560";
/// The example type's service item.
const ITEM: &str = "11100000000013338W3000111005000";

struct Setup {
    type_code: String,
    licence: common::Licence,
    scenario: u64,
    front_end: u64,
    key: Es256KeyPair,
}

/// A published type, a licence of HOLDER, an approved scenario showing
/// holder_name, premises and permit_number, and a front end of PORTAL
/// registered for it (with `webhook`).
async fn setup(lib: &Library, webhook: &str) -> anyhow::Result<Setup> {
    let type_code = published_type(lib).await?;
    let licence = issue(lib, draft(&type_code)).await?;
    let scenario = propose(lib, &type_code, &["holder_name", "premises", "permit_number"]).await?;
    lib.holders(Role::Admin, ADMIN)
        .approve_scenario(pb::ApproveScenarioRequest { id: scenario, reason: String::new() })
        .await?;
    let key = Es256KeyPair::generate();
    let fe = lib
        .holders(Role::Admin, ADMIN)
        .register_front_end(pb::RegisterFrontEndRequest {
            name: "闽政通".into(),
            agency_code: PORTAL.into(),
            jwk_json: key.public_key().to_jwk("").to_string(),
            scenario_ids: vec![scenario],
            webhook_url: webhook.into(),
        })
        .await?
        .into_inner()
        .front_end
        .unwrap_or_default();
    Ok(Setup { type_code, licence, scenario, front_end: fe.id, key })
}

async fn propose(lib: &Library, type_code: &str, fields: &[&str]) -> anyhow::Result<u64> {
    Ok(lib
        .holders(Role::Consumer, CONSUMER)
        .propose_scenario(pb::ProposeScenarioRequest {
            name: "食品经营许可窗口核验".into(),
            type_codes: vec![type_code.into()],
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            purpose: "窗口办理变更时核验许可证".into(),
        })
        .await?
        .into_inner()
        .scenario
        .unwrap_or_default()
        .id)
}

async fn login(lib: &Library, id_number: &str) -> std::result::Result<String, tonic::Status> {
    lib.holders(Role::Portal, PORTAL)
        .holder_login(pb::HolderLoginRequest {
            holder_id_type: "001".into(),
            holder_id_number: id_number.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().token)
}

/// A presentation of `id` in `scenario`, bound by `key` at `iat`.
async fn present(
    lib: &Library,
    holder: &str,
    id: &str,
    scenario: u64,
    key: &Es256KeyPair,
    iat: i64,
) -> anyhow::Result<(String, pb::PresentLicenceResponse)> {
    let r = lib
        .holders_with(holder)
        .present_licence(pb::PresentLicenceRequest { identifier: id.into(), scenario_id: scenario })
        .await?
        .into_inner();
    let p = Presentation::parse(&r.sd_jwt)?.bind(key, &r.audience, &r.nonce, iat);
    Ok((p.serialize(), r))
}

async fn verify(lib: &Library, presentation: &str) -> anyhow::Result<pb::VerifyPresentationResponse> {
    Ok(lib
        .holders(Role::Consumer, CONSUMER)
        .verify_presentation(pb::VerifyPresentationRequest { presentation: presentation.into() })
        .await?
        .into_inner())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn holders_log_in_through_a_registered_front_end_and_see_only_their_own_licences() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let s = setup(&lib, "").await?;
        let mut other = draft(&s.type_code);
        other.holder = Some(common::Holder {
            name: "另一家食品有限公司".into(),
            id_type_code: "001".into(),
            id_number: OTHER_ISSUER.into(),
        });
        let others = issue(&lib, other).await?;
        // An agency that runs no registered front end cannot log anyone in;
        // nor can anyone but a front end.
        let e = lib
            .holders(Role::Portal, CONSUMER)
            .holder_login(pb::HolderLoginRequest {
                holder_id_type: "001".into(),
                holder_id_number: HOLDER.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}: {e:?}");
        let e = lib
            .holders(Role::Consumer, PORTAL)
            .holder_login(pb::HolderLoginRequest {
                holder_id_type: "001".into(),
                holder_id_number: HOLDER.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}: {e:?}");
        let e = login(&lib, "not\nan id").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{engine}: {e:?}");
        let token = login(&lib, HOLDER).await?;
        let mine = lib
            .holders_with(&token)
            .list_my_licences(pb::ListMyLicencesRequest::default())
            .await?
            .into_inner()
            .licences;
        assert_eq!(mine.iter().map(|l| l.identifier.as_str()).collect::<Vec<_>>(), vec![s.licence.identifier.as_str()]);
        let detail = lib
            .holders_with(&token)
            .get_my_licence(pb::GetMyLicenceRequest { identifier: s.licence.identifier.clone() })
            .await?
            .into_inner();
        assert_eq!(detail.events.len(), 1, "{engine}: the issue event");
        // Someone else's licence is not found, exactly as a missing one.
        let e = lib
            .holders_with(&token)
            .get_my_licence(pb::GetMyLicenceRequest { identifier: others.identifier.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{engine}");
        // A holder token is no consumer's or administrator's.
        let e = lib.exchange(Role::Consumer, CONSUMER).list_usage_entries(pb::ListUsageEntriesRequest::default()).await;
        assert!(e.is_ok());
        let holder_exchange =
            zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient::with_interceptor(
                lib.channel(),
                zhengzhao_auth::BearerToken::new(&token)?,
            );
        let e = holder_exchange.clone().list_usage_log(pb::ListUsageLogRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        // And a consumer's token is not a holder's.
        let e = lib.holders(Role::Consumer, CONSUMER).list_my_licences(pb::ListMyLicencesRequest::default()).await;
        assert_eq!(e.unwrap_err().code(), Code::PermissionDenied, "{engine}");
        // An agency's use shows in the holder's usage; the holder's own acts
        // are in the usage log, naming the front end.
        lib.exchange(Role::Admin, ADMIN)
            .create_usage_entry(pb::CreateUsageEntryRequest {
                agency_code: CONSUMER.into(),
                level: 0,
                type_code: s.type_code.clone(),
                service_item_code: ITEM.into(),
                terms: Some(pb::UsageTerms { purpose: "核验".into(), all_fields: true, ..Default::default() }),
            })
            .await?;
        lib.exchange(Role::Consumer, CONSUMER)
            .fetch_licence(pb::FetchLicenceRequest {
                identifier: s.licence.identifier.clone(),
                r#use: Some(pb::UseContext {
                    use_cause: "办理食品经营许可变更".into(),
                    service_item_code: ITEM.into(),
                    case_number: "2026-0099".into(),
                }),
            })
            .await?;
        let used =
            lib.holders_with(&token).list_my_usage(pb::ListMyUsageRequest::default()).await?.into_inner().records;
        assert_eq!(used.len(), 1, "{engine}: {used:?}");
        assert_eq!((used[0].consumer_code.as_str(), used[0].use_cause.as_str()), (CONSUMER, "办理食品经营许可变更"));
        let log = lib
            .exchange(Role::Auditor, ADMIN)
            .list_usage_log(pb::ListUsageLogRequest { agency_code: PORTAL.into(), ..Default::default() })
            .await?
            .into_inner()
            .records;
        assert!(log.len() >= 4, "{engine}: login, licences, licence, usage: {log:?}");
        let front_end = format!("front end {}", s.front_end);
        assert!(log.iter().all(|r| r.operator == front_end), "{engine}: {log:?}");
        assert!(log.iter().all(|r| !r.holder_id_masked.contains(HOLDER)), "{engine}: masked");
        // A suspended front end's holders are refused.
        lib.holders(Role::Admin, ADMIN)
            .update_front_end(pb::UpdateFrontEndRequest {
                id: s.front_end,
                state: pb::FrontEndState::Suspended as i32,
                ..Default::default()
            })
            .await?;
        let e = lib.holders_with(&token).list_my_licences(pb::ListMyLicencesRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        assert_eq!(login(&lib, HOLDER).await.unwrap_err().code(), Code::PermissionDenied, "{engine}");
    }
    Ok(())
}

#[tokio::test]
async fn a_front_end_registers_a_public_p256_key_only() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let key = Es256KeyPair::generate();
        let mut private = key.public_key().to_jwk("");
        private["d"] = serde_json::json!("AAAA");
        for (jwk, webhook) in [
            (private.to_string(), ""),
            ("{}".to_owned(), ""),
            ("not json".to_owned(), ""),
            (key.public_key().to_jwk("").to_string(), "ftp://example.gov.cn/x"),
        ] {
            let e = lib
                .holders(Role::Admin, ADMIN)
                .register_front_end(pb::RegisterFrontEndRequest {
                    name: "闽政通".into(),
                    agency_code: PORTAL.into(),
                    jwk_json: jwk,
                    scenario_ids: vec![],
                    webhook_url: webhook.into(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{engine}: {e:?}");
        }
        let e = lib
            .holders(Role::Consumer, CONSUMER)
            .register_front_end(pb::RegisterFrontEndRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        assert!(
            lib.holders(Role::Admin, ADMIN)
                .list_front_ends(pb::ListFrontEndsRequest {})
                .await?
                .into_inner()
                .front_ends
                .is_empty()
        );
    }
    Ok(())
}

#[tokio::test]
async fn presentations_disclose_exactly_the_scenario_fields_once_and_briefly() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let s = setup(&lib, "").await?;
        let token = login(&lib, HOLDER).await?;
        let id = s.licence.identifier.clone();
        // Only an approved scenario the front end serves.
        let proposed = propose(&lib, &s.type_code, &["holder_name"]).await?;
        let e = lib
            .holders_with(&token)
            .present_licence(pb::PresentLicenceRequest { identifier: id.clone(), scenario_id: proposed })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}: not the front end's: {e:?}");
        lib.holders(Role::Admin, ADMIN)
            .update_front_end(pb::UpdateFrontEndRequest {
                id: s.front_end,
                set_scenarios: true,
                scenario_ids: vec![s.scenario, proposed],
                ..Default::default()
            })
            .await?;
        let e = lib
            .holders_with(&token)
            .present_licence(pb::PresentLicenceRequest { identifier: id.clone(), scenario_id: proposed })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}: not approved: {e:?}");
        // A valid presentation, exactly the scenario's claims.
        let (text, prepared) = present(&lib, &token, &id, s.scenario, &s.key, now()).await?;
        let mut disclosed = prepared.disclosed.clone();
        disclosed.sort();
        assert_eq!(disclosed, vec!["holder_name", "permit_number", "premises"], "{engine}");
        let v = verify(&lib, &text).await?;
        assert!(v.valid, "{engine}: {v:?}");
        assert_eq!(v.disclosed.get("holder_name").map(String::as_str), Some("示例食品有限公司"));
        assert!(!v.disclosed.contains_key("holder_id_number"));
        // Interop: the SD-JWT reference implementation verifies it, key binding included.
        interop_verifies(&lib, &text, &prepared).await?;
        // Used once.
        let again = verify(&lib, &text).await?;
        assert_eq!((again.valid, again.failed_check.as_str()), (false, "replayed"), "{engine}: {again:?}");
        // A disclosure the scenario does not allow (taken from the full
        // SD-JWT the signing service makes) is refused.
        let (_, fresh) = present(&lib, &token, &id, s.scenario, &s.key, now()).await?;
        let full = full_sd_jwt(&lib, &s).await?;
        let mut p = Presentation::parse(&fresh.sd_jwt)?;
        let extra: Disclosure = full.disclosures.iter().find(|d| d.name == "holder_id_number").cloned().unwrap();
        p.disclosures.push(extra);
        // The extra disclosure must belong to the same issuer JWT to count: use the full one.
        let mut forged =
            full.clone().disclosing(|n| ["holder_name", "premises", "permit_number", "holder_id_number"].contains(&n));
        forged = forged.bind(&s.key, &fresh.audience, &fresh.nonce, now());
        let v = verify(&lib, &forged.serialize()).await?;
        assert_eq!((v.valid, v.failed_check.as_str()), (false, "disclosure"), "{engine}: {v:?}");
        // A disclosure added to a bound presentation breaks its key binding.
        let added = p.bind(&s.key, &fresh.audience, &fresh.nonce, now());
        let mut tampered = Presentation::parse(&added.serialize())?;
        tampered.disclosures.pop();
        let v = verify(&lib, &tampered.serialize()).await?;
        assert!(!v.valid, "{engine}: {v:?}");
        // Expired: bound more than 5 minutes ago.
        let (old, _) = present(&lib, &token, &id, s.scenario, &s.key, now() - 400).await?;
        let v = verify(&lib, &old).await?;
        assert_eq!((v.valid, v.failed_check.as_str()), (false, "expired"), "{engine}: {v:?}");
        // Bound by another key than the front end's.
        let (stranger, _) = present(&lib, &token, &id, s.scenario, &Es256KeyPair::generate(), now()).await?;
        let v = verify(&lib, &stranger).await?;
        assert_eq!((v.valid, v.failed_check.as_str()), (false, "binding"), "{engine}: {v:?}");
        // Offline, a fresh one checks out but says what it did not check.
        let (text, _) = present(&lib, &token, &id, s.scenario, &s.key, now()).await?;
        let keys = lib
            .signing(Role::Consumer, CONSUMER)
            .list_public_keys(zhengzhao_proto::signing::v1::ListPublicKeysRequest::default())
            .await?
            .into_inner()
            .keys;
        let keys = keys
            .into_iter()
            .map(zhengzhao_crypto::published::PublicKeyRecord::try_from)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let offline = zhengzhao_exchange::presentations::check_offline(&text, &keys, time::OffsetDateTime::now_utc());
        assert!(offline.valid && offline.offline, "{engine}: {offline:?}");
        // Revoked after it was made: online says so.
        record(&lib, event(&id, issuance::EventKind::Revoke, "以欺骗手段取得")).await?;
        let v = verify(&lib, &text).await?;
        assert_eq!((v.valid, v.failed_check.as_str()), (false, "status"), "{engine}: {v:?}");
        // And a revoked licence is not presented at all.
        let e = lib
            .holders_with(&token)
            .present_licence(pb::PresentLicenceRequest { identifier: id.clone(), scenario_id: s.scenario })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}");
        // Garbage is an answer, never a crash.
        for junk in ["", "~", "a.b.c~", &"x~".repeat(100)] {
            let v = verify(&lib, junk).await?;
            assert!(!v.valid && v.failed_check == "format", "{engine}: {junk:?}: {v:?}");
        }
    }
    Ok(())
}

/// Every disclosure of the licence, from the signing service as the exchange gets it.
async fn full_sd_jwt(lib: &Library, s: &Setup) -> anyhow::Result<Presentation> {
    let token = lib.service_token(zhengzhao_auth::ServiceName::Exchange)?;
    let mut signing = zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient::with_interceptor(
        lib.channel(),
        zhengzhao_auth::BearerToken::new(&token)?,
    );
    let scenario = serde_json::json!({"id": s.scenario, "name": "x", "agency": CONSUMER, "fields": ["holder_name", "premises", "permit_number"]});
    let r = signing
        .make_selective_disclosure(zhengzhao_proto::signing::v1::MakeSelectiveDisclosureRequest {
            licence_jws: s.licence.jws.clone(),
            holder_jwk_json: s.key.public_key().to_jwk("").to_string(),
            scenario_json: scenario.to_string(),
            lifetime_seconds: 300,
        })
        .await?
        .into_inner();
    // Nobody else gets one; and a made-up licence is not signed.
    let e = lib
        .signing(Role::Admin, ADMIN)
        .make_selective_disclosure(zhengzhao_proto::signing::v1::MakeSelectiveDisclosureRequest::default())
        .await
        .expect_err("an administrator gets no SD-JWT");
    assert_eq!(e.code(), Code::PermissionDenied);
    let forged = s.licence.jws.replacen('.', ".e", 1);
    let e = signing
        .make_selective_disclosure(zhengzhao_proto::signing::v1::MakeSelectiveDisclosureRequest {
            licence_jws: forged,
            holder_jwk_json: s.key.public_key().to_jwk("").to_string(),
            scenario_json: scenario.to_string(),
            lifetime_seconds: 300,
        })
        .await
        .expect_err("a forged licence is not signed");
    assert_eq!(e.code(), Code::InvalidArgument);
    Ok(Presentation::parse(&r.sd_jwt)?)
}

async fn interop_verifies(lib: &Library, text: &str, p: &pb::PresentLicenceResponse) -> Result {
    let dir = tempfile::tempdir()?;
    let (status, jwks) = lib.http_get("/.well-known/jwks.json").await?;
    anyhow::ensure!(status == 200, "jwks: {status}");
    std::fs::write(dir.path().join("jwks.json"), jwks)?;
    std::fs::write(dir.path().join("p.txt"), text)?;
    let python = std::env::var("JOSE_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/sdjwt_verify.py");
    let run = |nonce: &str| {
        std::process::Command::new(&python)
            .arg(&script)
            .arg(dir.path().join("p.txt"))
            .arg(dir.path().join("jwks.json"))
            .arg(&p.audience)
            .arg(nonce)
            .output()
    };
    let ok = run(&p.nonce)?;
    assert!(ok.status.success(), "sd-jwt refused our presentation: {}", String::from_utf8_lossy(&ok.stderr));
    let claims: serde_json::Value = serde_json::from_slice(&ok.stdout)?;
    assert_eq!(claims["holder_name"], "示例食品有限公司");
    assert!(claims.get("holder_id_number").is_none());
    let wrong = run("another-nonce")?;
    assert_eq!(wrong.status.code(), Some(1), "sd-jwt accepted the wrong nonce");
    Ok(())
}

#[tokio::test]
async fn the_counter_page_shows_a_valid_presentation_then_why_a_replay_is_not() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let s = setup(&lib, "").await?;
        let token = login(&lib, HOLDER).await?;
        let (text, _) = present(&lib, &token, &s.licence.identifier, s.scenario, &s.key, now()).await?;
        let staff = lib.token(Role::Consumer, CONSUMER);
        let first = chromium_page(&lib, &staff, &text).await?;
        assert!(first.contains(r#"class="valid">有效<"#), "{engine}: {first}");
        assert!(first.contains("示例食品有限公司") && first.contains("食品经营许可窗口核验"), "{engine}");
        let second = chromium_page(&lib, &staff, &text).await?;
        assert!(second.contains(r#"class="invalid">无效<"#), "{engine}: {second}");
        assert!(second.contains("亮证码已被使用"), "{engine}: {second}");
    }
    Ok(())
}

/// The counter page as headless Chromium renders it after verifying.
async fn chromium_page(lib: &Library, staff: &str, presentation: &str) -> anyhow::Result<String> {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    let url = format!("http://{}/counter#token={}&p={}", lib.addr, enc(staff), enc(presentation));
    let profile = tempfile::tempdir()?;
    let out = tokio::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("chromium (Debian package chromium; scripts/test installs it): {e}"))?;
    anyhow::ensure!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// A webhook receiver on 127.0.0.1: every reminder body it was POSTed,
/// with its id and signature headers.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, String, String)>>>);

async fn receiver() -> anyhow::Result<(String, Received)> {
    let got = Received::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let g = g.clone();
            async move {
                let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                g.0.lock().expect("receiver lock").push((h("zhengzhao-reminder-id"), h("zhengzhao-signature"), body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, got))
}

#[tokio::test]
async fn expiry_reminders_reach_the_holders_front_end_signed_and_are_listed() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let (url, got) = receiver().await?;
        let s = setup(&lib, &url).await?;
        let token = login(&lib, HOLDER).await?;
        // A licence ending in 5 days: its 7-day reminder is due now (the
        // 30- and 90-day ones passed before it existed and are not sent).
        let mut d = draft(&s.type_code);
        d.valid_until = zhengzhao_core::date::format_date(lib.clock.today() + time::Duration::days(5));
        let soon = issue(&lib, d).await?;
        let mut delivered = Vec::new();
        for _ in 0..100 {
            delivered = got.0.lock().unwrap().clone();
            if !delivered.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert_eq!(delivered.len(), 1, "{engine}: {delivered:?}");
        let (id, signature, body) = &delivered[0];
        let body_json: serde_json::Value = serde_json::from_str(body)?;
        assert_eq!(body_json["identifier"], soon.identifier.as_str());
        assert_eq!(body_json["daysBefore"], 7);
        assert_eq!(body_json["id"], id.as_str());
        // Signed by the library's key over exactly the body.
        let parsed = zhengzhao_crypto::jws::parse(signature)?;
        assert_eq!(parsed.payload, body.as_bytes());
        let keys = lib
            .signing(Role::Consumer, CONSUMER)
            .list_public_keys(zhengzhao_proto::signing::v1::ListPublicKeysRequest::default())
            .await?
            .into_inner()
            .keys;
        let key =
            keys.iter().find(|k| Some(&k.key_id) == parsed.header.kid.as_ref()).expect("the signing key is published");
        let public = zhengzhao_crypto::IssuerPublicKey::from_jwk(&serde_json::from_str(&key.jwk_json)?)?;
        assert!(public.verify(parsed.signing_input.as_bytes(), &parsed.signature), "{engine}");
        // The holder lists it as sent, and the far-off ones of the other licence as scheduled.
        let mut listed = Vec::new();
        for _ in 0..50 {
            listed =
                lib.holders_with(&token).list_my_reminders(pb::ListMyRemindersRequest {}).await?.into_inner().reminders;
            if listed.iter().any(|r| r.state == pb::ReminderState::Sent as i32) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let sent: Vec<_> = listed.iter().filter(|r| r.state == pb::ReminderState::Sent as i32).collect();
        assert_eq!(sent.len(), 1, "{engine}: {listed:?}");
        assert_eq!(&sent[0].id, id);
        assert!(
            listed
                .iter()
                .filter(|r| r.identifier == s.licence.identifier)
                .all(|r| r.state == pb::ReminderState::Scheduled as i32)
        );
        // Cancelling the licence cancels what is still scheduled.
        record(&lib, event(&s.licence.identifier, issuance::EventKind::Cancel, "企业申请注销")).await?;
        let mut cancelled = false;
        for _ in 0..50 {
            let l =
                lib.holders_with(&token).list_my_reminders(pb::ListMyRemindersRequest {}).await?.into_inner().reminders;
            if l.iter()
                .filter(|r| r.identifier == s.licence.identifier)
                .all(|r| r.state == pb::ReminderState::Cancelled as i32)
            {
                cancelled = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(cancelled, "{engine}");
        assert_eq!(got.0.lock().unwrap().len(), 1, "{engine}: nothing else sent");
    }
    Ok(())
}

/// A webhook receiver whose first `hang` requests are held `hold` before
/// their 200 (so a delivery is in flight when the server is killed); it
/// records every request's reminder id (header and body) on arrival.
async fn slow_receiver(hang: usize, hold: std::time::Duration) -> anyhow::Result<(String, Received)> {
    let got = Received::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let g = g.clone();
            async move {
                let id =
                    headers.get("zhengzhao-reminder-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let n = {
                    let mut v = g.0.lock().expect("receiver lock");
                    v.push((id, String::new(), body));
                    v.len()
                };
                if n <= hang {
                    tokio::time::sleep(hold).await;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((url, got))
}

async fn start_server(
    data: &std::path::Path,
    db: &zhengzhao_testkit::TestDb,
) -> anyhow::Result<zhengzhao_testkit::ServerProcess> {
    let mut args: Vec<String> =
        vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), data.display().to_string()];
    if let Some(url) = db.url() {
        args.push("--database-url".into());
        args.push(url.to_owned());
    }
    zhengzhao_testkit::ServerProcess::start(
        "zhengzhao",
        &args,
        &[("ZHENGZHAO_EXCHANGE__REMINDER_INTERVAL_SECONDS", "1")],
    )
    .await
}

#[tokio::test]
async fn reminders_survive_kill_9_during_delivery_and_arrive_at_least_once_by_id() -> Result {
    use zhengzhao_proto::catalog::v1 as catalog;
    use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
    use zhengzhao_proto::exchange::v1::holder_service_client::HolderServiceClient;
    use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
    for db in zhengzhao_testkit::TestDb::both().await? {
        let engine = db.engine();
        let data = tempfile::tempdir()?;
        let dir = data.path().join("lib");
        let (url, got) = slow_receiver(2, std::time::Duration::from_secs(4)).await?;
        let server = start_server(&dir, &db).await?;
        let tokens = zhengzhao_server::keys::operator_authority(&dir)?;
        let ttl = std::time::Duration::from_secs(600);
        let channel = tonic::transport::Endpoint::from_shared(server.url())?.connect().await?;
        let bearer =
            |role, agency: &str| zhengzhao_auth::BearerToken::new(&tokens.mint(agency, role, ttl).unwrap()).unwrap();
        // A type, a front end with the webhook, a holder logged in through it.
        let definition = example_definition();
        let mut cat = CatalogServiceClient::with_interceptor(channel.clone(), bearer(Role::Admin, ADMIN));
        let code = cat
            .create_licence_type(catalog::CreateLicenceTypeRequest {
                definition: Some(zhengzhao_proto::convert::definition_to_wire(&definition)),
            })
            .await?
            .into_inner()
            .licence_type
            .and_then(|t| t.definition)
            .map(|d| d.code)
            .unwrap_or_default();
        cat.publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() }).await?;
        let key = Es256KeyPair::generate();
        HolderServiceClient::with_interceptor(channel.clone(), bearer(Role::Admin, ADMIN))
            .register_front_end(pb::RegisterFrontEndRequest {
                name: "闽政通".into(),
                agency_code: PORTAL.into(),
                jwk_json: key.public_key().to_jwk("").to_string(),
                scenario_ids: vec![],
                webhook_url: url.clone(),
            })
            .await?;
        HolderServiceClient::with_interceptor(channel.clone(), bearer(Role::Portal, PORTAL))
            .holder_login(pb::HolderLoginRequest {
                holder_id_type: "001".into(),
                holder_id_number: HOLDER.into(),
                ..Default::default()
            })
            .await?;
        // Five licences ending in 5 days: five reminders due at once.
        let until =
            time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8)).date() + time::Duration::days(5);
        let mut expected = std::collections::BTreeSet::new();
        let mut iss =
            IssuanceServiceClient::with_interceptor(channel.clone(), bearer(Role::Issuer, zhengzhao_e2e::ISSUER));
        for _ in 0..5 {
            let mut d = draft(&code);
            d.valid_until = zhengzhao_core::date::format_date(until);
            let l = iss
                .issue_licence(issuance::IssueLicenceRequest { draft: Some(d), idempotency_key: String::new() })
                .await?
                .into_inner()
                .licence
                .unwrap_or_default();
            expected.insert(zhengzhao_exchange::reminders::reminder_id(&l.identifier, until, 7));
        }
        // Kill -9 while the first delivery is held by the receiver.
        for _ in 0..150 {
            if !got.0.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(!got.0.lock().unwrap().is_empty(), "{engine}: no delivery started");
        server.stop().await;
        drop(channel);
        // Restarted over the same data, it delivers everything.
        let server = start_server(&dir, &db).await?;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            seen = got.0.lock().unwrap().iter().map(|(id, _, _)| id.clone()).collect();
            if seen == expected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(seen, expected, "{engine}: every reminder arrives");
        // Duplicates only with the same id: each body names its header's id.
        for (id, _, body) in got.0.lock().unwrap().iter() {
            let b: serde_json::Value = serde_json::from_str(body)?;
            assert_eq!(b["id"], id.as_str(), "{engine}");
        }
        server.stop().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_delivery_that_keeps_failing_is_retried_then_dead_lettered() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        // A receiver that always answers 500.
        let hits = Arc::new(Mutex::new(Vec::<String>::new()));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let h = h.clone();
                async move {
                    let id = headers.get("zhengzhao-reminder-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    h.lock().expect("receiver lock").push(id.to_owned());
                    (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let s = setup(&lib, &url).await?;
        let token = login(&lib, HOLDER).await?;
        let mut d = draft(&s.type_code);
        d.valid_until = zhengzhao_core::date::format_date(lib.clock.today() + time::Duration::days(3));
        let soon = issue(&lib, d).await?;
        let mut dead = false;
        for _ in 0..200 {
            let listed =
                lib.holders_with(&token).list_my_reminders(pb::ListMyRemindersRequest {}).await?.into_inner().reminders;
            if listed.iter().any(|r| r.identifier == soon.identifier && r.state == pb::ReminderState::Dead as i32) {
                dead = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(dead, "{engine}: dead-lettered after its attempts");
        let hits = hits.lock().expect("receiver lock").clone();
        assert_eq!(hits.len(), 2, "{engine}: two attempts, 5 s apart: {hits:?}");
        assert_eq!(hits[0], hits[1], "{engine}: the same id each time");
    }
    Ok(())
}
