//! How other services reach the signing service: in-process, or over gRPC.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::transport::Channel;
use zhengzhao_auth::{Principal, ServiceCredentials};
use zhengzhao_crypto::published::{PublicKeyRecord, Signed};
use zhengzhao_proto::ServiceError;
use zhengzhao_proto::convert::algorithm_from_wire;
use zhengzhao_proto::signing::v1 as pb;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;
use zhengzhao_telemetry::trace::Traced;

use crate::keys::{KeyCache, KeyGeneration, KeySet};

/// Most payloads signed in one batch call.
pub const MAX_BATCH: usize = 1000;

/// What other services ask of the signing service in-process; the signing
/// service implements it.
#[tonic::async_trait]
pub trait SigningApi: Send + Sync {
    /// Signs `payload` with `issuer`'s active key.
    async fn sign(&self, who: &Principal, issuer: &str, payload: &[u8]) -> Result<Signed, ServiceError>;

    /// Signs many payloads of one issuer: one signature per payload, in order.
    async fn sign_many(
        &self,
        who: &Principal,
        issuer: &str,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Vec<Signed>, ServiceError>;

    /// A selective-disclosure licence (SD-JWT with every disclosure) of
    /// `licence_jws`, bound to `holder_jwk_json`: its text and key id.
    async fn selective_disclosure(
        &self,
        who: &Principal,
        licence_jws: &str,
        holder_jwk_json: &str,
        scenario_json: &str,
        lifetime_seconds: u32,
    ) -> Result<(String, String), ServiceError>;

    /// Every public key with its history, of one issuer or of all.
    async fn public_keys(&self, who: &Principal, issuer: Option<&str>) -> Result<Vec<PublicKeyRecord>, ServiceError>;

    /// The key generation, moved on (before the call returns) by every call
    /// that changes a key: what in-process key caches are tagged with.
    fn key_generation(&self) -> watch::Receiver<KeyGeneration>;
}

#[derive(Clone)]
enum Via {
    Local(Arc<dyn SigningApi>, Principal),
    Remote(SigningServiceClient<crate::Transport>),
}

/// The signing service as another service sees it, with a cache of the
/// issuer keys it has read (see [`crate::keys`]), shared by its clones.
#[derive(Clone)]
pub struct SigningClient {
    via: Via,
    keys: Arc<KeyCache>,
}

impl SigningClient {
    /// The signing service in this process, called as `who`.
    pub fn local(signing: Arc<dyn SigningApi>, who: Principal) -> Self {
        let keys = Arc::new(KeyCache::local(signing.key_generation()));
        SigningClient { via: Via::Local(signing, who), keys }
    }

    pub fn remote(channel: Channel, credentials: ServiceCredentials) -> Self {
        let client = SigningServiceClient::with_interceptor(Traced::new(channel), credentials);
        SigningClient { keys: Arc::new(KeyCache::remote(client.clone())), via: Via::Remote(client) }
    }

    pub async fn sign(&self, issuer: &str, payload: &[u8]) -> Result<Signed, ServiceError> {
        match &self.via {
            Via::Local(s, who) => s.sign(who, issuer, payload).await,
            Via::Remote(c) => {
                let r = c
                    .clone()
                    .sign_document(pb::SignDocumentRequest {
                        issuer_code: issuer.to_owned(),
                        payload: payload.to_vec(),
                    })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                let algorithm = algorithm_from_wire("algorithm", r.algorithm)?
                    .ok_or_else(|| ServiceError::internal("signing named no algorithm"))?;
                Ok(Signed { jws: r.jws, key_id: r.key_id, algorithm })
            }
        }
    }

