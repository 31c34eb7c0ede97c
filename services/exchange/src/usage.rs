//! The use path: every fetch, lookup and copy is decided by the caller's
//! usage list and written to the usage log — granted or refused, with the
//! rule that refused — before anything is returned. If the log cannot be
//! written, nothing is returned.

use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::{HolderQuery, LicenceDocument, LicenceId, LicenceRecord, LicenceStatus, mask_id_number};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::now;

use crate::error::{Refusal, Refused};
use crate::model::{Entry, UseContext};
use crate::usagelog::{Job, UsageRecord, holder_digest};
use crate::{Exchange, ExchangeError, rows};

/// Longest text kept in the log from a refused request's fields.
const LOGGED_TEXT: usize = 256;
/// Largest page of a holder lookup.
pub const MAX_FIND_PAGE: u32 = 100;
/// The page size a lookup of 0 gets.
pub const DEFAULT_FIND_PAGE: u32 = 20;

/// Who calls, how and from where, as the usage log records it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The gRPC method name.
    pub method: &'static str,
    /// The peer address the service saw; empty in-process.
    pub address: String,
}

impl Caller {
    pub fn new(principal: Principal, method: &'static str, address: impl Into<String>) -> Self {
        Caller { principal, method, address: address.into() }
    }
}

/// A licence as a consumer sees it: the face fields its entry names.
#[derive(Debug, Clone)]
pub struct UsedLicence {
    /// Unless `whole`, `document_json` holds only the fields shown and `jws` is empty.
    pub licence: LicenceRecord,
    /// The document as shown (the withheld face fields removed).
    pub shown: LicenceDocument,
    pub withheld: Vec<String>,
    pub whole: bool,
    pub usage_id: i64,
    pub entry: Entry,
}

/// What a holder lookup found.
#[derive(Debug, Clone)]
pub struct Found {
    pub licences: Vec<UsedLicence>,
    /// Requested types the list does not cover for the service item.
    pub uncovered: Vec<String>,
    pub next_page_token: String,
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(LOGGED_TEXT).collect()
}

/// The usage record of a use by `caller` (decision and licence filled in by the caller).
pub(crate) fn record(caller: &Caller, use_: &UseContext) -> UsageRecord {
    let who = &caller.principal;
    UsageRecord {
        id: 0,
        consumer_code: who.agency.clone(),
        consumer_role: who.role.to_string(),
        token_id: who.token_id.clone(),
        operator: who.operator.clone(),
        method: caller.method.to_owned(),
        client_address: clip(&caller.address),
        identifier: String::new(),
        type_code: String::new(),
        holder_id_type: String::new(),
        holder_digest: String::new(),
        holder_masked: String::new(),
        use_cause: clip(use_.use_cause.trim()),
        service_item_code: clip(&use_.service_item_code),
        case_number: clip(&use_.case_number),
        granted: true,
        refusal_rule: String::new(),
        refusal_reason: String::new(),
        entry_id: None,
        copy_id: String::new(),
        accessed_at: now(),
        log_index: None,
    }
}

pub(crate) fn with_licence(mut r: UsageRecord, l: &LicenceRecord, doc: Option<&LicenceDocument>) -> UsageRecord {
    r.identifier.clone_from(&l.identifier);
    r.type_code.clone_from(&l.type_code);
    if let Some(d) = doc {
        r.holder_id_type.clone_from(&d.holder.id_type_code);
        r.holder_digest = holder_digest(&d.holder.id_type_code, &d.holder.id_number);
        r.holder_masked = mask_id_number(&d.holder.id_number);
    }
    r
}

/// The effective entry among `entries` (newest first), or why there is none.
fn effective(entries: &[Entry], today: time::Date, none: ExchangeError) -> Result<Entry, Refused> {
    if let Some(e) = entries.iter().find(|e| e.effective(today)) {
        return Ok(e.clone());
    }
    match entries.iter().find_map(|e| e.why_not_effective(today)) {
        Some(why) => Err(Refused::new(Refusal::EntryNotEffective, ExchangeError::EntryNotEffective(why))),
        None => Err(Refused::new(Refusal::NoEntry, none)),
    }
}

/// `doc` as `entry` lets its agency see it, and the fields withheld.
fn shown(doc: &LicenceDocument, entry: &Entry) -> (LicenceDocument, Vec<String>) {
    let mut shown = doc.clone();
    let withheld: Vec<String> = doc.face_fields.keys().filter(|k| !entry.shows(k)).cloned().collect();
    shown.face_fields.retain(|k, _| entry.shows(k));
    (shown, withheld)
}

