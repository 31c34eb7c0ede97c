//! District-to-city sync: one task per district reads the district's feed
//! for replication from the city's cursor, fetches the district's signed
//! checkpoint and the consistency proofs the city needs, and has the city
//! apply the batch (the city checks it against the district's log and moves
//! its cursor in the same transaction, so a batch re-sent after a crash
//! changes nothing). Before entries, the district's published issuer keys
//! are recorded on the city, so the city verifies what it replicates. A
//! district whose history the city rejects stays stopped (metric, log and
//! status) until an administrator resumes it; the others go on. A further
//! task brings each district's catalogue in line with the city's.
//!
//! The job keeps no state of its own: the cursor and the verified tree live
//! in the city, so the job can be killed at any point and restarted.

#![forbid(unsafe_code)]

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec};
use tonic::Request;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::BearerToken;
use zhengzhao_proto::catalog::v1 as catalog_pb;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::issuance::v1 as pb;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::signing::v1 as signing_pb;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;

type Authed = InterceptedService<zhengzhao_telemetry::trace::Traced<Channel>, BearerToken>;

/// One district the job follows.
#[derive(Debug, Clone)]
pub struct District {
    pub name: String,
    pub url: String,
    pub channel: Channel,
}

/// What the job needs.
#[derive(Clone)]
pub struct SyncJob {
    /// The city's issuance (and, unless `city_signing`/`city_catalog` say
    /// otherwise, its signing and catalogue).
    pub city: Channel,
    pub city_signing: Option<Channel>,
    pub city_catalog: Option<Channel>,
    pub districts: Vec<District>,
    pub token: BearerToken,
    /// Entries per batch (at most 5000).
    pub batch: u32,
    /// How often keys and the catalogue are brought across.
    pub refresh: Duration,
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncJob").field("districts", &self.districts).field("batch", &self.batch).finish()
    }
}

/// Where the city's replica of a district stands, as the job tracks it
/// between batches.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    /// The last district sequence applied (or about to be).
    cursor: u64,
    /// Leaves of the district's log rebuilt so far.
    tree_size: u64,
    /// Size of the last district checkpoint sent.
    checkpoint_size: u64,
    /// Whether the last read reached the district's head (the next one waits).
    caught_up: bool,
    /// Whether the city holds a replica of the district (or one is on its way).
    started: bool,
}

struct SyncMetrics {
    lag_events: IntGaugeVec,
    lag_seconds: GaugeVec,
    stopped: IntGaugeVec,
    applied: IntCounterVec,
    cursor: IntGaugeVec,
    keys_refused: IntGaugeVec,
}

