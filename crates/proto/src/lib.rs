//! Wire types and gRPC stubs generated from `proto/`; domain types live in
//! `zhengzhao-core` (and published keys and log proofs in `zhengzhao-crypto`);
//! every conversion between the two is here ([`convert`], as `From`/`TryFrom`),
//! and so is the one error-code table ([`error`]).

/// Descriptor set of every Zhengzhao proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/zhengzhao_descriptor.bin"));

pub mod convert;
pub mod error;

pub use error::ServiceError;

#[allow(clippy::all, missing_docs)]
pub mod common {
    pub mod v1 {
        tonic::include_proto!("zhengzhao.common.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod catalog {
    pub mod v1 {
        tonic::include_proto!("zhengzhao.catalog.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod issuance {
    pub mod v1 {
        tonic::include_proto!("zhengzhao.issuance.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod signing {
    pub mod v1 {
        tonic::include_proto!("zhengzhao.signing.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod verification {
    pub mod v1 {
        tonic::include_proto!("zhengzhao.verification.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod exchange {
    pub mod v1 {
        tonic::include_proto!("zhengzhao.exchange.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod gateway {
    pub mod v1 {
        tonic::include_proto!("zhengzhao.gateway.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("zhengzhao.auth.v1");
    }
}

pub use prost_types::Timestamp;
