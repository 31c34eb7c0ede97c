//! Bearer tokens end to end (item 11 of issue 9): an administrator revokes a
//! token by its ID and every service refuses it at once, on both engines and
//! after a restart; a split deployment's other processes refresh their
//! denylist from the catalogue; the CLI mints with a role's lifetime cap,
//! shows the token ID, and revokes.

use std::time::Duration;

use tonic::Code;
use zhengzhao_auth::{BearerToken, MintedToken, Role};
use zhengzhao_e2e::{ADMIN, Authed, CONSUMER, ISSUER, Library};
use zhengzhao_proto::auth::v1 as auth;
use zhengzhao_proto::auth::v1::token_service_client::TokenServiceClient;
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::convert::timestamp;
use zhengzhao_testkit::{ServerProcess, TestDb, binary};

fn tokens(channel: tonic::transport::Channel, token: &str) -> anyhow::Result<TokenServiceClient<Authed>> {
    Ok(TokenServiceClient::with_interceptor(channel, BearerToken::new(token)?))
}

fn catalog_with(lib: &Library, token: &str) -> anyhow::Result<CatalogServiceClient<Authed>> {
    Ok(CatalogServiceClient::with_interceptor(lib.channel(), BearerToken::new(token)?))
}

async fn list_types(c: &mut CatalogServiceClient<Authed>) -> Result<(), tonic::Status> {
    c.list_licence_types(catalog::ListLicenceTypesRequest::default()).await.map(|_| ())
}

fn revoke_request(m: &MintedToken, reason: &str) -> auth::RevokeTokenRequest {
    auth::RevokeTokenRequest {
        token_id: m.token_id.clone(),
        expires_at: Some(timestamp(m.expires_at)),
        reason: reason.into(),
    }
}

#[tokio::test]
async fn a_revoked_token_is_refused_everywhere_on_both_engines() -> anyhow::Result<()> {
    for db in TestDb::both().await? {
        let engine = db.engine();
        let lib = Library::start(db).await?;
        let hour = Duration::from_secs(3600);
        let victim = lib.tokens.issue(CONSUMER, Role::Consumer, hour)?;
        let bystander = lib.tokens.issue(CONSUMER, Role::Consumer, hour)?;
        let admin = lib.token(Role::Admin, ADMIN);
        list_types(&mut catalog_with(&lib, &victim.token)?).await?;

        // Only an administrator revokes; nobody else reads the list but auditors and services.
        for (role, agency) in [(Role::Issuer, ISSUER), (Role::Consumer, CONSUMER), (Role::Auditor, ADMIN)] {
            let e = tokens(lib.channel(), &lib.token(role, agency))?
                .revoke_token(revoke_request(&victim, "lost laptop"))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::PermissionDenied, "{engine} {role}: {}", e.message());
        }
        let e = tokens(lib.channel(), &victim.token)?
            .list_revoked_tokens(auth::ListRevokedTokensRequest {})
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        // Bad requests change nothing.
        let mut admin_tokens = tokens(lib.channel(), &admin)?;
        for (bad, field) in [
            (auth::RevokeTokenRequest { reason: String::new(), ..revoke_request(&victim, "") }, "reason"),
            (auth::RevokeTokenRequest { token_id: "a\nb".into(), ..revoke_request(&victim, "x") }, "token_id"),
            (auth::RevokeTokenRequest { token_id: String::new(), ..revoke_request(&victim, "x") }, "token_id"),
            (
                auth::RevokeTokenRequest {
                    expires_at: Some(prost_types::Timestamp { seconds: 1_000_000_000, nanos: 0 }),
                    ..revoke_request(&victim, "x")
                },
                "expires_at",
            ),
            (
                auth::RevokeTokenRequest {
                    expires_at: Some(timestamp(victim.expires_at + time::Duration::days(400))),
                    ..revoke_request(&victim, "x")
                },
                "expires_at",
            ),
        ] {
            let e = admin_tokens.revoke_token(bad).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{engine} {field}: {}", e.message());
            assert!(e.message().contains(field), "{engine}: {}", e.message());
        }
        list_types(&mut catalog_with(&lib, &victim.token)?).await?;

        let revoked = admin_tokens
            .revoke_token(revoke_request(&victim, "laptop lost on the metro"))
            .await?
            .into_inner()
            .revoked_token
            .expect("the revoked token");
        assert_eq!(revoked.token_id, victim.token_id);
        assert_eq!(revoked.actor, format!("admin@{ADMIN}"));
        assert_eq!(revoked.expires_at.map(|t| t.seconds), Some(victim.expires_at.unix_timestamp()));

        // Refused at once by every service of the library, not only the catalogue.
        let e = list_types(&mut catalog_with(&lib, &victim.token)?).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "token has been revoked"), "{engine}");
        let mut signing = zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient::with_interceptor(
            lib.channel(),
            BearerToken::new(&victim.token)?,
        );
        let e = signing
            .list_public_keys(zhengzhao_proto::signing::v1::ListPublicKeysRequest { issuer_code: ISSUER.into() })
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "token has been revoked"), "{engine}");
        list_types(&mut catalog_with(&lib, &bystander.token)?).await?;

        // Revoking with only the ID keeps the entry for the longest lifetime any token may have.
        let id_only = lib.tokens.issue(ADMIN, Role::Sync, Duration::from_secs(20 * 86400))?;
        let kept = admin_tokens
            .revoke_token(auth::RevokeTokenRequest {
                token_id: id_only.token_id.clone(),
                expires_at: None,
                reason: "sync peer decommissioned".into(),
            })
            .await?
            .into_inner()
            .revoked_token
            .and_then(|t| t.expires_at)
            .map_or(0, |t| t.seconds);
        let longest = time::OffsetDateTime::now_utc().unix_timestamp() + 31 * 86400;
        assert!((longest - 60..=longest).contains(&kept), "{engine}: kept until {kept}, expected about {longest}");

        let auditor = lib.token(Role::Auditor, ADMIN);
        let listed = tokens(lib.channel(), &auditor)?
            .list_revoked_tokens(auth::ListRevokedTokensRequest {})
            .await?
            .into_inner()
            .revoked_tokens;
        let ids: Vec<&str> = listed.iter().map(|t| t.token_id.as_str()).collect();
        assert_eq!(ids, [victim.token_id.as_str(), id_only.token_id.as_str()], "{engine}: soonest expiry first");
        assert_eq!(listed[0].reason, "laptop lost on the metro");

        // The list is durable: a restarted library still refuses the token.
        let lib = lib.restart().await?;
        let e = list_types(&mut catalog_with(&lib, &victim.token)?).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "token has been revoked"), "{engine} restarted");
        list_types(&mut catalog_with(&lib, &bystander.token)?).await?;
    }
    Ok(())
}

