//! The signing service's gRPC edge.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zhengzhao_auth::{Action, authorized, principal};
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::convert::{algorithm_from_wire, from_timestamp};
use zhengzhao_proto::signing::v1 as pb;
use zhengzhao_proto::signing::v1::signing_service_server::{SigningService, SigningServiceServer};

use crate::{Signing, jwks};

/// The tonic service over [`Signing`].
#[derive(Debug, Clone)]
pub struct SigningGrpc(pub Arc<Signing>);

impl SigningGrpc {
    pub fn into_server(self) -> SigningServiceServer<Self> {
        SigningServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl SigningService for SigningGrpc {
    type WatchKeyEventsStream = crate::events::KeyEventStream;

    async fn watch_key_events(
        &self,
        req: Request<tonic::Streaming<pb::WatchKeyEventsRequest>>,
    ) -> Result<Response<Self::WatchKeyEventsStream>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(self.0.watch_key_events(&who, req.into_inner())?))
    }

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
            algorithm: pb::SignatureAlgorithm::from(signed.algorithm) as i32,
        }))
    }

    async fn make_selective_disclosure(
        &self,
        req: Request<pb::MakeSelectiveDisclosureRequest>,
    ) -> Result<Response<pb::MakeSelectiveDisclosureResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let (sd_jwt, key_id) = zhengzhao_clients::SigningApi::selective_disclosure(
            self.0.as_ref(),
            &who,
            &r.licence_jws,
            &r.holder_jwk_json,
            &r.scenario_json,
            r.lifetime_seconds,
        )
        .await?;
        Ok(Response::new(pb::MakeSelectiveDisclosureResponse { sd_jwt, key_id }))
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
            keys: keys.iter().map(pb::PublicKey::from).collect(),
        }))
    }

    async fn import_public_keys(
        &self,
        req: Request<pb::ImportPublicKeysRequest>,
    ) -> Result<Response<pb::ImportPublicKeysResponse>, Status> {
        let who = authorized(&req, &Action::ImportPublicKeys)?;
        let r = req.into_inner();
        let keys = r
            .keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                zhengzhao_crypto::published::PublicKeyRecord::try_from(k)
                    .map_err(|e| ServiceError::invalid(format!("keys[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        let changed = self.0.import_public_keys(&who, &r.library, &keys).await?;
        Ok(Response::new(pb::ImportPublicKeysResponse { changed }))
    }

    async fn create_key(&self, req: Request<pb::CreateKeyRequest>) -> Result<Response<pb::CreateKeyResponse>, Status> {
        let who = authorized(&req, &Action::ManageKeys)?;
        let r = req.into_inner();
        let alg = algorithm_from_wire("algorithm", r.algorithm)?
            .ok_or_else(|| ServiceError::invalid("algorithm", "required: ES256 or SM2_SM3"))?;
        let key = self.0.create_key(&who, &r.issuer_code, alg, &r.reason).await?;
        Ok(Response::new(pb::CreateKeyResponse { key: Some(pb::PublicKey::from(&key)) }))
    }

    async fn rotate_key(&self, req: Request<pb::RotateKeyRequest>) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let who = authorized(&req, &Action::ManageKeys)?;
        let r = req.into_inner();
        let alg = algorithm_from_wire("algorithm", r.algorithm)?;
        let (old, new) = self.0.rotate_key(&who, &r.issuer_code, alg, &r.reason).await?;
        Ok(Response::new(pb::RotateKeyResponse {
            retired: Some(pb::PublicKey::from(&old)),
            active: Some(pb::PublicKey::from(&new)),
        }))
    }

    async fn retire_key(&self, req: Request<pb::RetireKeyRequest>) -> Result<Response<pb::RetireKeyResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let key = self.0.retire_key(&who, &r.issuer_code, &r.reason).await?;
        Ok(Response::new(pb::RetireKeyResponse { key: Some(pb::PublicKey::from(&key)) }))
    }

    async fn compromise_key(
        &self,
        req: Request<pb::CompromiseKeyRequest>,
    ) -> Result<Response<pb::CompromiseKeyResponse>, Status> {
        let who = authorized(&req, &Action::ManageKeys)?;
        let r = req.into_inner();
        let since = r
            .since
            .as_ref()
            .map(|t| from_timestamp("since", t))
            .transpose()?
            .ok_or_else(|| ServiceError::invalid("since", "required"))?;
        let c = self.0.compromise_key(&who, &r.key_id, since, &r.reason).await?;
        Ok(Response::new(pb::CompromiseKeyResponse {
            key: Some(pb::PublicKey::from(&c.key)),
            replacement: c.replacement.as_ref().map(pb::PublicKey::from),
        }))
    }

    async fn create_csr(&self, req: Request<pb::CreateCsrRequest>) -> Result<Response<pb::CreateCsrResponse>, Status> {
        let who = authorized(&req, &Action::ManageKeys)?;
        let r = req.into_inner();
        let csr_pem = self.0.certificate_request(&who, &r.key_id, &r.subject).await?;
        Ok(Response::new(pb::CreateCsrResponse { csr_pem }))
    }

    async fn attach_certificate(
        &self,
        req: Request<pb::AttachCertificateRequest>,
    ) -> Result<Response<pb::AttachCertificateResponse>, Status> {
        let who = authorized(&req, &Action::ManageKeys)?;
        let r = req.into_inner();
        let (key, certificate) = self.0.attach_certificate(&who, &r.key_id, &r.chain_pem, &r.reason).await?;
        Ok(Response::new(pb::AttachCertificateResponse { key: Some(pb::PublicKey::from(&key)), certificate }))
    }
}
