//! The counter-staff page (窗口核验): paste a holder's presentation, or scan
//! its QR code with a barcode scanner (which types into the box), and see
//! the disclosed fields and the outcome in plain Chinese.
//!
//! `GET /counter` serves the page; `POST /counter/verify` takes
//! `{"presentation": "..."}` with the staff member's own bearer token and
//! asks the library's `VerifyPresentation` with that token, so the usual
//! policy decides who may check (consumer staff, administrators, auditors)
//! and the verification is recorded against them. The page keeps the token
//! in the tab's session storage only. For testing and kiosks, the page also
//! reads `#token=...&p=...` from its address and verifies at once.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tonic::transport::Channel;
use zhengzhao_proto::exchange::v1 as pb;
use zhengzhao_proto::exchange::v1::holder_service_client::HolderServiceClient;

/// Largest request body the verify route reads.
const MAX_BODY: usize = 32 * 1024;

/// The page: HTML, CSS and a little script; no outside resources.
pub const PAGE: &str = include_str!("counter.html");

/// The counter routes over the library's exchange channel.
pub fn routes(router: axum::Router, exchange: Channel) -> axum::Router {
    router
        .route(
            "/counter",
            axum::routing::get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::CONTENT_SECURITY_POLICY, "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"),
                        (header::X_FRAME_OPTIONS, "DENY"),
                    ],
                    PAGE,
                )
            }),
        )
        .route(
            "/counter/verify",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let channel = exchange.clone();
                async move { verify(channel, headers, body).await }
            }),
        )
}

pub(crate) fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        value.to_string(),
    )
        .into_response()
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }))
}

/// The bearer token of a page's request, if it sent one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

async fn verify(channel: Channel, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, "请先填写核验人员的令牌（Bearer token）");
    };
    if body.len() > MAX_BODY {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "内容过长，不是有效的亮证码");
    }
    let presentation = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => v.get("presentation").and_then(|p| p.as_str()).unwrap_or_default().trim().to_owned(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "请求格式错误"),
    };
    if presentation.is_empty() {
        return error(StatusCode::BAD_REQUEST, "请粘贴或扫描亮证码");
    }
    let Ok(bearer) = zhengzhao_auth::BearerToken::new(token) else {
        return error(StatusCode::UNAUTHORIZED, "令牌格式错误");
    };
    let mut client = HolderServiceClient::with_interceptor(channel, bearer);
    match client.verify_presentation(pb::VerifyPresentationRequest { presentation }).await {
        Ok(r) => {
            let v = r.into_inner();
            let status = zhengzhao_proto::common::v1::LicenceStatus::try_from(v.status)
                .map(|s| s.as_str_name().trim_start_matches("LICENCE_STATUS_").to_ascii_lowercase())
                .unwrap_or_default();
            json(
                StatusCode::OK,
                serde_json::json!({
                    "valid": v.valid,
                    "reason": v.reason,
                    "failedCheck": v.failed_check,
                    "identifier": v.identifier,
                    "licenceName": v.licence_name,
                    "issuerName": v.issuer_name,
                    "scenarioId": v.scenario_id,
                    "scenarioName": v.scenario_name,
                    "disclosed": v.disclosed,
                    "status": status,
                }),
            )
        }
        Err(s) => {
            let code = match s.code() {
                tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            error(code, s.message())
        }
    }
}
