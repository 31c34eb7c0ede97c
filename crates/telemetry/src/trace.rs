//! Spans that cross processes: one per gRPC call on each side (and one per
//! database transaction: `zhengzhao_store::Db::begin`), joined by W3C trace context (`traceparent`,
//! `tracestate`) that outbound calls inject and inbound calls extract.
//!
//! Span attributes name the method, the principal's role and agency (a
//! unified social credit code), the gRPC status: never a holder's ID
//! number. Without an OTLP endpoint the spans still order the logs, and at
//! a log filter above `info` they cost next to nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector};
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Reads trace context from request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes trace context into request headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The span of one inbound gRPC call to `method` (a known method or
/// `unknown`), a child of the trace context the caller sent, if any.
pub fn server_span(method: &str, headers: &http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = method.trim_start_matches('/'),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        // Filled in by authentication (`Principal::record_on_span`).
        zhengzhao.role = Empty,
        zhengzhao.agency = Empty,
    );
    if !span.is_disabled() {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
        // Refused only when no OpenTelemetry layer is installed: nothing to join.
        let _ = span.set_parent(parent);
    }
    span
}

/// Records a call's gRPC status code on `span` (`ERROR` for any but OK).
pub fn record_status(span: &tracing::Span, code: &str) {
    span.record("rpc.grpc.status_code", code);
    if code != "0" {
        span.record("otel.status_code", "ERROR");
    }
}

/// A gRPC client transport (a `tonic` channel) whose every call gets a
/// client span and carries its trace context to the server.
#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S> Traced<S> {
    pub fn new(inner: S) -> Self {
        Traced { inner }
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Traced<S>
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

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // Outbound paths are this process's own calls: a bounded set.
        let path = req.uri().path();
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "client",
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.method = path,
            rpc.grpc.status_code = Empty,
        );
        let context = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut HeaderInjector(req.headers_mut()));
        });
        let fut = span.in_scope(|| self.inner.call(req));
        let recorded = span.clone();
        Box::pin(
            async move {
                let result = fut.await;
                match &result {
                    Ok(resp) => record_status(
                        &recorded,
                        resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0"),
                    ),
                    Err(_) => record_status(&recorded, "transport"),
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt as _;
    use tower::ServiceExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// With an OpenTelemetry layer installed, a client call carries a
    /// `traceparent` naming its own span, and a server span built from those
    /// headers joins the same trace as its child.
    #[tokio::test]
    async fn context_crosses_a_call() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "test");
        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        let _guard = tracing::subscriber::set_default(subscriber);

        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let kept = seen.clone();
        let inner = tower::service_fn(move |req: http::Request<()>| {
            let kept = kept.clone();
            async move {
                *kept.lock().unwrap() = Some(req.headers().clone());
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }
        });
        let outer = tracing::info_span!("caller");
        let outer_trace = outer.context().span().span_context().trace_id();
        Traced::new(inner)
            .oneshot(http::Request::builder().uri("/p.S/M").body(()).unwrap())
            .instrument(outer)
            .await
            .unwrap();
        let headers = seen.lock().unwrap().take().expect("called");
        let traceparent = headers.get("traceparent").expect("injected").to_str().unwrap().to_owned();
        assert!(traceparent.contains(&outer_trace.to_string()), "{traceparent} in trace {outer_trace}");

        let server = server_span("/p.S/M", &headers);
        let joined = server.context().span().span_context().trace_id();
        assert_eq!(joined, outer_trace);
        // A call without context starts its own trace.
        let alone = server_span("/p.S/M", &http::HeaderMap::new());
        assert_ne!(alone.context().span().span_context().trace_id(), outer_trace);
    }
}