fn used(licence: LicenceRecord, doc: &LicenceDocument, entry: Entry) -> Result<UsedLicence, ServiceError> {
    let (shown_doc, withheld) = shown(doc, &entry);
    let whole = entry.terms.all_fields;
    let mut licence = licence;
    if !whole {
        licence.document_json = String::from_utf8(shown_doc.canonical_bytes().map_err(ServiceError::internal)?)
            .map_err(ServiceError::internal)?;
        licence.jws.clear();
    }
    Ok(UsedLicence { licence, shown: shown_doc, withheld, whole, usage_id: 0, entry })
}

/// The error for a use the writer refused because its entry stopped being
/// effective between the decision and the record (the record says so).
pub(crate) fn refused_in_flight(r: &UsageRecord) -> Result<(), ServiceError> {
    if r.granted {
        return Ok(());
    }
    Err(ExchangeError::EntryNotEffective(r.refusal_reason.clone()).into())
}

pub(crate) fn document_of(l: &LicenceRecord) -> Result<LicenceDocument, ServiceError> {
    LicenceDocument::from_json(l.document_json.as_bytes())
        .map_err(|e| ServiceError::internal(format!("licence {} holds an unreadable document: {e}", l.identifier)))
}

impl Exchange {
    /// Writes one usage record durably (with others queued meanwhile).
    pub(crate) async fn log_use(&self, r: UsageRecord) -> Result<UsageRecord, ServiceError> {
        self.writer
            .write(Job::Records(vec![r]))
            .await?
            .pop()
            .ok_or_else(|| ServiceError::internal("the usage-log writer returned no record"))
    }

    /// Logs a refusal and returns its error; if the refusal cannot be
    /// logged, that failure is what the caller gets.
    async fn refuse_use(&self, mut r: UsageRecord, refused: Refused) -> ServiceError {
        r.granted = false;
        r.refusal_rule = refused.rule.as_str().to_owned();
        r.refusal_reason = clip(&refused.error.to_string());
        tracing::info!(
            identifier = %r.identifier, consumer = %r.consumer_code, method = %r.method,
            rule = %r.refusal_rule, reason = %r.refusal_reason, "licence use refused"
        );
        match self.log_use(r).await {
            Ok(_) => refused.error,
            Err(e) => e,
        }
    }

    /// Decides a use of licence `identifier`: the caller may use licences,
    /// the request is well-formed, the licence exists and an effective entry
    /// of the caller's list covers its type for the service item.
    pub(crate) async fn decide(
        &self,
        caller: &Caller,
        identifier: &str,
        use_: &UseContext,
    ) -> Result<(LicenceRecord, LicenceDocument, Entry, UsageRecord), ServiceError> {
        let mut r = record(caller, use_);
        r.identifier = clip(identifier);
        let checked = async {
            authorize(&caller.principal, &Action::UseLicence).map_err(ServiceError::from)?;
            let id = LicenceId::parse_held("identifier", identifier)?;
            use_.check()?;
            Ok::<_, ServiceError>(id)
        }
        .await;
        let id = match checked {
            Ok(id) => id,
            Err(e) => return Err(self.refuse_use(r, e.into()).await),
        };
        // The identifier names the type: read the licence and the caller's
        // entries for that type side by side.
        let type_code = id.type_code().as_str();
        let entries =
            rows::entries_for_use(&self.db, &caller.principal.agency, &use_.service_item_code, Some(type_code));
        let (licence, entries) = tokio::join!(self.issuance.get(identifier), entries);
        let licence = match licence {
            Ok(l) => l,
            Err(e) => return Err(self.refuse_use(r, e.into()).await),
        };
        let doc = match document_of(&licence) {
            Ok(d) if d.type_code == type_code && licence.type_code == type_code => d,
            Ok(_) => {
                let e =
                    ServiceError::internal(format!("licence {} holds a document of another type", licence.identifier));
                return Err(self.refuse_use(with_licence(r, &licence, None), e.into()).await);
            }
            Err(e) => return Err(self.refuse_use(with_licence(r, &licence, None), e.into()).await),
        };
        let r = with_licence(r, &licence, Some(&doc));
        let entry = entries.map_err(Refused::from).and_then(|entries| {
            effective(
                &entries,
                self.clock.today(),
                ExchangeError::NoEntry {
                    agency: caller.principal.agency.clone(),
                    type_code: licence.type_code.clone(),
                    service_item: use_.service_item_code.clone(),
                },
            )
        });
        match entry {
            Ok(entry) => Ok((licence, doc, entry, r)),
            Err(refused) => Err(self.refuse_use(r, refused).await),
        }
    }

    /// Fetches a licence for use (art. 15: view), as the caller's entry shows it.
    pub async fn fetch(
        &self,
        caller: &Caller,
        identifier: &str,
        use_: &UseContext,
    ) -> Result<UsedLicence, ServiceError> {
        let (licence, doc, entry, mut r) = self.decide(caller, identifier, use_).await?;
        r.entry_id = Some(entry.id);
        let r = self.log_use(r).await?;
        refused_in_flight(&r)?;
        tracing::info!(identifier = %licence.identifier, consumer = %caller.principal.actor(), entry = entry.id, "licence used");
        let mut u = used(licence, &doc, entry)?;
        u.usage_id = r.id;
        Ok(u)
    }

