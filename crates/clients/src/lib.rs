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
