//! The signing service's gRPC edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::principal;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::convert::{from_timestamp, timestamp};
use zhengzhao_proto::signing::v1 as pb;
use zhengzhao_proto::signing::v1::signing_service_server::{SigningService, SigningServiceServer};

use crate::{PublicKeyRecord, Signing, jwks};

/// The tonic service over [`Signing`].
#[derive(Debug, Clone)]
pub struct SigningGrpc(pub Arc<Signing>);

impl SigningGrpc {
    pub fn into_server(self) -> SigningServiceServer<Self> {
        SigningServiceServer::new(self)
    }
}

fn status_to_wire(s: &str) -> pb::KeyStatus {
    match s {
        "active" => pb::KeyStatus::Active,
        "retired" => pb::KeyStatus::Retired,
        "compromised" => pb::KeyStatus::Compromised,
        _ => pb::KeyStatus::Unspecified,
    }
}

pub fn key_to_wire(k: &PublicKeyRecord) -> pb::PublicKey {
    pb::PublicKey {
        key_id: k.key_id.clone(),
        issuer_code: k.issuer_code.clone(),
        algorithm: pb::SignatureAlgorithm::Es256 as i32,
        status: status_to_wire(&k.status) as i32,
        jwk_json: k.jwk.to_string(),
        created_at: Some(timestamp(k.created_at)),
    }
}

pub fn key_from_wire(k: pb::PublicKey) -> Result<PublicKeyRecord, ServiceError> {
    let status = match pb::KeyStatus::try_from(k.status) {
        Ok(pb::KeyStatus::Active) => "active",
        Ok(pb::KeyStatus::Retired) => "retired",
        Ok(pb::KeyStatus::Compromised) => "compromised",
        _ => return Err(ServiceError::internal("signing returned a key without status")),
    };
    Ok(PublicKeyRecord {
        key_id: k.key_id,
        issuer_code: k.issuer_code,
        algorithm: "ES256".into(),
        status: status.into(),
        jwk: serde_json::from_str(&k.jwk_json).map_err(ServiceError::internal)?,
        created_at: k
            .created_at
            .as_ref()
            .map(|t| from_timestamp("created_at", t))
            .transpose()?
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
    })
}

#[tonic::async_trait]
impl SigningService for SigningGrpc {
    async fn sign_document(
        &self,
        req: Request<pb::SignDocumentRequest>,
    ) -> Result<Response<pb::SignDocumentResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let signed = self.0.sign(&who, &r.issuer_code, &r.payload).await?;
        Ok(Response::new(pb::SignDocumentResponse {
            jws: signed.jws,
            key_id: signed.key_id,
            algorithm: pb::SignatureAlgorithm::Es256 as i32,
        }))
    }

    async fn sign_documents(
        &self,
        req: Request<pb::SignDocumentsRequest>,
    ) -> Result<Response<pb::SignDocumentsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let signed = self.0.sign_many(&who, &r.issuer_code, r.payloads).await?;
        let key_id = signed.first().map(|s| s.key_id.clone()).unwrap_or_default();
        Ok(Response::new(pb::SignDocumentsResponse { jws: signed.into_iter().map(|s| s.jws).collect(), key_id }))
    }

    async fn list_public_keys(
        &self,
        req: Request<pb::ListPublicKeysRequest>,
    ) -> Result<Response<pb::ListPublicKeysResponse>, Status> {
        let who = principal(&req)?;
        let issuer = req.into_inner().issuer_code;
        let keys = self.0.public_keys(&who, (!issuer.is_empty()).then_some(issuer.as_str())).await?;
        Ok(Response::new(pb::ListPublicKeysResponse {
            jwks_json: jwks(&keys).to_string(),
            keys: keys.iter().map(key_to_wire).collect(),
        }))
    }
}
