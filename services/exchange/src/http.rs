//! Annotated copies over plain HTTP, on the same port as gRPC (like the
//! JWKS): `GET /copies/{id}` answers whether a copy is genuine and still
//! good (what its QR code resolves to; no token needed), and `GET
//! /copies/download/{token}` serves a copy's PDF once, within ten minutes
//! of the link being made.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use zhengzhao_proto::ServiceError;

use crate::Exchange;

/// Adds the copy routes to `router`.
pub fn routes(router: axum::Router, exchange: Arc<Exchange>) -> axum::Router {
    let copies = axum::Router::new()
        .route("/copies/{id}", axum::routing::get(verify))
        .route("/copies/download/{token}", axum::routing::get(download))
        .with_state(exchange);
    router.merge(copies)
}

async fn verify(State(exchange): State<Arc<Exchange>>, Path(id): Path<String>) -> Response {
    match exchange.verify_copy(&id).await {
        Ok(v) => (
            [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
            serde_json::to_string(&v).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

async fn download(State(exchange): State<Arc<Exchange>>, Path(token): Path<String>) -> Response {
    match exchange.download(&token).await {
        Ok(pdf) => (
            [
                (header::CONTENT_TYPE, "application/pdf"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"copy.pdf\""),
            ],
            pdf,
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

fn failure(e: ServiceError) -> Response {
    match e {
        ServiceError::NotFound(m) => (StatusCode::NOT_FOUND, format!("{m}\n")).into_response(),
        ServiceError::Invalid(v) => (StatusCode::BAD_REQUEST, format!("{v}\n")).into_response(),
        ServiceError::FailedPrecondition(m) => (StatusCode::SERVICE_UNAVAILABLE, format!("{m}\n")).into_response(),
        ServiceError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, format!("{m}\n")).into_response(),
        e => {
            tracing::error!(error = %e, "copy request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}
