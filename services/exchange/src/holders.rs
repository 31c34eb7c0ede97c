//! Holders (art. 16, 17): the front ends that vouch for them, holder
//! tokens, and the holder's own licences, their history and who used them.
//!
//! A front end (the government service portal or an approved mobile end)
//! authenticates citizens and companies itself; an administrator registers
//! it (its agency, the P-256 key its presentations are bound with, the
//! scenarios it may serve, its reminder webhook). With its own `portal`
//! token it exchanges, for one holder, a holder token of at most 15
//! minutes, which the exchange mints with its own credential key. Every
//! holder act is written to the usage log naming the front end.

use std::sync::Arc;

use time::OffsetDateTime;
use zhengzhao_auth::{Action, HolderIdentity, Principal, Role, TokenAuthority, authorize};
use zhengzhao_core::{EventRecord, HolderQuery, LicenceRecord, LicenceStatus, mask_id_number};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::now;

use crate::model::UseContext;
use crate::usage::{Caller, document_of, record, with_licence};
use crate::usagelog::{Job, UsageFilter, UsageRecord, holder_digest};
use crate::{Exchange, holder_rows as rows};

/// Longest front-end or scenario name.
pub const MAX_NAME: usize = 100;
/// Longest webhook URL.
pub const MAX_URL: usize = 500;
/// Longest holder token.
pub const HOLDER_TOKEN_TTL: std::time::Duration = zhengzhao_auth::HOLDER_TOKEN_LIFETIME;
/// Most licences on one page of "my licences".
pub const MAX_MY_PAGE: u32 = 100;

/// A registered front end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontEnd {
    pub id: i64,
    pub name: String,
    pub agency_code: String,
    pub jwk: serde_json::Value,
    pub scenario_ids: Vec<i64>,
    pub webhook_url: String,
    pub active: bool,
    pub registered_by: String,
    pub registered_at: OffsetDateTime,
}

/// What an administrator registers.
#[derive(Debug, Clone, Default)]
pub struct FrontEndRequest {
    pub name: String,
    pub agency_code: String,
    pub jwk_json: String,
    pub scenario_ids: Vec<i64>,
    pub webhook_url: String,
}

/// A change to a front end (None: unchanged).
#[derive(Debug, Clone, Default)]
pub struct FrontEndUpdate {
    pub scenario_ids: Option<Vec<i64>>,
    pub webhook_url: Option<String>,
    pub active: Option<bool>,
}

/// A holder token just minted.
#[derive(Debug, Clone)]
pub struct HolderLogin {
    pub token: String,
    pub token_id: String,
    pub expires_at: OffsetDateTime,
    pub front_end_id: i64,
}

/// One of the holder's licences and its history.
#[derive(Debug, Clone)]
pub struct MyLicence {
    pub licence: LicenceRecord,
    pub events: Vec<EventRecord>,
}

pub(crate) fn check_name(field: &str, s: &str) -> Result<String, ServiceError> {
    let t = s.trim();
    if t.is_empty() || zhengzhao_core::text::BoundedText::<MAX_NAME>::check(t).is_err() {
        return Err(ServiceError::invalid(field, format!("1 to {MAX_NAME} characters, no control characters")));
    }
    Ok(t.to_owned())
}

fn check_webhook(url: &str) -> Result<String, ServiceError> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(String::new());
    }
    let ok = url.len() <= MAX_URL
        && url.parse::<http::Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("https" | "http")) && u.host().is_some_and(|h| !h.is_empty())
        });
    if !ok {
        return Err(ServiceError::invalid("webhook_url", format!("an http(s):// URL of at most {MAX_URL} characters")));
    }
    Ok(url.to_owned())
}

