//! Hardening against callers and operators: metrics labels callers cannot
//! grow (item 7 of issue 9), and a data directory whose files are private to
//! the library's user, with keys never silently re-created (item 8).

use std::path::Path;
use std::process::Command;

use tonic::codegen::Service as _;
use tonic::codegen::http;
use zhengzhao_auth::Role;
use zhengzhao_e2e::{ADMIN, Library};
use zhengzhao_testkit::{ServerProcess, TestDb, binary};

/// The `zhengzhao_grpc_requests_total` series this process has, by label set.
fn request_series() -> Vec<String> {
    zhengzhao_telemetry::render_metrics()
        .lines()
        .filter(|l| l.starts_with("zhengzhao_grpc_requests_total{"))
        .map(|l| l.rsplit_once(' ').map_or(l, |(labels, _)| labels).to_owned())
        .collect()
}

/// Many unauthenticated requests to random paths, over gRPC and plain
/// HTTP/1.1, add at most the `unknown` series: the metrics stay bounded.
#[tokio::test]
async fn random_paths_do_not_grow_the_metrics() -> anyhow::Result<()> {
    let lib = Library::start(TestDb::sqlite()?).await?;
    // A known method, called properly, is labelled by its name.
    lib.catalog(Role::Admin, ADMIN)
        .list_licence_types(zhengzhao_proto::catalog::v1::ListLicenceTypesRequest::default())
        .await?;
    let before = request_series();
    assert!(
        before.iter().any(|s| s.contains("method=\"/zhengzhao.catalog.v1.CatalogService/ListLicenceTypes\"")),
        "{before:?}"
    );
    let mut channel = lib.channel();
    let salt = std::process::id();
    for i in 0..500 {
        let path = match i % 3 {
            0 => format!("/zhengzhao.catalog.v1.CatalogService/Nope{salt}x{i}"),
            1 => format!("/random{salt}.v{i}.Service/Method"),
            _ => format!("/{salt}-{i}"),
        };
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", lib.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::empty())?;
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        channel.call(req).await?;
    }
    // Plain HTTP/1.1, as a scanner would send it.
    for i in 0..50 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(lib.addr).await?;
        s.write_all(format!("GET /scan{salt}/{i}?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await?;
    }
    let after = request_series();
    let new: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(new.len() <= 3, "random paths added series: {} new, e.g. {:?}", new.len(), &new[..new.len().min(5)]);
    assert!(new.iter().all(|s| s.contains("method=\"unknown\"")), "{new:?}");
    assert!(after.iter().any(|s| s.contains("method=\"unknown\"")), "unknown paths are still counted");
    let text = zhengzhao_telemetry::render_metrics();
    assert!(!text.contains(&salt.to_string()), "a caller's path reached the metrics");
    Ok(())
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}

/// Every file under `dir`, with its mode.
#[cfg(unix)]
fn modes(dir: &Path) -> anyhow::Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        out.push((e.file_name().to_string_lossy().into_owned(), mode(&e.path())));
    }
    out.sort();
    Ok(out)
}

/// The embedded default: `zhengzhao serve` creates its data directory 0700
/// and every key and SQLite file in it (with WAL and shared memory) 0600.
#[cfg(unix)]
#[tokio::test]
async fn serve_keeps_its_data_directory_private() -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let args = |d: &Path| {
        vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), d.display().to_string()]
    };
    let server = ServerProcess::start("zhengzhao", &args(&data), &[]).await?;
    let token = Command::new(binary("zhengzhao"))
        .args(["token", "--data-dir", &data.display().to_string(), "--role", "admin", "--agency", ADMIN])
        .output()?;
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let list = Command::new(binary("zhengzhao"))
        .args(["catalog", "list", "--server", &server.url()])
        .env("ZHENGZHAO_TOKEN", String::from_utf8(token.stdout)?.trim())
        .output()?;
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    assert_eq!(mode(&data), 0o700);
    let files = modes(&data)?;
    for needed in
        ["token-key.pem", "log-key.pem", "catalog.db", "catalog.db-wal", "catalog.db-shm", "issuance.db", "signing.db"]
    {
        assert!(files.iter().any(|(n, _)| n == needed), "{needed} missing from {files:?}");
    }
    for (name, m) in &files {
        assert_eq!(*m, 0o600, "{name} is {m:o}");
    }
    server.stop().await;
    Ok(())
}

/// Runs `zhengzhao serve` on `data` expecting it to refuse to start; returns stderr.
fn refused_start(data: &Path) -> anyhow::Result<String> {
    let out = Command::new(binary("zhengzhao"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", &data.display().to_string()])
        .env_remove("ZHENGZHAO_MASTER_KEY")
        .output()?;
    let stderr = String::from_utf8(out.stderr)?;
    assert_eq!(out.status.code(), Some(1), "serve started: {stderr}");
    Ok(stderr)
}

/// A key file open to group or others stops the library at start (as ssh
/// refuses such a key), and a missing key beside existing data is an error,
/// never a new key.
#[cfg(unix)]
#[test]
fn serve_refuses_loose_key_files_and_missing_keys() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let zz = binary("zhengzhao");
    anyhow::ensure!(zz.exists(), "{} is not built: run `cargo build --workspace --bins` first", zz.display());
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let d = data.display().to_string();
    let init = Command::new(&zz).args(["init", "--data-dir", &d]).env_remove("ZHENGZHAO_MASTER_KEY").output()?;
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    assert_eq!(mode(&data), 0o700);
    let made = modes(&data)?;
    for key in ["token-key.pem", "log-key.pem", "master.key", "service-issuance.pem", "token-keys.json"] {
        assert!(made.contains(&(key.to_owned(), 0o600)), "{key} in {made:?}");
    }
    assert!(made.iter().all(|(_, m)| *m == 0o600), "{made:?}");
    let library_key = data.join("log-key.pem");
    let master_key = data.join("master.key");

    for (key, loose) in [(&library_key, 0o640), (&library_key, 0o604), (&master_key, 0o644), (&master_key, 0o660)] {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(loose))?;
        let stderr = refused_start(&data)?;
        assert!(
            stderr.contains(&key.display().to_string()) && stderr.contains("group or others"),
            "{loose:o}: {stderr}"
        );
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))?;
    }

    // Existing data (here a database from an earlier start) without its keys.
    std::fs::write(data.join("catalog.db"), b"")?;
    let saved = std::fs::read(&library_key)?;
    std::fs::remove_file(&library_key)?;
    let stderr = refused_start(&data)?;
    assert!(stderr.contains("has no log-key.pem") && stderr.contains("catalog.db"), "{stderr}");
    assert!(!library_key.exists(), "serve made a new log key beside existing data");
    let init_again = Command::new(&zz).args(["init", "--data-dir", &d]).env_remove("ZHENGZHAO_MASTER_KEY").output()?;
    assert!(!init_again.status.success(), "init made a new key beside existing data");
    std::fs::write(&library_key, saved)?;
    std::fs::set_permissions(&library_key, std::fs::Permissions::from_mode(0o600))?;
    std::fs::remove_file(&master_key)?;
    let stderr = refused_start(&data)?;
    assert!(stderr.contains("has no master.key"), "{stderr}");
    assert!(!master_key.exists(), "serve made a new master key beside existing data");
    Ok(())
}
