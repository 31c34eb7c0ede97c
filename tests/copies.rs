//! Consumers' annotated copies with their PDF and links, the usage log
//! queried and checked against a checkpoint, and the CLI walking a consumer
//! from application to printed copy — each on SQLite and PostgreSQL.

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_crypto::merkle;
use zhengzhao_e2e::consumers::*;
use zhengzhao_e2e::fixtures::*;
use zhengzhao_e2e::{ADMIN, CONSUMER, Library, OTHER_ISSUER};
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::issuance::v1 as issuance;

type Result = anyhow::Result<()>;

fn tool(name: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(name).args(args).output().map_err(|e| {
        anyhow::anyhow!("cannot run {name} ({e}): install poppler-utils and zbar-tools (scripts/test does)")
    })?;
    anyhow::ensure!(out.status.success(), "{name} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn an_annotated_copy_is_signed_by_the_library_printed_and_checked() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        let copy = |pdf: bool, link: bool| exchange::IssueCopyRequest {
            identifier: l.identifier.clone(),
            r#use: use_ctx("食品经营许可变更审查"),
            valid_days: 0,
            pdf,
            link,
        };
        let mut consumer = lib.exchange_as(Role::Consumer, CONSUMER, "李四");
        assert_eq!(consumer.issue_copy(copy(false, false)).await.unwrap_err().code(), Code::PermissionDenied);
        let entry = add_entry(&lib, CONSUMER, &code, &["business_scope", "premises"]).await?;
        let e =
            consumer.issue_copy(exchange::IssueCopyRequest { valid_days: 91, ..copy(false, false) }).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["valid_days"]);
        let c = consumer.issue_copy(copy(true, true)).await?.into_inner();
        // Signed by the library's key, as published in the JWKS.
        let payload = verify_under_jwks(&lib, &lib.keys.agency, &c.jws).await?;
        assert_eq!(payload["typ"], "zhengzhao-copy");
        assert_eq!(payload["copyId"], c.copy_id.as_str());
        assert_eq!(payload["licence"]["identifier"], l.identifier.as_str());
        assert_eq!(payload["use"]["agencyCode"], CONSUMER);
        assert_eq!(payload["use"]["operator"], "李四");
        assert_eq!(payload["use"]["useCause"], "食品经营许可变更审查");
        assert_eq!(payload["use"]["entryId"], entry.id);
        let shown: Vec<&String> =
            payload["licence"]["faceFields"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
        assert_eq!(shown, ["business_scope", "premises"], "{engine}");
        assert_eq!(payload["licence"]["jwsSha256"], zhengzhao_crypto::translog::jws_digest(&l.jws).as_str());
        let good_until = c.good_until.unwrap_or_default();
        let days = (good_until.seconds - time::OffsetDateTime::now_utc().unix_timestamp()) / 86400;
        assert!((29..=30).contains(&days), "{days}");
        if let Ok(python) = std::env::var("JOSE_PYTHON") {
            let dir = tempfile::tempdir()?;
            let (_, jwks) = lib.http_get("/.well-known/jwks.json").await?;
            std::fs::write(dir.path().join("jwks.json"), jwks)?;
            std::fs::write(dir.path().join("copy.jws"), &c.jws)?;
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/jose_verify.py");
            let p = dir.path();
            let out = tool(
                &python,
                &[script, &p.join("jwks.json").to_string_lossy(), &p.join("copy.jws").to_string_lossy()],
            )?;
            assert_eq!(out.trim(), l.identifier, "jwcrypto verifies the copy");
        }

        // The PDF: the holder's name, the cause in the watermark, and a QR
        // code that resolves to the copy's verification.
        let dir = tempfile::tempdir()?;
        let pdf = dir.path().join("copy.pdf");
        std::fs::write(&pdf, &c.pdf)?;
        let text = tool("pdftotext", &["-layout", &pdf.to_string_lossy(), "-"])?;
        assert!(text.contains("示例食品有限公司"), "{engine}: {text}");
        assert!(text.contains("食品经营许可变更审查"), "{text}");
        // The watermark (rotated, so read in drawing order) names the agency and the cause.
        let raw: String = tool("pdftotext", &["-raw", &pdf.to_string_lossy(), "-"])?.split_whitespace().collect();
        assert!(raw.contains(&format!("仅供{CONSUMER}用于食品经营许可变更审查")), "{engine}: {raw}");
        let png = dir.path().join("copy");
        tool("pdftoppm", &["-r", "150", "-png", "-singlefile", &pdf.to_string_lossy(), &png.to_string_lossy()])?;
        let url = tool("zbarimg", &["--quiet", "--raw", &format!("{}.png", png.display())])?;
        let url = url.trim();
        assert_eq!(url, c.verify_url);
        let path = url.strip_prefix(&format!("http://{}", lib.addr)).ok_or_else(|| anyhow::anyhow!("{url}"))?;
        let (status, body) = lib.http_get(path).await?;
        assert_eq!(status, 200);
        let verdict: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!((verdict["genuine"].as_bool(), verdict["valid"].as_bool()), (Some(true), Some(true)), "{verdict}");

        // The link works once.
        let link = c.download_url.strip_prefix(&format!("http://{}", lib.addr)).unwrap_or_default().to_owned();
        assert!(link.starts_with("/copies/download/"), "{}", c.download_url);
        let (status, body) = lib.http_get(&link).await?;
        assert_eq!(status, 200, "{engine}");
        assert!(body.starts_with(b"%PDF"));
        let (status, _) = lib.http_get(&link).await?;
        assert_eq!(status, 404, "a used link is gone");
        let (status, _) = lib.http_get("/copies/download/not-a-link").await?;
        assert_eq!(status, 404);
        // A link left for ten minutes is gone too.
        let late = consumer.issue_copy(copy(false, true)).await?.into_inner();
        exchange_sql(&lib, &["UPDATE copy_links SET expires_at = '2026-01-01T00:00:00.000000Z'"]).await?;
        let late_path =
            late.download_url.split_once("/copies/").map(|(_, p)| format!("/copies/{p}")).unwrap_or_default();
        assert_eq!(lib.http_get(&late_path).await?.0, 404);
        // Revoked, the licence no longer stands behind the copy.
        record(&lib, event(&l.identifier, issuance::EventKind::Revoke, "违法经营")).await?;
        let (_, body) = lib.http_get(path).await?;
        let verdict: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!((verdict["genuine"].as_bool(), verdict["valid"].as_bool()), (Some(true), Some(false)));
        assert_eq!(verdict["licenceStatus"], "revoked", "{verdict}");
        // Unknown copies are not found.
        assert_eq!(lib.http_get("/copies/00000000-0000-4000-8000-000000000000").await?.0, 404);
        assert_eq!(lib.http_get("/copies/%0Aevil").await?.0, 404);
        // The copy is a logged use.
        let log =
            usage_log(&lib, exchange::ListUsageLogRequest { identifier: l.identifier.clone(), ..Default::default() })
                .await?;
        assert!(log.iter().any(|r| r.method == "IssueCopy" && r.copy_id == c.copy_id && r.operator == "李四"));
    }
    Ok(())
}

