//! Annotated copies (加注件, art. 15): for a granted use, the library signs a
//! copy of the licence — the face fields the entry shows — that says who used
//! it, for what cause and case, when, and until when the copy is good. The
//! signature is the library's key in the signing service (its `kid` in the
//! JWKS, issuer = the library's code), so anyone with the JWKS can check it.
//! A copy prints as a PDF with a QR code that resolves to its verification
//! (`GET /copies/{id}`) and a watermark naming the agency and cause; the PDF
//! is served through single-use download links valid ten minutes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest;
use time::{Duration, OffsetDateTime};
use zhengzhao_core::document::{DocumentHolder, DocumentIssuer};
use zhengzhao_core::mask_id_number;
use zhengzhao_crypto::IssuerPublicKey;
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{format_time, now, parse_time};

use crate::model::UseContext;
use crate::rows::{self, StoredCopy};
use crate::usage::{Caller, in_force};
use crate::usagelog::Job;
use crate::{Exchange, ExchangeError};

/// The `typ` a copy's payload carries.
pub const COPY_TYP: &str = "zhengzhao-copy";
/// Days a copy is good for when the request says 0.
pub const DEFAULT_COPY_DAYS: u32 = 30;
/// Most days a copy may be good for.
pub const MAX_COPY_DAYS: u32 = 90;
/// How long a download link lives.
pub const LINK_LIFETIME: Duration = Duration::minutes(10);

/// The licence as the copy shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopiedLicence {
    pub identifier: String,
    pub licence_number: String,
    pub name: String,
    pub type_code: String,
    pub template_version: u32,
    pub issuer: DocumentIssuer,
    pub holder: DocumentHolder,
    pub issue_date: String,
    pub valid_from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    pub area_code: String,
    /// The face fields the entry shows.
    pub face_fields: BTreeMap<String, String>,
    /// The face fields withheld, by key.
    pub withheld_fields: Vec<String>,
    /// Its status when the copy was made.
    pub status: String,
    /// Lower-case hex SHA-256 of the licence's JWS: ties the copy to the signed original.
    pub jws_sha256: String,
}

/// Who used the licence, for what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyUse {
    pub agency_code: String,
    pub operator: String,
    pub use_cause: String,
    pub service_item_code: String,
    pub case_number: String,
    pub used_at: String,
    pub entry_id: i64,
}

/// What the library signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyPayload {
    pub typ: String,
    pub copy_id: String,
    /// The library's code (the signing issuer).
    pub library: String,
    pub licence: CopiedLicence,
    #[serde(rename = "use")]
    pub use_: CopyUse,
    pub issued_at: String,
    pub good_until: String,
    pub verify_url: String,
}

/// An issued copy.
#[derive(Debug, Clone)]
pub struct IssuedCopy {
    pub copy_id: String,
    pub jws: String,
    pub good_until: OffsetDateTime,
    pub pdf: Option<Vec<u8>>,
    /// Path (and query) of the download link, relative to the public URL.
    pub download_path: Option<String>,
    pub link_expires_at: Option<OffsetDateTime>,
    pub verify_url: String,
    pub usage_id: i64,
}

/// What the copy request asks for besides the use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyOptions {
    pub valid_days: u32,
    pub pdf: bool,
    pub link: bool,
}

/// The answer `GET /copies/{id}` gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyVerdict {
    pub copy_id: String,
    /// The stored copy's signature verifies under the library's published key.
    pub genuine: bool,
    /// The copy is past its good-until time.
    pub expired: bool,
    /// The licence's status now.
    pub licence_status: String,
    /// Genuine, not expired, and the licence in force.
    pub valid: bool,
    pub identifier: String,
    pub licence_name: String,
    pub agency_code: String,
    pub good_until: String,
    pub detail: String,
}

