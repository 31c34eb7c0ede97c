//! Issuer certificates from a CA: a certificate request signed by the key
//! itself, and the CA's chain attached to the key (checked, recorded as a
//! key event, and published in its JWK as `x5c`).

use sqlx::Row;
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::Reason;
use zhengzhao_proto::ServiceError;
use zhengzhao_store::now;

use crate::{
    KEY_COLUMNS, KeyStatus, MAX_CHAIN_PEM, PublicKeyRecord, Signing, SigningError, blocking, key_from_row,
    log_key_event,
};

impl Signing {
    /// A PKCS#10 certificate request (PEM) for the active key `key_id`,
    /// signed by it, under `subject` (RFC 4514; empty: `CN=<issuer code>`).
    pub async fn certificate_request(
        &self,
        who: &Principal,
        key_id: &str,
        subject: &str,
    ) -> Result<String, ServiceError> {
        authorize(who, &Action::ManageKeys)?;
        let row = sqlx::query(
            "SELECT issuer_code, algorithm, status, private_envelope, public_jwk FROM issuer_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| SigningError::NoKey(key_id.to_owned()))?;
        let issuer: String = row.try_get("issuer_code")?;
        let status: String = row.try_get("status")?;
        if status != KeyStatus::Active.name() {
            return Err(SigningError::NotActive { key_id: key_id.to_owned(), status }.into());
        }
        let subject = if subject.trim().is_empty() { format!("CN={issuer}") } else { subject.to_owned() };
        zhengzhao_crypto::x509::parse_subject(&subject).map_err(|e| ServiceError::invalid("subject", e))?;
        let signer = self.signer(key_id, &row).await?;
        let (pem, failed) = blocking(move || {
            let mut failed = None;
            let pem = zhengzhao_crypto::x509::certificate_request(&signer.public_key(), &subject, |m| {
                signer.sign(m).map_err(|e| {
                    let text = e.to_string();
                    failed = Some(e);
                    text
                })
            });
            (pem, failed)
        })
        .await?;
        if let Some(e) = failed {
            return Err(e);
        }
        let pem = pem.map_err(|e| ServiceError::invalid("subject", e))?;
        tracing::info!(key_id = %key_id, actor = %who.actor(), "certificate request made for an issuer key");
        Ok(pem)
    }

    /// Attaches a CA's certificate chain (PEM, leaf first) to `key_id`: the
    /// leaf must certify this key, for signatures, and be valid now; each
    /// certificate must be signed by the next, a CA. Whether the CA is
    /// trusted is each verifier's call. Recorded in the key's history; the
    /// key's signatures carry the chain from then on.
    pub async fn attach_certificate(
        &self,
        who: &Principal,
        key_id: &str,
        chain_pem: &str,
        reason: &str,
    ) -> Result<(PublicKeyRecord, String), ServiceError> {
        use zhengzhao_crypto::x509::Chain;
        authorize(who, &Action::ManageKeys)?;
        let reason = Reason::parse_field("reason", reason)?;
        if chain_pem.len() > MAX_CHAIN_PEM {
            return Err(ServiceError::invalid("chain_pem", format!("at most {MAX_CHAIN_PEM} bytes")));
        }
        let chain = Chain::from_pem(chain_pem).map_err(|e| ServiceError::invalid("chain_pem", e.to_string()))?;
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM issuer_keys WHERE key_id = $1")))
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await?;
        let key = row.as_ref().map(key_from_row).transpose()?.ok_or_else(|| SigningError::NoKey(key_id.to_owned()))?;
        if key.status == KeyStatus::Compromised {
            return Err(SigningError::NotActive { key_id: key_id.to_owned(), status: key.status.name().into() }.into());
        }
        let public = zhengzhao_crypto::IssuerPublicKey::from_jwk(&key.jwk).map_err(ServiceError::internal)?;
        chain.check_links(&public, &key.issuer_code).map_err(|e| ServiceError::invalid("chain_pem", e.to_string()))?;
        let at = now();
        if let Some(why) = chain.invalid_at(at) {
            return Err(ServiceError::invalid("chain_pem", format!("{why}: attach a current certificate")));
        }
        let mut jwk = key.jwk.clone();
        if let Some(o) = jwk.as_object_mut() {
            o.insert("x5c".into(), chain.to_x5c().into());
        }
        // Not a key marked compromised meanwhile.
        let done = sqlx::query("UPDATE issuer_keys SET public_jwk = $2 WHERE key_id = $1 AND status <> 'compromised'")
            .bind(key_id)
            .bind(jwk.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != 1 {
            return Err(SigningError::NotActive { key_id: key_id.to_owned(), status: "compromised".into() }.into());
        }
        let described = chain.describe();
        log_key_event(&mut tx, key_id, &format!("certified: {described}"), &who.actor(), &reason, at).await?;
        tx.commit().await?;
        tracing::info!(key_id = %key_id, certificate = %described, "issuer key certified");
        self.forget(&key.issuer_code);
        self.events.changed().await;
        Ok((PublicKeyRecord { jwk, ..key }, described))
    }
}