/// Runs the CLI without blocking the runtime the in-process library serves on.
async fn zhengzhao(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let path = binary("zhengzhao");
    anyhow::ensure!(path.exists(), "{} is not built: run `cargo build --workspace --bins` first", path.display());
    Ok(tokio::process::Command::new(path)
        .args(args)
        .env_remove("ZHENGZHAO_TOKEN")
        .env_remove("ZHENGZHAO_SERVER")
        .output()
        .await?)
}

/// The operator's side: `zhengzhao token` caps lifetimes by role and shows
/// the token's ID; `zhengzhao token revoke` revokes it.
#[tokio::test]
async fn the_cli_mints_within_the_caps_shows_the_id_and_revokes() -> anyhow::Result<()> {
    let lib = Library::start(TestDb::sqlite()?).await?;
    let data = lib.data.path().display().to_string();
    let mint = |role: &'static str, agency: &'static str, ttl: &'static str, json: bool| {
        let data = data.clone();
        async move {
            let mut args = vec!["token", "--data-dir", &data, "--role", role, "--agency", agency, "--ttl", ttl];
            if json {
                args.push("--json");
            }
            zhengzhao(&args).await
        }
    };
    // Beyond the role's cap: refused, naming the cap.
    for (role, ttl, cap) in [("consumer", "13h", "12h"), ("admin", "2d", "12h"), ("sync", "32d", "31d")] {
        let out = mint(role, CONSUMER, ttl, false).await?;
        assert!(!out.status.success(), "{role} --ttl {ttl} was minted");
        let stderr = String::from_utf8(out.stderr)?;
        assert!(stderr.contains(&format!("a {role} token may live at most {cap}")), "{stderr}");
    }
    assert!(mint("sync", ADMIN, "31d", false).await?.status.success());
    // Plain: the token on stdout (as the README's tour uses it), its ID on stderr.
    let plain = mint("consumer", CONSUMER, "8h", false).await?;
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let token = String::from_utf8(plain.stdout)?.trim().to_owned();
    let principal = lib.keys.verifier.verify(&token)?;
    assert!(String::from_utf8(plain.stderr)?.contains(&format!("token id (jti) {}", principal.token_id)));
    // JSON: token, ID and expiry together.
    let json: serde_json::Value = serde_json::from_slice(&mint("consumer", CONSUMER, "1h", true).await?.stdout)?;
    let json_token = json["token"].as_str().unwrap_or_default();
    assert_eq!(lib.keys.verifier.verify(json_token)?.token_id, json["token_id"].as_str().unwrap_or_default());
    assert_eq!(json["role"], "consumer");
    assert!(json["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')), "{json}");

    let server = format!("http://{}", lib.addr);
    list_types(&mut catalog_with(&lib, &token)?).await?;
    let admin = lib.token(Role::Admin, ADMIN);
    let refused =
        zhengzhao(&["token", "revoke", &principal.token_id, "--reason", "x", "--server", &server, "--token", &token])
            .await?;
    assert!(String::from_utf8(refused.stderr)?.starts_with("error: permission denied"));
    let out = zhengzhao(&[
        "token",
        "revoke",
        &principal.token_id,
        "--reason",
        "left the agency",
        "--until",
        "2099-01-01T00:00:00Z",
        "--server",
        &server,
        "--token",
        &admin,
    ])
    .await?;
    assert!(!out.status.success(), "a date past any token's life was accepted");
    let out = zhengzhao(&[
        "token",
        "revoke",
        &principal.token_id,
        "--reason",
        "left the agency",
        "--server",
        &server,
        "--token",
        &admin,
    ])
    .await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8(out.stdout)?.starts_with(&format!("revoked {} until ", principal.token_id)));
    let e = list_types(&mut catalog_with(&lib, &token)?).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "token has been revoked"));
    let listed = zhengzhao(&["token", "revoked", "--server", &server, "--token", &admin]).await?;
    let line: serde_json::Value = serde_json::from_str(String::from_utf8(listed.stdout)?.trim())?;
    assert_eq!(line["token_id"], principal.token_id.as_str());
    assert_eq!(line["reason"], "left the agency");
    // The revoked token cannot be used to mint or act any more, even from the CLI.
    let used = zhengzhao(&["catalog", "list", "--server", &server, "--token", &token]).await?;
    assert!(String::from_utf8(used.stderr)?.contains("unauthenticated: token has been revoked"));
    Ok(())
}

