//! Benchmark (not a test): the read path at the hardware's limit.
//!
//! Starts the all-in-one (`zhengzhao serve`, embedded SQLite) as its own
//! process, issues an ES256 and an SM2 licence, and loads it with the CLI's
//! own load generator (`zhengzhao bench`, a second process), every figure
//! in the same run:
//! - the raw verify rate of each algorithm on every core (the floor is one
//!   signature check per call), and the transport's ceiling (`bench echo`,
//!   the gRPC health check on the same server);
//! - `VerifyLicence` (ES256 and SM2), `VerifyDocument` and `FetchLicence` at
//!   `BENCH_CONCURRENCY` (64) calls in flight, and `VerifyLicence` one call
//!   at a time, each as a ratio to the raw rate, against the issue's goals;
//! - the server's resident memory idle and its peak under the load.
//!
//! When `h2load` (nghttp2, the Debian package `nghttp2-client`) is on the
//! PATH, the same calls are measured with it too — a client in C that
//! leaves more of the shared cores to the server (rate and mean latency;
//! h2load reports no percentiles).
//!
//! Then, when PostgreSQL answers (`DATABASE_URL`, or 127.0.0.1:5432), the
//! same `VerifyLicence` load against the services as separate processes.
//!
//! Build the binaries first: `cargo build --release --bins`, then
//! `cargo bench -p zhengzhao-e2e --bench verify` (`BENCH_SECONDS`, default
//! 10, per measurement; `BENCH_ONLY`, a comma-separated subset of echo,
//! verify, one, document, sm2, fetch, split). `scripts/bench-read` does both.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zhengzhao_auth::Role;
use zhengzhao_e2e::consumers::ITEM;
use zhengzhao_e2e::remote::{Remote, Split};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER};
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_testkit::{ServerProcess, TestDb, binary};

/// The servers log warnings only (the configuration's log filter), and the
/// one load-generating principal is not held to the per-principal rate
/// limit (its default, 1,000 calls per second, is below what is measured).
const QUIET: [(&str, &str); 2] =
    [("ZHENGZHAO_TELEMETRY__LOG_FILTER", "warn"), ("ZHENGZHAO_LIMITS__PRINCIPAL_RATE_PER_SECOND", "0")];

/// "goal >= G: met" or "NOT met", when there is a goal.
fn verdict(ratio: f64, goal: Option<f64>) -> String {
    match goal {
        Some(g) if ratio >= g => format!("goal >= {g}: met"),
        Some(g) => format!("goal >= {g}: NOT met"),
        None => String::new(),
    }
}

