//! The signing service's gRPC edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::principal;
use zhengzhao_crypto::Algorithm;
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::convert::{from_timestamp, stored_timestamp, timestamp};
use zhengzhao_proto::signing::v1 as pb;
use zhengzhao_proto::signing::v1::signing_service_server::{SigningService, SigningServiceServer};

use crate::{KeyStatus, PublicKeyRecord, Signing, jwks};

/// The tonic service over [`Signing`].
#[derive(Debug, Clone)]
pub struct SigningGrpc(pub Arc<Signing>);

impl SigningGrpc {
    pub fn into_server(self) -> SigningServiceServer<Self> {
        SigningServiceServer::new(self)
    }
}

pub fn algorithm_to_wire(a: Algorithm) -> pb::SignatureAlgorithm {
    match a {
        Algorithm::Es256 => pb::SignatureAlgorithm::Es256,
        Algorithm::Sm2Sm3 => pb::SignatureAlgorithm::Sm2Sm3,
    }
}

/// The algorithm a request names; `None` when unspecified.
pub fn algorithm_from_wire(field: &str, a: i32) -> Result<Option<Algorithm>, ServiceError> {
    match pb::SignatureAlgorithm::try_from(a) {
        Ok(pb::SignatureAlgorithm::Unspecified) => Ok(None),
        Ok(pb::SignatureAlgorithm::Es256) => Ok(Some(Algorithm::Es256)),
        Ok(pb::SignatureAlgorithm::Sm2Sm3) => Ok(Some(Algorithm::Sm2Sm3)),
        Err(_) => Err(ServiceError::invalid(field, format!("unknown algorithm {a}"))),
    }
}

fn status_to_wire(s: KeyStatus) -> pb::KeyStatus {
    match s {
        KeyStatus::Active => pb::KeyStatus::Active,
        KeyStatus::Retired => pb::KeyStatus::Retired,
        KeyStatus::Compromised => pb::KeyStatus::Compromised,
    }
}

pub fn key_to_wire(k: &PublicKeyRecord) -> pb::PublicKey {
    pb::PublicKey {
        key_id: k.key_id.clone(),
        issuer_code: k.issuer_code.clone(),
        algorithm: algorithm_to_wire(k.algorithm) as i32,
        status: status_to_wire(k.status) as i32,
        jwk_json: k.jwk.to_string(),
        created_at: Some(timestamp(k.created_at)),
        retired_at: k.retired_at.map(timestamp),
        compromised_since: k.compromised_since.map(timestamp),
    }
}

pub fn key_from_wire(k: pb::PublicKey) -> Result<PublicKeyRecord, ServiceError> {
    let status = match pb::KeyStatus::try_from(k.status) {
        Ok(pb::KeyStatus::Active) => KeyStatus::Active,
        Ok(pb::KeyStatus::Retired) => KeyStatus::Retired,
        Ok(pb::KeyStatus::Compromised) => KeyStatus::Compromised,
        _ => return Err(ServiceError::internal("signing returned a key without status")),
    };
    let algorithm = algorithm_from_wire("algorithm", k.algorithm)?
        .ok_or_else(|| ServiceError::internal("signing returned a key without algorithm"))?;
    Ok(PublicKeyRecord {
        key_id: k.key_id,
        issuer_code: k.issuer_code,
        algorithm,
        status,
        jwk: serde_json::from_str(&k.jwk_json).map_err(ServiceError::internal)?,
        created_at: k
            .created_at
            .as_ref()
            .map(|t| stored_timestamp("created_at", t))
            .transpose()?
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        retired_at: k.retired_at.as_ref().map(|t| stored_timestamp("retired_at", t)).transpose()?,
        compromised_since: k
            .compromised_since
            .as_ref()
            .map(|t| stored_timestamp("compromised_since", t))
            .transpose()?,
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
            algorithm: algorithm_to_wire(signed.algorithm) as i32,
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

    async fn create_key(&self, req: Request<pb::CreateKeyRequest>) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let alg = algorithm_from_wire("algorithm", r.algorithm)?
            .ok_or_else(|| ServiceError::invalid("algorithm", "required: ES256 or SM2_SM3"))?;
        let key = self.0.create_key(&who, &r.issuer_code, alg, &r.reason).await?;
        Ok(Response::new(pb::CreateKeyResponse { key: Some(key_to_wire(&key)) }))
    }

    async fn rotate_key(&self, req: Request<pb::RotateKeyRequest>) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let alg = algorithm_from_wire("algorithm", r.algorithm)?;
        let (old, new) = self.0.rotate_key(&who, &r.issuer_code, alg, &r.reason).await?;
        Ok(Response::new(pb::RotateKeyResponse { retired: Some(key_to_wire(&old)), active: Some(key_to_wire(&new)) }))
    }

    async fn retire_key(&self, req: Request<pb::RetireKeyRequest>) -> Result<Response<pb::RetireKeyResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let key = self.0.retire_key(&who, &r.issuer_code, &r.reason).await?;
        Ok(Response::new(pb::RetireKeyResponse { key: Some(key_to_wire(&key)) }))
    }

    async fn compromise_key(
        &self,
        req: Request<pb::CompromiseKeyRequest>,
    ) -> Result<Response<pb::CompromiseKeyResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let since = r
            .since
            .as_ref()
            .map(|t| from_timestamp("since", t))
            .transpose()?
            .ok_or_else(|| ServiceError::invalid("since", "required"))?;
        let c = self.0.compromise_key(&who, &r.key_id, since, &r.reason).await?;
        Ok(Response::new(pb::CompromiseKeyResponse {
            key: Some(key_to_wire(&c.key)),
            replacement: c.replacement.as_ref().map(key_to_wire),
        }))
    }
}
