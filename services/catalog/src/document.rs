//! The catalogue as one JSON document: what `catalog export` writes and
//! `catalog import` reads, and what a district library starts from.
//!
//! Import is idempotent and all-or-nothing: types not yet held are created;
//! a held type may gain later template versions, move forward in its
//! lifecycle (draft → published → retired) and take the document's own
//! fields (name, authorities, service items, validity, issuers: what
//! `ReviseLicenceType` may change, under the same rules); anything else that
//! differs is a conflict, and one conflict refuses the whole document.

use serde::{Deserialize, Serialize};
use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::{FaceTemplate, FieldViolation, LicenceTypeDefinition, Violations};
use zhengzhao_proto::ServiceError;
use zhengzhao_store::now;

use crate::rows::{self, load, load_versions, record_change};
use crate::{Catalog, CatalogError, TypeStatus};

/// The document's format name.
pub const FORMAT: &str = "zhengzhao-catalog";
/// The document's format version.
pub const FORMAT_VERSION: u32 = 1;

/// The whole catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDocument {
    pub format: String,
    pub format_version: u32,
    pub licence_types: Vec<CatalogEntry>,
}

/// One type: its definition with the current template, its status, and every
/// template version, oldest first (the last is the current one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub status: String,
    pub definition: LicenceTypeDefinition,
    pub template_versions: Vec<FaceTemplate>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub created: u32,
    pub updated: u32,
    pub unchanged: u32,
}

impl CatalogDocument {
    /// Checks the document's shape and every definition and template in it.
    pub fn validate(&self) -> Result<(), Violations> {
        let mut out = Vec::new();
        if self.format != FORMAT || self.format_version != FORMAT_VERSION {
            out.push(FieldViolation::new("format", format!("must be {FORMAT} version {FORMAT_VERSION}")));
        }
        let mut codes = std::collections::BTreeSet::new();
        for (i, e) in self.licence_types.iter().enumerate() {
            let at = |p: &str| format!("licence_types[{i}].{p}");
            if TypeStatus::parse(&e.status).is_none() {
                out.push(FieldViolation::new(at("status"), "draft, published or retired"));
            }
            match &e.definition.code {
                None => out.push(FieldViolation::new(at("definition.code"), "required in a catalogue document")),
                Some(c) if !codes.insert(c.clone()) => {
                    out.push(FieldViolation::new(at("definition.code"), "listed twice"))
                }
                Some(_) => {}
            }
            if let Err(Violations(v)) = e.definition.validate() {
                out.extend(
                    v.into_iter().map(|f| FieldViolation::new(at(&format!("definition.{}", f.field)), f.description)),
                );
            }
            if e.template_versions.is_empty() {
                out.push(FieldViolation::new(at("template_versions"), "at least one version"));
            }
            for (j, t) in e.template_versions.iter().enumerate() {
                if t.version as usize != j + 1 {
                    out.push(FieldViolation::new(
                        at(&format!("template_versions[{j}].version")),
                        format!("must be {}", j + 1),
                    ));
                }
                if let Err(Violations(v)) = t.validate() {
                    out.extend(v.into_iter().map(|f| {
                        FieldViolation::new(at(&format!("template_versions[{j}].{}", f.field)), f.description)
                    }));
                }
            }
            if e.template_versions.last() != Some(&e.definition.template) {
                out.push(FieldViolation::new(at("definition.template"), "must be the last template version"));
            }
        }
        Violations::into_result(out)
    }
}

impl Catalog {
    /// The whole catalogue, deterministic for the same contents.
    pub async fn export(&self, who: &Principal) -> Result<CatalogDocument, ServiceError> {
        authorize(who, &Action::ReadCatalog)?;
        let mut conn = self.db().pool.acquire().await?;
        let licence_types = rows::all_types(&mut conn)
            .await?
            .into_iter()
            .map(|(r, versions)| CatalogEntry {
                status: r.status.as_str().to_owned(),
                definition: r.definition,
                template_versions: versions,
            })
            .collect();
        Ok(CatalogDocument { format: FORMAT.into(), format_version: FORMAT_VERSION, licence_types })
    }

    /// Imports a catalogue document in one transaction (see the module docs):
    /// administrators, and the sync job bringing a district's catalogue in
    /// line with the city's.
    pub async fn import(&self, who: &Principal, mut doc: CatalogDocument) -> Result<ImportSummary, ServiceError> {
        authorize(who, &Action::FollowCatalogue)?;
        for e in &mut doc.licence_types {
            e.definition.template.normalise();
            for t in &mut e.template_versions {
                t.normalise();
            }
        }
        doc.validate()?;
        let mut summary = ImportSummary::default();
        let mut conflicts = Vec::new();
        let mut tx = self.db().begin().await?;
        for e in &doc.licence_types {
            let code = e.definition.code.clone().unwrap_or_default();
            let status = TypeStatus::parse(&e.status).unwrap_or(TypeStatus::Draft);
            let Some(held) = load(&mut tx, &code, 0).await? else {
                let at = now();
                rows::insert_type(&mut tx, &e.definition, status, at).await?;
                for t in &e.template_versions {
                    rows::insert_version(&mut tx, &code, t, at).await?;
                }
                let detail =
                    serde_json::json!({ "created": true, "status": e.status, "versions": e.template_versions.len() });
                record_change(&mut tx, &code, who, "import", &detail.to_string()).await?;
                summary.created += 1;
                continue;
            };
            let changed = match held.definition.check_type_revision(&e.definition, held.status != TypeStatus::Draft) {
                Ok(changed) => changed,
                Err(v) => {
                    conflicts.push(format!("{code}: the definition differs from the one held: {v}"));
                    continue;
                }
            };
            let held_versions: Vec<FaceTemplate> =
                load_versions(&mut tx, &code).await?.into_iter().map(|v| v.template).collect();
            if let Some(j) = held_versions.iter().zip(&e.template_versions).position(|(a, b)| a != b) {
                conflicts.push(format!("{code}: template version {} differs from the one held", j + 1));
                continue;
            }
            if e.template_versions.len() < held_versions.len() {
                conflicts.push(format!(
                    "{code}: the document has {} template versions, the library {}",
                    e.template_versions.len(),
                    held_versions.len()
                ));
                continue;
            }
            if status < held.status {
                conflicts.push(format!("{code}: status would go back from {} to {}", held.status.as_str(), e.status));
                continue;
            }
            let added = &e.template_versions[held_versions.len()..];
            if added.is_empty() && status == held.status && changed.is_empty() {
                summary.unchanged += 1;
                continue;
            }
            let at = now();
            for t in added {
                rows::insert_version(&mut tx, &code, t, at).await?;
            }
            rows::update_definition(&mut tx, &e.definition, status).await?;
            let detail =
                serde_json::json!({ "added_versions": added.len(), "status": e.status, "changed_fields": changed });
            record_change(&mut tx, &code, who, "import", &detail.to_string()).await?;
            summary.updated += 1;
        }
        if !conflicts.is_empty() {
            tx.rollback().await?;
            return Err(CatalogError::ImportConflicts(conflicts.join("; ")).into());
        }
        tx.commit().await?;
        tracing::info!(actor = %who.actor(), created = summary.created, updated = summary.updated, unchanged = summary.unchanged, "catalogue imported");
        Ok(summary)
    }
}