fn check_jwk(jwk_json: &str) -> Result<serde_json::Value, ServiceError> {
    let bad = || {
        ServiceError::invalid(
            "jwk_json",
            "the front end's public key: a P-256 JWK (kty EC, crv P-256, x, y), no private part",
        )
    };
    if jwk_json.len() > 2000 {
        return Err(bad());
    }
    let jwk: serde_json::Value = serde_json::from_str(jwk_json).map_err(|_| bad())?;
    if jwk.get("d").is_some() {
        return Err(ServiceError::invalid("jwk_json", "this is a private key: register the public half only"));
    }
    let key = zhengzhao_crypto::Es256PublicKey::from_jwk(&jwk).map_err(|_| bad())?;
    // Kept as the bare public key: what goes into every SD-JWT's cnf.
    Ok(key.to_jwk(""))
}

pub(crate) fn holder_of_token(who: &Principal) -> Result<&HolderIdentity, ServiceError> {
    authorize(who, &Action::ActAsHolder)?;
    who.holder.as_ref().ok_or_else(|| ServiceError::PermissionDenied("not a holder token".into()))
}

impl Exchange {
    /// Registers a front end.
    pub async fn register_front_end(&self, who: &Principal, req: &FrontEndRequest) -> Result<FrontEnd, ServiceError> {
        authorize(who, &Action::ManageFrontEnds)?;
        let name = check_name("name", &req.name)?;
        let agency = zhengzhao_core::Uscc::parse(req.agency_code.trim())
            .map_err(|e| ServiceError::invalid("agency_code", e.to_string()))?
            .to_string();
        let jwk = check_jwk(&req.jwk_json)?;
        let webhook = check_webhook(&req.webhook_url)?;
        let mut conn = self.db.pool.acquire().await?;
        self.check_scenarios(&mut conn, &req.scenario_ids).await?;
        let fe =
            rows::insert_front_end(&mut conn, &name, &agency, &jwk, &req.scenario_ids, &webhook, &who.actor(), now())
                .await?;
        tracing::info!(front_end = fe.id, agency = %fe.agency_code, by = %who.actor(), "front end registered");
        Ok(fe)
    }

    async fn check_scenarios(&self, conn: &mut sqlx::AnyConnection, ids: &[i64]) -> Result<(), ServiceError> {
        if ids.len() > 100 {
            return Err(ServiceError::invalid("scenario_ids", "at most 100"));
        }
        for (i, id) in ids.iter().enumerate() {
            if rows::load_scenario(conn, *id).await?.is_none() {
                return Err(ServiceError::invalid(format!("scenario_ids[{i}]"), format!("no scenario {id}")));
            }
        }
        Ok(())
    }

    /// Changes a front end's scenarios, webhook or state.
    pub async fn update_front_end(
        &self,
        who: &Principal,
        id: i64,
        update: &FrontEndUpdate,
    ) -> Result<FrontEnd, ServiceError> {
        authorize(who, &Action::ManageFrontEnds)?;
        let webhook = update.webhook_url.as_deref().map(check_webhook).transpose()?;
        let mut tx = self.db.begin().await?;
        let mut fe = rows::load_front_end(&mut tx, id).await?.ok_or_else(|| no_front_end(id))?;
        if let Some(ids) = &update.scenario_ids {
            self.check_scenarios(&mut tx, ids).await?;
            fe.scenario_ids.clone_from(ids);
        }
        if let Some(w) = webhook {
            fe.webhook_url = w;
        }
        if let Some(a) = update.active {
            fe.active = a;
        }
        rows::update_front_end(&mut tx, &fe).await?;
        tx.commit().await?;
        tracing::info!(front_end = id, active = fe.active, by = %who.actor(), "front end changed");
        Ok(fe)
    }

    /// Every front end (a portal sees only its agency's).
    pub async fn front_ends(&self, who: &Principal) -> Result<Vec<FrontEnd>, ServiceError> {
        authorize(who, &Action::ReadFrontEnds)?;
        let mut conn = self.db.pool.acquire().await?;
        let all = rows::list_front_ends(&mut conn).await?;
        Ok(if who.role == Role::Portal {
            all.into_iter().filter(|f| f.agency_code == who.agency).collect()
        } else {
            all
        })
    }

