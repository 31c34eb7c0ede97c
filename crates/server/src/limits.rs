//! What one server process takes on: calls in flight (beyond the limit a
//! call is shed at once, before it reads its body or costs memory) and how
//! long a call may take to answer. Per-principal rates are checked when the
//! caller is authenticated (`zhengzhao_auth::RateLimit`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use zhengzhao_telemetry::KnownMethods;

/// Calls in flight and the answer deadline, as a tower layer over a server.
#[derive(Debug, Clone)]
pub struct LimitLayer {
    permits: Arc<Semaphore>,
    timeout: Duration,
    known: KnownMethods,
}

impl LimitLayer {
    /// At most `max_in_flight` calls at once, each answering within `timeout`
    /// (or the caller's shorter `grpc-timeout`). Calls whose request is a
    /// stream (an import, a key watch) are not timed: they last as long as
    /// the caller sends.
    pub fn new(max_in_flight: usize, timeout: Duration, known: KnownMethods) -> Self {
        LimitLayer { permits: Arc::new(Semaphore::new(max_in_flight)), timeout, known }
    }
}

impl<S> tower::Layer<S> for LimitLayer {
    type Service = Limited<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limited { inner, limits: self.clone() }
    }
}

/// See [`LimitLayer`].
#[derive(Debug, Clone)]
pub struct Limited<S> {
    inner: S,
    limits: LimitLayer,
}

/// The seconds a shed caller is told to wait.
const SHED_RETRY_AFTER: &str = "1";

impl<S, B, RB> tower::Service<http::Request<B>> for Limited<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.limits.permits.clone().try_acquire_owned() else {
            zhengzhao_telemetry::METRICS.limited.with_label_values(&["shed"]).inc();
            let mut status = tonic::Status::resource_exhausted(
                "this server is at its limit of calls in flight (limits.max_concurrent_requests): retry shortly",
            );
            status.metadata_mut().insert("retry-after", tonic::metadata::MetadataValue::from_static(SHED_RETRY_AFTER));
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let deadline = if self.limits.known.streams_request(req.uri().path()) {
            None
        } else {
            let asked = req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout);
            Some(asked.map_or(self.limits.timeout, |a| a.min(self.limits.timeout)))
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _permit = permit;
            let Some(deadline) = deadline else {
                return fut.await;
            };
            match tokio::time::timeout(deadline, fut).await {
                Ok(r) => r,
                Err(_) => {
                    zhengzhao_telemetry::METRICS.limited.with_label_values(&["timeout"]).inc();
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "no answer within {} ms (limits.request_timeout_seconds or the caller's grpc-timeout)",
                        deadline.as_millis()
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// A `grpc-timeout` header value (`1S`, `250m`, at most 8 digits and a unit).
fn grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer as _, ServiceExt as _};

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        for bad in ["", "S", "1", "1x", "-1S", "123456789S", "1.5S", " 1S"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    fn status_of(resp: &http::Response<tonic::body::Body>) -> Option<&str> {
        resp.headers().get("grpc-status").and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn calls_beyond_the_limit_are_shed_and_slow_ones_time_out() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let held = gate.clone();
        let inner = tower::service_fn(move |_req: http::Request<()>| {
            let held = held.clone();
            async move {
                held.notified().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::default()))
            }
        });
        let layer = LimitLayer::new(1, Duration::from_secs(3600), KnownMethods::default());
        let svc = layer.layer(inner);
        let first = tokio::spawn(svc.clone().oneshot(http::Request::builder().uri("/a.S/M").body(()).unwrap()));
        // The first call holds the one permit until the gate opens.
        while layer.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let shed = svc.clone().oneshot(http::Request::builder().uri("/a.S/M").body(()).unwrap()).await.unwrap();
        assert_eq!(status_of(&shed), Some("8"));
        assert_eq!(shed.headers().get("retry-after").unwrap(), "1");
        gate.notify_one();
        let served = first.await.unwrap().unwrap();
        assert_eq!(status_of(&served), None);
        // The caller's shorter deadline wins.
        let timed = svc.oneshot(http::Request::builder().uri("/a.S/M").header("grpc-timeout", "20m").body(()).unwrap());
        let timed = timed.await.unwrap();
        assert_eq!(status_of(&timed), Some("4"));
        assert_eq!(layer.permits.available_permits(), 1, "permits come back");
    }
}
