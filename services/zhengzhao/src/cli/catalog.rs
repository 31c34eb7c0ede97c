//! `zhengzhao catalog`: licence types — an example definition, create and
//! publish, read, list, revise, retire, and the catalogue's change log,
//! export and import.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use serde::Serialize;
use zhengzhao_core::{FaceTemplate, LicenceTypeDefinition};
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::{definition_from_wire, definition_to_wire, template_from_wire, template_to_wire};

use super::args::{DEFAULT_LIMIT, EVERY_PAGE, json_file, pages, read_file};
use super::client::{Client, ClientArgs};
use super::output::{print_json, print_json_line, say, time_text, wire_word};
use zhengzhao::examples;

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Print a valid licence-type definition (JSON).
    Example {
        /// Agency allowed to issue the example type.
        #[arg(long, default_value = examples::EXAMPLE_ISSUER)]
        issuer: String,
    },
    /// Create and publish the licence type in FILE; prints its type code.
    Create {
        #[arg(long)]
        file: PathBuf,
    },
    /// Print a licence type (JSON), with its current or a given template version.
    Get {
        code: String,
        #[arg(long, default_value_t = 0)]
        template_version: u32,
    },
    /// List licence types (code, status, template version, name), optionally filtered.
    List {
        /// Only types whose name contains this text.
        #[arg(long, default_value = "")]
        name: String,
        /// Only types defined by this authority.
        #[arg(long, default_value = "")]
        authority: String,
        /// Only types for this category of holder.
        #[arg(long)]
        holder_category: Option<HolderCategory>,
        /// Only types in this state.
        #[arg(long)]
        status: Option<TypeStatus>,
    },
    /// Change a type's face template from FILE (a template JSON): in place if
    /// existing licences stay valid, or with --new-version as the next version.
    Revise {
        code: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        new_version: bool,
    },
    /// Change a type's own fields from FILE (a licence-type definition, or
    /// what `catalog get` prints): name, defining authority's name and level,
    /// service items, validity, issuing level, issuers, renewal window,
    /// whether a failed annual check suspends, and holder category while a
    /// draft. The code and the template stay: a template in FILE is
    /// not applied (use `catalog revise`). Recorded in the change log.
    ReviseType {
        code: String,
        #[arg(long)]
        file: PathBuf,
        /// Why the type changes (recorded).
        #[arg(long)]
        reason: String,
    },
    /// Retire a type: no new issuance; existing licences stay valid.
    Retire {
        code: String,
        #[arg(long)]
        reason: String,
    },
    /// Print every template version of a type (JSON).
    Versions { code: String },
    /// Print the catalogue change log, newest first (JSON lines).
    Changes {
        /// Only this type's changes.
        #[arg(long, default_value = "")]
        code: String,
        /// At most this many changes; 0 means the default, 100, as a page
        /// size of 0 does in the API.
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: u32,
    },
    /// Print the whole catalogue as one JSON document.
    Export,
    /// Import a catalogue document: idempotent; a conflicting one is refused whole.
    Import {
        #[arg(long)]
        file: PathBuf,
    },
}

/// Whom a licence type is for (`--holder-category`).
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum HolderCategory {
    NaturalPerson,
    LegalPerson,
}

impl From<HolderCategory> for common::HolderCategory {
    fn from(c: HolderCategory) -> Self {
        match c {
            HolderCategory::NaturalPerson => common::HolderCategory::NaturalPerson,
            HolderCategory::LegalPerson => common::HolderCategory::LegalPerson,
        }
    }
}

/// A licence type's state (`--status`).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeStatus {
    Draft,
    Published,
    Retired,
}

impl From<TypeStatus> for catalog::LicenceTypeStatus {
    fn from(s: TypeStatus) -> Self {
        match s {
            TypeStatus::Draft => catalog::LicenceTypeStatus::Draft,
            TypeStatus::Published => catalog::LicenceTypeStatus::Published,
            TypeStatus::Retired => catalog::LicenceTypeStatus::Retired,
        }
    }
}

/// A licence type, as `catalog get` prints it.
#[derive(Serialize)]
struct TypeOut {
    status: String,
    created_at: String,
    published_at: String,
    retired_at: String,
    definition: LicenceTypeDefinition,
}

/// A template version, as `catalog versions` prints it.
#[derive(Serialize)]
struct VersionOut {
    created_at: String,
    template: FaceTemplate,
}

/// A change to the catalogue, as `catalog changes` prints it.
#[derive(Serialize)]
struct ChangeOut<'a> {
    id: u64,
    recorded_at: String,
    code: &'a str,
    actor: &'a str,
    change: &'a str,
    detail: serde_json::Value,
}

fn type_status_text(code: i32) -> String {
    let name = catalog::LicenceTypeStatus::try_from(code).ok().map(|s| s.as_str_name());
    wire_word(name, "LICENCE_TYPE_STATUS_")
}

/// What a licence-type definition file is, for when it is not.
const DEFINITION: &str = "a licence-type definition";

