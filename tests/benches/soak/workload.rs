//! The soak's workload: the mix of calls, each recorded, and what was accepted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use zhengzhao_auth::BearerToken;
use zhengzhao_crypto::Es256KeyPair;
use zhengzhao_crypto::sdjwt::Presentation;
use zhengzhao_e2e::Authed;
use zhengzhao_e2e::consumers::use_ctx;
use zhengzhao_e2e::fixtures::draft;
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::exchange::v1::holder_service_client::HolderServiceClient;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;

use crate::HOLDER;

pub fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy())
}

pub fn bearer(token: &str) -> BearerToken {
    BearerToken::new(token).expect("tokens are header text")
}

/// Everything the workers call, and the tokens they call with.
pub struct Clients {
    pub city_issuer: IssuanceServiceClient<Authed>,
    pub district_issuer: IssuanceServiceClient<Authed>,
    pub verifier: VerificationServiceClient<Authed>,
    pub consumer: ExchangeServiceClient<Authed>,
    pub portal: HolderServiceClient<Authed>,
    pub counter: HolderServiceClient<Authed>,
    pub exchange_url: String,
}

/// What the workload has done, and what it must find afterwards.
#[derive(Default)]
pub struct Ledger {
    /// Licences issued in the city and not changed since (verified, fetched, presented).
    pub stable: Vec<String>,
    /// Licences issued in the city for changing; each is taken while a change runs.
    pub changeable: Vec<String>,
    /// Every identifier the city accepted (issues and changes).
    pub city_accepted: Vec<String>,
    /// Every source key an import accepted.
    pub imported: Vec<String>,
    /// Every identifier the district accepted.
    pub district_accepted: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Issue,
    Change,
    Verify,
    Fetch,
    Present,
    Import,
    DistrictIssue,
}

/// The mix, per 20 operations.
pub const MIX: [(Op, usize); 7] = [
    (Op::Issue, 3),
    (Op::Change, 2),
    (Op::Verify, 6),
    (Op::Fetch, 3),
    (Op::Present, 2),
    (Op::Import, 1),
    (Op::DistrictIssue, 3),
];

pub struct Sample {
    pub at: Duration,
    pub latency: Duration,
    pub ok: bool,
    pub retries: u32,
}

pub struct Shared {
    pub clients: Clients,
    pub ledger: Mutex<Ledger>,
    pub type_code: String,
    pub scenario: u64,
    pub front_end_key: Es256KeyPair,
    pub counter: AtomicU64,
    /// Retry failed calls (the crash phase) or count them as errors.
    pub retry: bool,
    pub samples: Mutex<Vec<(Op, Sample)>>,
    pub errors: Mutex<Vec<String>>,
}

fn transient(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Internal | Code::Aborted
    )
}

