//! Telemetry: structured logs (text or JSON), spans for every gRPC call
//! and database transaction joined across processes by W3C trace context
//! ([`trace`]) with optional export over OTLP/gRPC, and Prometheus metrics
//! for every gRPC call, labelled by method only for the methods the process
//! serves (any other path is `unknown`, so callers cannot grow the label
//! set). `init` returns a guard that flushes traces when dropped.

#![forbid(unsafe_code)]

pub mod domain;
pub mod escape;
pub mod trace;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus::{Encoder, HistogramVec, IntCounterVec, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log, trace and metrics settings (see the config crate's `TelemetryConfig`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub service: String,
    pub log_format: String,
    pub log_filter: String,
    pub otlp_endpoint: Option<String>,
}

/// Flushes and shuts down trace export when dropped.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("trace export shutdown: {e}");
        }
    }
}

/// Installs the global subscriber. Call once per process, inside a tokio runtime
/// when an OTLP endpoint is set.
pub fn init(settings: &Settings) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&settings.log_filter)?;
    // Trace context crosses every gRPC hop as W3C `traceparent`.
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(settings.service.clone()).build();
            // Every span is kept whatever the caller's `traceparent` says:
            // a caller must not be able to switch off the record of its calls.
            Some(
                SdkTracerProvider::builder()
                    .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    // Exported spans are the library's own at `info` and above, whatever
    // the log filter (which applies to the logs alone).
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("zhengzhao"))
            .with_filter(tracing_subscriber::filter::Targets::new().with_target("zhengzhao", tracing::Level::INFO))
    });
    let registry = tracing_subscriber::registry().with(otel);
    let result = if settings.log_format == "json" {
        registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(filter))
            .try_init()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry.with(escape::text_layer(ansi, std::io::stderr).with_filter(filter)).try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(TelemetryGuard { provider })
}

/// The process's Prometheus metrics.
pub struct Metrics {
    pub registry: Registry,
    pub grpc_requests: IntCounterVec,
    pub grpc_seconds: HistogramVec,
    /// Calls refused by a server-side limit, by `reason` (`shed`, `timeout`).
    pub limited: IntCounterVec,
}

/// Metrics of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let grpc_requests = IntCounterVec::new(
        prometheus::Opts::new("zhengzhao_grpc_requests_total", "gRPC calls by method and status code"),
        &["method", "code"],
    )
    .expect("static metric definition");
    let grpc_seconds = HistogramVec::new(
        prometheus::HistogramOpts::new("zhengzhao_grpc_request_seconds", "gRPC call latency until response headers"),
        &["method"],
    )
    .expect("static metric definition");
    let limited = IntCounterVec::new(
        prometheus::Opts::new(
            "zhengzhao_limited_total",
            "Calls refused by a server-side limit: shed (too many in flight) or timeout",
        ),
        &["reason"],
    )
    .expect("static metric definition");
    registry.register(Box::new(grpc_requests.clone())).expect("metric registered once");
    registry.register(Box::new(grpc_seconds.clone())).expect("metric registered once");
    registry.register(Box::new(limited.clone())).expect("metric registered once");
    Metrics { registry, grpc_requests, grpc_seconds, limited }
});

/// The metrics in Prometheus text format.
pub fn render_metrics() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Serves `/metrics` until `shutdown` completes.
pub async fn serve_metrics(
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { render_metrics() }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// A call refused for who made it or how much (UNAUTHENTICATED,
/// PERMISSION_DENIED, RESOURCE_EXHAUSTED), as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Unix seconds.
    pub at: i64,
    /// A known method, or `unknown`.
    pub method: String,
    /// The gRPC status code (16, 7 or 8).
    pub code: u8,
}

/// How many refusals [`recent_refusals`] keeps.
pub const RECENT_REFUSALS: usize = 50;

static REFUSALS: LazyLock<std::sync::Mutex<std::collections::VecDeque<Refusal>>> =
    LazyLock::new(|| std::sync::Mutex::new(std::collections::VecDeque::with_capacity(RECENT_REFUSALS)));

/// The last [`RECENT_REFUSALS`] refused calls this process answered or
/// passed on, newest first.
pub fn recent_refusals() -> Vec<Refusal> {
    REFUSALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().rev().cloned().collect()
}

fn note_refusal(method: &str, code: &str) {
    let code = match code {
        "16" => 16,
        "7" => 7,
        "8" => 8,
        _ => return,
    };
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let mut recent = REFUSALS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if recent.len() == RECENT_REFUSALS {
        recent.pop_front();
    }
    recent.push_back(Refusal { at, method: method.to_owned(), code });
}

/// The method label of every path that is not a known method.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The gRPC methods (`/package.Service/Method`) metrics are labelled by,
/// each with whether its request is a stream.
#[derive(Debug, Clone, Default)]
pub struct KnownMethods(Arc<HashMap<String, bool>>);

