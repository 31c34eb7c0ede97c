//! Issuer keys over their whole life, on SQLite and PostgreSQL: the first
//! signature creates an ES256 key; an administrator rotates to SM2, retires,
//! creates and marks keys compromised as of a time; licences keep verifying
//! under retired keys, those signed after a compromise time verify as "key
//! compromised"; the history is published over gRPC and as a JWKS over HTTP.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, issue, libraries, published_type};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library};
use zhengzhao_proto::convert::timestamp;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::VerificationOutcome as O;

type Result = anyhow::Result<()>;

async fn verify(lib: &Library, id: &str) -> anyhow::Result<(O, String)> {
    let v = lib
        .verification(Role::Consumer, CONSUMER)
        .verify_licence(verification::VerifyLicenceRequest { identifier: id.to_owned(), include_inclusion_proof: true })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default();
    Ok((O::try_from(v.outcome).unwrap_or_default(), v.detail))
}

fn alg_of(jws: &str) -> String {
    zhengzhao_crypto::jws::parse(jws).map(|p| p.header.alg).unwrap_or_default()
}

async fn keys(lib: &Library) -> anyhow::Result<Vec<signing::PublicKey>> {
    Ok(lib
        .signing(Role::Consumer, CONSUMER)
        .list_public_keys(signing::ListPublicKeysRequest { issuer_code: ISSUER.into() })
        .await?
        .into_inner()
        .keys)
}

