//! What one server process takes on: calls in flight (beyond the limit a
//! call is shed at once, before it reads its body or costs memory; health
//! checks are never shed) and how long a call may take to answer. Every
//! call runs in a task of its own, so neither a deadline nor a caller that
//! hangs up stops a handler half-way. Per-principal rates are checked when the
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
    S::Response: Send + 'static,
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
        // Health checks are never shed: a probe refused under load would
        // have the orchestrator restart a busy process.
        let permit = if req.uri().path().starts_with(HEALTH_PREFIX) {
            None
        } else {
            match self.limits.permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return Box::pin(std::future::ready(Ok(shed()))),
            }
        };
        let (deadline, reason) = if self.limits.known.streams_request(req.uri().path()) {
            (None, "timeout")
        } else {
            let asked = req.headers().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(grpc_timeout);
            match asked {
                Some(a) if a < self.limits.timeout => (Some(a), "caller_deadline"),
                _ => (Some(self.limits.timeout), "timeout"),
            }
        };
        // The call runs to its end in a task of its own, holding its
        // permit: a deadline, or a caller that goes away, ends the wait for
        // its answer, never the work half-way (a write commits or rolls back
        // whole; its idempotency key makes a retry safe).
        let call = self.inner.call(req);
        let work = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let result = call.await;
                drop(permit);
                result
            },
            tracing::Span::current(),
        ));
        Box::pin(async move {
            let Some(deadline) = deadline else {
                return joined(work.await);
            };
            match tokio::time::timeout(deadline, work).await {
                Ok(r) => joined(r),
                Err(_) => {
                    zhengzhao_telemetry::METRICS.limited.with_label_values(&[reason]).inc();
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "no answer within {} ms (limits.request_timeout_seconds or the caller's grpc-timeout); \
                         the call may still complete",
                        deadline.as_millis()
                    ))
                    .into_http())
                }
            }
        })
    }
}

/// A call's task's result: its answer, a panic passed on, or UNAVAILABLE
/// when the runtime stopped it (shutting down).
fn joined<R: Default, E>(
    r: Result<Result<http::Response<R>, E>, tokio::task::JoinError>,
) -> Result<http::Response<R>, E> {
    match r {
        Ok(answer) => answer,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ok(tonic::Status::unavailable("the server is shutting down").into_http()),
    }
}

/// Health checks' path prefix.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The answer to a call shed for want of a permit.
fn shed<RB: Default>() -> http::Response<RB> {
    zhengzhao_telemetry::METRICS.limited.with_label_values(&["shed"]).inc();
    let mut status = tonic::Status::resource_exhausted(
        "this server is at its limit of calls in flight (limits.max_concurrent_requests): retry shortly",
    );
    status.metadata_mut().insert("retry-after", tonic::metadata::MetadataValue::from_static(SHED_RETRY_AFTER));
    status.into_http()
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
        let inner = tower::service_fn(move |req: http::Request<()>| {
            let held = held.clone();
            async move {
                // Health answers at once; the rest wait for the gate.
                if !req.uri().path().starts_with(HEALTH_PREFIX) {
                    held.notified().await;
                }
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
        let timed =
            svc.clone().oneshot(http::Request::builder().uri("/a.S/M").header("grpc-timeout", "20m").body(()).unwrap());
        let timed = timed.await.unwrap();
        assert_eq!(status_of(&timed), Some("4"));
        // The timed-out call still runs, holding its permit, until it ends.
        assert_eq!(layer.permits.available_permits(), 0, "the call runs on");
        gate.notify_one();
        while layer.permits.available_permits() == 0 {
            tokio::task::yield_now().await;
        }
        // Health checks pass even with no permit left.
        let first = tokio::spawn(svc.clone().oneshot(http::Request::builder().uri("/a.S/M").body(()).unwrap()));
        while layer.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let health =
            svc.clone().oneshot(http::Request::builder().uri("/grpc.health.v1.Health/Check").body(()).unwrap());
        assert_eq!(status_of(&health.await.unwrap()), None, "health is served, not shed");
        gate.notify_one();
        first.await.unwrap().unwrap();
    }
}