    /// Finds a holder's licences (art. 14) of the types the caller's list
    /// covers for the service item; every licence returned is logged as a
    /// use (a lookup that finds nothing is logged once).
    pub async fn find(&self, caller: &Caller, query: &HolderQuery, use_: &UseContext) -> Result<Found, ServiceError> {
        let mut r = record(caller, use_);
        r.holder_id_type = clip(&query.holder_id_type);
        let checked = async {
            authorize(&caller.principal, &Action::UseLicence).map_err(ServiceError::from)?;
            let number = query.check()?;
            use_.check()?;
            if query.page_size > MAX_FIND_PAGE {
                return Err(ServiceError::invalid("page_size", format!("at most {MAX_FIND_PAGE}")));
            }
            Ok::<_, ServiceError>(number)
        }
        .await;
        let number = match checked {
            Ok(n) => n,
            Err(e) => return Err(self.refuse_use(r, e.into()).await),
        };
        r.holder_digest = holder_digest(&query.holder_id_type, &number);
        r.holder_masked = mask_id_number(&number);
        let entries = rows::entries_for_use(&self.db, &caller.principal.agency, &use_.service_item_code, None).await;
        let entries = match entries {
            Ok(e) => e,
            Err(e) => return Err(self.refuse_use(r, e.into()).await),
        };
        let today = self.clock.today();
        // The effective entry of each covered type (newest first wins).
        let mut covered: Vec<Entry> = Vec::new();
        for e in entries.iter().filter(|e| e.effective(today)) {
            if !covered.iter().any(|c| c.type_code == e.type_code) {
                covered.push(e.clone());
            }
        }
        let (wanted, uncovered): (Vec<String>, Vec<String>) = if query.type_codes.is_empty() {
            (covered.iter().map(|e| e.type_code.clone()).collect(), Vec::new())
        } else {
            query.type_codes.iter().cloned().partition(|t| covered.iter().any(|e| &e.type_code == t))
        };
        if wanted.is_empty() {
            let refused = match entries.iter().find_map(|e| e.why_not_effective(today)) {
                Some(why) if covered.is_empty() => {
                    Refused::new(Refusal::EntryNotEffective, ExchangeError::EntryNotEffective(why))
                }
                _ if !query.type_codes.is_empty() && query.type_codes.len() == 1 => Refused::new(
                    Refusal::NoEntry,
                    ExchangeError::NoEntry {
                        agency: caller.principal.agency.clone(),
                        type_code: query.type_codes[0].clone(),
                        service_item: use_.service_item_code.clone(),
                    },
                ),
                _ => Refused::new(
                    Refusal::NoEntry,
                    ExchangeError::NoEntryForItem {
                        agency: caller.principal.agency.clone(),
                        service_item: use_.service_item_code.clone(),
                    },
                ),
            };
            return Err(self.refuse_use(r, refused).await);
        }
        let issuance_query = HolderQuery {
            holder_id_type: query.holder_id_type.clone(),
            holder_id_number: number,
            type_codes: wanted,
            status: query.status,
            page_size: if query.page_size == 0 { DEFAULT_FIND_PAGE } else { query.page_size },
            page_token: query.page_token.clone(),
        };
        let (licences, next) = match self.issuance.holder_licences(&issuance_query).await {
            Ok(found) => found,
            Err(e) => return Err(self.refuse_use(r, e.into()).await),
        };
        let mut out = Vec::with_capacity(licences.len());
        let mut records = Vec::with_capacity(licences.len());
        for licence in licences {
            let Some(entry) = covered.iter().find(|e| e.type_code == licence.type_code).cloned() else {
                continue; // issuance answered a type not asked for: never shown
            };
            let doc = document_of(&licence)?;
            let mut lr = with_licence(r.clone(), &licence, Some(&doc));
            lr.entry_id = Some(entry.id);
            records.push(lr);
            out.push(used(licence, &doc, entry)?);
        }
        if records.is_empty() {
            // A lookup that finds nothing is a use too.
            records.push(r);
        }
        let written = self.writer.write(Job::Records(records)).await?;
        for w in &written {
            refused_in_flight(w)?;
        }
        for (u, w) in out.iter_mut().zip(&written) {
            u.usage_id = w.id;
        }
        tracing::info!(
            consumer = %caller.principal.actor(), holder = %mask_id_number(&query.holder_id_number),
            found = out.len(), "holder's licences looked up"
        );
        Ok(Found { licences: out, uncovered, next_page_token: next })
    }
}

/// Whether `status` is in force (for the copy's verification answer).
pub(crate) fn in_force(status: LicenceStatus) -> bool {
    status == LicenceStatus::Valid
}