    /// The front end a portal token speaks for: the one named, or its
    /// agency's only active one.
    async fn front_end_of(&self, who: &Principal, named: Option<i64>) -> Result<FrontEnd, ServiceError> {
        let mut conn = self.db.pool.acquire().await?;
        let mine: Vec<FrontEnd> =
            rows::list_front_ends(&mut conn).await?.into_iter().filter(|f| f.agency_code == who.agency).collect();
        let fe = match named {
            Some(id) => mine.into_iter().find(|f| f.id == id).ok_or_else(|| {
                ServiceError::PermissionDenied(format!("front end {id} is not one of {}'s", who.agency))
            })?,
            None => {
                let mut active: Vec<FrontEnd> = mine.into_iter().filter(|f| f.active).collect();
                match active.len() {
                    0 => {
                        return Err(ServiceError::PermissionDenied(format!(
                            "{} runs no registered front end: an administrator registers it first",
                            who.agency
                        )));
                    }
                    1 => active.remove(0),
                    _ => {
                        return Err(ServiceError::invalid(
                            "front_end_id",
                            "this agency runs several front ends: name one",
                        ));
                    }
                }
            }
        };
        if !fe.active {
            return Err(ServiceError::PermissionDenied(format!("front end {} is suspended", fe.id)));
        }
        Ok(fe)
    }

    /// A front end logs a holder in: a holder token for `id_type`/`number`.
    pub async fn holder_login(
        &self,
        caller: &Caller,
        id_type: &str,
        number: &str,
        front_end: Option<i64>,
        ttl: std::time::Duration,
    ) -> Result<HolderLogin, ServiceError> {
        let who = &caller.principal;
        authorize(who, &Action::HolderLogin)?;
        let number = zhengzhao_core::parse_holder_id("holder_id_type", "holder_id_number", id_type, number)?;
        if ttl.is_zero() || ttl > HOLDER_TOKEN_TTL {
            return Err(ServiceError::invalid("ttl_seconds", format!("1 to {}", HOLDER_TOKEN_TTL.as_secs())));
        }
        let fe = self.front_end_of(who, front_end).await?;
        let authority = self.holder_tokens.as_ref().ok_or_else(|| {
            ServiceError::FailedPrecondition("this exchange holds no credential key to mint holder tokens with".into())
        })?;
        let identity = HolderIdentity { id_type: id_type.to_owned(), id_number: number.clone(), front_end: fe.id };
        let minted = authority
            .issue_holder(&who.agency, &identity, ttl)
            .map_err(|e| ServiceError::internal(format!("cannot mint a holder token: {e}")))?;
        let digest = holder_digest(id_type, &number);
        {
            // Reminders now go to this front end too, the due ones at once.
            let mut tx = self.db.begin().await?;
            rows::remember_login(&mut tx, &digest, fe.id, now()).await?;
            crate::reminders::queue_for_new_front_end(&mut tx, &digest, fe.id, now()).await?;
            tx.commit().await?;
        }
        let mut r = holder_record(caller, &identity, "holder login");
        r.token_id.clone_from(&minted.token_id);
        self.writer.write(Job::Records(vec![r])).await?;
        tracing::info!(front_end = fe.id, holder = %mask_id_number(&number), "holder logged in");
        Ok(HolderLogin {
            token: minted.token,
            token_id: minted.token_id,
            expires_at: minted.expires_at,
            front_end_id: fe.id,
        })
    }

    /// The front end a holder token names, if still active.
    pub(crate) async fn vouching_front_end(&self, h: &HolderIdentity) -> Result<FrontEnd, ServiceError> {
        let mut conn = self.db.pool.acquire().await?;
        match rows::load_front_end(&mut conn, h.front_end).await? {
            Some(fe) if fe.active => Ok(fe),
            Some(_) => Err(ServiceError::PermissionDenied(format!("front end {} is suspended", h.front_end))),
            None => Err(no_front_end(h.front_end)),
        }
    }

