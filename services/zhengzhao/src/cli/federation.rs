//! The city and its districts: `zhengzhao sync` (the district-to-city sync
//! job, its status, resuming a stopped district, auditing the city's replica
//! against a district's log) and `zhengzhao gateway members`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use zhengzhao_auth::BearerToken;
use zhengzhao_crypto::merkle::{CompactRange, verify_consistency};
use zhengzhao_crypto::translog::{LogLeaf, verify_checkpoint, verify_cosignature};
use zhengzhao_proto::gateway::v1 as gateway;
use zhengzhao_proto::issuance::v1 as pb;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;

use super::client::{Client, ClientArgs};
use super::output::{answer, print_json_line, say, time_text};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SyncArgs {
    #[command(subcommand)]
    command: Option<SyncCommand>,
    #[command(flatten)]
    run: RunArgs,
}

/// Runs the sync job (the default).
#[derive(Debug, Args)]
struct RunArgs {
    /// The city library's URL (its issuance; and its signing and catalogue
    /// unless --city-signing / --city-catalog say otherwise).
    #[arg(long)]
    city: Option<String>,
    /// The city's signing service, in a split deployment.
    #[arg(long)]
    city_signing: Option<String>,
    /// The city's catalogue service, in a split deployment.
    #[arg(long)]
    city_catalog: Option<String>,
    /// A district to follow, as NAME=URL (repeatable): the name the city
    /// knows it by, which must be the one it serves under (`serve --library`).
    #[arg(long = "district", value_name = "NAME=URL")]
    districts: Vec<String>,
    /// Entries per batch (1 to 5000).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=5000))]
    batch: u32,
    /// Seconds between bringing district keys and the city's catalogue across.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    refresh_seconds: u64,
    /// Longest any one call may take (a partitioned district is noticed
    /// within this).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(8..=600))]
    timeout_seconds: u64,
    /// Address for a Prometheus /metrics endpoint (lag per district).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Per district, as the city (--server) holds it: cursor, lag (events,
    /// seconds), last verified checkpoint, state (ok, or stopped: why); one
    /// JSON line each. Exit 3 when a district is stopped.
    Status {
        /// Only this district.
        #[arg(long)]
        district: Option<String>,
    },
    /// Resume a stopped district's sync on the city (--server), from where it stopped (administrators).
    Resume {
        #[arg(long)]
        district: String,
        /// Forget the district's pinned log key: the next batch pins the key
        /// it comes with (after the district replaced its log key). The
        /// history checks go on from the last checkpoint the city accepted.
        #[arg(long)]
        repin_log_key: bool,
    },
    /// Check the city's (--server) replica of a district against the
    /// district's own log: every entry, rebuilt into leaves in order, must
    /// make a prefix of the district's signed log, and the city's cosigned
    /// checkpoint must match. Exit 0 when it does, 3 when not.
    Audit {
        /// The district, as NAME=URL.
        #[arg(long, value_name = "NAME=URL")]
        district: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Health and staleness of each member library behind the gateway
    /// (--server); one JSON line each.
    Members,
}

fn name_url(s: &str) -> anyhow::Result<(String, String)> {
    let (name, url) = s.split_once('=').with_context(|| format!("{s:?}: expected NAME=URL"))?;
    if name.is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("{s:?}: expected NAME=URL with an http:// or https:// URL");
    }
    Ok((name.to_owned(), url.to_owned()))
}

async fn channel(args: &ClientArgs, url: &str) -> anyhow::Result<tonic::transport::Channel> {
    timed_channel(args, url, Duration::from_secs(60)).await
}

