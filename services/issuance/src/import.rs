//! Aggregation (归集) of historical licences in bulk: each batch of rows is
//! validated row by row, signed in one batch call, and stored with its feed
//! events in one transaction. Bad rows are reported with their row number,
//! field and reason; good rows land. A row whose source key the issuer
//! already has is skipped, so re-running a file (or resuming an interrupted
//! run) never duplicates anything. A batch is signed whole or not at all: a
//! signature count that differs from the row count fails the batch, and
//! nothing of it is stored.
//!
//! Legacy identifiers: with `allow_legacy`, a row's identifier that is well
//! formed but whose check character is not the standard one is kept verbatim,
//! marked legacy, and stored with the standard check character beside it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::date::parse_date;
use zhengzhao_core::{
    CheckForm, IdError, LicenceDocument, LicenceDraft, LicenceId, LicenceStatus, LifecycleAction, Violations,
};
use zhengzhao_core::{LicenceTypeRecord, TypeStatus};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::{Db, now};

use crate::feed::NewEvent;
use crate::record::EventDetails;
use crate::write::{self, NewLicence};
use crate::{Issuance, LIBRARY_OFFSET, document, feed};

/// Most rows accepted in one batch.
pub const MAX_BATCH_ROWS: usize = 1000;
/// Longest source key.
pub const MAX_SOURCE_KEY: usize = 128;
/// Most row errors returned by one import call.
pub const MAX_REPORTED_ERRORS: usize = 100_000;

/// One historical licence to aggregate.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub row_number: u64,
    pub source_key: String,
    /// Its existing identifier, or empty to assign one.
    pub identifier: String,
    pub draft: LicenceDraft,
}

/// Why one row was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row_number: u64,
    pub source_key: String,
    pub field: String,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOutcome {
    pub received: u64,
    pub imported: u64,
    pub already_present: u64,
    pub legacy: u64,
    pub errors: Vec<RowError>,
}

impl ImportOutcome {
    pub fn add(&mut self, other: ImportOutcome) {
        self.received += other.received;
        self.imported += other.imported;
        self.already_present += other.already_present;
        self.legacy += other.legacy;
        let room = MAX_REPORTED_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(other.errors.into_iter().take(room));
    }
}

/// What one import call remembers between batches: the licence types seen,
/// by (code, template version), and whether rows may already be held.
#[derive(Debug)]
pub struct TypeCache {
    types: HashMap<(String, u32), Result<LicenceTypeRecord, ServiceError>>,
    /// Look up held source keys before signing. On for the first batch (a
    /// re-run is seen at once) and after any batch that met held rows; off
    /// while a fresh import finds none, which keeps the lookup off the hot
    /// path (rows that turn out to be held are still classified at insert).
    pub check_held: bool,
}

impl Default for TypeCache {
    fn default() -> Self {
        TypeCache { types: HashMap::new(), check_held: true }
    }
}

/// A batch validated and signed, ready to store.
pub struct PreparedBatch {
    out: ImportOutcome,
    ready: Vec<Ready>,
    signed: Vec<zhengzhao_crypto::published::Signed>,
    issuer: String,
    actor: String,
}

impl std::fmt::Debug for PreparedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedBatch({} rows)", self.ready.len())
    }
}

struct Ready {
    row: ImportRow,
    doc: LicenceDocument,
    canonical: Vec<u8>,
    /// For a legacy identifier, the standard check character.
    standard_check: Option<char>,
}

impl Ready {
    fn legacy(&self) -> bool {
        self.standard_check.is_some()
    }
}

/// Fails a batch whose signatures do not pair one to one with its rows.
fn check_signed(rows: usize, signed: usize) -> Result<(), ServiceError> {
    if rows == signed {
        return Ok(());
    }
    Err(ServiceError::internal(format!(
        "signing returned {signed} signatures for a batch of {rows} licences: the batch is not stored"
    )))
}

/// The row error for an identifier that does not parse.
fn identifier_error(e: IdError, allow_legacy: bool) -> ServiceError {
    match e {
        IdError::Check { expected, found } if !allow_legacy => ServiceError::invalid(
            "identifier",
            format!(
                "check character should be {expected}, got {found}: a legacy identifier is imported only \
                 when legacy identifiers are allowed (--allow-legacy)"
            ),
        ),
        other => ServiceError::invalid("identifier", other.to_string()),
    }
}

