//! The key history as a JWKS over plain HTTP, for web clients: `GET
//! /.well-known/jwks.json` (every issuer) and `GET /keys/{issuer}/jwks.json`,
//! served on the same port as gRPC. Public keys only, no token needed.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use zhengzhao_proto::ServiceError;

use crate::{Signing, jwks};

/// Adds the JWKS routes to `router`.
pub fn routes(router: axum::Router, signing: Arc<Signing>) -> axum::Router {
    let jwks_routes = axum::Router::new()
        .route("/.well-known/jwks.json", axum::routing::get(all))
        .route("/keys/{issuer}/jwks.json", axum::routing::get(one))
        .with_state(signing);
    router.merge(jwks_routes)
}

async fn all(State(signing): State<Arc<Signing>>) -> Response {
    respond(signing.published_keys(None).await)
}

async fn one(State(signing): State<Arc<Signing>>, Path(issuer): Path<String>) -> Response {
    respond(signing.published_keys(Some(&issuer)).await)
}

fn respond(keys: Result<Vec<crate::PublicKeyRecord>, ServiceError>) -> Response {
    match keys {
        Ok(keys) => (
            [(header::CONTENT_TYPE, "application/jwk-set+json"), (header::CACHE_CONTROL, "max-age=60")],
            jwks(&keys).to_string(),
        )
            .into_response(),
        Err(ServiceError::Invalid(v)) => (StatusCode::BAD_REQUEST, format!("{v}\n")).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "JWKS request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}
