//! How one service reaches another: each service's client, either in-process
//! (the all-in-one binary: direct calls through the trait the service
//! implements) or remote (a split deployment: gRPC with the calling service's
//! own credentials). Light: no database, no server plumbing, no service crate.

#![forbid(unsafe_code)]

pub mod catalog;
pub mod issuance;
pub mod keys;
pub mod signing;

pub use catalog::{CatalogApi, CatalogClient};
pub use issuance::{IssuanceApi, IssuanceClient};
pub use keys::{KeyGeneration, KeySet, VerifyingKey};
pub use signing::{MAX_BATCH, SigningApi, SigningClient};

/// How a remote client reaches its service: a channel whose calls are
/// traced ([`zhengzhao_telemetry::trace::Traced`]), with this service's own
/// credentials.
pub type Transport = tonic::service::interceptor::InterceptedService<
    zhengzhao_telemetry::trace::Traced<tonic::transport::Channel>,
    zhengzhao_auth::ServiceCredentials,
>;