/// Whether measurement `name` runs: all of them unless `BENCH_ONLY` lists
/// some (comma-separated: echo, verify, one, document, sm2, fetch, split), e.g. to
/// profile the server under one call.
fn wanted(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|n| n.trim() == name))
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Raw verifications per second of `verify` on `threads` threads for `d`.
fn raw_rate(threads: usize, d: Duration, verify: impl Fn() -> bool + Sync) -> f64 {
    let start = Instant::now();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < d {
                        for _ in 0..16 {
                            assert!(std::hint::black_box(verify()));
                        }
                        n += 16;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// `VmRSS` or `VmHWM` of `pid`, in MB.
fn memory(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[derive(Debug, serde::Deserialize)]
struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    first_error: Option<String>,
}

/// Runs `zhengzhao bench` against `server`.
fn load(server: &str, token: &str, call: &str, concurrency: u32, seconds: u64, extra: &[&str]) -> Measured {
    let out = std::process::Command::new(binary("zhengzhao"))
        .args(["--server", server, "--token", token, "bench", call, "--json"])
        .args(["--concurrency", &concurrency.to_string(), "--duration", &format!("{seconds}s")])
        .args(extra)
        .output()
        .expect("zhengzhao bench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Measured>(text.trim()) {
        Ok(m) => {
            if m.errors > 0 {
                eprintln!("{call}: {} errors, first: {:?}", m.errors, m.first_error);
            }
            m
        }
        Err(e) => panic!("zhengzhao bench {call}: {e}: {text} {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// A gRPC request body: the 5-byte frame header and the message.
fn grpc_body(dir: &Path, name: &str, message: &impl prost::Message) -> anyhow::Result<String> {
    let bytes = message.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(bytes.len())?.to_be_bytes());
    framed.extend_from_slice(&bytes);
    let path = dir.join(name);
    std::fs::write(&path, framed)?;
    Ok(path.display().to_string())
}

/// (rate, mean ms) of `h2load` posting `body` to `method` with `streams` in flight.
fn h2load(server: &str, token: &str, method: &str, body: &str, streams: u32, seconds: u64) -> Option<(f64, f64)> {
    let out = std::process::Command::new("h2load")
        .args(["-D", &seconds.to_string(), "-c", "1", "-t", "1", "-m", &streams.to_string()])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["-H", &format!("authorization: Bearer {token}"), "-d", body])
        .arg(format!("{server}{method}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate =
        text.lines().find(|l| l.starts_with("finished in"))?.split(", ").nth(1)?.split(' ').next()?.parse().ok()?;
    let failed = text
        .lines()
        .find(|l| l.starts_with("requests:"))?
        .split(", ")
        .any(|p| (p.ends_with(" failed") || p.ends_with(" errored")) && !p.starts_with("0 "));
    if failed {
        eprintln!("h2load {method}: failures: {text}");
        return None;
    }
    let mean = text.lines().find(|l| l.trim_start().starts_with("time for request:"))?.split_whitespace().nth(5)?;
    let mean_ms = match mean.strip_suffix("ms") {
        Some(ms) => ms.parse().ok()?,
        None => mean.strip_suffix("us")?.parse::<f64>().ok()? / 1000.0,
    };
    Some((rate, mean_ms))
}

fn line(name: &str, m: Option<&Measured>, raw: f64, goal: Option<f64>) {
    let Some(m) = m else {
        println!("{name:<46} skipped (BENCH_ONLY)");
        return;
    };
    let ratio = m.rate / raw;
    let verdict = verdict(ratio, goal);
    println!(
        "{name:<46} {:>8.0}/s  ratio {ratio:.2}  p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  {verdict}",
        m.rate, m.p50_ms, m.p99_ms, m.p999_ms
    );
}

async fn all_in_one(seconds: u64, concurrency: u32, raw_es: f64, raw_sm2: f64) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let server = ServerProcess::start(
        "zhengzhao",
        &["serve".into(), "--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), data.display().to_string()],
        &QUIET,
    )
    .await?;
    let url = server.url();
    let remote = Remote::new(&data)?;
    let code = remote.publish_example_type(&url).await?;
    let es = remote.issue(&url, &code).await?;
    remote
        .signing(&url, Role::Admin, ADMIN)?
        .rotate_key(signing::RotateKeyRequest {
            issuer_code: ISSUER.into(),
            algorithm: signing::SignatureAlgorithm::Sm2Sm3 as i32,
            reason: "benchmark".into(),
        })
        .await?;
    let sm2 = remote.issue(&url, &code).await?;
    remote
        .exchange(&url, Role::Admin, ADMIN)?
        .create_usage_entry(exchange::CreateUsageEntryRequest {
            agency_code: CONSUMER.into(),
            level: 0,
            type_code: code.clone(),
            service_item_code: ITEM.into(),
            terms: zhengzhao_e2e::consumers::terms(&[]),
        })
        .await?;
    let jws_file = work.path().join("licence.jws");
    std::fs::write(&jws_file, &es.jws)?;
    let jws_path = jws_file.display().to_string();
    let consumer = remote.token(Role::Consumer, CONSUMER)?;
    let pid = server.pid().unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = memory(pid, "VmRSS");

    let s = seconds;
    let c = concurrency;
    let echo = wanted("echo").then(|| load(&url, &consumer, "echo", c, s, &[]));
    let verify = wanted("verify").then(|| load(&url, &consumer, "verify", c, s, &["--identifier", &es.identifier]));
    let one = wanted("one").then(|| load(&url, &consumer, "verify", 1, s, &["--identifier", &es.identifier]));
    let document =
        wanted("document").then(|| load(&url, &consumer, "verify-document", c, s, &["--jws-file", &jws_path]));
    let verify_sm2 = wanted("sm2").then(|| load(&url, &consumer, "verify", c, s, &["--identifier", &sm2.identifier]));
    let fetch = wanted("fetch")
        .then(|| load(&url, &consumer, "fetch", c, s, &["--identifier", &es.identifier, "--service-item", ITEM]));
    let peak = memory(pid, "VmHWM");
    let after = memory(pid, "VmRSS");

    println!("all-in-one on SQLite, {c} calls in flight over one HTTP/2 connection, {s} s each");
    println!("{:<46} {:>8.0}/s", "raw ES256 verify, every core (the floor)", raw_es);
    println!("{:<46} {:>8.0}/s", "raw SM2 verify, every core", raw_sm2);
    line("echo: gRPC health check (transport ceiling)", echo.as_ref(), raw_es, None);
    line("VerifyLicence, ES256", verify.as_ref(), raw_es, Some(0.4));
    line("VerifyLicence, SM2", verify_sm2.as_ref(), raw_sm2, Some(0.4));
    line("VerifyDocument, ES256", document.as_ref(), raw_es, Some(0.5));
    line("FetchLicence (use-list check + usage log)", fetch.as_ref(), raw_es, Some(0.3));
    line("VerifyLicence, one call at a time", one.as_ref(), raw_es, None);
    if let (Some(verify), Some(one)) = (&verify, &one) {
        println!(
            "VerifyLicence p99 at {c} in flight: {:.2} ms (goal < 10: {}); one at a time p50 {:.3} ms (goal < 0.3: {})",
            verify.p99_ms,
            if verify.p99_ms < 10.0 { "met" } else { "NOT met" },
            one.p50_ms,
            if one.p50_ms < 0.3 { "met" } else { "NOT met" }
        );
    }
    println!(
        "resident memory: idle {idle:.1} MB (goal < 50: {}), peak under load {peak:.1} MB (goal < 150: {}), after {after:.1} MB",
        if idle < 50.0 { "met" } else { "NOT met" },
        if peak < 150.0 { "met" } else { "NOT met" }
    );
    if std::process::Command::new("h2load").arg("--version").output().is_ok() {
        let dir = work.path();
        use zhengzhao_proto::verification::v1 as v;
        let verify_es = grpc_body(
            dir,
            "v1",
            &v::VerifyLicenceRequest { identifier: es.identifier.clone(), include_inclusion_proof: false },
        )?;
        let verify_sm2 = grpc_body(
            dir,
            "v2",
            &v::VerifyLicenceRequest { identifier: sm2.identifier.clone(), include_inclusion_proof: false },
        )?;
        let document = grpc_body(dir, "d", &v::VerifyDocumentRequest { jws: es.jws.clone() })?;
        let fetch = grpc_body(
            dir,
            "f",
            &exchange::FetchLicenceRequest {
                identifier: es.identifier.clone(),
                r#use: Some(exchange::UseContext {
                    use_cause: "负载测试".into(),
                    service_item_code: ITEM.into(),
                    case_number: "BENCH-0001".into(),
                }),
            },
        )?;
        let echo = grpc_body(dir, "e", &tonic_health::pb::HealthCheckRequest::default())?;
        let verify = "/zhengzhao.verification.v1.VerificationService/VerifyLicence";
        println!("the same with h2load (1 connection, 1 thread), rate and mean latency:");
        let rows = [
            ("echo", "echo: gRPC health check", "/grpc.health.v1.Health/Check", &echo, c, raw_es, None),
            ("verify", "VerifyLicence, ES256", verify, &verify_es, c, raw_es, Some(0.4)),
            ("sm2", "VerifyLicence, SM2", verify, &verify_sm2, c, raw_sm2, Some(0.4)),
            (
                "document",
                "VerifyDocument, ES256",
                "/zhengzhao.verification.v1.VerificationService/VerifyDocument",
                &document,
                c,
                raw_es,
                Some(0.5),
            ),
            (
                "fetch",
                "FetchLicence",
                "/zhengzhao.exchange.v1.ExchangeService/FetchLicence",
                &fetch,
                c,
                raw_es,
                Some(0.3),
            ),
            ("one", "VerifyLicence, one call at a time", verify, &verify_es, 1, raw_es, None),
        ];
        for (key, name, method, body, streams, raw, goal) in rows {
            if !wanted(key) {
                continue;
            }
            match h2load(&url, &consumer, method, body, streams, s) {
                Some((rate, mean)) => {
                    let ratio = rate / raw;
                    let verdict = verdict(ratio, goal);
                    println!("{name:<46} {rate:>8.0}/s  ratio {ratio:.2}  mean {mean:.2} ms  {verdict}");
                }
                None => println!("{name:<46} h2load gave no figure"),
            }
        }
    } else {
        println!("h2load not found (apt-get install nghttp2-client): its figures skipped");
    }
    server.stop().await;
    Ok(())
}

async fn split(db: &TestDb, seconds: u64, concurrency: u32, raw_es: f64) -> anyhow::Result<()> {
    let split = Split::start(db.url().unwrap_or_default(), &[], &QUIET).await?;
    let code = split.remote.publish_example_type(&split.catalog.url()).await?;
    let licence = split.remote.issue(&split.issuance.url(), &code).await?;
    let consumer = split.remote.token(Role::Consumer, CONSUMER)?;
    let url = split.verification.url();
    let verify = load(&url, &consumer, "verify", concurrency, seconds, &["--identifier", &licence.identifier]);
    println!("services as separate processes on PostgreSQL (verification -> issuance, keys cached from signing):");
    line("VerifyLicence, ES256", Some(&verify), raw_es, None);
    split.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds = env("BENCH_SECONDS", 10);
    let concurrency = u32::try_from(env("BENCH_CONCURRENCY", 64)).unwrap_or(64);
    let exe: PathBuf = binary("zhengzhao");
    if !Path::new(&exe).exists() {
        anyhow::bail!("{} is not built: run `cargo build --release --bins` first", exe.display());
    }
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    // Raw signature checks of a licence-sized JWS on every core.
    let payload = vec![b'x'; 1200];
    let mut raws = Vec::new();
    for alg in [zhengzhao_crypto::Algorithm::Es256, zhengzhao_crypto::Algorithm::Sm2Sm3] {
        let key = zhengzhao_crypto::IssuerKeyPair::generate(alg);
        let header = zhengzhao_crypto::JwsHeader {
            alg: alg.jws_alg().into(),
            kid: Some("k".into()),
            typ: None,
            iat: Some(1_800_000_000),
            x5c: None,
        };
        let input = zhengzhao_crypto::jws::signing_input(&header, &payload);
        let sig = key.sign(input.as_bytes());
        let public = key.public_key();
        raws.push(raw_rate(cores, Duration::from_secs(3), || public.verify(input.as_bytes(), &sig)));
    }
    all_in_one(seconds, concurrency, raws[0], raws[1]).await?;
    if !wanted("split") {
        return Ok(());
    }
    match TestDb::postgres().await {
        Ok(db) => split(&db, seconds, concurrency, raws[0]).await?,
        Err(e) => println!("split services on PostgreSQL: skipped ({e})"),
    }
    Ok(())
}