fn link_digest(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// `Asia/Shanghai` end of `d` as a UTC instant.
fn end_of_day(d: time::Date) -> OffsetDateTime {
    let next = d.next_day().unwrap_or(d);
    next.midnight().assume_offset(zhengzhao_core::clock::LIBRARY_OFFSET) - Duration::seconds(1)
}

impl Exchange {
    /// Issues an annotated copy for a granted use.
    pub async fn copy(
        &self,
        caller: &Caller,
        identifier: &str,
        use_: &UseContext,
        options: CopyOptions,
    ) -> Result<IssuedCopy, ServiceError> {
        let days = match options.valid_days {
            0 => DEFAULT_COPY_DAYS,
            n if n > MAX_COPY_DAYS => {
                return Err(ServiceError::invalid("valid_days", format!("1 to {MAX_COPY_DAYS}")));
            }
            n => n,
        };
        if options.pdf || options.link {
            self.font()?;
        }
        let (licence, doc, entry, mut r) = self.decide(caller, identifier, use_).await?;
        let at = now();
        let mut good_until = at + Duration::days(i64::from(days));
        if let Some(until) = entry.terms.until {
            good_until = good_until.min(end_of_day(until));
        }
        let copy_id = uuid::Uuid::new_v4().to_string();
        let verify_url = format!("{}/copies/{copy_id}", self.public_url.trim_end_matches('/'));
        let withheld: Vec<String> = doc.face_fields.keys().filter(|k| !entry.shows(k)).cloned().collect();
        let payload = CopyPayload {
            typ: COPY_TYP.into(),
            copy_id: copy_id.clone(),
            library: self.agency.clone(),
            licence: CopiedLicence {
                identifier: doc.identifier.clone(),
                licence_number: doc.licence_number.clone(),
                name: doc.name.clone(),
                type_code: doc.type_code.clone(),
                template_version: doc.template_version,
                issuer: doc.issuer.clone(),
                holder: doc.holder.clone(),
                issue_date: doc.issue_date.clone(),
                valid_from: doc.valid_from.clone(),
                valid_until: doc.valid_until.clone(),
                area_code: doc.area_code.clone(),
                face_fields: doc
                    .face_fields
                    .iter()
                    .filter(|(k, _)| entry.shows(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                withheld_fields: withheld,
                status: licence.status.name().to_owned(),
                jws_sha256: zhengzhao_crypto::translog::jws_digest(&licence.jws),
            },
            use_: CopyUse {
                agency_code: caller.principal.agency.clone(),
                operator: caller.principal.operator.clone(),
                use_cause: use_.use_cause.trim().to_owned(),
                service_item_code: use_.service_item_code.clone(),
                case_number: use_.case_number.clone(),
                used_at: format_time(at),
                entry_id: entry.id,
            },
            issued_at: format_time(at),
            good_until: format_time(good_until),
            verify_url: verify_url.clone(),
        };
        let bytes = zhengzhao_core::canonical_json(&payload).map_err(ServiceError::internal)?;
        let signed = self.signing.sign(&self.agency, &bytes).await?;
        let pdf = if options.pdf { Some(self.render(&payload).await?) } else { None };
        let token = options.link.then(|| zhengzhao_crypto::b64url(&zhengzhao_crypto::random_bytes::<32>()));
        let link_expires_at = token.as_ref().map(|_| at + LINK_LIFETIME);
        r.entry_id = Some(entry.id);
        r.copy_id.clone_from(&copy_id);
        let stored = StoredCopy {
            copy_id: copy_id.clone(),
            identifier: licence.identifier.clone(),
            agency_code: caller.principal.agency.clone(),
            jws: signed.jws.clone(),
            good_until,
        };
        let link = token.as_ref().zip(link_expires_at).map(|(t, exp)| (link_digest(t), exp));
        let r = self
            .writer
            .write(Job::Copy { record: Box::new(r), copy: stored, link })
            .await?
            .pop()
            .ok_or_else(|| ServiceError::internal("the usage-log writer returned no record"))?;
        crate::usage::refused_in_flight(&r)?;
        tracing::info!(
            identifier = %licence.identifier, consumer = %caller.principal.actor(), copy = %copy_id,
            "annotated copy issued"
        );
        Ok(IssuedCopy {
            copy_id,
            jws: signed.jws,
            good_until,
            pdf,
            download_path: token.map(|t| format!("/copies/download/{t}")),
            link_expires_at,
            verify_url,
            usage_id: r.id,
        })
    }

    /// The copy font, loaded on first use (a failure is retried next time,
    /// so installing the font needs no restart).
    fn font(&self) -> Result<&zhengzhao_pdf::CopyFont, ServiceError> {
        if let Some(f) = self.font.get() {
            return Ok(f);
        }
        match self.font_source.load() {
            Ok(f) => Ok(self.font.get_or_init(|| f)),
            Err(e) => {
                tracing::warn!(reason = %e, "annotated copies cannot be printed until a CJK font is installed");
                Err(ExchangeError::NoFont(e).into())
            }
        }
    }

    /// The PDF of a copy: labels from the licence type's template.
    pub(crate) async fn render(&self, p: &CopyPayload) -> Result<Vec<u8>, ServiceError> {
        let font = self.font()?.clone();
        let labels: BTreeMap<String, (u32, String)> = match self
            .catalog
            .get(&p.licence.type_code, p.licence.template_version)
            .await
        {
            Ok(t) => t
                .definition
                .template
                .in_order()
                .iter()
                .enumerate()
                .map(|(i, f)| (f.key.clone(), (i as u32, f.label.clone())))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, type_code = %p.licence.type_code, "copy printed with field keys: no template");
                BTreeMap::new()
            }
        };
        let mut fields: Vec<(u32, String, String)> = p
            .licence
            .face_fields
            .iter()
            .map(|(k, v)| {
                let (order, label) = labels.get(k).cloned().unwrap_or((u32::MAX, k.clone()));
                (order, label, v.clone())
            })
            .collect();
        fields.sort();
        let face = zhengzhao_pdf::CopyFace {
            title: p.licence.name.clone(),
            identifier: p.licence.identifier.clone(),
            licence_number: p.licence.licence_number.clone(),
            holder_name: p.licence.holder.name.clone(),
            holder_id: mask_id_number(&p.licence.holder.id_number),
            issuer_name: p.licence.issuer.name.clone(),
            issue_date: p.licence.issue_date.clone(),
            valid_from: p.licence.valid_from.clone(),
            valid_until: p.licence.valid_until.clone().unwrap_or_default(),
            fields: fields.into_iter().map(|(_, l, v)| (l, v)).collect(),
            withheld: p.licence.withheld_fields.len(),
            annotation: vec![
                ("用证单位".into(), p.use_.agency_code.clone()),
                ("经办人".into(), p.use_.operator.clone()),
                ("用证事由".into(), p.use_.use_cause.clone()),
                ("事项编码".into(), p.use_.service_item_code.clone()),
                ("办件编号".into(), p.use_.case_number.clone()),
                ("用证时间".into(), p.use_.used_at.clone()),
                ("加注件有效期至".into(), p.good_until.clone()),
                ("加注件编号".into(), p.copy_id.clone()),
            ],
            watermark: format!("仅供 {} 用于 {}", p.use_.agency_code, p.use_.use_cause),
            verify_url: p.verify_url.clone(),
        };
        tokio::task::spawn_blocking(move || zhengzhao_pdf::render(&font, &face))
            .await
            .map_err(ServiceError::internal)?
            .map_err(ServiceError::internal)
    }

    /// Uses a download link once: the copy's PDF, or NOT_FOUND for a link
    /// that does not exist, was used, or expired.
    pub async fn download(&self, token: &str) -> Result<Vec<u8>, ServiceError> {
        let gone = || ServiceError::NotFound("no such download link: links work once, for 10 minutes".into());
        if token.is_empty()
            || token.len() > 64
            || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(gone());
        }
        let mut tx = self.db.begin().await?;
        let copy_id = rows::take_link(&mut tx, &link_digest(token), now()).await?.ok_or_else(gone)?;
        let copy = rows::load_copy(&mut tx, &copy_id).await?.ok_or(ExchangeError::NoSuchCopy(copy_id))?;
        tx.commit().await?;
        let parsed = zhengzhao_crypto::jws::parse(&copy.jws).map_err(ServiceError::internal)?;
        let payload: CopyPayload = serde_json::from_slice(&parsed.payload).map_err(ServiceError::internal)?;
        self.render(&payload).await
    }

    /// Checks a stored copy: its signature under the library's published
    /// key, its good-until time, and the licence's status now.
    pub async fn verify_copy(&self, copy_id: &str) -> Result<CopyVerdict, ServiceError> {
        if uuid::Uuid::parse_str(copy_id).is_err() {
            return Err(ExchangeError::NoSuchCopy(copy_id.chars().take(64).collect()).into());
        }
        let copy = {
            let mut conn = self.db.pool.acquire().await?;
            rows::load_copy(&mut conn, copy_id).await?.ok_or_else(|| ExchangeError::NoSuchCopy(copy_id.to_owned()))?
        };
        let keys = self.signing.public_keys(Some(&self.agency)).await?;
        let (genuine, payload, detail) = check_copy(&copy.jws, &keys);
        // What the answer says comes from the signed payload; the row only
        // finds it, and must agree with it.
        let (genuine, detail) = match &payload {
            Some(p)
                if genuine
                    && (p.copy_id != copy.copy_id
                        || p.licence.identifier != copy.identifier
                        || p.use_.agency_code != copy.agency_code) =>
            {
                (false, "the stored copy does not match its signed payload".to_owned())
            }
            _ => (genuine, detail),
        };
        let identifier = payload.as_ref().map_or(copy.identifier.clone(), |p| p.licence.identifier.clone());
        let agency_code = payload.as_ref().map_or(copy.agency_code.clone(), |p| p.use_.agency_code.clone());
        let at = now();
        let good_until = payload.as_ref().and_then(|p| parse_time(&p.good_until)).unwrap_or(copy.good_until);
        let expired = at > good_until;
        let licence_status = match self.issuance.get(&identifier).await {
            Ok(l) => l.status,
            Err(ServiceError::NotFound(_)) => zhengzhao_core::LicenceStatus::Other,
            Err(e) => return Err(e),
        };
        let valid = genuine
            && !expired
            && in_force(licence_status)
            && payload.as_ref().is_some_and(|p| p.copy_id == copy.copy_id);
        let detail = if !genuine {
            detail
        } else if expired {
            format!("the copy was good until {}", format_time(good_until))
        } else if !in_force(licence_status) {
            format!("the licence is now {}", licence_status.name())
        } else {
            "the copy is genuine and the licence is in force".into()
        };
        Ok(CopyVerdict {
            copy_id: copy.copy_id,
            genuine,
            expired,
            licence_status: licence_status.name().to_owned(),
            valid,
            identifier,
            licence_name: payload.as_ref().map(|p| p.licence.name.clone()).unwrap_or_default(),
            agency_code,
            good_until: format_time(good_until),
            detail,
        })
    }
}