    /// One page of the holder's own licences.
    pub async fn my_licences(
        &self,
        caller: &Caller,
        status: Option<LicenceStatus>,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<LicenceRecord>, String), ServiceError> {
        let h = holder_of_token(&caller.principal)?;
        self.vouching_front_end(h).await?;
        if page_size > MAX_MY_PAGE {
            return Err(ServiceError::invalid("page_size", format!("at most {MAX_MY_PAGE}")));
        }
        let query = HolderQuery {
            holder_id_type: h.id_type.clone(),
            holder_id_number: h.id_number.clone(),
            type_codes: vec![],
            status,
            page_size: if page_size == 0 { 50 } else { page_size },
            page_token: page_token.to_owned(),
        };
        let found = self.issuance.holder_licences(&query).await?;
        self.writer.write(Job::Records(vec![holder_record(caller, h, "my licences")])).await?;
        Ok(found)
    }

    /// One of the holder's licences with its history; someone else's is
    /// NOT_FOUND, exactly as a licence that does not exist.
    pub async fn my_licence(&self, caller: &Caller, identifier: &str) -> Result<MyLicence, ServiceError> {
        let h = holder_of_token(&caller.principal)?;
        self.vouching_front_end(h).await?;
        let licence = self.own_licence(h, identifier).await?;
        let events = self.issuance.history(&licence.identifier).await?;
        let doc = document_of(&licence)?;
        let r = with_licence(holder_record(caller, h, "my licence"), &licence, Some(&doc));
        self.writer.write(Job::Records(vec![r])).await?;
        Ok(MyLicence { licence, events })
    }

    /// `identifier` if it is `h`'s licence.
    pub(crate) async fn own_licence(
        &self,
        h: &HolderIdentity,
        identifier: &str,
    ) -> Result<LicenceRecord, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("you hold no licence {}", clip_id(identifier)));
        let id = zhengzhao_core::LicenceId::parse(identifier.trim()).map_err(|_| not_found())?;
        let licence = match self.issuance.get(&id.to_string()).await {
            Ok(l) => l,
            Err(ServiceError::NotFound(_)) => return Err(not_found()),
            Err(e) => return Err(e),
        };
        let doc = document_of(&licence)?;
        if doc.holder.id_type_code != h.id_type || doc.holder.id_number != h.id_number {
            return Err(not_found());
        }
        Ok(licence)
    }

    /// Who used the holder's licences: agencies' uses (granted and refused), newest first.
    pub async fn my_usage(
        &self,
        caller: &Caller,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<UsageRecord>, String), ServiceError> {
        let h = holder_of_token(&caller.principal)?;
        self.vouching_front_end(h).await?;
        let filter = UsageFilter {
            holder_digest: holder_digest(&h.id_type, &h.id_number),
            agencies_only: true,
            ..Default::default()
        };
        let page = self.usage_page(&filter, page_size, page_token).await?;
        self.writer.write(Job::Records(vec![holder_record(caller, h, "my usage")])).await?;
        Ok(page)
    }
}

fn clip_id(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}

fn no_front_end(id: i64) -> ServiceError {
    ServiceError::NotFound(format!("no front end {id}"))
}

/// The usage record of a holder's own act: the front end that vouched is
/// the operator, the act the use cause.
pub(crate) fn holder_record(caller: &Caller, h: &HolderIdentity, act: &str) -> UsageRecord {
    let mut r = record(
        caller,
        &UseContext { use_cause: act.to_owned(), service_item_code: String::new(), case_number: String::new() },
    );
    r.operator = format!("front end {}", h.front_end);
    r.holder_id_type.clone_from(&h.id_type);
    r.holder_digest = holder_digest(&h.id_type, &h.id_number);
    r.holder_masked = mask_id_number(&h.id_number);
    r
}

/// The exchange's minting key for holder tokens, when it holds one.
pub type HolderTokenKey = Option<Arc<TokenAuthority>>;
