//! The status page (运行状态) for sites without Grafana: each member's
//! health and, for districts, sync lag; the city's change-feed and log
//! head; overdue outages (art. 11's 3 working days); and the calls this
//! process refused recently.
//!
//! `GET /status` serves the page; `GET /status/data` answers its JSON to an
//! administrator's or auditor's bearer token (the policy's "read service
//! status"), and asks the members with that same token, so the page shows
//! no more than its viewer may read. Like the counter page, it keeps the
//! token in the tab's session storage and reads `#token=...` for kiosks.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use std::time::Duration;
use zhengzhao_auth::{Action, BearerToken, authorize};
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;

use crate::Gateway;
use crate::counter::{bearer, error, json};

/// The page: HTML, CSS and a little script; no outside resources.
pub const PAGE: &str = include_str!("status.html");

/// How long the page waits for any one member.
const MEMBER_WAIT: Duration = Duration::from_secs(3);

/// The status routes.
pub fn routes(router: axum::Router, gateway: Gateway) -> axum::Router {
    router
        .route(
            "/status",
            axum::routing::get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
                        ),
                        (header::X_FRAME_OPTIONS, "DENY"),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    PAGE,
                )
            }),
        )
        .route(
            "/status/data",
            axum::routing::get(move |headers: HeaderMap| {
                let gateway = gateway.clone();
                async move { data(&gateway, &headers).await }
            }),
        )
}

fn seconds(t: Option<prost_types::Timestamp>) -> Option<i64> {
    t.map(|t| t.seconds)
}

async fn data(gateway: &Gateway, headers: &HeaderMap) -> Response {
    let Some(token) = bearer(headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "send an administrator's or auditor's token: authorization: Bearer <token>",
        );
    };
    let who = match gateway.verifier.verify(token) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::UNAUTHORIZED, &e.to_string()),
    };
    if let Err(e) = authorize(&who, &Action::ReadServiceStatus) {
        return error(StatusCode::FORBIDDEN, &e.to_string());
    }
    let Ok(bearer) = BearerToken::new(token) else {
        return error(StatusCode::UNAUTHORIZED, "the token is not a valid header value");
    };
    let auth = headers.get(header::AUTHORIZATION);
    let members: Vec<serde_json::Value> = gateway
        .libraries(auth)
        .await
        .into_iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name,
                "role": l.role,
                "serving": l.serving,
                "syncState": l.sync_state,
                "lagEvents": l.lag_events,
                "lagSeconds": l.lag_seconds,
            })
        })
        .collect();
    let city = gateway.upstreams[0].channel_for("/zhengzhao.issuance.v1.");
    let mut issuance = IssuanceServiceClient::with_interceptor(city, bearer);
    let feed = match tokio::time::timeout(MEMBER_WAIT, issuance.get_checkpoint(issuance::GetCheckpointRequest {})).await
    {
        Ok(Ok(r)) => {
            let c = r.into_inner().checkpoint.unwrap_or_default();
            serde_json::json!({ "entries": c.tree_size, "checkpointAt": seconds(c.timestamp) })
        }
        Ok(Err(s)) => serde_json::json!({ "error": s.message() }),
        Err(_) => serde_json::json!({ "error": "the city did not answer in time" }),
    };
    let outages = match tokio::time::timeout(
        MEMBER_WAIT,
        issuance.list_outages(issuance::ListOutagesRequest { issuer_code: String::new() }),
    )
    .await
    {
        Ok(Ok(r)) => {
            let overdue: Vec<serde_json::Value> = r
                .into_inner()
                .outages
                .into_iter()
                .filter(|o| o.state == issuance::BacklogState::Overdue as i32)
                .map(|o| {
                    serde_json::json!({
                        "id": o.id,
                        "issuer": o.issuer_code,
                        "startedAt": seconds(o.started_at),
                        "endedAt": seconds(o.ended_at),
                        "deadline": o.deadline,
                    })
                })
                .collect();
            serde_json::json!({ "overdue": overdue })
        }
        Ok(Err(s)) => serde_json::json!({ "error": s.message() }),
        Err(_) => serde_json::json!({ "error": "the city did not answer in time" }),
    };
    let refusals: Vec<serde_json::Value> = zhengzhao_telemetry::recent_refusals()
        .into_iter()
        .map(|r| serde_json::json!({ "at": r.at, "method": r.method, "code": r.code }))
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "viewer": who.actor(),
            "members": members,
            "feed": feed,
            "outages": outages,
            "refusals": refusals,
        }),
    )
}
