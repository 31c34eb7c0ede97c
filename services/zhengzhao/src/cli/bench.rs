//! `zhengzhao bench`: a load generator for the read path, usable against any
//! deployment (like `redis-benchmark`): keeps `--concurrency` calls in
//! flight over `--connections` HTTP/2 connections for `--duration`, then
//! prints the rate and latency percentiles. `echo` calls the gRPC health
//! check (no token, no database): the transport's own ceiling, to compare
//! the others with. A verification whose outcome is not "valid" counts as
//! an error (a load of "not found" measures nothing). `fetch` is a real use:
//! every call is written to the usage log, in the holder's view too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use tonic::transport::Channel;
use zhengzhao_auth::BearerToken;
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;

use super::client::ClientArgs;
use super::output::say;

/// Which call to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Call {
    /// `VerifyLicence` of `--identifier`.
    Verify,
    /// `VerifyDocument` of the JWS in `--jws-file`.
    VerifyDocument,
    /// `FetchLicence` of `--identifier` for `--service-item` (a consumer token).
    Fetch,
    /// The gRPC health check (no token): the transport's ceiling.
    Echo,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to call.
    #[arg(value_enum)]
    call: Call,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// HTTP/2 connections the calls share.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    connections: u32,
    /// How long to measure (`10s`, `2m`, or seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Calls before the measurement starts (connections, caches).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// The licence to verify or fetch.
    #[arg(long)]
    identifier: Option<String>,
    /// A file holding the JWS to verify (`verify-document`).
    #[arg(long)]
    jws_file: Option<std::path::PathBuf>,
    /// The service item to fetch for (`fetch`).
    #[arg(long)]
    service_item: Option<String>,
    /// The use cause to fetch with (`fetch`).
    #[arg(long, default_value = "负载测试")]
    use_cause: String,
    /// The case number to fetch with (`fetch`).
    #[arg(long, default_value = "BENCH-0001")]
    case_number: String,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: a number of seconds, or with s, m or ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("{s:?}: the unit is ms, s or m")),
    };
    if d > Duration::from_secs(24 * 3600) {
        return Err("at most a day".into());
    }
    Ok(d)
}

/// One prepared call, cloned into every worker.
#[derive(Clone)]
enum Caller {
    Verify(VerificationServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>, String),
    Document(VerificationServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>, String),
    Fetch(
        ExchangeServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>,
        exchange::FetchLicenceRequest,
    ),
    Echo(tonic_health::pb::health_client::HealthClient<Channel>),
}

impl Caller {
    /// One call; an error is the call's failure (transport or status, or
    /// a verification that is not "valid").
    async fn call(&mut self) -> Result<(), tonic::Status> {
        match self {
            Caller::Verify(c, id) => {
                let r = c
                    .verify_licence(verification::VerifyLicenceRequest {
                        identifier: id.clone(),
                        include_inclusion_proof: false,
                    })
                    .await?;
                valid(r.into_inner().verification)?;
            }
            Caller::Document(c, jws) => {
                let r = c.verify_document(verification::VerifyDocumentRequest { jws: jws.clone() }).await?;
                valid(r.into_inner().verification)?;
            }
            Caller::Fetch(c, r) => {
                c.fetch_licence(r.clone()).await?;
            }
            Caller::Echo(c) => {
                c.check(tonic_health::pb::HealthCheckRequest::default()).await?;
            }
        }
        Ok(())
    }
}

fn valid(v: Option<verification::Verification>) -> Result<(), tonic::Status> {
    let v = v.unwrap_or_default();
    if v.outcome == verification::VerificationOutcome::Valid as i32 {
        return Ok(());
    }
    let name = verification::VerificationOutcome::try_from(v.outcome).map_or("unknown", |o| o.as_str_name());
    Err(tonic::Status::failed_precondition(format!("verified as {name}: {}", v.detail)))
}

/// What one run measured.
#[derive(Debug, serde::Serialize)]
pub struct Measured {
    pub call: String,
    pub concurrency: u32,
    pub connections: u32,
    pub seconds: f64,
    pub calls: u64,
    pub errors: u64,
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The first error's message, if any.
    pub first_error: Option<String>,
}

/// Latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn caller(args: &ClientArgs, a: &BenchArgs, channel: Channel) -> anyhow::Result<Caller> {
    let bearer = || -> anyhow::Result<BearerToken> {
        let token = args.token().filter(|t| !t.trim().is_empty()).context(
            "no token: pass --token or set ZHENGZHAO_TOKEN (a consumer's for verify and fetch; echo needs none)",
        )?;
        BearerToken::new(token.trim()).context("the token is not valid header text")
    };
    Ok(match a.call {
        Call::Echo => Caller::Echo(tonic_health::pb::health_client::HealthClient::new(channel)),
        Call::Verify => {
            let id = a.identifier.clone().context("verify needs --identifier")?;
            Caller::Verify(VerificationServiceClient::with_interceptor(channel, bearer()?), id)
        }
        Call::VerifyDocument => {
            let path = a.jws_file.as_ref().context("verify-document needs --jws-file")?;
            let jws = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Caller::Document(VerificationServiceClient::with_interceptor(channel, bearer()?), jws.trim().to_owned())
        }
        Call::Fetch => {
            let identifier = a.identifier.clone().context("fetch needs --identifier")?;
            let service_item_code = a.service_item.clone().context("fetch needs --service-item")?;
            let r = exchange::FetchLicenceRequest {
                identifier,
                r#use: Some(exchange::UseContext {
                    use_cause: a.use_cause.clone(),
                    service_item_code,
                    case_number: a.case_number.clone(),
                }),
            };
            Caller::Fetch(ExchangeServiceClient::with_interceptor(channel, bearer()?), r)
        }
    })
}

/// Runs the load and measures it.
pub async fn measure(args: &ClientArgs, a: &BenchArgs) -> anyhow::Result<Measured> {
    let ca = zhengzhao_server::tls::trusted_ca(args.ca_file())?;
    let mut channels = Vec::new();
    for _ in 0..a.connections {
        let channel = zhengzhao_server::tls::endpoint(args.server(), ca.as_deref())
            .context("--server")?
            .connect()
            .await
            .with_context(|| format!("cannot reach {}", args.server()))?;
        channels.push(channel);
    }
    let mut callers = Vec::new();
    for ch in &channels {
        callers.push(caller(args, a, ch.clone()).await?);
    }
    // One call first: a refusal (a wrong token, an unknown licence) ends
    // the run with its reason instead of a rate of errors.
    callers[0].clone().call().await.map_err(|s| anyhow::anyhow!("the first call failed: {}", s.message()))?;
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..a.concurrency {
        let mut c = callers[w as usize % callers.len()].clone();
        let (recording, stop) = (recording.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = histogram();
            let (mut errors, mut first_error) = (0u64, None);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = c.call().await;
                if recording.load(Ordering::Relaxed) {
                    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    match r {
                        Ok(()) => latencies.saturating_record(us),
                        Err(s) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{:?}: {}", s.code(), s.message()));
                        }
                    }
                }
            }
            (latencies, errors, first_error)
        }));
    }
    tokio::time::sleep(a.warmup).await;
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(a.duration).await;
    recording.store(false, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    let (mut errors, mut first_error) = (0, None);
    for w in workers {
        let (l, e, f) = w.await?;
        all.add(&l).map_err(|e| anyhow::anyhow!("latencies: {e}"))?;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let calls = all.len();
    Ok(Measured {
        call: format!("{:?}", a.call).to_lowercase(),
        concurrency: a.concurrency,
        connections: a.connections,
        seconds,
        calls,
        errors,
        rate: calls as f64 / seconds,
        p50_ms: ms(all.value_at_quantile(0.50)),
        p99_ms: ms(all.value_at_quantile(0.99)),
        p999_ms: ms(all.value_at_quantile(0.999)),
        max_ms: ms(all.max()),
        first_error,
    })
}

pub async fn run(args: &ClientArgs, a: BenchArgs) -> anyhow::Result<std::process::ExitCode> {
    if a.duration.is_zero() {
        bail!("--duration must be more than 0");
    }
    if a.call == Call::Fetch {
        eprintln!("note: every fetch is a real use, written to the usage log and shown to the holder");
    }
    let m = measure(args, &a).await?;
    if a.json {
        say!("{}", serde_json::to_string(&m)?);
    } else {
        say!(
            "{}: {} calls in {:.1} s, {:.0} calls/s ({} in flight over {} connection{}), latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} errors{}",
            m.call,
            m.calls,
            m.seconds,
            m.rate,
            m.concurrency,
            m.connections,
            if m.connections == 1 { "" } else { "s" },
            m.p50_ms,
            m.p99_ms,
            m.p999_ms,
            m.max_ms,
            m.errors,
            m.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
        );
    }
    Ok(if m.errors == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}