pub async fn run(cli: &ClientArgs, cmd: CatalogCommand) -> anyhow::Result<()> {
    if let CatalogCommand::Example { issuer } = &cmd {
        // Needs no server.
        zhengzhao_core::Uscc::parse(issuer).with_context(|| format!("--issuer {issuer}"))?;
        return print_json(&examples::definition(issuer)?);
    }
    let c = Client::connect(cli).await?;
    match cmd {
        CatalogCommand::Example { .. } => {}
        CatalogCommand::Create { file } => {
            let def: LicenceTypeDefinition = json_file(&file, DEFINITION)?;
            def.validate()?;
            let created = c
                .catalog()
                .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&def)) })
                .await?
                .into_inner();
            let code = created.licence_type.and_then(|t| t.definition).map(|d| d.code).context("no type returned")?;
            c.catalog().publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() }).await?;
            say!("{code}");
        }
        CatalogCommand::Get { code, template_version } => {
            let t = c
                .catalog()
                .get_licence_type(catalog::GetLicenceTypeRequest { code, template_version })
                .await?
                .into_inner();
            let t = t.licence_type.context("no type returned")?;
            print_json(&TypeOut {
                status: type_status_text(t.status),
                created_at: time_text(&t.created_at),
                published_at: time_text(&t.published_at),
                retired_at: time_text(&t.retired_at),
                definition: definition_from_wire(t.definition.unwrap_or_default())?,
            })?;
        }
        CatalogCommand::List { name, authority, holder_category, status } => {
            let holder_category = holder_category.map_or(common::HolderCategory::Unspecified, Into::into);
            let status = status.map_or(catalog::LicenceTypeStatus::Unspecified, Into::into);
            let page = async |page_size, page_token| {
                let r = c
                    .catalog()
                    .list_licence_types(catalog::ListLicenceTypesRequest {
                        page_size,
                        page_token,
                        name_contains: name.clone(),
                        defining_authority_code: authority.clone(),
                        holder_category: holder_category as i32,
                        status: status as i32,
                    })
                    .await?
                    .into_inner();
                Ok((r.licence_types, r.next_page_token))
            };
            pages(EVERY_PAGE, page, |t| {
                let d = t.definition.unwrap_or_default();
                let version = d.template.as_ref().map_or(0, |t| t.version);
                say!("{}\t{}\tv{}\t{}", d.code, type_status_text(t.status), version, d.name);
                Ok(())
            })
            .await?;
        }
        CatalogCommand::Revise { code, file, new_version } => {
            let template: FaceTemplate = json_file(&file, "a face template")?;
            let r = c
                .catalog()
                .revise_template(catalog::ReviseTemplateRequest {
                    code,
                    template: Some(template_to_wire(&template)),
                    new_version,
                })
                .await?
                .into_inner();
            let d = r.licence_type.and_then(|t| t.definition).context("no type returned")?;
            say!("{} template version {}", d.code, d.template.map_or(0, |t| t.version));
        }
        CatalogCommand::ReviseType { code, file, reason } => {
            let mut definition = definition_to_wire(&type_fields_in(&file)?);
            definition.template = None;
            let r = c
                .catalog()
                .revise_licence_type(catalog::ReviseLicenceTypeRequest { code, definition: Some(definition), reason })
                .await?
                .into_inner();
            let d = r.licence_type.and_then(|t| t.definition).context("no type returned")?;
            say!("{}\t{}", d.code, d.name);
        }
        CatalogCommand::Retire { code, reason } => {
            let r =
                c.catalog().retire_licence_type(catalog::RetireLicenceTypeRequest { code, reason }).await?.into_inner();
            let t = r.licence_type.context("no type returned")?;
            say!("{}: {}", t.definition.map(|d| d.code).unwrap_or_default(), type_status_text(t.status));
        }
        CatalogCommand::Versions { code } => {
            let r =
                c.catalog().list_template_versions(catalog::ListTemplateVersionsRequest { code }).await?.into_inner();
            let versions = r
                .versions
                .into_iter()
                .map(|v| VersionOut {
                    created_at: time_text(&v.created_at),
                    template: template_from_wire(v.template.unwrap_or_default(), &mut Vec::new()),
                })
                .collect::<Vec<_>>();
            print_json(&versions)?;
        }
        CatalogCommand::Changes { code, limit } => {
            let page = async |page_size, page_token| {
                let r = c
                    .catalog()
                    .list_catalog_changes(catalog::ListCatalogChangesRequest {
                        code: code.clone(),
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.changes, r.next_page_token))
            };
            pages(limit, page, |ch| {
                print_json_line(&ChangeOut {
                    id: ch.id,
                    recorded_at: time_text(&ch.recorded_at),
                    code: &ch.code,
                    actor: &ch.actor,
                    change: &ch.change,
                    detail: serde_json::from_str(&ch.detail_json)?,
                })
            })
            .await?;
        }
        CatalogCommand::Export => {
            let r = c.catalog().export_catalog(catalog::ExportCatalogRequest {}).await?.into_inner();
            say!("{}", r.catalog_json);
        }
        CatalogCommand::Import { file } => {
            let catalog_json = read_file(&file)?;
            let r = c.catalog().import_catalog(catalog::ImportCatalogRequest { catalog_json }).await?.into_inner();
            say!("created {}, updated {}, unchanged {}", r.created, r.updated, r.unchanged);
        }
    }
    Ok(())
}

/// A type's own fields from FILE (a definition, or what `catalog get`
/// prints), without its template, which `revise-type` does not change.
fn type_fields_in(file: &Path) -> anyhow::Result<LicenceTypeDefinition> {
    let not_a_definition = || format!("{} is not {DEFINITION}", file.display());
    let mut v: serde_json::Value = json_file(file, DEFINITION)?;
    if let Some(inner) = v.get("definition").cloned() {
        v = inner;
    }
    // The template is not revised here: a placeholder lets the rest parse.
    v.as_object_mut().with_context(not_a_definition)?.insert("template".into(), serde_json::json!({ "fields": [] }));
    let def: LicenceTypeDefinition = serde_json::from_value(v).with_context(not_a_definition)?;
    def.validate_fields()?;
    Ok(def)
}
