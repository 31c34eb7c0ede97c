//! What an operator relies on: one trace across the processes a call
//! crosses (gateway → verification → issuance and signing, each its own
//! process on PostgreSQL, exporting to a local OTLP receiver), and limits
//! that keep one flooding principal from starving the others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::remote::Split;
use zhengzhao_e2e::{ADMIN, Authed, CONSUMER, ISSUER, Library, OTHER_ISSUER};
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_testkit::{ServerProcess, TestDb};

/// A span as received: the exporting service, and the span.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: opentelemetry_proto::tonic::trace::v1::Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        self.span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        })
    }
}

/// An OTLP/gRPC trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    kept.push(Received { service: service.clone(), span });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    fn spans(&self) -> Vec<Received> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// The server span of `method` exported by `service`, in `trace` if given.
fn server_span<'a>(spans: &'a [Received], service: &str, method: &str, trace: Option<&[u8]>) -> Option<&'a Received> {
    spans.iter().find(|s| {
        s.service == service
            && s.span.kind == SpanKind::Server as i32
            && s.span.name.ends_with(method)
            && trace.is_none_or(|t| s.span.trace_id == t)
    })
}

/// The span that is `child`'s parent.
fn parent_of<'a>(spans: &'a [Received], child: &Received) -> Option<&'a Received> {
    spans.iter().find(|s| s.span.trace_id == child.span.trace_id && s.span.span_id == child.span.parent_span_id)
}

/// Whether `ancestor` is `span` or above it in its trace.
fn descends_from(spans: &[Received], span: &Received, ancestor: &Received) -> bool {
    let mut at = Some(span);
    for _ in 0..64 {
        match at {
            Some(s) if s.span.span_id == ancestor.span.span_id => return true,
            Some(s) => at = parent_of(spans, s),
            None => return false,
        }
    }
    false
}

