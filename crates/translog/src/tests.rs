//! The log against the in-memory reference of `zhengzhao_crypto::merkle`, on
//! SQLite (a temporary directory) and PostgreSQL (a fresh database on the
//! test server), with the tables made from the documented SQL.

use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use zhengzhao_crypto::merkle;
use zhengzhao_crypto::translog::verify_checkpoint;
use zhengzhao_store::{Db, Migrations};
use zhengzhao_testkit::TestDb;

use super::*;

/// A fresh database holding nothing but the log's tables, made from
/// [`schema`], on each engine (with what keeps it alive).
async fn logs() -> Vec<(Db, TestDb)> {
    static NONE: Migrator = Migrator::DEFAULT;
    static EMPTY: Migrations = Migrations { postgres: &NONE, sqlite: &NONE };
    let mut out = Vec::new();
    for test_db in TestDb::both().await.unwrap() {
        let db = zhengzhao_store::open(&test_db.store(), "translog", &EMPTY).await.unwrap();
        for statement in schema(db.engine).split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(&db.pool).await.unwrap();
        }
        out.push((db, test_db));
    }
    out
}

fn leaves(n: u32) -> Vec<Hash> {
    (0..n).map(|i| merkle::leaf_hash(format!("leaf {i}").as_bytes())).collect()
}

fn signer() -> LogSigner {
    LogSigner {
        key: Arc::new(zhengzhao_crypto::Es256KeyPair::generate()),
        kid: "log-test".into(),
        origin: "zhengzhao/test".into(),
    }
}

async fn stored_checkpoints(db: &Db) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM log_checkpoints").fetch_one(&db.pool).await.unwrap()
}

/// Appends `all[size..end]` in one transaction the way a service without a
/// lock of its own does; returns the new size.
async fn append_batch(db: &Db, all: &[Hash], end: usize) -> u64 {
    let mut tx = db.pool.begin().await.unwrap();
    let at = lock_for_append(&mut tx, db.engine).await.unwrap();
    append(&mut tx, at, &all[at as usize..end]).await.unwrap();
    tx.commit().await.unwrap();
    end as u64
}

/// Appended in batches of every shape, the stored tree has the reference's
/// root at every size, and its audit paths are the reference's and verify.
#[tokio::test]
async fn batches_give_the_reference_roots_and_audit_paths() {
    for (db, test_db) in logs().await {
        let engine = test_db.engine();
        let all = leaves(70);
        let mut conn = db.pool.acquire().await.unwrap();
        assert_eq!(size(&mut conn).await.unwrap(), 0, "{engine}");
        assert_eq!(root(&mut conn, 0).await.unwrap(), merkle::root(&[]), "{engine}");
        drop(conn);
        let mut end = 0;
        for batch in [1usize, 2, 3, 1, 7, 16, 5, 35] {
            end += batch;
            let n = append_batch(&db, &all, end).await;
            let mut conn = db.pool.acquire().await.unwrap();
            assert_eq!(size(&mut conn).await.unwrap(), n, "{engine}");
            for m in 0..=n {
                assert_eq!(
                    root(&mut conn, m).await.unwrap(),
                    merkle::root(&all[..m as usize]),
                    "{engine}: root of {m}"
                );
            }
            let r = merkle::root(&all[..end]);
            for i in 0..n {
                let path = audit_path(&mut conn, i, n).await.unwrap();
                assert!(merkle::verify_inclusion(i, n, &all[i as usize], &path, &r), "{engine}: leaf {i} of {n}");
            }
        }
        assert_eq!(end, all.len());
        // Every leaf's audit path in every earlier tree is the reference's.
        let mut conn = db.pool.acquire().await.unwrap();
        for m in 1..=70u64 {
            let prefix = &all[..m as usize];
            let r = merkle::root(prefix);
            for i in 0..m {
                let path = audit_path(&mut conn, i, m).await.unwrap();
                assert_eq!(Some(&path), merkle::inclusion_proof(prefix, i as usize).as_ref(), "{engine}: {i} of {m}");
                assert!(merkle::verify_inclusion(i, m, &all[i as usize], &path, &r), "{engine}: {i} of {m}");
            }
        }
        // Nothing to append changes nothing.
        append(&mut conn, 70, &[]).await.unwrap();
        assert_eq!(size(&mut conn).await.unwrap(), 70, "{engine}");
    }
}

/// Consistency proofs between every pair of sizes are the reference's and
/// verify; sizes out of order or past the log are invalid arguments.
#[tokio::test]
async fn consistency_proofs_verify_between_sizes() {
    for (db, test_db) in logs().await {
        let engine = test_db.engine();
        let all = leaves(37);
        for end in [5, 8, 20, 37] {
            append_batch(&db, &all, end).await;
        }
        let mut conn = db.pool.acquire().await.unwrap();
        for second in 0..=37u64 {
            let new_root = merkle::root(&all[..second as usize]);
            for first in 0..=second {
                let proof = consistency_proof(&mut conn, first, second).await.unwrap();
                assert_eq!(
                    Some(&proof),
                    merkle::consistency_proof(&all[..second as usize], first as usize).as_ref(),
                    "{engine}: {first} to {second}"
                );
                let old_root = merkle::root(&all[..first as usize]);
                assert!(
                    merkle::verify_consistency(first, second, &old_root, &new_root, &proof),
                    "{engine}: {first} to {second}"
                );
            }
        }
        let invalid = |e: ServiceError, field: &str| match e {
            ServiceError::Invalid(v) => assert!(v.names(field), "{engine}: {v:?}"),
            other => panic!("{engine}: {other:?}"),
        };
        invalid(consistency_proof(&mut conn, 3, 38).await.unwrap_err(), "second_tree_size");
        invalid(consistency_proof(&mut conn, 6, 5).await.unwrap_err(), "first_tree_size");
    }
}