impl Shared {
    /// Calls `f` until it succeeds (when retrying, for up to two minutes
    /// of transient failures); the result and how many retries it took.
    async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> (Result<T, String>, u32)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut retries = 0;
        loop {
            match f().await {
                Ok(v) => return (Ok(v), retries),
                Err(s) if self.retry && transient(&s) && Instant::now() < deadline => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(s) => return (Err(format!("{what}: {:?} {}", s.code(), s.message())), retries),
            }
        }
    }

    fn take_stable(&self, n: u64) -> Option<String> {
        let l = self.ledger.lock().expect("ledger");
        (!l.stable.is_empty()).then(|| l.stable[n as usize % l.stable.len()].clone())
    }

    async fn run(&self, op: Op, start: Instant) {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let t = Instant::now();
        let (result, retries) = match op {
            Op::Issue => self.issue(n).await,
            Op::Change => self.change(n).await,
            Op::Verify => self.verify(n).await,
            Op::Fetch => self.fetch(n).await,
            Op::Present => self.present(n).await,
            Op::Import => self.import(n).await,
            Op::DistrictIssue => self.district_issue(n).await,
        };
        let sample = Sample { at: t - start, latency: t.elapsed(), ok: result.is_ok(), retries };
        if let Err(e) = result {
            self.errors.lock().expect("errors").push(format!("{op:?}: {e}"));
        }
        self.samples.lock().expect("samples").push((op, sample));
    }

    async fn issue(&self, n: u64) -> (Result<(), String>, u32) {
        let mut d = draft(&self.type_code);
        d.serial = format!("SOAK{n:08}");
        let req = issuance::IssueLicenceRequest { draft: Some(d), idempotency_key: format!("soak-issue-{n}") };
        let (r, retries) = self
            .call("IssueLicence", || {
                let mut c = self.clients.city_issuer.clone();
                let req = req.clone();
                async move { c.issue_licence(req).await }
            })
            .await;
        let r = r.map(|r| r.into_inner().licence.unwrap_or_default().identifier);
        if let Ok(id) = &r {
            let mut l = self.ledger.lock().expect("ledger");
            l.city_accepted.push(id.clone());
            if n.is_multiple_of(2) { l.stable.push(id.clone()) } else { l.changeable.push(id.clone()) }
        }
        (r.map(|_| ()), retries)
    }

    async fn change(&self, n: u64) -> (Result<(), String>, u32) {
        let Some(id) = self.ledger.lock().expect("ledger").changeable.pop() else { return self.issue(n).await };
        let mut d = draft(&self.type_code);
        d.face_fields.insert("business_scope".into(), format!("预包装食品销售（第{n}次变更）"));
        let req = issuance::ChangeLicenceRequest {
            identifier: id.clone(),
            draft: Some(d),
            reason: "经营范围变更".into(),
            occurred_at: None,
            idempotency_key: format!("soak-change-{n}"),
        };
        let (r, retries) = self
            .call("ChangeLicence", || {
                let mut c = self.clients.city_issuer.clone();
                let req = req.clone();
                async move { c.change_licence(req).await }
            })
            .await;
        let mut l = self.ledger.lock().expect("ledger");
        match r {
            Ok(r) => {
                let new = r.into_inner().licence.unwrap_or_default().identifier;
                l.city_accepted.push(new.clone());
                l.changeable.push(new);
                (Ok(()), retries)
            }
            Err(e) => {
                l.changeable.push(id);
                (Err(e), retries)
            }
        }
    }

    async fn verify(&self, n: u64) -> (Result<(), String>, u32) {
        let Some(id) = self.take_stable(n) else { return self.issue(n).await };
        let (r, retries) = self
            .call("VerifyLicence", || {
                let mut c = self.clients.verifier.clone();
                let id = id.clone();
                async move {
                    c.verify_licence(verification::VerifyLicenceRequest {
                        identifier: id,
                        include_inclusion_proof: false,
                    })
                    .await
                }
            })
            .await;
        let r = r.and_then(|r| {
            let v = r.into_inner().verification.unwrap_or_default();
            if v.outcome() == verification::VerificationOutcome::Valid {
                Ok(())
            } else {
                Err(format!("{id} verified {:?}: {}", v.outcome(), v.detail))
            }
        });
        (r, retries)
    }

    async fn fetch(&self, n: u64) -> (Result<(), String>, u32) {
        let Some(id) = self.take_stable(n) else { return self.issue(n).await };
        let (r, retries) = self
            .call("FetchLicence", || {
                let mut c = self.clients.consumer.clone();
                let id = id.clone();
                async move {
                    c.fetch_licence(exchange::FetchLicenceRequest {
                        identifier: id, r#use: use_ctx("核验经营资质")
                    })
                    .await
                }
            })
            .await;
        (r.map(|_| ()), retries)
    }

    async fn present(&self, n: u64) -> (Result<(), String>, u32) {
        let Some(id) = self.take_stable(n) else { return self.issue(n).await };
        let (r, retries) = self
            .call("present", || {
                let mut portal = self.clients.portal.clone();
                let mut counter = self.clients.counter.clone();
                let exchange_url = self.clients.exchange_url.clone();
                let id = id.clone();
                let scenario = self.scenario;
                async move {
                    let token = portal
                        .holder_login(exchange::HolderLoginRequest {
                            holder_id_type: "001".into(),
                            holder_id_number: HOLDER.into(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .token;
                    let ch = channel(&exchange_url).map_err(|e| tonic::Status::internal(e.to_string()))?;
                    let mut holder = HolderServiceClient::with_interceptor(ch, bearer(&token));
                    let p = holder
                        .present_licence(exchange::PresentLicenceRequest { identifier: id, scenario_id: scenario })
                        .await?
                        .into_inner();
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    let text = Presentation::parse(&p.sd_jwt)
                        .map_err(|e| tonic::Status::internal(e.to_string()))?
                        .bind(&self.front_end_key, &p.audience, &p.nonce, now)
                        .serialize();
                    let v = counter
                        .verify_presentation(exchange::VerifyPresentationRequest { presentation: text })
                        .await?
                        .into_inner();
                    if v.valid {
                        Ok(())
                    } else {
                        Err(tonic::Status::failed_precondition(format!("presentation refused: {}", v.reason)))
                    }
                }
            })
            .await;
        (r, retries)
    }

    async fn import(&self, n: u64) -> (Result<(), String>, u32) {
        let rows: Vec<_> = (0..3u64)
            .map(|k| {
                let mut d = draft(&self.type_code);
                d.serial = format!("SOAKIMP{n:07}{k}");
                d.issue_date = "2024-03-01".into();
                d.valid_from = "2024-03-01".into();
                issuance::ImportRow {
                    row_number: k + 1,
                    source_key: format!("soak-{n}-{k}"),
                    identifier: String::new(),
                    draft: Some(d),
                }
            })
            .collect();
        let keys: Vec<String> = rows.iter().map(|r| r.source_key.clone()).collect();
        let (r, retries) = self
            .call("ImportLicences", || {
                let mut c = self.clients.city_issuer.clone();
                let req = issuance::ImportLicencesRequest { rows: rows.clone(), allow_legacy: false };
                async move { c.import_licences(tokio_stream::iter(vec![req])).await }
            })
            .await;
        let r = r.and_then(|r| {
            let r = r.into_inner();
            if r.errors.is_empty() && r.imported + r.already_present == 3 {
                Ok(())
            } else {
                Err(format!("import: {} imported, {:?}", r.imported, r.errors.first()))
            }
        });
        if r.is_ok() {
            self.ledger.lock().expect("ledger").imported.extend(keys);
        }
        (r, retries)
    }

    async fn district_issue(&self, n: u64) -> (Result<(), String>, u32) {
        let mut d = draft(&self.type_code);
        d.serial = format!("SOAKD{n:08}");
        let req = issuance::IssueLicenceRequest { draft: Some(d), idempotency_key: format!("soak-district-{n}") };
        let (r, retries) = self
            .call("district IssueLicence", || {
                let mut c = self.clients.district_issuer.clone();
                let req = req.clone();
                async move { c.issue_licence(req).await }
            })
            .await;
        let r = r.map(|r| r.into_inner().licence.unwrap_or_default().identifier);
        if let Ok(id) = &r {
            self.ledger.lock().expect("ledger").district_accepted.push(id.clone());
        }
        (r.map(|_| ()), retries)
    }
}

/// Drives the mix at `rate` operations a second for `duration`, at most
/// 64 in flight; returns when every operation has ended.
pub async fn load(shared: Arc<Shared>, rate: u64, duration: Duration, start: Instant) {
    let ops: Vec<Op> = MIX.iter().flat_map(|(op, n)| std::iter::repeat_n(*op, *n)).collect();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    let mut i = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        let op = ops[(i * 7) % ops.len()];
        i += 1;
        let permit = limit.clone().acquire_owned().await.expect("the semaphore stays open");
        let s = shared.clone();
        tasks.spawn(async move {
            s.run(op, start).await;
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