#[tokio::test]
async fn one_trace_crosses_gateway_verification_issuance_and_signing() -> anyhow::Result<()> {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let otlp = format!("http://{}", listener.local_addr()?);
    let serving = receiver.clone();
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(incoming)
            .await;
    });
    // Every process exports to the receiver, in batches 200 ms apart.
    let envs = [("ZHENGZHAO_TELEMETRY__OTLP_ENDPOINT", otlp.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "200")];
    let db = TestDb::postgres().await?;
    let split = Split::start(db.url().unwrap_or_default(), &[], &envs).await?;
    let remote = &split.remote;
    let code = remote.publish_example_type(&split.catalog.url()).await?;
    // A holder that is no agency in this test, so its number appears nowhere
    // but in the licence.
    let holder_number = zhengzhao_e2e::OTHER_ISSUER;
    let mut draft = zhengzhao_e2e::fixtures::draft(&code);
    draft.holder.as_mut().expect("the example draft has a holder").id_number = holder_number.to_owned();
    let licence = remote
        .issuance(&split.issuance.url(), Role::Issuer, zhengzhao_e2e::ISSUER)?
        .issue_licence(zhengzhao_proto::issuance::v1::IssueLicenceRequest { draft: Some(draft), ..Default::default() })
        .await?
        .into_inner()
        .licence
        .expect("issued");

    let config = split.work.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[[gateway.libraries]]\nname = \"city\"\naddress = \"{}\"\nverification = \"{}\"\n",
            split.issuance.url(),
            split.verification.url()
        ),
    )?;
    let gateway = ServerProcess::start(
        "zhengzhao-gateway",
        &[
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            split.dir("gateway").display().to_string(),
            "--catalog-url".into(),
            split.catalog.url(),
            "--config".into(),
            config.display().to_string(),
        ],
        &envs,
    )
    .await?;
    // The first verification reads the issuer's keys from the signing service.
    let mut ver = remote.verification(&gateway.url(), Role::Consumer, CONSUMER)?;
    let answer = ver
        .verify_licence(verification::VerifyLicenceRequest {
            identifier: licence.identifier.clone(),
            include_inclusion_proof: false,
        })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default();
    assert_eq!(answer.outcome(), verification::VerificationOutcome::Valid, "{answer:?}");

    const VERIFY: &str = "VerificationService/VerifyLicence";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = receiver.spans();
        let complete = server_span(&spans, "zhengzhao-gateway", VERIFY, None).is_some_and(|g| {
            let t = Some(g.span.trace_id.as_slice());
            server_span(&spans, "zhengzhao-verification", VERIFY, t).is_some()
                && server_span(&spans, "zhengzhao-issuance", "IssuanceService/GetLicence", t).is_some()
                && server_span(&spans, "zhengzhao-signing", "SigningService/ListPublicKeys", t).is_some()
        });
        if complete || tokio::time::Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let gate = server_span(&spans, "zhengzhao-gateway", VERIFY, None).expect("the gateway's server span");
    let trace = Some(gate.span.trace_id.as_slice());
    let names = |spans: &[Received]| {
        spans
            .iter()
            .filter(|s| s.span.trace_id == gate.span.trace_id)
            .map(|s| format!("{} {}", s.service, s.span.name))
            .collect::<Vec<_>>()
    };
    let ver_span = server_span(&spans, "zhengzhao-verification", VERIFY, trace)
        .unwrap_or_else(|| panic!("verification joined the trace: {:?}", names(&spans)));
    let get = server_span(&spans, "zhengzhao-issuance", "IssuanceService/GetLicence", trace)
        .unwrap_or_else(|| panic!("issuance joined the trace: {:?}", names(&spans)));
    let keys = server_span(&spans, "zhengzhao-signing", "SigningService/ListPublicKeys", trace)
        .unwrap_or_else(|| panic!("signing joined the trace: {:?}", names(&spans)));

    // Each hop: the server span's parent is the caller's client span, which
    // descends from the caller's server span.
    for (server, caller, caller_service) in [
        (ver_span, gate, "zhengzhao-gateway"),
        (get, ver_span, "zhengzhao-verification"),
        (keys, ver_span, "zhengzhao-verification"),
    ] {
        let client = parent_of(&spans, server).unwrap_or_else(|| panic!("{} has its parent", server.span.name));
        assert_eq!(client.service, caller_service);
        assert_eq!(client.span.kind, SpanKind::Client as i32, "{}", client.span.name);
        assert!(descends_from(&spans, client, caller), "{} under {}", client.span.name, caller.span.name);
    }
    assert!(gate.span.parent_span_id.is_empty(), "the gateway's span is the root");

    // Who called is on each server span: the consumer at the edge, the
    // verification service on its own account further in.
    assert_eq!(gate.attr("zhengzhao.role").as_deref(), Some("consumer"));
    assert_eq!(gate.attr("zhengzhao.agency").as_deref(), Some(CONSUMER));
    assert_eq!(ver_span.attr("zhengzhao.role").as_deref(), Some("consumer"));
    assert_eq!(get.attr("zhengzhao.role").as_deref(), Some("service:verification"));
    assert_eq!(get.attr("rpc.grpc.status_code").as_deref(), Some("0"));

    // Writes run in transaction spans under their call.
    let issue = server_span(&spans, "zhengzhao-issuance", "IssuanceService/IssueLicence", None).expect("issue traced");
    assert!(
        spans.iter().any(|s| s.span.name == "db.transaction"
            && s.service == "zhengzhao-issuance"
            && descends_from(&spans, s, issue)
            && s.attr("db.system").as_deref() == Some("postgresql")),
        "a transaction span under IssueLicence"
    );

    // No span names the holder's ID number.
    for s in &spans {
        let text = format!("{:?}", s.span);
        assert!(!text.contains(holder_number), "{} carries the holder's ID number: {text}", s.span.name);
    }
    gateway.stop().await;
    split.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_flooding_principal_is_limited_and_the_others_are_served() -> anyhow::Result<()> {
    let limits =
        zhengzhao_config::LimitsConfig { principal_rate_per_second: 5, principal_burst: 20, ..Default::default() };
    let lib = Library::start_with_limits(TestDb::sqlite()?, limits).await?;
    let list = |mut c: CatalogServiceClient<Authed>| async move {
        c.list_licence_types(catalog::ListLicenceTypesRequest::default()).await
    };
    // One consumer agency sends 300 calls at once.
    let flood: Vec<_> = (0..300).map(|_| tokio::spawn(list(lib.catalog(Role::Consumer, CONSUMER)))).collect();
    let mut served = 0;
    let mut limited = 0;
    for call in flood {
        match call.await? {
            Ok(_) => served += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                let retry: u64 = e
                    .metadata()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .expect("retry-after in whole seconds");
                assert!(retry >= 1, "{retry}");
                assert!(e.message().contains("rate limit"), "{}", e.message());
                limited += 1;
            }
        }
    }
    assert!(served >= 20, "the burst is served: {served}");
    assert!(limited >= 200, "the flood is limited: {limited} refused, {served} served");
    // Meanwhile the flooder is still over its limit, and others are served.
    let e = list(lib.catalog(Role::Consumer, CONSUMER)).await.expect_err("still limited");
    assert_eq!(e.code(), Code::ResourceExhausted);
    for (role, agency) in [(Role::Consumer, zhengzhao_e2e::OTHER_ISSUER), (Role::Admin, ADMIN)] {
        for _ in 0..10 {
            list(lib.catalog(role, agency)).await?;
        }
    }
    Ok(())
}