/// Checks a copy's JWS against the library's published keys: whether it is
/// genuine, its payload, and why not.
pub fn check_copy(
    jws: &str,
    keys: &[zhengzhao_crypto::published::PublicKeyRecord],
) -> (bool, Option<CopyPayload>, String) {
    let parsed = match zhengzhao_crypto::jws::parse(jws) {
        Ok(p) => p,
        Err(e) => return (false, None, format!("not a JWS: {e}")),
    };
    let payload: Option<CopyPayload> =
        serde_json::from_slice(&parsed.payload).ok().filter(|p: &CopyPayload| p.typ == COPY_TYP);
    let Some(kid) = parsed.header.kid.as_deref() else {
        return (false, payload, "the copy names no key".into());
    };
    let Some(key) = keys.iter().find(|k| k.key_id == kid) else {
        return (false, payload, format!("the library has no key {kid}"));
    };
    let Ok(public) = IssuerPublicKey::from_jwk(&key.jwk) else {
        return (false, payload, format!("key {kid} is unreadable"));
    };
    if !public.verify(parsed.signing_input.as_bytes(), &parsed.signature) {
        return (false, payload, "the signature does not verify under the library's key".into());
    }
    let signed_at = parsed.header.iat.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
    if key.distrusts(signed_at) {
        return (false, payload, format!("key {kid} was compromised when the copy was signed"));
    }
    if payload.is_none() {
        return (false, None, "the signed payload is not an annotated copy".into());
    }
    (true, payload, String::new())
}