#[tokio::test]
async fn the_usage_log_is_queried_and_any_alteration_shows_against_a_checkpoint() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        add_entry(&lib, CONSUMER, &code, &["business_scope"]).await?;
        fetch(&lib, CONSUMER, &l.identifier).await?;
        fetch(&lib, OTHER_ISSUER, &l.identifier).await.unwrap_err();
        let mut auditor = lib.exchange(Role::Auditor, ADMIN);
        let first = auditor.get_usage_checkpoint(exchange::GetUsageCheckpointRequest {}).await?.into_inner();
        let first = first.checkpoint.unwrap_or_default();
        assert_eq!(first.tree_size, 2, "{engine}");
        let body = verify_under_jwks(&lib, &lib.keys.agency, &first.jws).await?;
        assert_eq!(body["typ"], "zhengzhao-usage-checkpoint");
        fetch(&lib, CONSUMER, &l.identifier).await?;
        let second = auditor.get_usage_checkpoint(exchange::GetUsageCheckpointRequest {}).await?.into_inner();
        let second = second.checkpoint.unwrap_or_default();
        let proof = auditor
            .get_usage_consistency_proof(exchange::GetUsageConsistencyProofRequest {
                first_tree_size: first.tree_size,
                second_tree_size: second.tree_size,
            })
            .await?
            .into_inner()
            .hashes;
        let proof: Vec<merkle::Hash> = proof.into_iter().map(|h| h.try_into().expect("32 bytes")).collect();
        let root =
            |c: &exchange::UsageCheckpoint| -> merkle::Hash { c.root_hash.clone().try_into().expect("32 bytes") };
        assert!(merkle::verify_consistency(first.tree_size, second.tree_size, &root(&first), &root(&second), &proof));

        // Queries: by agency, decision, time.
        let q = |r: exchange::ListUsageLogRequest| usage_log(&lib, r);
        assert_eq!(
            q(exchange::ListUsageLogRequest { agency_code: CONSUMER.into(), ..Default::default() }).await?.len(),
            2
        );
        let refused = q(exchange::ListUsageLogRequest {
            decision: exchange::UsageDecision::Refused as i32,
            ..Default::default()
        })
        .await?;
        assert_eq!(refused.iter().map(|r| r.consumer_code.as_str()).collect::<Vec<_>>(), [OTHER_ISSUER]);
        let future =
            prost_types::Timestamp { seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 3600, nanos: 0 };
        assert!(q(exchange::ListUsageLogRequest { since: Some(future), ..Default::default() }).await?.is_empty());
        assert_eq!(q(exchange::ListUsageLogRequest { until: Some(future), ..Default::default() }).await?.len(), 3);
        let e = auditor
            .list_usage_log(exchange::ListUsageLogRequest {
                since: Some(prost_types::Timestamp { seconds: -62_198_755_200, nanos: 0 }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["since"], "year -1 is refused at the edge");
        let e = lib
            .exchange(Role::Consumer, CONSUMER)
            .list_usage_log(exchange::ListUsageLogRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);

        // Rebuilt from the records, the log matches its checkpoint …
        let rebuilt = |records: &[exchange::UsageRecord]| -> anyhow::Result<merkle::Hash> {
            let leaves = records
                .iter()
                .map(|r| {
                    let record = zhengzhao_exchange::grpc::record_from_wire(r)?;
                    zhengzhao_exchange::usagelog::UsageLeaf::of(&record, r.log_index).hash().map_err(anyhow::Error::msg)
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(merkle::root(&leaves))
        };
        let oldest_first = exchange::ListUsageLogRequest { oldest_first: true, ..Default::default() };
        let records = q(oldest_first.clone()).await?;
        assert_eq!(records.iter().map(|r| r.log_index).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(rebuilt(&records)?, root(&second), "{engine}");
        // … and no longer once a record is altered behind the service's back.
        exchange_sql(&lib, &["UPDATE usage_log SET use_cause = '随便看看' WHERE log_index = 1"]).await?;
        let records = q(oldest_first).await?;
        assert_ne!(rebuilt(&records)?, root(&second), "{engine}");
    }
    Ok(())
}

/// `zhengzhao ARGS` against `lib` as `token`: exit code, stdout, stderr.
async fn cli(
    lib: &Library,
    token: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<(i32, String, String)> {
    let out = tokio::process::Command::new(zhengzhao_testkit::binary("zhengzhao"))
        .current_dir(dir)
        .env("ZHENGZHAO_SERVER", format!("http://{}", lib.addr))
        .env("ZHENGZHAO_TOKEN", token)
        .args(args)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("run `cargo build --workspace --bins` first: {e}"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn the_cli_walks_a_consumer_from_application_to_printed_copy_and_audits_the_log() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        let admin = lib.token_for(Role::Admin, ADMIN, "王五");
        let auditor = lib.token(Role::Auditor, ADMIN);
        let consumer = lib.token_for(Role::Consumer, CONSUMER, "李四");
        let use_args = ["--cause", "核验经营资质", "--service-item", ITEM, "--case-number", "2026-0001"];
        let with =
            |head: &[&str]| -> Vec<String> { head.iter().chain(use_args.iter()).map(|s| (*s).to_owned()).collect() };
        let strs = |v: &Vec<String>| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
        let lib_ref = &lib;
        let run = |token: &str, args: Vec<String>| {
            let token = token.to_owned();
            async move {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                cli(lib_ref, &token, d, &refs).await
            }
        };
        // Outside the list: refused, exit 1, the reason on stderr.
        let (code_out, _, err) = run(&consumer, with(&["licence", "fetch", &l.identifier])).await?;
        assert_eq!(code_out, 1, "{engine}: {err}");
        assert!(err.contains("no usage-list entry"), "{err}");
        // A missing --case-number is a usage error, exit 2.
        let (code_out, _, _) =
            run(&consumer, vec!["licence".into(), "fetch".into(), l.identifier.clone(), "--cause".into(), "x".into()])
                .await?;
        assert_eq!(code_out, 2);
        // Apply, approve, look up, fetch, copy.
        let apply: Vec<String> = [
            "usage-list",
            "apply",
            "--type",
            &code,
            "--service-item",
            ITEM,
            "--purpose",
            "食品经营许可变更审查",
            "--fields",
            "business_scope,premises",
            "--until",
            "2027-12-31",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let (status, out, err) = run(&consumer, apply.clone()).await?;
        assert_eq!(status, 0, "{engine}: {} {err}", strs(&apply));
        let app = out.trim().to_owned();
        assert!(app.parse::<u64>().is_ok(), "the application id alone: {out:?}");
        let (_, pending, _) = run(
            &admin,
            vec![
                "usage-list".into(),
                "applications".into(),
                "--state".into(),
                "pending".into(),
                "--format".into(),
                "csv".into(),
            ],
        )
        .await?;
        let mut rows = pending.lines();
        assert!(rows.next().unwrap_or_default().starts_with("id,agency,level,"), "{pending}");
        assert!(rows.next().unwrap_or_default().starts_with(&format!("{app},{CONSUMER},city,")), "{pending}");
        let (status, out, err) = run(
            &admin,
            vec!["usage-list".into(), "approve".into(), app.clone(), "--reason".into(), "符合用证要求".into()],
        )
        .await?;
        assert_eq!(status, 0, "{err}");
        let approved: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(approved["application"]["state"], "approved");
        assert_eq!(approved["entries"][0]["fields"], "business_scope,premises");
        let (status, out, err) =
            run(&consumer, with(&["licence", "find", "--holder-id-type", "001", "--holder-id", HOLDER])).await?;
        assert_eq!(status, 0, "{err}");
        assert_eq!(out.lines().count(), 1, "{out}");
        let found: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or_default())?;
        assert_eq!(found["identifier"], l.identifier.as_str());
        assert!(found["withheld_fields"].as_array().is_some_and(|w| !w.is_empty()), "{found}");
        let (status, out, err) = run(&consumer, with(&["licence", "fetch", &l.identifier])).await?;
        assert_eq!(status, 0, "{err}");
        let fetched: serde_json::Value = serde_json::from_str(&out)?;
        assert_eq!(fetched["whole_licence"], false);
        let (status, out, err) =
            run(&consumer, with(&["licence", "copy", &l.identifier, "--pdf", "copy.pdf", "--link"])).await?;
        assert_eq!(status, 0, "{err}");
        let copy: serde_json::Value = serde_json::from_str(&out)?;
        assert!(copy["download_url"].as_str().is_some_and(|u| u.contains("/copies/download/")), "{copy}");
        assert!(std::fs::read(d.join("copy.pdf"))?.starts_with(b"%PDF"));
        // The history and the log, as CSV.
        let (_, history, _) = run(&admin, vec!["usage-list".into(), "history".into()]).await?;
        let actions: Vec<String> = history
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .map(|v| v["action"].as_str().unwrap_or_default().to_owned())
            })
            .collect::<std::result::Result<_, _>>()?;
        assert_eq!(actions, ["created", "approved", "applied"], "{engine}");
        let (status, csv, err) = run(
            &admin,
            vec![
                "usage-log".into(),
                "--holder-id-type".into(),
                "001".into(),
                "--holder-id".into(),
                HOLDER.into(),
                "--format".into(),
                "csv".into(),
            ],
        )
        .await?;
        assert_eq!(status, 0, "{err}");
        assert!(csv.starts_with("id,log_index,accessed_at,consumer,role,operator,method,"), "{csv}");
        assert_eq!(csv.lines().count(), 1 + 4, "{engine}: header, refused fetch, find, fetch, copy: {csv}");
        assert!(csv.contains(",李四,IssueCopy,") && csv.contains(",001,913*************43,"), "{csv}");
        let (status, _, _) = run(&admin, vec!["usage-log".into(), "--holder-id".into(), HOLDER.into()]).await?;
        assert_eq!(status, 2, "--holder-id needs --holder-id-type");

        // The audit passes, keeps a checkpoint, and catches an altered record.
        let audit = |extra: &[&str]| -> Vec<String> {
            ["audit", "--usage"].iter().chain(extra.iter()).map(|s| (*s).to_owned()).collect()
        };
        let (status, out, err) = run(&auditor, audit(&["--save-usage", "usage.jws"])).await?;
        assert_eq!(status, 0, "{engine}: {out}{err}");
        assert!(out.contains("audit passed") && out.contains("records rebuild its signed checkpoint"), "{out}");
        run(&consumer, with(&["licence", "fetch", &l.identifier])).await?;
        let (status, out, err) = run(&auditor, audit(&["--usage-from", "usage.jws"])).await?;
        assert_eq!(status, 0, "{out}{err}");
        assert!(out.contains("grew from 4 to 5 records"), "{out}");
        exchange_sql(&lib, &["UPDATE usage_log SET case_number = '2026-9999' WHERE log_index = 2"]).await?;
        let (status, _, err) = run(&auditor, audit(&["--usage-from", "usage.jws"])).await?;
        assert_eq!(status, 3, "{engine}: {err}");
        assert!(
            err.contains("AUDIT FAILED: usage log: the 5 records rebuilt do not give the checkpoint's root"),
            "{err}"
        );
        exchange_sql(&lib, &["DELETE FROM usage_log WHERE log_index = 4"]).await?;
        let (status, _, err) = run(&auditor, audit(&[])).await?;
        assert_eq!(status, 3);
        assert!(err.contains("records were deleted"), "{err}");
        // A file that is no checkpoint is the auditor's input error (exit 1).
        std::fs::write(d.join("garbage.jws"), "not a checkpoint")?;
        let (status, _, err) = run(&auditor, audit(&["--usage-from", "garbage.jws"])).await?;
        assert_eq!(status, 1, "{err}");
        let (status, _, _) = run(&auditor, vec!["audit".into()]).await?;
        assert_eq!(status, 2, "audit needs --from or --usage");
    }
    Ok(())
}
