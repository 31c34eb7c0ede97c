//! Where issuer private keys are and sign: sealed envelopes opened in this
//! process, or keys in the PKCS#11 token; making a fresh key before the
//! transaction that records it, and removing it from the token again when
//! that transaction fails.

use sqlx::Row;
use zhengzhao_crypto::{Algorithm, IssuerKeyPair};
use zhengzhao_proto::ServiceError;

use crate::{Signing, SigningError, hex_id, pkcs11};

/// A key made and not yet recorded.
pub(crate) struct NewKey {
    pub(crate) key_id: String,
    pub(crate) alg: Algorithm,
    pub(crate) signer: Signer,
    pub(crate) envelope: Vec<u8>,
}

/// What a token's refusal or failure is to a caller: UNAVAILABLE when it
/// may work again, FAILED_PRECONDITION when an operator must look.
pub(crate) fn token_error(e: pkcs11::TokenError) -> ServiceError {
    tracing::error!(error = %e, "the PKCS#11 token");
    match e {
        pkcs11::TokenError::Unavailable(_) => {
            ServiceError::Unavailable(
                "the PKCS#11 token (HSM) failed or cannot be reached; nothing was signed or changed (the signing service's log says why)".into(),
            )
        }
        pkcs11::TokenError::Refused(m) => ServiceError::FailedPrecondition(m),
    }
}

/// Runs blocking work (a PKCS#11 call) off the async runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        if e.is_cancelled() {
            SigningError::ShuttingDown.into()
        } else {
            ServiceError::internal(format!("a key operation failed: {e}"))
        }
    })
}

/// Where an issuer's private key is and signs.
pub(crate) enum Signer {
    /// In this process, opened from its envelope under the master key.
    Software(IssuerKeyPair),
    /// In the PKCS#11 token (ES256).
    Token(pkcs11::TokenKey),
}

impl Signer {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            Signer::Software(p) => p.algorithm(),
            Signer::Token(k) => k.public_key().algorithm(),
        }
    }

    pub(crate) fn public_key(&self) -> zhengzhao_crypto::IssuerPublicKey {
        match self {
            Signer::Software(p) => p.public_key(),
            Signer::Token(k) => k.public_key(),
        }
    }

    /// A 64-byte `r || s` signature over `message`; a token that fails is
    /// UNAVAILABLE (nothing is signed; try again).
    pub(crate) fn sign(&self, message: &[u8]) -> Result<[u8; 64], ServiceError> {
        match self {
            Signer::Software(p) => Ok(p.sign(message)),
            Signer::Token(k) => k.sign(message).map_err(token_error),
        }
    }
}

impl Signing {
    /// A fresh key of `alg` for `issuer`, not yet recorded: in this process
    /// (sealed under the master key) or, with a token, made in the token.
    pub(crate) async fn new_key(&self, issuer: &str, alg: Algorithm) -> Result<NewKey, ServiceError> {
        let key_id = format!("{issuer}.{}.{}", alg.short_name(), hex_id());
        let (signer, envelope) = match &self.token {
            None => {
                let pair = IssuerKeyPair::generate(alg);
                let envelope = self.master.seal(&key_id, &pair.secret_bytes());
                (Signer::Software(pair), envelope)
            }
            Some(_) if alg != Algorithm::Es256 => return Err(SigningError::NoSm2InToken.into()),
            Some(token) => {
                let (token, id) = (token.clone(), key_id.clone());
                let key = blocking(move || token.generate_es256(&id)).await?.map_err(token_error)?;
                let reference = [pkcs11::REFERENCE_PREFIX, key_id.as_bytes()].concat();
                (Signer::Token(key), reference)
            }
        };
        Ok(NewKey { key_id, alg, signer, envelope })
    }

    /// Makes a fresh key and runs `f` with it; when `f` fails, a key made in
    /// the token is removed from it again (nothing recorded it).
    pub(crate) async fn with_new_key<T>(
        &self,
        issuer: &str,
        alg: Algorithm,
        f: impl AsyncFnOnce(NewKey) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        let new = self.new_key(issuer, alg).await?;
        let key_id = new.key_id.clone();
        let outcome = f(new).await;
        if outcome.is_err() {
            self.discard(&key_id).await;
        }
        outcome
    }

    /// Removes from the token a key made for a change that did not happen.
    pub(crate) async fn discard(&self, key_id: &str) {
        let Some(token) = self.token.clone() else { return };
        let id = key_id.to_owned();
        match blocking(move || token.destroy(&id)).await {
            Ok(Ok(())) => tracing::info!(key_id = %key_id, "unrecorded key removed from the token"),
            Ok(Err(e)) => tracing::error!(key_id = %key_id, error = %e, "an unrecorded key stays in the token"),
            Err(e) => tracing::error!(key_id = %key_id, error = %e, "an unrecorded key stays in the token"),
        }
    }

    /// The private key of `key_id` from its row (`algorithm`,
    /// `private_envelope`, `public_jwk`): opened from its envelope, or found
    /// in the token.
    pub(crate) async fn signer(&self, key_id: &str, row: &sqlx::any::AnyRow) -> Result<Signer, ServiceError> {
        let alg: String = row.try_get("algorithm")?;
        let alg = Algorithm::from_jws_alg(&alg).ok_or_else(|| ServiceError::internal("bad algorithm"))?;
        let envelope: Vec<u8> = row.try_get("private_envelope")?;
        if envelope.starts_with(pkcs11::REFERENCE_PREFIX) {
            let token = self.token.as_ref().ok_or_else(|| {
                ServiceError::internal(format!("key {key_id} is in a PKCS#11 token, but signing.pkcs11 is not set"))
            })?;
            let jwk: serde_json::Value =
                serde_json::from_str(&row.try_get::<String, _>("public_jwk")?).map_err(ServiceError::internal)?;
            let public = zhengzhao_crypto::IssuerPublicKey::from_jwk(&jwk).map_err(ServiceError::internal)?;
            let (token, id) = (token.clone(), key_id.to_owned());
            return blocking(move || token.find(&id, public)).await?.map(Signer::Token).map_err(token_error);
        }
        let secret =
            self.master.open(key_id, &envelope).map_err(|e| ServiceError::internal(format!("key {key_id}: {e}")))?;
        IssuerKeyPair::from_secret_bytes(alg, &secret).map(Signer::Software).map_err(ServiceError::internal)
    }
}