/// The domain metrics an operator acts on (see `zhengzhao_telemetry::domain`
/// and the sync job's): each must reach Prometheus.
const DOMAIN_METRICS: &[&str] = &[
    "zhengzhao_grpc_requests_total",
    "zhengzhao_grpc_request_seconds_bucket",
    "zhengzhao_licence_events_total",
    "zhengzhao_verifications_total",
    "zhengzhao_uses_total",
    "zhengzhao_reminders_total",
    "zhengzhao_import_rows_total",
    "zhengzhao_key_events_total",
    "zhengzhao_feed_head",
    "zhengzhao_log_size",
    "zhengzhao_checkpoint_age_seconds",
    "zhengzhao_outages_open",
    "zhengzhao_outages_overdue",
    "zhengzhao_keys",
    "zhengzhao_oldest_active_key_age_seconds",
    "zhengzhao_sync_lag_events",
    "zhengzhao_sync_lag_seconds",
    "zhengzhao_sync_stopped",
    "zhengzhao_sync_events_applied_total",
    "zhengzhao_sync_cursor",
];

/// Every `zhengzhao_*` metric named in the shipped dashboards and alert rules.
fn metrics_named_in_deploy() -> anyhow::Result<std::collections::BTreeSet<String>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = vec![root.join("prometheus/rules.yml")];
    for entry in std::fs::read_dir(root.join("grafana/dashboards"))? {
        files.push(entry?.path());
    }
    let mut names = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let mut rest = text.as_str();
        while let Some(at) = rest.find("zhengzhao_") {
            let tail = &rest[at..];
            let end =
                tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    Ok(names)
}