/// A checkpoint is signed once per size, verifies under the signer's public
/// key (also as its JWK), and older ones stay stored.
#[tokio::test]
async fn checkpoints_are_signed_once_per_size_and_verify() {
    for (db, test_db) in logs().await {
        let engine = test_db.engine();
        let all = leaves(12);
        let signer = signer();
        let public = signer.key.public_key();
        let from_jwk = zhengzhao_crypto::Es256PublicKey::from_jwk(&signer.public_jwk()).unwrap();
        assert_eq!(from_jwk.to_sec1(), public.to_sec1());
        assert_eq!(signer.public_jwk()["kid"], "log-test");

        let mut conn = db.pool.acquire().await.unwrap();
        let empty = checkpoint(&mut conn, &signer).await.unwrap();
        assert_eq!((empty.tree_size, empty.root_hash), (0, merkle::root(&[])), "{engine}");
        drop(conn);

        let mut seen = vec![empty];
        for end in [1, 7, 12] {
            append_batch(&db, &all, end).await;
            let mut conn = db.pool.acquire().await.unwrap();
            let c = checkpoint(&mut conn, &signer).await.unwrap();
            assert_eq!(c.tree_size, end as u64, "{engine}");
            assert_eq!(c.root_hash, merkle::root(&all[..end]), "{engine}");
            assert_eq!(c.origin, "zhengzhao/test", "{engine}");
            assert_eq!(verify_checkpoint(&c.jws, &public).unwrap(), c, "{engine}");
            // Asked again at the same size: the stored one, not a new signature.
            assert_eq!(checkpoint(&mut conn, &signer).await.unwrap(), c, "{engine}");
            assert_eq!(stored_checkpoint(&mut conn, c.tree_size).await.unwrap().as_ref(), Some(&c), "{engine}");
            drop(conn);
            seen.push(c);
            assert_eq!(stored_checkpoints(&db).await, seen.len() as i64, "{engine}");
        }
        let mut conn = db.pool.acquire().await.unwrap();
        for c in &seen {
            assert_eq!(stored_checkpoint(&mut conn, c.tree_size).await.unwrap().as_ref(), Some(c), "{engine}");
        }
        assert_eq!(stored_checkpoint(&mut conn, 5).await.unwrap(), None, "{engine}");
        // A checkpoint does not verify under another key.
        let other = zhengzhao_crypto::Es256KeyPair::generate().public_key();
        assert!(verify_checkpoint(&seen[1].jws, &other).is_err(), "{engine}");
    }
}

/// Appenders racing with [`lock_for_append`] each get their own range, one
/// after the other, and the tree is the reference's over their leaves in
/// that order.
#[tokio::test]
async fn concurrent_appenders_take_turns() {
    for (db, test_db) in logs().await {
        let engine = test_db.engine();
        let mut tasks = Vec::new();
        for t in 0..6u32 {
            let pool = db.pool.clone();
            let engine = db.engine;
            tasks.push(tokio::spawn(async move {
                let batch: Vec<Hash> =
                    (0..=t).map(|i| merkle::leaf_hash(format!("appender {t} leaf {i}").as_bytes())).collect();
                let mut tx = pool.begin().await.unwrap();
                let at = lock_for_append(&mut tx, engine).await.unwrap();
                // Hold the lock a while so the others queue behind it.
                tokio::time::sleep(Duration::from_millis(30)).await;
                append(&mut tx, at, &batch).await.unwrap();
                tx.commit().await.unwrap();
                (at, batch)
            }));
        }
        let mut ranges = Vec::new();
        for task in tasks {
            ranges.push(task.await.unwrap());
        }
        ranges.sort_by_key(|(at, _)| *at);
        let mut all = Vec::new();
        for (at, batch) in ranges {
            assert_eq!(at, all.len() as u64, "{engine}: ranges overlap or leave a gap");
            all.extend(batch);
        }
        let mut conn = db.pool.acquire().await.unwrap();
        assert_eq!(size(&mut conn).await.unwrap(), all.len() as u64, "{engine}");
        assert_eq!(root(&mut conn, all.len() as u64).await.unwrap(), merkle::root(&all), "{engine}");
    }
}

/// The SQL the crate documents is what its constants hold, for both engines.
#[test]
fn schemas_differ_only_in_the_blob_type() {
    assert_eq!(POSTGRES_SCHEMA.replace("BYTEA", "BLOB"), SQLITE_SCHEMA);
    assert_eq!(schema(Engine::Postgres), POSTGRES_SCHEMA);
    assert_eq!(schema(Engine::Sqlite), SQLITE_SCHEMA);
    for table in ["log_nodes", "log_state", "log_checkpoints"] {
        assert!(SQLITE_SCHEMA.contains(&format!("CREATE TABLE {table} (")), "{table}");
    }
}