impl KnownMethods {
    /// Every method of every service in the encoded `FileDescriptorSet`s.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut methods = HashMap::new();
        for set in sets {
            let set = <prost_types::FileDescriptorSet as prost::Message>::decode(*set)?;
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    let full = if package.is_empty() {
                        service.name().to_owned()
                    } else {
                        format!("{package}.{}", service.name())
                    };
                    for method in &service.method {
                        methods.insert(format!("/{full}/{}", method.name()), method.client_streaming());
                    }
                }
            }
        }
        Ok(KnownMethods(Arc::new(methods)))
    }

    /// The label for a request path: the path if it is a known method, else [`UNKNOWN_METHOD`].
    pub fn label(&self, path: &str) -> &str {
        self.0.get_key_value(path).map_or(UNKNOWN_METHOD, |(k, _)| k.as_str())
    }

    /// Whether `path` is a known method whose request is a stream.
    pub fn streams_request(&self, path: &str) -> bool {
        self.0.get(path).copied().unwrap_or(false)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A tower layer that counts, times and traces every gRPC call, by known
/// method: each call runs in a server span ([`trace::server_span`]) joined
/// to the caller's trace.
#[derive(Debug, Clone, Default)]
pub struct MetricsLayer {
    known: KnownMethods,
}

impl MetricsLayer {
    /// Labels calls to `known` methods by method, everything else `unknown`.
    pub fn new(known: KnownMethods) -> Self {
        MetricsLayer { known }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, known: self.known.clone() }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    known: KnownMethods,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // Labelled before authentication: a raw path would let anyone add series.
        let method = self.known.label(req.uri().path()).to_owned();
        let start = Instant::now();
        let span = trace::server_span(&method, req.headers());
        let fut = span.in_scope(|| self.inner.call(req));
        let mut call = Counted { method, start, span: span.clone(), counted: false };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let result = fut.await;
                // Errors come back trailers-only, with grpc-status in the headers;
                // success puts it in the trailers, so a missing header means OK.
                let code = match &result {
                    Ok(resp) => resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0"),
                    Err(_) => "transport",
                };
                call.count(code);
                result
            },
            span,
        ))
    }
}

/// One call's count: made when it answers, or as CANCELLED (1) when its
/// answer is abandoned (the caller's `grpc-timeout`, a reset stream).
struct Counted {
    method: String,
    start: Instant,
    span: tracing::Span,
    counted: bool,
}

impl Counted {
    fn count(&mut self, code: &str) {
        self.counted = true;
        METRICS.grpc_requests.with_label_values(&[self.method.as_str(), code]).inc();
        METRICS.grpc_seconds.with_label_values(&[self.method.as_str()]).observe(self.start.elapsed().as_secs_f64());
        trace::record_status(&self.span, code);
        note_refusal(&self.method, code);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if !self.counted {
            self.count("1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str) -> usize {
        render_metrics().lines().filter(|l| l.starts_with(name)).count()
    }

    #[test]
    fn known_methods_come_from_descriptor_sets() {
        let set = prost_types::FileDescriptorSet {
            file: vec![prost_types::FileDescriptorProto {
                package: Some("zhengzhao.test.v1".into()),
                service: vec![prost_types::ServiceDescriptorProto {
                    name: Some("EchoService".into()),
                    method: vec![prost_types::MethodDescriptorProto {
                        name: Some("Echo".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = prost::Message::encode_to_vec(&set);
        let known = KnownMethods::from_descriptor_sets(&[&bytes]).unwrap();
        assert_eq!(known.len(), 1);
        assert_eq!(known.label("/zhengzhao.test.v1.EchoService/Echo"), "/zhengzhao.test.v1.EchoService/Echo");
        assert_eq!(known.label("/zhengzhao.test.v1.EchoService/Other"), UNKNOWN_METHOD);
        assert_eq!(known.label("/"), UNKNOWN_METHOD);
        assert!(KnownMethods::from_descriptor_sets(&[b"\xff\xff"]).is_err());
    }

    #[tokio::test]
    async fn random_paths_add_no_series() {
        use tower::{Layer as _, ServiceExt as _};
        let set = prost_types::FileDescriptorSet {
            file: vec![prost_types::FileDescriptorProto {
                package: Some("zhengzhao.test.v1".into()),
                service: vec![prost_types::ServiceDescriptorProto {
                    name: Some("PingService".into()),
                    method: vec![prost_types::MethodDescriptorProto {
                        name: Some("Ping".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let known = KnownMethods::from_descriptor_sets(&[&prost::Message::encode_to_vec(&set)]).unwrap();
        let inner = tower::service_fn(|_req: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::builder().header("grpc-status", "12").body(()).unwrap())
        });
        let svc = MetricsLayer::new(known).layer(inner);
        let call = |path: String| {
            let svc = svc.clone();
            async move { svc.oneshot(http::Request::builder().uri(path).body(()).unwrap()).await.unwrap() }
        };
        call("/zhengzhao.test.v1.PingService/Ping".into()).await;
        call("/warm-up".into()).await;
        let before = series("zhengzhao_grpc_requests_total{");
        let buckets_before = series("zhengzhao_grpc_request_seconds_bucket{");
        for i in 0..1000 {
            call(format!("/random.{i}.Service/M{i}")).await;
            call(format!("/{i}")).await;
        }
        assert_eq!(series("zhengzhao_grpc_requests_total{"), before);
        assert_eq!(series("zhengzhao_grpc_request_seconds_bucket{"), buckets_before);
        let text = render_metrics();
        assert!(text.contains("method=\"unknown\""), "{text}");
        assert!(text.contains("method=\"/zhengzhao.test.v1.PingService/Ping\""));
        assert!(!text.contains("random."));
    }
}
