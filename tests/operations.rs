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
use zhengzhao_e2e::{ADMIN, Authed, CONSUMER, Library};
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