static METRICS: LazyLock<SyncMetrics> = LazyLock::new(|| {
    let registry = &zhengzhao_telemetry::METRICS.registry;
    let lag_events = IntGaugeVec::new(
        prometheus::Opts::new("zhengzhao_sync_lag_events", "District feed entries not yet applied to the city"),
        &["district"],
    )
    .expect("static metric definition");
    let lag_seconds = GaugeVec::new(
        prometheus::Opts::new(
            "zhengzhao_sync_lag_seconds",
            "Seconds since the oldest district entry not yet applied was recorded",
        ),
        &["district"],
    )
    .expect("static metric definition");
    let stopped = IntGaugeVec::new(
        prometheus::Opts::new(
            "zhengzhao_sync_stopped",
            "1 when the city rejected the district's history and its sync is stopped",
        ),
        &["district"],
    )
    .expect("static metric definition");
    let applied = IntCounterVec::new(
        prometheus::Opts::new(
            "zhengzhao_sync_events_applied_total",
            "District entries applied to the city by this job",
        ),
        &["district"],
    )
    .expect("static metric definition");
    let cursor = IntGaugeVec::new(
        prometheus::Opts::new("zhengzhao_sync_cursor", "The city's cursor in the district's feed"),
        &["district"],
    )
    .expect("static metric definition");
    let keys_refused = IntGaugeVec::new(
        prometheus::Opts::new(
            "zhengzhao_sync_keys_refused",
            "1 when the city refused the district's issuer keys at the last attempt (its licences then do not verify on the city)",
        ),
        &["district"],
    )
    .expect("static metric definition");
    for m in [
        Box::new(lag_events.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(keys_refused.clone()),
        Box::new(lag_seconds.clone()),
        Box::new(stopped.clone()),
        Box::new(applied.clone()),
        Box::new(cursor.clone()),
    ] {
        let _ = registry.register(m);
    }
    SyncMetrics { lag_events, lag_seconds, stopped, applied, cursor, keys_refused }
});

impl SyncJob {
    fn issuance(&self, channel: &Channel) -> IssuanceServiceClient<Authed> {
        IssuanceServiceClient::with_interceptor(
            zhengzhao_telemetry::trace::Traced::new(channel.clone()),
            self.token.clone(),
        )
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024)
    }

    fn signing(&self, channel: &Channel) -> SigningServiceClient<Authed> {
        SigningServiceClient::with_interceptor(
            zhengzhao_telemetry::trace::Traced::new(channel.clone()),
            self.token.clone(),
        )
    }

    fn catalog(&self, channel: &Channel) -> CatalogServiceClient<Authed> {
        CatalogServiceClient::with_interceptor(
            zhengzhao_telemetry::trace::Traced::new(channel.clone()),
            self.token.clone(),
        )
        .max_decoding_message_size(64 * 1024 * 1024)
    }

    /// Runs until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = tokio::task::JoinSet::new();
        for d in self.districts.clone() {
            let job = self.clone();
            tasks.spawn(async move { job.follow(d).await });
        }
        let job = self.clone();
        tasks.spawn(async move { job.follow_catalogue().await });
        tokio::select! {
            () = shutdown => tracing::info!("sync stopping"),
            _ = async { while tasks.join_next().await.is_some() {} } => {}
        }
        tasks.abort_all();
    }

    /// The city's view of one district, or none before its first batch.
    async fn replica(&self, name: &str) -> Result<Option<pb::Replica>, tonic::Status> {
        let r = self.issuance(&self.city).list_replicas(pb::ListReplicasRequest { library: name.to_owned() }).await?;
        Ok(r.into_inner().replicas.into_iter().next())
    }

    /// Follows one district until the job ends.
    async fn follow(&self, d: District) {
        let mut backoff = Duration::from_millis(200);
        let mut keys_at: Option<tokio::time::Instant> = None;
        let mut reported_stop = String::new();
        loop {
            match self.run_district(&d, &mut keys_at, &mut reported_stop).await {
                // Stopped: look again later (an administrator may resume it).
                Ok(()) => tokio::time::sleep(Duration::from_secs(2)).await,
                Err(e) => {
                    tracing::warn!(district = %d.name, error = %format!("{e:#}"), "sync interrupted; resuming from the city's cursor");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            backoff = Duration::from_millis(200);
        }
    }

    /// Runs one district from the city's cursor until its sync stops
    /// (`Ok`) or a call fails (`Err`: the caller resumes from the cursor).
    /// The next batch is read from the district while the city applies the
    /// last one; a batch the city refuses discards the one read ahead.
    async fn run_district(
        &self,
        d: &District,
        keys_at: &mut Option<tokio::time::Instant>,
        reported_stop: &mut String,
    ) -> anyhow::Result<()> {
        let m = &*METRICS;
        let replica = self.replica(&d.name).await?;
        let mut pos = Position::default();
        if let Some(r) = &replica {
            self.observe(&d.name, r);
            if r.state == pb::ReplicaState::Stopped as i32 {
                m.stopped.with_label_values(&[&d.name]).set(1);
                if *reported_stop != r.reason {
                    tracing::error!(district = %d.name, reason = %r.reason, "district sync is stopped: its history was rejected; an administrator resumes it with `zhengzhao sync resume`");
                    reported_stop.clone_from(&r.reason);
                }
                return Ok(());
            }
            pos = Position {
                cursor: r.cursor,
                tree_size: r.tree_size,
                checkpoint_size: r.checkpoint.as_ref().map_or(0, |c| c.tree_size),
                caught_up: r.lag_events == 0,
                started: true,
            };
        }
        m.stopped.with_label_values(&[&d.name]).set(0);
        reported_stop.clear();
        let mut next = self.prepare(d, pos).await?;
        loop {
            if keys_at.is_none_or(|t| t.elapsed() >= self.refresh) {
                // Keys refused or unreachable do not hold up the entries
                // (the log checks do not depend on them); the failure is
                // logged and shown, and tried again after `refresh`.
                match self.bring_keys(d).await {
                    Ok(()) => m.keys_refused.with_label_values(&[&d.name]).set(0),
                    Err(e) => {
                        m.keys_refused.with_label_values(&[&d.name]).set(1);
                        tracing::error!(district = %d.name, error = %format!("{e:#}"), "the district's issuer keys were not recorded on the city: its licences will not verify there until they are");
                    }
                }
                *keys_at = Some(tokio::time::Instant::now());
            }
            let (request, after) = next;
            let n = request.as_ref().map_or(0, |r| r.events.len() as u64);
            let apply = async {
                match request {
                    Some(r) => {
                        self.issuance(&self.city).apply_replica(Request::new(r)).await.map(|r| r.into_inner().replica)
                    }
                    None => Ok(None),
                }
            };
            let (applied, prepared) = tokio::join!(apply, self.prepare(d, after));
            match applied {
                Ok(r) => {
                    if let Some(r) = r {
                        self.observe(&d.name, &r);
                    }
                    if n > 0 {
                        m.applied.with_label_values(&[&d.name]).inc_by(n);
                        tracing::debug!(district = %d.name, events = n, "applied");
                    }
                }
                // Stopped, or the cursor moved (another job): start over from the city's view.
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    anyhow::bail!("the city did not apply the batch: {}", s.message());
                }
                Err(s) => return Err(s.into()),
            }
            next = prepared?;
        }
    }

    fn observe(&self, name: &str, r: &pb::Replica) {
        let m = &*METRICS;
        m.cursor.with_label_values(&[name]).set(i64::try_from(r.cursor).unwrap_or(i64::MAX));
        m.lag_events.with_label_values(&[name]).set(i64::try_from(r.lag_events).unwrap_or(i64::MAX));
        m.lag_seconds.with_label_values(&[name]).set(r.lag_seconds);
    }

    /// Reads the batch after `pos` with the district's checkpoint and the
    /// consistency proofs the city needs. With nothing new, a report of how
    /// far the district has gone (or, on first contact with a district whose
    /// feed is empty, its empty checkpoint, so the city pins its log key).
    async fn prepare(
        &self,
        d: &District,
        pos: Position,
    ) -> anyhow::Result<(Option<pb::ApplyReplicaRequest>, Position)> {
        let mut district = self.issuance(&d.channel);
        let batch = district
            .read_replica_feed(pb::ReadReplicaFeedRequest {
                after_sequence: pos.cursor,
                limit: self.batch,
                wait_seconds: if pos.caught_up { 5 } else { 0 },
                library: String::new(),
                max_bytes: 0,
            })
            .await?
            .into_inner();
        let n = batch.events.len() as u64;
        let last = batch.events.last().and_then(|e| e.event.as_ref()).map_or(pos.cursor, |e| e.sequence);
        let mut request = pb::ApplyReplicaRequest {
            library: d.name.clone(),
            remote_library: batch.library.clone(),
            after_sequence: pos.cursor,
            head_sequence: batch.head_sequence,
            next_recorded_at: batch.next_recorded_at,
            ..Default::default()
        };
        // Nothing read (or nothing readable) counts as caught up: the next
        // read long-polls instead of asking again at once.
        let mut after = Position {
            cursor: last,
            tree_size: pos.tree_size + n,
            caught_up: n == 0 || last >= batch.head_sequence,
            ..pos
        };
        after.started = true;
        if n == 0 && pos.started {
            // A report of how far the district has gone.
            return Ok((Some(request), after));
        }
        // Entries, or a first contact with a district whose feed is empty
        // (the city pins its log key and shows it in the status at once).
        let checkpoint = district.get_checkpoint(pb::GetCheckpointRequest {}).await?.into_inner();
        let cp = checkpoint.checkpoint.ok_or_else(|| anyhow::anyhow!("the district sent no checkpoint"))?;
        request.library_jwk_json = checkpoint.library_jwk_json;
        request.last_checkpoint_size = pos.checkpoint_size;
        if after.tree_size > 0 && after.tree_size < cp.tree_size {
            request.proof_from_batch = district
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    first_tree_size: after.tree_size,
                    second_tree_size: cp.tree_size,
                })
                .await?
                .into_inner()
                .hashes;
        }
        if pos.checkpoint_size > 0 && pos.checkpoint_size < cp.tree_size {
            request.proof_from_last = district
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    first_tree_size: pos.checkpoint_size,
                    second_tree_size: cp.tree_size,
                })
                .await?
                .into_inner()
                .hashes;
        }
        after.checkpoint_size = after.checkpoint_size.max(cp.tree_size);
        request.events = batch.events;
        request.licences = batch.licences;
        request.checkpoint = Some(cp);
        Ok((Some(request), after))
    }

    /// Records the district's published issuer keys on the city.
    async fn bring_keys(&self, d: &District) -> anyhow::Result<()> {
        let keys = self
            .signing(&d.channel)
            .list_public_keys(signing_pb::ListPublicKeysRequest { issuer_code: String::new() })
            .await?
            .into_inner()
            .keys;
        if keys.is_empty() {
            return Ok(());
        }
        let city = self.city_signing.as_ref().unwrap_or(&self.city);
        let changed = self
            .signing(city)
            .import_public_keys(signing_pb::ImportPublicKeysRequest { library: d.name.clone(), keys })
            .await?
            .into_inner()
            .changed;
        if changed > 0 {
            tracing::info!(district = %d.name, changed, "district issuer keys recorded on the city");
        }
        Ok(())
    }

    /// Brings every district's catalogue in line with the city's, every `refresh`.
    async fn follow_catalogue(&self) {
        let city = self.city_catalog.as_ref().unwrap_or(&self.city);
        loop {
            match self.catalog(city).export_catalog(catalog_pb::ExportCatalogRequest {}).await {
                Ok(doc) => {
                    let doc = doc.into_inner().catalog_json;
                    for d in &self.districts {
                        let imported = self
                            .catalog(&d.channel)
                            .import_catalog(catalog_pb::ImportCatalogRequest { catalog_json: doc.clone() })
                            .await;
                        match imported {
                            Ok(r) => {
                                let r = r.into_inner();
                                if r.created + r.updated > 0 {
                                    tracing::info!(district = %d.name, created = r.created, updated = r.updated, "district catalogue follows the city's");
                                }
                            }
                            Err(e) => {
                                tracing::warn!(district = %d.name, error = %e.message(), "district catalogue not brought in line")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e.message(), "cannot read the city's catalogue"),
            }
            tokio::time::sleep(self.refresh).await;
        }
    }
}