/// The label values (of the labels our metrics use for fixed lists) that
/// the shipped dashboards and rules select on, by label.
fn label_values_named_in_deploy()
-> anyhow::Result<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut files = vec![root.join("prometheus/rules.yml")];
    for entry in std::fs::read_dir(root.join("grafana/dashboards"))? {
        files.push(entry?.path());
    }
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for f in files {
        // JSON escapes the quotes of the PromQL inside it.
        let text = std::fs::read_to_string(&f)?.replace("\\\"", "\"");
        for label in ["event", "outcome", "state", "decision", "reason", "status", "rule"] {
            let mut rest = text.as_str();
            let needle = format!("{label}=");
            while let Some(at) = rest.find(&needle) {
                let before = rest[..at].chars().last();
                rest = &rest[at + needle.len()..];
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let value = rest.trim_start_matches('~');
                let Some(value) = value.strip_prefix('"') else { continue };
                let Some(end) = value.find('"') else { continue };
                for v in value[..end].split('|') {
                    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        out.entry(label.to_owned()).or_default().insert(v.to_owned());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The values Prometheus has seen for `label`.
async fn prom_label_values(http: &reqwest::Client, web: std::net::SocketAddr, label: &str) -> Vec<String> {
    let Ok(r) = http.get(format!("http://{web}/api/v1/label/{label}/values")).send().await else { return vec![] };
    let Ok(text) = r.text().await else { return vec![] };
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&text) else { return vec![] };
    body["data"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

/// Whether the PromQL comparison `query` holds now (returns a sample).
async fn prom_true(http: &reqwest::Client, web: std::net::SocketAddr, query: &str) -> bool {
    let encoded: String = query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let Ok(r) = http.get(format!("http://{web}/api/v1/query?query={encoded}")).send().await else {
        return false;
    };
    let Ok(text) = r.text().await else { return false };
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|b| b["data"]["result"].as_array().map(|a| !a.is_empty()))
        .unwrap_or(false)
}

/// `zhengzhao serve` with its metrics on a port of its own and `extra`
/// flags; (process, metrics address).
async fn member(
    dir: &std::path::Path,
    library: &str,
    extra: &[String],
) -> anyhow::Result<(ServerProcess, std::net::SocketAddr)> {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--library".into(),
        library.into(),
        "--metrics-listen".into(),
        metrics.to_string(),
    ];
    args.extend_from_slice(extra);
    let p = ServerProcess::start("zhengzhao", &args, &[("ZHENGZHAO_TELEMETRY__LOG_FILTER", "warn")]).await?;
    Ok((p, metrics))
}

#[tokio::test]
async fn prometheus_and_the_status_page_see_a_city_and_its_district() -> anyhow::Result<()> {
    use zhengzhao_proto::exchange::v1 as exchange;
    let prometheus = which("prometheus").ok_or_else(|| {
        anyhow::anyhow!("prometheus is not installed (Debian package prometheus; scripts/test installs it)")
    })?;
    let work = tempfile::tempdir()?;
    let dir = |n: &str| work.path().join(n);
    for n in ["city", "d1"] {
        let out = std::process::Command::new(zhengzhao_testkit::binary("zhengzhao"))
            .args(["init", "--data-dir", &dir(n).display().to_string()])
            .output()?;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::copy(dir("city").join("token-keys.json"), dir("d1").join("token-keys.json"))?;
    let (d1, d1_metrics) = member(&dir("d1"), "d1", &[]).await?;
    // The city's front door routes the district's issuer to it.
    let members = ["--member".into(), format!("d1={}", d1.url()), "--member-issuers".into(), format!("d1={ISSUER}")];
    let (city, city_metrics) = member(&dir("city"), "city", &members).await?;
    let remote = zhengzhao_e2e::remote::Remote::new(&dir("city"))?;

    // Something of everything: a type, a licence issued in the district,
    // a verification, a refused use, and the sync job bringing it across.
    let code = remote.publish_example_type(&city.url()).await?;
    let sync_metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let _sync = tokio::process::Command::new(zhengzhao_testkit::binary("zhengzhao"))
        .args([
            "sync",
            "--city",
            &city.url(),
            "--district",
            &format!("d1={}", d1.url()),
            "--refresh-seconds",
            "1",
            "--metrics-listen",
            &sync_metrics.to_string(),
        ])
        .env("ZHENGZHAO_TOKEN", remote.token(Role::Sync, ADMIN)?)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut licence = None;
    for _ in 0..100 {
        // The district has the type once the job brought the catalogue.
        match remote.issue(&d1.url(), &code).await {
            Ok(l) => {
                licence = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let licence = licence.ok_or_else(|| anyhow::anyhow!("the district never took the city's type"))?;
    let mut ver = remote.verification(&d1.url(), Role::Consumer, CONSUMER)?;
    ver.verify_licence(verification::VerifyLicenceRequest {
        identifier: licence.identifier.clone(),
        include_inclusion_proof: false,
    })
    .await?;
    let refused = remote
        .exchange(&d1.url(), Role::Consumer, CONSUMER)?
        .fetch_licence(exchange::FetchLicenceRequest {
            identifier: licence.identifier.clone(),
            r#use: zhengzhao_e2e::consumers::use_ctx("核验经营资质"),
        })
        .await;
    assert!(refused.is_err(), "no usage list grants it");
    // An outage long past its deadline, and a refused call.
    let day = 86_400;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let at = |s: i64| Some(prost_types::Timestamp { seconds: s, nanos: 0 });
    remote
        .issuance(&city.url(), Role::Admin, ADMIN)?
        .record_outage(zhengzhao_proto::issuance::v1::RecordOutageRequest {
            issuer_code: OTHER_ISSUER.into(),
            started_at: at(now - 30 * day),
            ended_at: at(now - 20 * day),
            cause: "机房断电".into(),
            idempotency_key: String::new(),
        })
        .await?;
    let denied = remote
        .issuance(&city.url(), Role::Consumer, CONSUMER)?
        .list_outages(zhengzhao_proto::issuance::v1::ListOutagesRequest::default())
        .await
        .expect_err("consumers read no outages");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // The shipped Prometheus config and rules, pointed at these processes.
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let config = std::fs::read_to_string(shipped.join("prometheus.yml"))?;
    assert!(config.contains("rules.yml"), "the shipped config loads the alert rules");
    let prom_dir = dir("prometheus");
    std::fs::create_dir_all(&prom_dir)?;
    std::fs::copy(shipped.join("rules.yml"), prom_dir.join("rules.yml"))?;
    let targets = format!("[\"{city_metrics}\", \"{d1_metrics}\", \"{sync_metrics}\"]");
    let mut replaced = 0;
    let config: String = config
        .lines()
        .map(|l| match l.find("targets:") {
            Some(at) => {
                replaced += 1;
                format!("{}targets: {targets}", &l[..at])
            }
            None => l.replace("scrape_interval: 15s", "scrape_interval: 1s"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(replaced >= 1, "the shipped config has static targets");
    std::fs::write(prom_dir.join("prometheus.yml"), config)?;
    // The dashboard preview and the dashboards, served by Prometheus itself.
    let assets = prom_dir.join("assets");
    std::fs::create_dir_all(&assets)?;
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    std::fs::copy(deploy.join("preview/index.html"), assets.join("index.html"))?;
    let mut dashboards = Vec::new();
    for f in std::fs::read_dir(deploy.join("dashboards"))? {
        let f = f?.path();
        if f.extension().is_some_and(|e| e == "json")
            && let Some(name) = f.file_name().and_then(|n| n.to_str())
        {
            std::fs::copy(&f, assets.join(name))?;
            dashboards.push(name.to_owned());
        }
    }
    dashboards.sort();
    assert_eq!(dashboards.len(), 5, "five dashboards ship: {dashboards:?}");
    let web = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut prom = tokio::process::Command::new(prometheus)
        .current_dir(&prom_dir)
        .args([
            &format!("--config.file={}", prom_dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", prom_dir.join("data").display()),
            &format!("--web.listen-address={web}"),
            &format!("--web.user-assets={}", assets.display()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;

    let named = metrics_named_in_deploy()?;
    let labels = label_values_named_in_deploy()?;
    // What this scenario did, as Prometheus must see it.
    let happened = [
        r#"sum(zhengzhao_licence_events_total{event="issue"}) >= 1"#,
        r#"sum(zhengzhao_verifications_total{outcome="valid"}) >= 1"#,
        r#"sum(zhengzhao_uses_total{decision="refused"}) >= 1"#,
        "max(zhengzhao_feed_head) >= 1",
        "max(zhengzhao_log_size) >= 1",
        r#"max(zhengzhao_keys{status="active"}) >= 1"#,
        "max(zhengzhao_outages_overdue) >= 1",
        // Enough scrapes of every process for the dashboards' rates.
        "min(count_over_time(up[30s])) >= 6",
        "sum(zhengzhao_sync_events_applied_total) >= 1",
        r#"sum(zhengzhao_grpc_requests_total{code="7"}) >= 1"#,
    ];
    assert!(named.len() >= 10, "the dashboards and rules name metrics: {named:?}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut scraped = std::collections::BTreeSet::new();
    let mut rules_loaded = false;
    loop {
        if let Ok(r) = http.get(format!("http://{web}/api/v1/label/__name__/values")).send().await
            && let Ok(text) = r.text().await
            && let Ok(body) = serde_json::from_str::<serde_json::Value>(&text)
        {
            scraped =
                body["data"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        }
        if let Ok(r) = http.get(format!("http://{web}/api/v1/rules")).send().await
            && let Ok(text) = r.text().await
            && let Ok(body) = serde_json::from_str::<serde_json::Value>(&text)
        {
            rules_loaded = body["data"]["groups"].as_array().is_some_and(|g| !g.is_empty());
        }
        let missing =
            DOMAIN_METRICS.iter().any(|m| !scraped.contains(*m)) || named.iter().any(|m| !scraped.contains(m));
        let mut seen_values = std::collections::BTreeMap::new();
        for label in labels.keys() {
            seen_values.insert(label.clone(), prom_label_values(&http, web, label).await);
        }
        let unseen_values = labels.iter().any(|(l, vs)| vs.iter().any(|v| !seen_values[l].contains(v)));
        let mut not_yet = Vec::new();
        for q in happened {
            if !prom_true(&http, web, q).await {
                not_yet.push(q);
            }
        }
        if (!missing && !unseen_values && not_yet.is_empty() && rules_loaded) || tokio::time::Instant::now() > deadline
        {
            for (l, vs) in &labels {
                let unseen: Vec<_> = vs.iter().filter(|v| !seen_values[l].contains(*v)).collect();
                assert!(unseen.is_empty(), "{l} values named in deploy/ that no series carries: {unseen:?}");
            }
            assert!(not_yet.is_empty(), "not seen by Prometheus: {not_yet:?}");
            break;
        }
        if let Ok(Some(status)) = prom.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = prom.stderr.take() {
                tokio::io::AsyncReadExt::read_to_string(&mut e, &mut err).await?;
            }
            anyhow::bail!("prometheus exited {status}: {err}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every dashboard drawn from its JSON against this Prometheus: every
    // query of every panel is one Prometheus answers (no PromQL error), and
    // what the scenario did shows. The overview's picture is kept in target/.
    for name in &dashboards {
        let url = format!("http://{web}/user/index.html?dashboard={name}&minutes=3");
        let page = chromium(&url).await?;
        // The attributes of the <body> tag itself (the page's comments name them too).
        let body = format!(" {}", page.split("<body ").nth(1).and_then(|b| b.split('>').next()).unwrap_or(""));
        let attr = |a: &str| {
            body.split(&format!(" {a}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("").to_owned()
        };
        assert_eq!(attr("data-done"), "1", "{name}: the preview finished: {}", visible_text(&page));
        assert_eq!(attr("data-errors"), "0", "{name}: every query answered: {}", visible_text(&page));
        let count = |a: &str| attr(a).parse::<u32>().map_err(|e| anyhow::anyhow!("{name}: {a} in <body{body}>: {e}"));
        let (panels, with_data) = (count("data-panels")?, count("data-with-data")?);
        assert!(
            panels >= 8 && with_data >= panels / 2,
            "{name}: {with_data} of {panels} panels drew data: {}",
            visible_text(&page)
        );
    }
    let picture = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-overview.png");
    let _ = std::fs::remove_file(&picture);
    let profile = tempfile::tempdir()?;
    let shot = tokio::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000"])
        .args(["--window-size=1600,1800", &format!("--screenshot={}", picture.display())])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{web}/user/index.html?dashboard=overview.json&minutes=3"))
        .output()
        .await?;
    assert!(
        shot.status.success() && picture.exists(),
        "chromium drew the overview: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let _ = prom.kill().await;
    assert!(rules_loaded, "prometheus loaded the shipped alert rules");
    let missing: Vec<_> = DOMAIN_METRICS.iter().filter(|m| !scraped.contains(**m)).collect();
    assert!(missing.is_empty(), "domain metrics not scraped: {missing:?}");
    let unknown: Vec<_> = named.iter().filter(|m| !scraped.contains(*m)).collect();
    assert!(unknown.is_empty(), "named in a dashboard or rule but not on any /metrics: {unknown:?}");

    let data = |token: Option<String>| {
        let mut req = http.get(format!("{}/status/data", city.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(data(None).await?.status(), 401);
    assert_eq!(data(Some("not-a-token".into())).await?.status(), 401);
    assert_eq!(data(Some(remote.token(Role::Consumer, CONSUMER)?)).await?.status(), 403);
    assert_eq!(data(Some(remote.token(Role::Auditor, ADMIN)?)).await?.status(), 200);
    let page = chromium(&format!("{}/status#token={}", city.url(), remote.token(Role::Admin, ADMIN)?)).await?;
    let text = visible_text(&page);
    for expected in [
        "查看人：admin@",
        "d1",
        "正常 serving",
        "ok",
        "条目 entries:",
        OTHER_ISSUER,
        "无权限 PERMISSION_DENIED",
        "/zhengzhao.issuance.v1.IssuanceService/ListOutages",
    ] {
        assert!(text.contains(expected), "the status page shows {expected:?}: {text}");
    }
    assert!(!text.contains("市级库未答复"), "the city answered: {text}");
    city.stop().await;
    d1.stop().await;
    Ok(())
}

/// `url` as headless Chromium renders it once its script has run.
async fn chromium(url: &str) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let out = tokio::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("chromium (Debian package chromium; scripts/test installs it): {e}"))?;
    anyhow::ensure!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// The text of an HTML document with its tags and script left out.
fn visible_text(html: &str) -> String {
    let body = html.split("<script").next().unwrap_or(html);
    let mut out = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The path of `program` on PATH.
fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(program)).find(|p| p.is_file()))
}