/// Split deployment on PostgreSQL: the catalogue holds the list; the signing
/// process refreshes its denylist from it with its own service credentials.
#[tokio::test]
async fn other_processes_refresh_the_denylist_from_the_catalogue() -> anyhow::Result<()> {
    let db = TestDb::postgres().await?;
    let url = db.url().unwrap_or_default().to_owned();
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    zhengzhao_server::keys::init_library(&data)?;
    let d = data.display().to_string();
    let base = |extra: &[String]| -> Vec<String> {
        let mut v: Vec<String> = ["--listen", "127.0.0.1:0", "--data-dir", &d, "--database-url", &url]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        v.extend_from_slice(extra);
        v
    };
    let fast = [("ZHENGZHAO_AUTH__REVOCATION_REFRESH_SECONDS", "1")];
    let catalog = ServerProcess::start("zhengzhao-catalog", &base(&[]), &fast).await?;
    let signing =
        ServerProcess::start("zhengzhao-signing", &base(&["--catalog-url".into(), catalog.url()]), &fast).await?;
    let authority = zhengzhao_server::keys::operator_authority(&data)?;
    let victim = authority.issue(CONSUMER, Role::Consumer, Duration::from_secs(600))?;
    let admin = authority.mint(ADMIN, Role::Admin, Duration::from_secs(600))?;
    let channel = |u: String| tonic::transport::Endpoint::from_shared(u).map(|e| e.connect_lazy());
    let mut keys = zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient::with_interceptor(
        channel(signing.url())?,
        BearerToken::new(&victim.token)?,
    );
    let ask = zhengzhao_proto::signing::v1::ListPublicKeysRequest { issuer_code: ISSUER.into() };
    keys.list_public_keys(ask.clone()).await?;
    tokens(channel(catalog.url())?, &admin)?.revoke_token(revoke_request(&victim, "compromised")).await?;
    let mut refused = None;
    for _ in 0..50 {
        match keys.list_public_keys(ask.clone()).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let e = refused.expect("the signing process never refused the revoked token");
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "token has been revoked"));
    signing.stop().await;
    catalog.stop().await;
    Ok(())
}