/// GET over HTTP/1.1 on the gRPC port; returns (status line, body).
async fn http_get(lib: &Library, path: &str) -> anyhow::Result<(String, String)> {
    let mut s = tokio::net::TcpStream::connect(lib.addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: zhengzhao\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    Ok((head.lines().next().unwrap_or_default().to_owned(), body.to_owned()))
}

#[tokio::test]
async fn keys_rotate_retire_and_compromise_with_published_history() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let mut admin = lib.signing(Role::Admin, ADMIN);
        // First signature: an ES256 key of the default algorithm.
        let l1 = issue(&lib, draft(&code)).await?;
        assert_eq!(alg_of(&l1.jws), "ES256", "{engine}");
        // Only the administrator manages keys; issuers cannot, even their own.
        let refused = lib
            .signing(Role::Issuer, ISSUER)
            .rotate_key(signing::RotateKeyRequest { issuer_code: ISSUER.into(), algorithm: 0, reason: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        // Nor does the administrator ask for signatures.
        let refused = admin
            .sign_document(signing::SignDocumentRequest { issuer_code: ISSUER.into(), payload: b"{}".to_vec() })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        // Creating while a key is active is refused: rotate instead.
        let e = admin
            .create_key(signing::CreateKeyRequest {
                issuer_code: ISSUER.into(),
                algorithm: signing::SignatureAlgorithm::Sm2Sm3 as i32,
                reason: "second".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{engine}");

        // Rotate to SM2: the old key is retired and still verifies its licences.
        let r = admin
            .rotate_key(signing::RotateKeyRequest {
                issuer_code: ISSUER.into(),
                algorithm: signing::SignatureAlgorithm::Sm2Sm3 as i32,
                reason: "move to SM2".into(),
            })
            .await?
            .into_inner();
        let (old, sm2) = (r.retired.unwrap_or_default(), r.active.unwrap_or_default());
        assert_eq!(old.key_id, l1.key_id);
        assert_eq!(old.status, signing::KeyStatus::Retired as i32);
        assert!(old.retired_at.is_some());
        assert_eq!(sm2.algorithm, signing::SignatureAlgorithm::Sm2Sm3 as i32);
        let jwk: serde_json::Value = serde_json::from_str(&sm2.jwk_json)?;
        assert_eq!(
            (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["alg"].as_str()),
            (Some("EC"), Some("SM2"), Some("SM2SM3"))
        );
        let l2 = issue(&lib, draft(&code)).await?;
        assert_eq!((alg_of(&l2.jws).as_str(), l2.key_id.as_str()), ("SM2SM3", sm2.key_id.as_str()));
        assert_eq!(verify(&lib, &l1.identifier).await?.0, O::Valid, "{engine}: retired key still verifies");
        assert_eq!(verify(&lib, &l2.identifier).await?.0, O::Valid, "{engine}: SM2 verifies");

        // Compromised as of a whole second after l2 was signed, before l3.
        let mid = OffsetDateTime::now_utc().replace_nanosecond(0)? + Duration::from_secs(1);
        while OffsetDateTime::now_utc() <= mid {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let l3 = issue(&lib, draft(&code)).await?;
        assert_eq!(l3.key_id, sm2.key_id);
        let future = admin
            .compromise_key(signing::CompromiseKeyRequest {
                key_id: sm2.key_id.clone(),
                since: Some(timestamp(OffsetDateTime::now_utc() + Duration::from_secs(3600))),
                reason: "leak".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(future.code(), Code::InvalidArgument);
        let c = admin
            .compromise_key(signing::CompromiseKeyRequest {
                key_id: sm2.key_id.clone(),
                since: Some(timestamp(mid)),
                reason: "private key found on a shared drive".into(),
            })
            .await?
            .into_inner();
        assert_eq!(c.key.as_ref().map(|k| k.status), Some(signing::KeyStatus::Compromised as i32));
        let replacement = c.replacement.unwrap_or_default();
        assert_eq!(replacement.algorithm, signing::SignatureAlgorithm::Sm2Sm3 as i32, "same algorithm");
        assert_eq!(verify(&lib, &l2.identifier).await?.0, O::Valid, "{engine}: signed before the compromise");
        let (o, detail) = verify(&lib, &l3.identifier).await?;
        assert_eq!(o, O::KeyCompromised, "{engine}: {detail}");
        // The time may move earlier, never later.
        let later = admin
            .compromise_key(signing::CompromiseKeyRequest {
                key_id: sm2.key_id.clone(),
                since: Some(timestamp(mid + Duration::from_micros(1))),
                reason: "re-trust".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(later.code(), Code::FailedPrecondition);
        let l4 = issue(&lib, draft(&code)).await?;
        assert_eq!(l4.key_id, replacement.key_id);
        assert_eq!(verify(&lib, &l4.identifier).await?.0, O::Valid);

        // Retire without a successor: the issuer cannot sign until a key is created.
        admin
            .retire_key(signing::RetireKeyRequest { issuer_code: ISSUER.into(), reason: "agency merged".into() })
            .await?;
        let e = issue(&lib, draft(&code)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}: {e:?}");
        let created = admin
            .create_key(signing::CreateKeyRequest {
                issuer_code: ISSUER.into(),
                algorithm: signing::SignatureAlgorithm::Es256 as i32,
                reason: "new key".into(),
            })
            .await?
            .into_inner()
            .key
            .unwrap_or_default();
        let l5 = issue(&lib, draft(&code)).await?;
        assert_eq!((l5.key_id.as_str(), alg_of(&l5.jws).as_str()), (created.key_id.as_str(), "ES256"));

        // The whole history, over gRPC and as a JWKS over HTTP.
        let history = keys(&lib).await?;
        let states: Vec<(String, i32)> = history.iter().map(|k| (k.key_id.clone(), k.status)).collect();
        assert_eq!(
            states,
            vec![
                (l1.key_id.clone(), signing::KeyStatus::Retired as i32),
                (sm2.key_id.clone(), signing::KeyStatus::Compromised as i32),
                (replacement.key_id.clone(), signing::KeyStatus::Retired as i32),
                (created.key_id.clone(), signing::KeyStatus::Active as i32),
            ],
            "{engine}"
        );
        assert!(history.iter().all(|k| !k.jwk_json.contains("\"d\"")), "no private part");
        let (status, body) = http_get(&lib, "/.well-known/jwks.json").await?;
        assert!(status.contains("200"), "{status}");
        let jwks: serde_json::Value = serde_json::from_str(&body)?;
        let published = jwks["keys"].as_array().cloned().unwrap_or_default();
        assert_eq!(published.len(), 4);
        let compromised = published.iter().find(|k| k["kid"] == sm2.key_id.as_str()).cloned().unwrap_or_default();
        assert_eq!(compromised["status"], "compromised");
        assert!(compromised["compromised_since"].as_str().is_some_and(|t| t.starts_with(&mid.year().to_string())));
        assert!(published.iter().all(|k| k.get("d").is_none()));
        let (status, body) = http_get(&lib, &format!("/keys/{ISSUER}/jwks.json")).await?;
        assert!(status.contains("200"));
        assert!(body.contains(&created.key_id));
        let (status, _) = http_get(&lib, "/keys/not-a-code/jwks.json").await?;
        assert!(status.contains("400"), "{status}");
    }
    Ok(())
}
