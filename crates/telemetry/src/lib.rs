//! Telemetry: structured logs (text or JSON), optional OpenTelemetry trace
//! export over OTLP/gRPC, and Prometheus metrics for every gRPC call. `init`
//! returns a guard that flushes traces when dropped.

#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus::{Encoder, HistogramVec, IntCounterVec, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;
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
    let provider = match &settings.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
            let resource = opentelemetry_sdk::Resource::builder().with_service_name(settings.service.clone()).build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("zhengzhao")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if settings.log_format == "json" {
        registry.with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr)).try_init()
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr)).try_init()
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))?;
    Ok(TelemetryGuard { provider })
}

/// The process's Prometheus metrics.
pub struct Metrics {
    pub registry: Registry,
    pub grpc_requests: IntCounterVec,
    pub grpc_seconds: HistogramVec,
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
    registry.register(Box::new(grpc_requests.clone())).expect("metric registered once");
    registry.register(Box::new(grpc_seconds.clone())).expect("metric registered once");
    Metrics { registry, grpc_requests, grpc_seconds }
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

/// A tower layer that counts and times every gRPC call.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

/// See [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
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
        let method = req.uri().path().to_owned();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            // Errors come back trailers-only, with grpc-status in the headers;
            // success puts it in the trailers, so a missing header means OK.
            let code = match &result {
                Ok(resp) => resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_owned(),
                Err(_) => "transport".to_owned(),
            };
            METRICS.grpc_requests.with_label_values(&[method.as_str(), code.as_str()]).inc();
            METRICS.grpc_seconds.with_label_values(&[method.as_str()]).observe(start.elapsed().as_secs_f64());
            result
        })
    }
}