fn row_error(row: &ImportRow, field: &str, reason: impl Into<String>) -> RowError {
    RowError {
        row_number: row.row_number,
        source_key: row.source_key.clone(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn errors_of(row: &ImportRow, e: ServiceError) -> Vec<RowError> {
    match e {
        ServiceError::Invalid(Violations(v)) => {
            v.into_iter().map(|f| row_error(row, &f.field, f.description)).collect()
        }
        other => vec![row_error(row, "row", other.to_string())],
    }
}

impl Issuance {
    async fn import_type(
        &self,
        cache: &mut TypeCache,
        code: &str,
        version: u32,
    ) -> Result<LicenceTypeRecord, ServiceError> {
        let key = (code.to_owned(), version);
        if let Some(hit) = cache.types.get(&key) {
            return hit.clone();
        }
        let got = self.licence_type(code, version).await;
        if matches!(got, Err(ServiceError::Unavailable(_)) | Err(ServiceError::Internal(_))) {
            return got; // not cached: transient
        }
        cache.types.insert(key, got.clone());
        got
    }

    /// Prepares one row: its document checked against its type and template.
    async fn prepare(
        &self,
        who: &Principal,
        cache: &mut TypeCache,
        row: &mut ImportRow,
        allow_legacy: bool,
    ) -> Result<(LicenceDocument, Option<char>), ServiceError> {
        let t = self.import_type(cache, &row.draft.type_code, row.draft.template_version).await?;
        if t.status == TypeStatus::Draft {
            return Err(ServiceError::invalid("type_code", format!("licence type {} is a draft", t.code())));
        }
        if !t.definition.may_issue(&who.agency) {
            return Err(ServiceError::invalid(
                "type_code",
                format!("{} is not an issuing agency of licence type {}", who.agency, t.code()),
            ));
        }
        let given = if row.identifier.is_empty() {
            None
        } else {
            let id = if allow_legacy {
                LicenceId::parse_allowing_legacy(&row.identifier)
            } else {
                LicenceId::parse(&row.identifier)
            }
            .map_err(|e| identifier_error(e, allow_legacy))?;
            if id.type_code().as_str() != row.draft.type_code || id.issuer().as_str() != who.agency {
                return Err(ServiceError::invalid(
                    "identifier",
                    "its type and issuer segments must be the row's type and the importing issuer",
                ));
            }
            if row.draft.serial.is_empty() {
                row.draft.serial = id.serial().to_owned();
            } else if row.draft.serial != id.serial() {
                return Err(ServiceError::invalid("identifier", "its serial segment must be the row's serial"));
            }
            Some(id)
        };
        if given.is_none() && row.draft.serial.is_empty() {
            return Err(ServiceError::invalid("serial", "required for a historical licence without an identifier"));
        }
        let version = given.as_ref().map_or(1, LicenceId::version);
        let mut doc = document::build(&t, &mut row.draft, &who.agency, version, None, self.clock.today())?;
        let standard_check =
            given.as_ref().filter(|id| id.check_form() == CheckForm::Legacy).map(LicenceId::standard_check);
        if let Some(id) = given {
            doc.identifier = id.to_string();
        }
        Ok((doc, standard_check))
    }

    /// Imports one batch of rows on the caller's own account.
    pub async fn import_batch(
        &self,
        who: &Principal,
        rows: Vec<ImportRow>,
        allow_legacy: bool,
        cache: &mut TypeCache,
    ) -> Result<ImportOutcome, ServiceError> {
        let prepared = self.prepare_batch(who, rows, allow_legacy, cache).await?;
        self.store_batch(prepared).await
    }

    /// Validates and signs one batch (the CPU half of an import; it can run
    /// while the previous batch is being stored).
    pub async fn prepare_batch(
        &self,
        who: &Principal,
        mut rows: Vec<ImportRow>,
        allow_legacy: bool,
        cache: &mut TypeCache,
    ) -> Result<PreparedBatch, ServiceError> {
        authorize(who, &Action::IssueLicence { issuer: &who.agency })?;
        self.refuse_district_issuer(&who.agency).await?;
        if rows.len() > MAX_BATCH_ROWS {
            return Err(ServiceError::invalid("rows", format!("at most {MAX_BATCH_ROWS} rows per message")));
        }
        let mut out = ImportOutcome { received: rows.len() as u64, ..Default::default() };
        // Source keys: present, and unique in the batch.
        let mut seen = BTreeSet::new();
        let mut kept = Vec::with_capacity(rows.len());
        for r in rows.drain(..) {
            let k = &r.source_key;
            if k.is_empty() || k.chars().count() > MAX_SOURCE_KEY || k.chars().any(char::is_control) {
                out.errors.push(row_error(&r, "source_key", format!("required, at most {MAX_SOURCE_KEY} characters")));
            } else if !seen.insert(k.clone()) {
                out.errors.push(row_error(&r, "source_key", "appears twice in the same batch"));
            } else {
                kept.push(r);
            }
        }
        let mut rows = kept;
        if cache.check_held {
            let mut conn = self.db.pool.acquire().await?;
            let held = held_source_keys(&mut conn, &who.agency, rows.iter().map(|r| r.source_key.as_str())).await?;
            rows.retain(|r| !held.contains(&r.source_key));
            out.already_present = held.len() as u64;
            cache.check_held = !held.is_empty();
        }
        let mut ready = Vec::with_capacity(rows.len());
        for mut row in rows {
            match self.prepare(who, cache, &mut row, allow_legacy).await {
                Ok((doc, standard_check)) => match doc.canonical_bytes() {
                    Ok(canonical) => ready.push(Ready { row, doc, canonical, standard_check }),
                    Err(e) => out.errors.push(row_error(&row, "row", e.to_string())),
                },
                Err(ServiceError::Unavailable(m)) => return Err(ServiceError::Unavailable(m)),
                Err(ServiceError::Internal(m)) => return Err(ServiceError::Internal(m)),
                Err(e) => out.errors.extend(errors_of(&row, e)),
            }
        }
        let signed = if ready.is_empty() {
            Vec::new()
        } else {
            let payloads: Vec<Vec<u8>> = ready.iter().map(|r| r.canonical.clone()).collect();
            self.signing.sign_many(&who.agency, payloads).await?
        };
        check_signed(ready.len(), signed.len())?;
        Ok(PreparedBatch { out, ready, signed, issuer: who.agency.clone(), actor: who.actor() })
    }

    /// Imports a stream of batches as `who`: each batch is validated and
    /// signed while the previous one is stored, so signing and storing
    /// overlap. A stream error stops the import after what was stored.
    pub async fn import<S>(self: Arc<Self>, who: &Principal, mut batches: S) -> Result<ImportOutcome, ServiceError>
    where
        S: tokio_stream::Stream<Item = Result<ImportBatch, ServiceError>> + Unpin,
    {
        use tokio_stream::StreamExt as _;
        let mut cache = TypeCache::default();
        let mut total = ImportOutcome::default();
        let mut storing: Option<tokio::task::JoinHandle<Result<ImportOutcome, ServiceError>>> = None;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            // Validate and sign this batch while the previous one is stored.
            let prepared = self.prepare_batch(who, batch.rows, batch.allow_legacy, &mut cache).await?;
            if let Some(previous) = storing.take() {
                let stored = previous.await.map_err(ServiceError::internal)??;
                cache.check_held |= stored.already_present > 0;
                total.add(stored);
            }
            let issuance = self.clone();
            storing = Some(tokio::spawn(tracing::Instrument::instrument(
                async move { issuance.store_batch(prepared).await },
                tracing::Span::current(),
            )));
        }
        if let Some(previous) = storing.take() {
            total.add(previous.await.map_err(ServiceError::internal)??);
        }
        Ok(total)
    }

    /// Stores a prepared batch and its feed events in one transaction.
    pub async fn store_batch(&self, batch: PreparedBatch) -> Result<ImportOutcome, ServiceError> {
        let (out, committed) = store_prepared(&self.db, batch).await?;
        if committed {
            self.appended.notify_waiters();
        }
        let rows = &zhengzhao_telemetry::domain::DOMAIN.import_rows;
        rows.with_label_values(&["imported"]).inc_by(out.imported);
        rows.with_label_values(&["already_present"]).inc_by(out.already_present);
        let refused: BTreeSet<u64> = out.errors.iter().map(|e| e.row_number).collect();
        rows.with_label_values(&["refused"]).inc_by(refused.len() as u64);
        Ok(out)
    }
}

/// Rows of one message of an import, and whether it accepts legacy identifiers.
#[derive(Debug, Clone)]
pub struct ImportBatch {
    pub rows: Vec<ImportRow>,
    pub allow_legacy: bool,
}

/// Stores a prepared batch and its feed events in one transaction; says
/// whether a transaction was committed. A batch whose signatures do not pair
/// one to one with its rows is refused before anything is written.
async fn store_prepared(db: &Db, batch: PreparedBatch) -> Result<(ImportOutcome, bool), ServiceError> {
    let PreparedBatch { mut out, ready, signed, issuer, actor } = batch;
    check_signed(ready.len(), signed.len())?;
    if ready.is_empty() {
        return Ok((out, false));
    }
    let at = now();
    let mut tx = db.begin().await?;
    feed::lock(&mut tx, db.engine).await?;
    let valid = zhengzhao_core::LicenceState::new(LicenceStatus::Valid);
    let licences: Vec<NewLicence<'_>> = ready
        .iter()
        .zip(&signed)
        .map(|(r, s)| NewLicence {
            doc: &r.doc,
            canonical: &r.canonical,
            signed: s,
            state: valid,
            source_key: Some(&r.row.source_key),
            standard_check: r.standard_check,
        })
        .collect();
    let inserted = write::insert_licences(&mut tx, &licences, at).await?;
    let missed = ready.iter().filter(|r| !inserted.contains(&r.doc.identifier)).map(|r| r.row.source_key.as_str());
    let held = held_source_keys(&mut tx, &issuer, missed).await?;
    let mut events = Vec::with_capacity(inserted.len());
    for (r, s) in ready.iter().zip(&signed) {
        if inserted.contains(&r.doc.identifier) {
            // An aggregated licence was issued on its issue date (00:00 CST).
            let occurred_at =
                parse_date(&r.doc.issue_date).map(|d| d.midnight().assume_offset(LIBRARY_OFFSET)).unwrap_or(at);
            events.push(NewEvent {
                identifier: &r.doc.identifier,
                action: LifecycleAction::Issue,
                status_after: LicenceStatus::Valid,
                actor: &actor,
                reason: IMPORT_REASON,
                details: EventDetails::default(),
                backfill: false,
                occurred_at,
                recorded_at: at,
                jws: &s.jws,
            });
            out.imported += 1;
            out.legacy += u64::from(r.legacy());
        } else if held.contains(&r.row.source_key) {
            out.already_present += 1;
        } else {
            out.errors.push(row_error(
                &r.row,
                "identifier",
                format!("{} conflicts with a licence already held (same identifier or source key)", r.doc.identifier),
            ));
        }
    }
    let appended = write::append_events(&mut tx, &events).await?;
    tx.commit().await?;
    appended.committed();
    Ok((out, true))
}

const IMPORT_REASON: &str = "aggregated historical licence";

/// The source keys among `keys` that `issuer` already holds.
async fn held_source_keys<'a>(
    conn: &mut sqlx::AnyConnection,
    issuer: &str,
    keys: impl Iterator<Item = &'a str>,
) -> Result<BTreeSet<String>, ServiceError> {
    let keys: Vec<&str> = keys.collect();
    let mut held = BTreeSet::new();
    for part in keys.chunks(500) {
        if part.is_empty() {
            continue;
        }
        let marks: Vec<String> = (0..part.len()).map(|i| format!("${}", i + 2)).collect();
        let sql =
            format!("SELECT source_key FROM licences WHERE issuer_code = $1 AND source_key IN ({})", marks.join(", "));
        // Not a cached prepared statement: a generic plan made while the
        // table was small would scan it whole once it is large.
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).persistent(false).bind(issuer);
        for k in part {
            q = q.bind(*k);
        }
        held.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use zhengzhao_core::document::{DocumentHolder, DocumentIssuer};
    use zhengzhao_core::{Holder, TypeCode, Uscc};
    use zhengzhao_testkit::TestDb;

    use super::*;

    const ISSUER: &str = "91350100M000100Y43";

    fn ready(n: u64) -> anyhow::Result<Ready> {
        let serial = format!("ALIGN{n}");
        let id = LicenceId::new(
            TypeCode::parse("11100000000013338W011").map_err(anyhow::Error::msg)?,
            Uscc::parse(ISSUER)?,
            &serial,
            1,
        )?;
        let holder = Holder { name: "某公司".into(), id_type_code: "001".into(), id_number: ISSUER.into() };
        let draft = LicenceDraft {
            type_code: id.type_code().to_string(),
            issuer_name: "某区市场监督管理局".into(),
            serial: serial.clone(),
            holder: holder.clone(),
            issue_date: "2020-01-01".into(),
            valid_from: String::new(),
            valid_until: String::new(),
            area_code: "350102".into(),
            face_fields: Default::default(),
            template_version: 1,
        };
        let doc = LicenceDocument {
            identifier: id.to_string(),
            licence_number: serial,
            name: "食品经营许可证".into(),
            type_code: id.type_code().to_string(),
            template_version: 1,
            issuer: DocumentIssuer { name: draft.issuer_name.clone(), code: ISSUER.into() },
            issue_date: draft.issue_date.clone(),
            valid_from: draft.issue_date.clone(),
            valid_until: None,
            holder: DocumentHolder {
                name: holder.name,
                id_type_code: holder.id_type_code,
                id_number: holder.id_number,
            },
            area_code: draft.area_code.clone(),
            face_fields: Default::default(),
            replaces: None,
        };
        let canonical = doc.canonical_bytes()?;
        let row = ImportRow { row_number: n, source_key: format!("S{n}"), identifier: String::new(), draft };
        Ok(Ready { row, doc, canonical, standard_check: None })
    }

    /// Three rows, with `signatures` signatures.
    fn batch(signatures: usize) -> anyhow::Result<PreparedBatch> {
        let ready = (1..=3).map(ready).collect::<anyhow::Result<Vec<_>>>()?;
        let signed = (0..signatures)
            .map(|i| zhengzhao_crypto::published::Signed {
                jws: format!("header.payload{i}.signature"),
                key_id: "k".into(),
                algorithm: zhengzhao_crypto::Algorithm::Es256,
            })
            .collect();
        let out = ImportOutcome { received: 3, ..Default::default() };
        Ok(PreparedBatch { out, ready, signed, issuer: ISSUER.into(), actor: format!("issuer@{ISSUER}") })
    }

    async fn count(db: &Db, table: &str) -> anyhow::Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        Ok(sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(&db.pool).await?)
    }

    #[tokio::test]
    async fn a_batch_whose_signatures_do_not_pair_with_its_rows_stores_nothing() -> anyhow::Result<()> {
        for test_db in TestDb::both().await? {
            let engine = test_db.engine();
            let db = zhengzhao_store::open(&test_db.store(), "issuance", &crate::MIGRATIONS).await?;
            // One signature short (a signing worker's lost to a fault), or one too many.
            for signatures in [2, 0, 4] {
                match store_prepared(&db, batch(signatures)?).await {
                    Err(ServiceError::Internal(m)) => assert!(m.contains("not stored"), "{engine}: {m}"),
                    other => panic!("{engine}: {signatures} signatures for 3 rows: {other:?}"),
                }
                for table in ["licences", "licence_events"] {
                    assert_eq!(count(&db, table).await?, 0, "{engine}: {table} after {signatures} signatures");
                }
                assert_eq!(crate::translog::size(&mut *db.pool.acquire().await?).await?, 0, "{engine}");
            }
            assert!(check_signed(3, 2).is_err() && check_signed(3, 3).is_ok());
            // The same batch, signed whole, lands whole.
            let (out, committed) = store_prepared(&db, batch(3)?).await?;
            assert!(committed);
            assert_eq!((out.imported, out.errors.len()), (3, 0), "{engine}: {:?}", out.errors);
            assert_eq!(count(&db, "licences").await?, 3, "{engine}");
            assert_eq!(count(&db, "licence_events").await?, 3, "{engine}");
            db.pool.close().await;
        }
        Ok(())
    }
}