/// A lazy channel whose calls each end within `timeout`, with HTTP/2
/// keepalive so that a silent peer is noticed.
async fn timed_channel(args: &ClientArgs, url: &str, timeout: Duration) -> anyhow::Result<tonic::transport::Channel> {
    let ca = zhengzhao_server::tls::trusted_ca(args.ca_file())?;
    Ok(zhengzhao_server::tls::endpoint(url, ca.as_deref())
        .with_context(|| url.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

pub async fn run(client: &ClientArgs, args: SyncArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        None => run_job(client, args.run).await,
        Some(SyncCommand::Status { district }) => status(client, district).await,
        Some(SyncCommand::Resume { district, repin_log_key }) => {
            let c = Client::connect(client).await?;
            let r = c
                .issuance()
                .resume_replica(pb::ResumeReplicaRequest { library: district, repin_log_key })
                .await?
                .into_inner();
            print_json_line(&replica_view(&r.replica.unwrap_or_default()))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(SyncCommand::Audit { district }) => audit(client, &district).await,
    }
}

async fn run_job(client: &ClientArgs, a: RunArgs) -> anyhow::Result<ExitCode> {
    let Some(city) = a.city else { bail!("--city URL is required to run the sync job") };
    if a.districts.is_empty() {
        bail!("name at least one --district NAME=URL");
    }
    let Some(token) = client.token() else {
        bail!("no token: pass --token (a sync token: zhengzhao token --role sync)")
    };
    let token = BearerToken::new(token.trim()).context("the token is not valid header text")?;
    let _telemetry = zhengzhao_telemetry::init(&zhengzhao_telemetry::Settings {
        service: "zhengzhao-sync".into(),
        log_format: "text".into(),
        log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        otlp_endpoint: None,
    })?;
    let mut districts = Vec::new();
    for d in &a.districts {
        let (name, url) = name_url(d)?;
        if districts.iter().any(|x: &zhengzhao_sync::District| x.name == name) {
            bail!("district {name} is named twice");
        }
        let channel = timed_channel(client, &url, Duration::from_secs(a.timeout_seconds)).await?;
        districts.push(zhengzhao_sync::District { channel, name, url });
    }
    let job = zhengzhao_sync::SyncJob {
        city: timed_channel(client, &city, Duration::from_secs(a.timeout_seconds)).await?,
        city_signing: match &a.city_signing {
            Some(u) => Some(channel(client, u).await?),
            None => None,
        },
        city_catalog: match &a.city_catalog {
            Some(u) => Some(channel(client, u).await?),
            None => None,
        },
        districts,
        token,
        batch: a.batch,
        refresh: Duration::from_secs(a.refresh_seconds),
    };
    if let Some(addr) = a.metrics_listen {
        tokio::spawn(async move {
            if let Err(e) = zhengzhao_telemetry::serve_metrics(addr, std::future::pending()).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    tracing::info!(city = %city, districts = a.districts.len(), "sync running");
    eprintln!("sync running: {} district(s) into {city}", a.districts.len());
    job.run(zhengzhao_server::shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ReplicaView {
    district: String,
    state: String,
    cursor: u64,
    lag_events: u64,
    lag_seconds: f64,
    events_applied: u64,
    verified_tree_size: u64,
    checkpoint_tree_size: u64,
    checkpoint_root: String,
    checkpoint_time: String,
    cosignature: String,
    updated_at: String,
}

fn replica_view(r: &pb::Replica) -> ReplicaView {
    let cp = r.checkpoint.clone().unwrap_or_default();
    ReplicaView {
        district: r.library.clone(),
        state: if r.state == pb::ReplicaState::Stopped as i32 { format!("stopped: {}", r.reason) } else { "ok".into() },
        cursor: r.cursor,
        lag_events: r.lag_events,
        lag_seconds: r.lag_seconds,
        events_applied: r.events_applied,
        verified_tree_size: r.tree_size,
        checkpoint_tree_size: cp.tree_size,
        checkpoint_root: hex::encode(&cp.root_hash),
        checkpoint_time: time_text(&cp.timestamp),
        cosignature: r.cosignature.clone(),
        updated_at: time_text(&r.updated_at),
    }
}

async fn status(client: &ClientArgs, district: Option<String>) -> anyhow::Result<ExitCode> {
    let c = Client::connect(client).await?;
    let r = c
        .issuance()
        .list_replicas(pb::ListReplicasRequest { library: district.clone().unwrap_or_default() })
        .await?
        .into_inner();
    if let Some(d) = &district
        && r.replicas.is_empty()
    {
        bail!("the city holds no replica of {d} (its sync has not applied a batch yet)");
    }
    let mut all_ok = true;
    for replica in &r.replicas {
        all_ok &= replica.state != pb::ReplicaState::Stopped as i32;
        print_json_line(&replica_view(replica))?;
    }
    Ok(answer(all_ok))
}

async fn audit(client: &ClientArgs, district: &str) -> anyhow::Result<ExitCode> {
    let (name, url) = name_url(district)?;
    let city = Client::connect(client).await?;
    let token = BearerToken::new(client.token().unwrap_or_default().trim()).context("token")?;
    let mut remote = IssuanceServiceClient::with_interceptor(channel(client, &url).await?, token)
        .max_decoding_message_size(256 * 1024 * 1024);
    let mut issuance = city.issuance().max_decoding_message_size(256 * 1024 * 1024);
    let listed = issuance.list_replicas(pb::ListReplicasRequest { library: name.clone() }).await?.into_inner();
    let Some(replica) = listed.replicas.first().cloned() else {
        bail!("the city holds no replica of {name}");
    };
    let city_key: serde_json::Value = serde_json::from_str(&listed.library_jwk_json).context("the city's log key")?;
    let city_key = zhengzhao_crypto::Es256PublicKey::from_jwk(&city_key).context("the city's log key")?;
    // Rebuild the district's log from the city's copy, in the district's order.
    let mut range = CompactRange::default();
    let mut roots = std::collections::BTreeMap::new();
    let mut after = 0u64;
    let mut jws_of = std::collections::HashMap::new();
    let mut problems = Vec::new();
    let witnessed = replica.checkpoint.as_ref().map_or(0, |c| c.tree_size);
    // The entries up to the cursor listed (sync may go on meanwhile).
    'pages: loop {
        let page = issuance
            .read_replica_feed(pb::ReadReplicaFeedRequest {
                after_sequence: after,
                limit: 5000,
                wait_seconds: 0,
                library: name.clone(),
                max_bytes: 0,
            })
            .await?
            .into_inner();
        if page.events.is_empty() {
            break;
        }
        for l in page.licences {
            jws_of.insert(l.identifier, l.jws);
        }
        for e in page.events {
            let event = e.event.context("an entry without its event")?;
            if event.sequence > replica.cursor {
                break 'pages;
            }
            if event.sequence <= after {
                problems.push(format!("entry {} follows {after}: out of order or twice", event.sequence));
            }
            after = event.sequence;
            if e.log_index != range.size() {
                problems.push(format!(
                    "entry {} has log index {}, expected {}",
                    event.sequence,
                    e.log_index,
                    range.size()
                ));
            }
            let record = zhengzhao_core::EventRecord::try_from(event)?;
            let jws = jws_of.get(&record.identifier).with_context(|| format!("no licence {}", record.identifier))?;
            range.push(LogLeaf::of(&record, e.log_index, jws).hash());
            if range.size() == witnessed {
                roots.insert(witnessed, range.root());
            }
        }
    }
    let n = range.size();
    if n != replica.tree_size || after != replica.cursor {
        problems.push(format!(
            "the city holds {n} entries up to sequence {after} but says it verified {} up to {}",
            replica.tree_size, replica.cursor
        ));
    }
    // The district's log, now, under the key the city pinned: our rebuilt
    // prefix must be consistent with it.
    let cp = remote.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner();
    let pinned: serde_json::Value = serde_json::from_str(&replica.library_jwk_json).context("the pinned log key")?;
    let key = zhengzhao_crypto::Es256PublicKey::from_jwk(&pinned).context("the pinned log key")?;
    let presented = serde_json::from_str(&cp.library_jwk_json)
        .ok()
        .and_then(|k: serde_json::Value| zhengzhao_crypto::Es256PublicKey::from_jwk(&k).ok());
    if presented.as_ref() != Some(&key) {
        problems.push("the district presents another log key than the one the city pinned".into());
    }
    let checkpoint = verify_checkpoint(&cp.checkpoint.context("no checkpoint")?.jws, &key)
        .map_err(|e| anyhow::anyhow!("the district's checkpoint: {e}"))?;
    if checkpoint.tree_size < n {
        problems.push(format!("the city holds {n} entries but the district's log has {}", checkpoint.tree_size));
    } else if n > 0 {
        let ok = if checkpoint.tree_size == n {
            checkpoint.root_hash == range.root()
        } else {
            let proof = remote
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    first_tree_size: n,
                    second_tree_size: checkpoint.tree_size,
                })
                .await?
                .into_inner()
                .hashes
                .into_iter()
                .map(|h| <[u8; 32]>::try_from(h).map_err(|_| anyhow::anyhow!("a proof hash is not 32 bytes")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            verify_consistency(n, checkpoint.tree_size, &range.root(), &checkpoint.root_hash, &proof)
        };
        if !ok {
            problems.push(format!("the city's {n} entries do not rebuild a prefix of the district's log"));
        }
    }
    // The city's witness: its cosignature of the checkpoint it verified.
    if let Some(w) = &replica.checkpoint {
        match verify_cosignature(&replica.cosignature, &city_key) {
            Ok(c) if c.tree_size == w.tree_size && c.root_hash == zhengzhao_crypto::b64url(&w.root_hash) => {}
            Ok(_) => problems.push("the city's cosignature is not of the checkpoint it reports".into()),
            Err(e) => problems.push(format!("the city's cosignature: {e}")),
        }
        if w.tree_size <= n && roots.get(&w.tree_size).is_some_and(|r| r.as_slice() != w.root_hash.as_slice()) {
            problems.push(format!(
                "the checkpoint the city cosigned (size {}) is not what its entries rebuild",
                w.tree_size
            ));
        }
    }
    if problems.is_empty() {
        say!(
            "ok: the city's {n} entries of {name} rebuild a prefix of its log ({} leaves), in order, each once; the city cosigned size {witnessed}",
            checkpoint.tree_size
        );
        Ok(answer(true))
    } else {
        for p in &problems {
            say!("not ok: {p}");
        }
        Ok(answer(false))
    }
}

pub async fn gateway(client: &ClientArgs, cmd: GatewayCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        GatewayCommand::Members => {
            let c = Client::connect(client).await?;
            let r = c.gateway().list_libraries(gateway::ListLibrariesRequest {}).await?.into_inner();
            let mut all = true;
            for l in r.libraries {
                all &= l.serving;
                print_json_line(&serde_json::json!({
                    "name": l.name,
                    "role": l.role,
                    "address": l.address,
                    "serving": l.serving,
                    "area_codes": l.area_codes,
                    "issuers": l.issuers,
                    "sync_state": l.sync_state,
                    "lag_events": l.lag_events,
                    "lag_seconds": l.lag_seconds,
                    "cursor": l.cursor,
                }))?;
            }
            Ok(answer(all))
        }
    }
}