    /// A selective-disclosure licence of `licence_jws` for a presentation:
    /// `<jwt>~<every disclosure>~` and the key that signed it.
    pub async fn selective_disclosure(
        &self,
        licence_jws: &str,
        holder_jwk_json: &str,
        scenario_json: &str,
        lifetime_seconds: u32,
    ) -> Result<(String, String), ServiceError> {
        match &self.via {
            Via::Local(s, who) => {
                s.selective_disclosure(who, licence_jws, holder_jwk_json, scenario_json, lifetime_seconds).await
            }
            Via::Remote(c) => {
                let r = c
                    .clone()
                    .make_selective_disclosure(pb::MakeSelectiveDisclosureRequest {
                        licence_jws: licence_jws.to_owned(),
                        holder_jwk_json: holder_jwk_json.to_owned(),
                        scenario_json: scenario_json.to_owned(),
                        lifetime_seconds,
                    })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                Ok((r.sd_jwt, r.key_id))
            }
        }
    }

    /// Signs many payloads of one issuer (batches of at most [`MAX_BATCH`]):
    /// one signature per payload, in order, or an error for the whole batch.
    pub async fn sign_many(&self, issuer: &str, payloads: Vec<Vec<u8>>) -> Result<Vec<Signed>, ServiceError> {
        let count = payloads.len();
        let signed = self.sign_many_unchecked(issuer, payloads).await?;
        if signed.len() != count {
            return Err(ServiceError::internal(format!(
                "signing returned {} signatures for {count} documents: the batch is not signed",
                signed.len()
            )));
        }
        Ok(signed)
    }

    async fn sign_many_unchecked(&self, issuer: &str, payloads: Vec<Vec<u8>>) -> Result<Vec<Signed>, ServiceError> {
        match &self.via {
            Via::Local(s, who) => s.sign_many(who, issuer, payloads).await,
            Via::Remote(c) => {
                let mut out = Vec::with_capacity(payloads.len());
                for part in payloads.chunks(MAX_BATCH) {
                    let r = c
                        .clone()
                        .sign_documents(pb::SignDocumentsRequest {
                            issuer_code: issuer.to_owned(),
                            payloads: part.to_vec(),
                        })
                        .await
                        .map_err(|s| ServiceError::from_status(&s))?
                        .into_inner();
                    if r.jws.len() != part.len() {
                        return Err(ServiceError::internal("signing returned a different number of signatures"));
                    }
                    for jws in r.jws {
                        let algorithm = zhengzhao_crypto::jws::parse(&jws)
                            .ok()
                            .and_then(|p| zhengzhao_crypto::Algorithm::from_jws_alg(&p.header.alg))
                            .ok_or_else(|| ServiceError::internal("signing returned an unreadable JWS"))?;
                        out.push(Signed { jws, key_id: r.key_id.clone(), algorithm });
                    }
                }
                Ok(out)
            }
        }
    }

    /// Every public key with its history, of one issuer or of all.
    pub async fn public_keys(&self, issuer: Option<&str>) -> Result<Vec<PublicKeyRecord>, ServiceError> {
        Ok(self.verifying_keys(issuer).await?.records())
    }

    /// The keys of `issuer` (or of all) parsed for verification: from the
    /// cache while no key has changed since they were read.
    pub async fn verifying_keys(&self, issuer: Option<&str>) -> Result<Arc<KeySet>, ServiceError> {
        let name = issuer.unwrap_or_default();
        let generation = self.keys.generation();
        if let Some(g) = generation
            && let Some(keys) = self.keys.get(name, g)
        {
            return Ok(keys);
        }
        let keys = Arc::new(KeySet::new(self.read_public_keys(issuer).await?));
        if let Some(g) = generation {
            self.keys.put(name, g, keys.clone());
        }
        Ok(keys)
    }

    async fn read_public_keys(&self, issuer: Option<&str>) -> Result<Vec<PublicKeyRecord>, ServiceError> {
        match &self.via {
            Via::Local(s, who) => s.public_keys(who, issuer).await,
            Via::Remote(c) => {
                let r = c
                    .clone()
                    .list_public_keys(pb::ListPublicKeysRequest { issuer_code: issuer.unwrap_or_default().to_owned() })
                    .await
                    .map_err(|s| ServiceError::from_status(&s))?
                    .into_inner();
                r.keys.into_iter().map(PublicKeyRecord::try_from).collect()
            }
        }
    }
}
