//! The transparency log of issuance, on SQLite and PostgreSQL: every event is
//! a leaf; checkpoints are signed by the library key; inclusion and
//! consistency proofs verify; verification can carry the proof; and
//! `zhengzhao audit` (the real binary) passes on an honest library and fails
//! loudly after history is rewritten in the database behind the service's
//! back — whether only the records change or the whole log is rebuilt.

use std::process::Output;

use zhengzhao_auth::Role;
use zhengzhao_crypto::Es256PublicKey;
use zhengzhao_crypto::merkle;
use zhengzhao_e2e::fixtures::{draft, issuance_sql as sql, issue, libraries, published_type};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library};
use zhengzhao_issuance::translog::{check_inclusion, verify_checkpoint};
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::VerificationOutcome as O;
use zhengzhao_testkit::binary;

type Result = anyhow::Result<()>;

/// Runs the CLI without blocking the runtime the library serves on.
async fn cli(lib: &Library, dir: &std::path::Path, args: &[&str]) -> anyhow::Result<Output> {
    Ok(tokio::process::Command::new(binary("zhengzhao"))
        .args(args)
        .current_dir(dir)
        .env("ZHENGZHAO_SERVER", format!("http://{}", lib.addr))
        .env("ZHENGZHAO_TOKEN", lib.token(Role::Auditor, ADMIN))
        .output()
        .await?)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn verify_with_proof(lib: &Library, id: &str) -> anyhow::Result<verification::Verification> {
    Ok(lib
        .verification(Role::Consumer, CONSUMER)
        .verify_licence(verification::VerifyLicenceRequest { identifier: id.to_owned(), include_inclusion_proof: true })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default())
}

#[tokio::test]
async fn every_event_is_logged_proven_and_rewrites_fail_the_audit() -> Result {
    for mut lib in libraries().await? {
        let engine = lib.db.engine();
        let work = tempfile::tempdir()?;
        let code = published_type(&lib).await?;
        let a = issue(&lib, draft(&code)).await?;
        let b = issue(&lib, draft(&code)).await?;
        let c = issue(&lib, draft(&code)).await?;
        lib.issuance(Role::Issuer, ISSUER)
            .record_event(issuance::RecordEventRequest {
                identifier: c.identifier.clone(),
                kind: issuance::EventKind::Revoke as i32,
                reason: "严重违法吊销".into(),
                ..Default::default()
            })
            .await?;

        // A signed checkpoint; each licence's events proven against it.
        let r =
            lib.issuance(Role::Auditor, ADMIN).get_checkpoint(issuance::GetCheckpointRequest {}).await?.into_inner();
        let library = Es256PublicKey::from_jwk(&serde_json::from_str(&r.library_jwk_json)?)?;
        let cp1 = verify_checkpoint(&r.checkpoint.unwrap_or_default().jws, &library).map_err(anyhow::Error::msg)?;
        assert_eq!(cp1.tree_size, 4, "{engine}: three issues and a revocation");
        for (l, events, status) in [(&a, 1, "valid"), (&c, 2, "revoked")] {
            let p = lib
                .issuance(Role::Auditor, ADMIN)
                .get_inclusion_proof(issuance::GetInclusionProofRequest {
                    identifier: l.identifier.clone(),
                    tree_size: cp1.tree_size,
                })
                .await?
                .into_inner();
            let logged = p
                .events
                .into_iter()
                .map(zhengzhao_issuance::translog::LoggedEvent::try_from)
                .collect::<std::result::Result<Vec<_>, _>>()?;
            assert_eq!(logged.len(), events);
            check_inclusion(&cp1, &l.identifier, &l.jws, status, &logged).map_err(anyhow::Error::msg)?;
            // The same proof does not vouch for another licence or document.
            assert!(check_inclusion(&cp1, &b.identifier, &b.jws, status, &logged).is_err());
        }
        // Only licence readers get inclusion proofs (they carry event details).
        let denied = lib
            .issuance(Role::Consumer, CONSUMER)
            .get_inclusion_proof(issuance::GetInclusionProofRequest { identifier: a.identifier.clone(), tree_size: 1 })
            .await
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);

        // Verification carries the proof, which a client can re-check alone:
        // over leaf hashes only for callers who may not read the history
        // (leaves name actors and reasons), with the leaves for those who may.
        for (role, agency, leaves_shown) in
            [(Role::Consumer, CONSUMER, false), (Role::Portal, CONSUMER, false), (Role::Auditor, ADMIN, true)]
        {
            let v = lib
                .verification(role, agency)
                .verify_licence(verification::VerifyLicenceRequest {
                    identifier: c.identifier.clone(),
                    include_inclusion_proof: true,
                })
                .await?
                .into_inner()
                .verification
                .unwrap_or_default();
            assert_eq!(O::try_from(v.outcome)?, O::Revoked, "{engine}: {}", v.detail);
            let wire = prost::Message::encode_to_vec(&v);
            for secret in ["严重违法吊销", "issuer@", "\"actor\""] {
                let seen = wire.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert_eq!(seen, leaves_shown, "{engine}: {role} and {secret:?} in the answer");
            }
            let log = v.log_inclusion.unwrap_or_default();
            assert_eq!(log.events.len(), 2);
            let cp = log.checkpoint.unwrap_or_default();
            for e in &log.events {
                assert_eq!(e.leaf.is_empty(), !leaves_shown, "{engine}: {role}");
                if leaves_shown {
                    assert_eq!(e.leaf_hash, merkle::leaf_hash(&e.leaf).to_vec());
                }
                let path: Vec<merkle::Hash> =
                    e.audit_path.iter().map(|h| h.as_slice().try_into()).collect::<std::result::Result<_, _>>()?;
                assert!(merkle::verify_inclusion(
                    e.leaf_index,
                    cp.tree_size,
                    &e.leaf_hash.as_slice().try_into()?,
                    &path,
                    &cp.root_hash.as_slice().try_into()?
                ));
            }
        }

        // The CLI: save a checkpoint, grow the log, audit it.
        let saved = cli(&lib, work.path(), &["log", "checkpoint"]).await?;
        assert!(saved.status.success(), "{}", text(&saved));
        std::fs::write(work.path().join("cp1.jws"), &saved.stdout)?;
        std::fs::write(
            work.path().join("licences.txt"),
            format!("{}\n{}\n{}\n", a.identifier, b.identifier, c.identifier),
        )?;
        let d = issue(&lib, draft(&code)).await?;
        let audit = ["audit", "--from", "cp1.jws", "--licences", "licences.txt", "--save", "cp2.jws"];
        let ok = cli(&lib, work.path(), &audit).await?;
        assert!(ok.status.success(), "{engine}: {}", text(&ok));
        assert!(text(&ok).contains("from 4 to 5 leaves"), "{}", text(&ok));
        assert!(std::fs::read_to_string(work.path().join("cp2.jws"))?.starts_with("ey"));

        // Rewrite 1: the revocation's record is edited in the database.
        let revoke = format!("WHERE identifier = '{}' AND kind = 'revoke'", c.identifier);
        sql(&lib, &[&format!("UPDATE licence_events SET reason = '误录' {revoke}")]).await?;
        let failed = cli(&lib, work.path(), &audit).await?;
        assert_eq!(failed.status.code(), Some(3), "{engine}: {}", text(&failed));
        assert!(text(&failed).contains(&format!("AUDIT FAILED: {}", c.identifier)), "{}", text(&failed));
        assert!(text(&failed).contains("not in the log"), "{}", text(&failed));
        let v = verify_with_proof(&lib, &c.identifier).await?;
        assert_eq!(O::try_from(v.outcome)?, O::LogMismatch, "{engine}: {}", v.detail);
        // Other licences still prove.
        assert_eq!(O::try_from(verify_with_proof(&lib, &d.identifier).await?.outcome)?, O::Valid);

        // Rewrite 2: the revocation is turned into an inspection, the licence
        // made valid again, and the whole log rebuilt from the rewritten
        // events (the service re-logs them on restart).
        sql(
            &lib,
            &[
                &format!(
                    "UPDATE licence_events SET kind = 'inspect', status_after = 'valid', reason = '年度检查' {revoke}"
                ),
                &format!("UPDATE licences SET status = 'valid' WHERE identifier = '{}'", c.identifier),
                "DELETE FROM log_nodes",
                "DELETE FROM log_checkpoints",
                "UPDATE log_state SET tree_size = 0",
                "UPDATE licence_events SET log_index = NULL",
            ],
        )
        .await?;
        lib = lib.restart().await?;
        // To the library itself the forgery now looks whole...
        let v = verify_with_proof(&lib, &c.identifier).await?;
        assert_eq!(O::try_from(v.outcome)?, O::Valid, "{engine}: {}", v.detail);
        // ...but not to an auditor holding an earlier checkpoint.
        let failed = cli(&lib, work.path(), &audit).await?;
        assert_eq!(failed.status.code(), Some(3), "{engine}: {}", text(&failed));
        assert!(text(&failed).contains("history was rewritten"), "{}", text(&failed));
        let failed = cli(&lib, work.path(), &["audit", "--from", "cp2.jws"]).await?;
        assert_eq!(failed.status.code(), Some(3), "{engine}: {}", text(&failed));
        // A checkpoint not signed by this library is refused outright...
        let saved = zhengzhao_crypto::jws::parse(&std::fs::read_to_string(work.path().join("cp2.jws"))?)?;
        let other = zhengzhao_crypto::Es256KeyPair::generate();
        let input = zhengzhao_crypto::jws::signing_input(&saved.header, &saved.payload);
        std::fs::write(
            work.path().join("forged.jws"),
            zhengzhao_crypto::jws::assemble(&input, &other.sign(input.as_bytes())),
        )?;
        let failed = cli(&lib, work.path(), &["audit", "--from", "forged.jws"]).await?;
        assert_eq!(failed.status.code(), Some(3), "{}", text(&failed));
        assert!(text(&failed).contains("does not verify under the library key"), "{}", text(&failed));
        // ...while a file that is no checkpoint at all is the auditor's input
        // error (exit 1), not an audit failure.
        std::fs::write(
            work.path().join("token.jws"),
            lib.tokens.mint(ADMIN, Role::Admin, std::time::Duration::from_secs(60))?,
        )?;
        let failed = cli(&lib, work.path(), &["audit", "--from", "token.jws"]).await?;
        assert_eq!(failed.status.code(), Some(1), "{}", text(&failed));
        assert!(
            text(&failed).contains("not a checkpoint") && !text(&failed).contains("AUDIT FAILED"),
            "{}",
            text(&failed)
        );
    }
    Ok(())
}
