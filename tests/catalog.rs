//! Catalogue tests over gRPC, each on SQLite and PostgreSQL: versioned
//! templates, compatible and breaking revisions, revision of a type's own
//! fields, one type per definition, retirement, search, export/import, the
//! change log, and face-field rules (blank required fields, canonical and
//! bounded integers).

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, example_definition, issue, libraries, published_type, violated_fields};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library, OTHER_ISSUER};
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::{definition_to_wire, template_to_wire};
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_testkit::TestDb;

type Result = anyhow::Result<()>;

async fn get(lib: &Library, code: &str, version: u32) -> anyhow::Result<catalog::LicenceType> {
    Ok(lib
        .catalog(Role::Issuer, ISSUER)
        .get_licence_type(catalog::GetLicenceTypeRequest { code: code.into(), template_version: version })
        .await?
        .into_inner()
        .licence_type
        .unwrap_or_default())
}

fn current_template(code: &str) -> zhengzhao_core::FaceTemplate {
    let mut def = example_definition();
    def.code = Some(code.into());
    def.template.normalise();
    def.template
}

async fn revise(
    lib: &Library,
    code: &str,
    t: &zhengzhao_core::FaceTemplate,
    new_version: bool,
) -> std::result::Result<catalog::LicenceType, tonic::Status> {
    lib.catalog(Role::Admin, ADMIN)
        .revise_template(catalog::ReviseTemplateRequest {
            code: code.into(),
            template: Some(template_to_wire(t)),
            new_version,
        })
        .await
        .map(|r| r.into_inner().licence_type.unwrap_or_default())
}

fn version_of(t: &catalog::LicenceType) -> u32 {
    t.definition.as_ref().and_then(|d| d.template.as_ref()).map_or(0, |t| t.version)
}

async fn verify(lib: &Library, id: &str) -> anyhow::Result<i32> {
    Ok(lib
        .verification(Role::Consumer, CONSUMER)
        .verify_licence(verification::VerifyLicenceRequest { identifier: id.into(), include_inclusion_proof: false })
        .await?
        .into_inner()
        .verification
        .unwrap_or_default()
        .outcome)
}

#[tokio::test]
async fn new_template_versions_never_change_licences_issued_under_older_ones() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let v1_licence = issue(&lib, draft(&code)).await?;
        assert_eq!(v1_licence.template_version, 1);

        // A compatible change is made in place: new optional field, looser limit, new label.
        let mut relaxed = current_template(&code);
        relaxed.fields[0].max_length = Some(500);
        relaxed.fields[0].label = "经营项目（范围）".into();
        relaxed.fields.push(zhengzhao_core::FieldDefinition::new("remark", "备注", zhengzhao_core::FieldKind::Text));
        if let Some(f) = relaxed.fields.last_mut() {
            f.order = 100;
        }
        let t = revise(&lib, &code, &relaxed, false).await?;
        assert_eq!(version_of(&t), 1, "{engine}");

        // Tightening in place is refused, names the field, and changes nothing.
        let mut tightened = relaxed.clone();
        let supervisor = tightened.fields.iter_mut().find(|f| f.key == "daily_supervisor").expect("field");
        supervisor.required = true;
        let e = revise(&lib, &code, &tightened, false).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{engine}");
        assert_eq!(violated_fields(&e), vec!["template.fields.daily_supervisor".to_owned()]);
        let mut removed = relaxed.clone();
        removed.fields.retain(|f| f.key != "premises");
        let e = revise(&lib, &code, &removed, false).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["template.fields.premises".to_owned()]);
        assert_eq!(version_of(&get(&lib, &code, 0).await?), 1);

        // As a new version it is accepted.
        let t = revise(&lib, &code, &tightened, true).await?;
        assert_eq!(version_of(&t), 2, "{engine}");
        let versions = lib
            .catalog(Role::Consumer, CONSUMER)
            .list_template_versions(catalog::ListTemplateVersionsRequest { code: code.clone() })
            .await?
            .into_inner()
            .versions;
        assert_eq!(
            versions.iter().map(|v| v.template.as_ref().map_or(0, |t| t.version)).collect::<Vec<_>>(),
            vec![1, 2]
        );

        // Licences are checked against the version they name.
        let mut no_supervisor = draft(&code);
        no_supervisor.face_fields.remove("daily_supervisor");
        no_supervisor.template_version = 0;
        let e = issue(&lib, no_supervisor.clone()).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["face_fields.daily_supervisor".to_owned()], "{engine}");
        no_supervisor.template_version = 1;
        let under_v1 = issue(&lib, no_supervisor.clone()).await?;
        assert_eq!(under_v1.template_version, 1);
        let doc: serde_json::Value = serde_json::from_str(&under_v1.document_json)?;
        assert_eq!(doc["templateVersion"], 1);
        no_supervisor.template_version = 9;
        let e = issue(&lib, no_supervisor).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["template_version".to_owned()]);
        let mut v2 = draft(&code);
        v2.template_version = 2;
        assert_eq!(issue(&lib, v2).await?.template_version, 2);

        // Older licences are untouched and still verify.
        assert_eq!(verify(&lib, &v1_licence.identifier).await?, verification::VerificationOutcome::Valid as i32);
        let v1_template = get(&lib, &code, 1).await?;
        assert_eq!(version_of(&v1_template), 1);
        let fields = v1_template.definition.and_then(|d| d.template).map(|t| t.fields).unwrap_or_default();
        assert!(!fields.iter().find(|f| f.key == "daily_supervisor").is_some_and(|f| f.required));
    }
    Ok(())
}

#[tokio::test]
async fn retired_types_issue_nothing_new_and_their_licences_stay_valid() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let l = issue(&lib, draft(&code)).await?;
        let retire = |reason: &str| catalog::RetireLicenceTypeRequest { code: code.clone(), reason: reason.into() };
        let e = lib.catalog(Role::Issuer, ISSUER).retire_licence_type(retire("停止")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let e = lib.catalog(Role::Admin, ADMIN).retire_licence_type(retire(" ")).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["reason".to_owned()]);
        let t = lib.catalog(Role::Admin, ADMIN).retire_licence_type(retire("改革后并入新证")).await?.into_inner();
        let t = t.licence_type.unwrap_or_default();
        assert_eq!(t.status, catalog::LicenceTypeStatus::Retired as i32, "{engine}");
        assert!(t.retired_at.is_some());
        let e = issue(&lib, draft(&code)).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}");
        assert!(e.message().contains("retired"));
        assert_eq!(verify(&lib, &l.identifier).await?, verification::VerificationOutcome::Valid as i32);
        let e = revise(&lib, &code, &current_template(&code), true).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        let e = lib
            .catalog(Role::Admin, ADMIN)
            .publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
    }
    Ok(())
}

async fn create(
    lib: &Library,
    name: &str,
    authority: &str,
    category: zhengzhao_core::HolderCategory,
) -> anyhow::Result<String> {
    let mut def = example_definition();
    def.name = name.into();
    def.defining_authority.code = authority.into();
    def.holder_category = category;
    let t = lib
        .catalog(Role::Admin, ADMIN)
        .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&def)) })
        .await?
        .into_inner();
    Ok(t.licence_type.and_then(|t| t.definition).map(|d| d.code).unwrap_or_default())
}

#[tokio::test]
async fn types_are_searched_by_name_authority_category_and_status() -> Result {
    use zhengzhao_core::HolderCategory::{LegalPerson, NaturalPerson};
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let a = "11100000000013338W";
        let b = "12100000400010275N";
        let food = create(&lib, "食品经营许可证", a, LegalPerson).await?;
        create(&lib, "药品经营许可证", a, LegalPerson).await?;
        create(&lib, "道路运输从业资格证", a, NaturalPerson).await?;
        create(&lib, "100%_特殊名称", b, LegalPerson).await?;
        lib.catalog(Role::Admin, ADMIN)
            .publish_licence_type(catalog::PublishLicenceTypeRequest { code: food.clone() })
            .await?;
        let list = |f: catalog::ListLicenceTypesRequest| {
            let mut c = lib.catalog(Role::Consumer, CONSUMER);
            async move {
                let r = c.list_licence_types(f).await?.into_inner();
                Ok::<_, anyhow::Error>(
                    r.licence_types.into_iter().map(|t| t.definition.unwrap_or_default().name).collect::<Vec<_>>(),
                )
            }
        };
        let q = catalog::ListLicenceTypesRequest::default;
        assert_eq!(
            list(catalog::ListLicenceTypesRequest { name_contains: "经营".into(), ..q() }).await?,
            vec!["食品经营许可证", "药品经营许可证"],
            "{engine}"
        );
        assert_eq!(
            list(catalog::ListLicenceTypesRequest { name_contains: "%".into(), ..q() }).await?,
            vec!["100%_特殊名称"],
            "{engine}"
        );
        assert!(
            list(catalog::ListLicenceTypesRequest { name_contains: "0_".into(), ..q() }).await?.is_empty(),
            "{engine}: _ is not a wildcard"
        );
        assert_eq!(
            list(catalog::ListLicenceTypesRequest { defining_authority_code: b.into(), ..q() }).await?,
            vec!["100%_特殊名称"]
        );
        assert_eq!(
            list(catalog::ListLicenceTypesRequest {
                holder_category: common::HolderCategory::NaturalPerson as i32,
                ..q()
            })
            .await?,
            vec!["道路运输从业资格证"]
        );
        assert_eq!(
            list(catalog::ListLicenceTypesRequest { status: catalog::LicenceTypeStatus::Published as i32, ..q() })
                .await?,
            vec!["食品经营许可证"]
        );
        // Filtered pages are stable.
        let mut c = lib.catalog(Role::Consumer, CONSUMER);
        let p1 = c
            .list_licence_types(catalog::ListLicenceTypesRequest {
                defining_authority_code: a.into(),
                page_size: 2,
                ..q()
            })
            .await?
            .into_inner();
        let p2 = c
            .list_licence_types(catalog::ListLicenceTypesRequest {
                defining_authority_code: a.into(),
                page_size: 2,
                page_token: p1.next_page_token.clone(),
                ..q()
            })
            .await?
            .into_inner();
        assert_eq!(p1.licence_types.len() + p2.licence_types.len(), 3);
        assert!(p2.next_page_token.is_empty());
        let e = c
            .list_licence_types(catalog::ListLicenceTypesRequest { defining_authority_code: "bad".into(), ..q() })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["defining_authority_code".to_owned()]);
    }
    Ok(())
}

async fn export(lib: &Library) -> anyhow::Result<String> {
    Ok(lib.catalog(Role::Sync, ADMIN).export_catalog(catalog::ExportCatalogRequest {}).await?.into_inner().catalog_json)
}

async fn import(lib: &Library, json: &str) -> std::result::Result<catalog::ImportCatalogResponse, tonic::Status> {
    lib.catalog(Role::Admin, ADMIN)
        .import_catalog(catalog::ImportCatalogRequest { catalog_json: json.into() })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn catalogue_export_and_import_are_idempotent_and_all_or_nothing() -> Result {
    for (source_db, target_db) in
        [(TestDb::sqlite()?, TestDb::sqlite()?), (TestDb::postgres().await?, TestDb::postgres().await?)]
    {
        let source = Library::start(source_db).await?;
        let target = Library::start(target_db).await?;
        let engine = source.db.engine();
        let food = published_type(&source).await?;
        let other =
            create(&source, "其他证照", "11100000000013338W", zhengzhao_core::HolderCategory::LegalPerson).await?;
        source
            .catalog(Role::Admin, ADMIN)
            .publish_licence_type(catalog::PublishLicenceTypeRequest { code: other.clone() })
            .await?;
        let _draft_only =
            create(&source, "草稿证照", "11100000000013338W", zhengzhao_core::HolderCategory::LegalPerson).await?;
        let mut v2 = current_template(&food);
        v2.fields[0].required = false;
        v2.fields[1].max_length = Some(10);
        revise(&source, &food, &v2, true).await?;
        source
            .catalog(Role::Admin, ADMIN)
            .retire_licence_type(catalog::RetireLicenceTypeRequest { code: other.clone(), reason: "并证".into() })
            .await?;

        let doc = export(&source).await?;
        let first = import(&target, &doc).await?;
        assert_eq!((first.created, first.updated, first.unchanged), (3, 0, 0), "{engine}");
        let again = import(&target, &doc).await?;
        assert_eq!((again.created, again.updated, again.unchanged), (0, 0, 3), "{engine}");
        assert_eq!(export(&target).await?, doc, "{engine}: the copy exports the same document");
        // The imported library issues under the imported versions.
        let mut d = draft(&food);
        d.template_version = 1;
        issue(&target, d).await?;

        // A later export with a new version and a status change updates the copy.
        let mut v3 = v2.clone();
        v3.fields.retain(|f| f.key != "staff_count");
        revise(&source, &food, &v3, true).await?;
        let later = export(&source).await?;
        let r = import(&target, &later).await?;
        assert_eq!((r.created, r.updated, r.unchanged), (0, 1, 2), "{engine}");
        assert_eq!(export(&target).await?, later);

        // A revision of a type's own fields reaches the copy with the next import.
        let mut revised = example_definition();
        revised.name = "食品经营许可证（2027版）".into();
        revised.validity = zhengzhao_core::ValidityRange::Years(10);
        revise_type(&source, &food, &revised, "证照改版").await?;
        let later = export(&source).await?;
        let r = import(&target, &later).await?;
        assert_eq!((r.created, r.updated, r.unchanged), (0, 1, 2), "{engine}");
        assert_eq!(export(&target).await?, later, "{engine}");
        let held = get(&target, &food, 0).await?.definition.unwrap_or_default();
        assert_eq!(held.name, "食品经营许可证（2027版）");

        // One conflict refuses the whole document: the new type is not created either.
        let mut conflicting: serde_json::Value = serde_json::from_str(&later)?;
        let types = conflicting["licence_types"].as_array_mut().expect("types");
        types[0]["definition"]["holder_category"] = "natural_person".into();
        let mut extra = types[1].clone();
        extra["definition"]["code"] = "11100000000013338W900".into();
        types.push(extra);
        let e = import(&target, &conflicting.to_string()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}");
        assert!(e.message().contains(&food) && e.message().contains("nothing was applied"), "{}", e.message());
        assert!(e.message().contains("holder_category"), "{}", e.message());
        assert_eq!(export(&target).await?, later, "{engine}: a refused import changed the catalogue");
        // Going back in the lifecycle is a conflict too.
        let mut back: serde_json::Value = serde_json::from_str(&later)?;
        for t in back["licence_types"].as_array_mut().expect("types") {
            if t["definition"]["code"] == other.as_str() {
                t["status"] = "published".into();
            }
        }
        assert_eq!(import(&target, &back.to_string()).await.unwrap_err().code(), Code::FailedPrecondition);
        // Malformed documents name the offending field; non-admins cannot import.
        let mut bad: serde_json::Value = serde_json::from_str(&later)?;
        bad["licence_types"][0]["template_versions"][0]["version"] = 7.into();
        let e = import(&target, &bad.to_string()).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["licence_types[0].template_versions[0].version".to_owned()]);
        assert_eq!(import(&target, "{}").await.unwrap_err().code(), Code::InvalidArgument);
        let e = target
            .catalog(Role::Issuer, ISSUER)
            .import_catalog(catalog::ImportCatalogRequest { catalog_json: later.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
    Ok(())
}

#[tokio::test]
async fn every_catalogue_change_is_recorded_with_who_when_and_what() -> Result {
    for lib in libraries().await? {
        let code = published_type(&lib).await?;
        let mut t = current_template(&code);
        t.fields[0].label = "经营项目名称".into();
        revise(&lib, &code, &t, false).await?;
        t.fields[0].required = false;
        revise(&lib, &code, &t, true).await?;
        lib.catalog(Role::Admin, ADMIN)
            .retire_licence_type(catalog::RetireLicenceTypeRequest { code: code.clone(), reason: "并证".into() })
            .await?;
        let mut c = lib.catalog(Role::Auditor, ADMIN);
        let changes = c
            .list_catalog_changes(catalog::ListCatalogChangesRequest { code: code.clone(), ..Default::default() })
            .await?
            .into_inner()
            .changes;
        let kinds: Vec<&str> = changes.iter().map(|c| c.change.as_str()).collect();
        assert_eq!(kinds, vec!["retire", "new_version", "revise", "publish", "create"], "{}", lib.db.engine());
        assert!(changes.iter().all(|c| c.actor == format!("admin@{ADMIN}") && c.recorded_at.is_some()));
        let retire: serde_json::Value = serde_json::from_str(&changes[0].detail_json)?;
        assert_eq!(retire["reason"], "并证");
        let new_version: serde_json::Value = serde_json::from_str(&changes[1].detail_json)?;
        assert_eq!(new_version["version"], 2);
        let page = c
            .list_catalog_changes(catalog::ListCatalogChangesRequest {
                code: code.clone(),
                page_size: 3,
                page_token: String::new(),
            })
            .await?
            .into_inner();
        let rest = c
            .list_catalog_changes(catalog::ListCatalogChangesRequest {
                code,
                page_size: 3,
                page_token: page.next_page_token,
            })
            .await?
            .into_inner();
        assert_eq!(page.changes.len() + rest.changes.len(), 5);
    }
    Ok(())
}

#[tokio::test]
async fn definitions_name_each_offending_field() -> Result {
    let lib = Library::start(TestDb::sqlite()?).await?;
    let mut def = example_definition();
    def.service_items[0].code = "has space".into();
    def.template.fields[0].label = "scope".into();
    def.template.fields[6].values.clear();
    def.template.fields[2].max_scale = Some(2);
    let e = lib
        .catalog(Role::Admin, ADMIN)
        .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&def)) })
        .await
        .unwrap_err();
    let mut fields = violated_fields(&e);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "service_items[0].code",
            "template.fields[0].label",
            "template.fields[2].max_scale",
            "template.fields[6].values"
        ]
    );
    Ok(())
}

/// Revises a type's own fields to those of `def` (its template is not sent).
async fn revise_type(
    lib: &Library,
    code: &str,
    def: &zhengzhao_core::LicenceTypeDefinition,
    reason: &str,
) -> std::result::Result<catalog::LicenceType, tonic::Status> {
    let mut definition = definition_to_wire(def);
    definition.template = None;
    lib.catalog(Role::Admin, ADMIN)
        .revise_licence_type(catalog::ReviseLicenceTypeRequest {
            code: code.into(),
            definition: Some(definition),
            reason: reason.into(),
        })
        .await
        .map(|r| r.into_inner().licence_type.unwrap_or_default())
}

async fn changes_of(lib: &Library, code: &str) -> anyhow::Result<Vec<catalog::CatalogChange>> {
    Ok(lib
        .catalog(Role::Auditor, ADMIN)
        .list_catalog_changes(catalog::ListCatalogChangesRequest { code: code.into(), ..Default::default() })
        .await?
        .into_inner()
        .changes)
}

#[tokio::test]
async fn a_types_own_fields_are_revised_recorded_and_followed_by_issuance() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        issue(&lib, draft(&code)).await?;

        let mut def = example_definition();
        def.name = "食品经营许可证（新版）".into();
        def.defining_authority.name = "市场监管总局".into();
        def.service_items
            .push(zhengzhao_core::ServiceItem { name: "食品经营许可变更".into(), code: "FOOD-CHANGE".into() });
        def.validity = zhengzhao_core::ValidityRange::Years(10);
        def.issuers = vec![OTHER_ISSUER.into()];
        let t = revise_type(&lib, &code, &def, "机构改革后证照改版").await?;
        let held = t.definition.clone().unwrap_or_default();
        assert_eq!(held.name, "食品经营许可证（新版）", "{engine}");
        assert_eq!(held.issuers, vec![OTHER_ISSUER.to_owned()]);
        assert_eq!(
            held.validity,
            Some(catalog::ValidityRange { range: Some(catalog::validity_range::Range::Years(10)) })
        );
        assert_eq!(held.service_items.len(), 2);
        assert_eq!(version_of(&t), 1, "{engine}: the template is untouched");
        assert_eq!(held.template.map(|t| t.fields.len()), Some(example_definition().template.fields.len()));
        assert_eq!(get(&lib, &code, 0).await?.definition.unwrap_or_default().name, "食品经营许可证（新版）");
        // The name filter sees the new name.
        let found = lib
            .catalog(Role::Consumer, CONSUMER)
            .list_licence_types(catalog::ListLicenceTypesRequest {
                name_contains: "新版".into(), ..Default::default()
            })
            .await?
            .into_inner()
            .licence_types;
        assert_eq!(found.len(), 1, "{engine}");

        // Issuance follows the new issuer list: the removed issuer may no longer issue.
        let e = issue(&lib, draft(&code)).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}: {}", e.message());

        // The change log says who, why, which fields, before and after.
        let changes = changes_of(&lib, &code).await?;
        assert_eq!(changes[0].change, "revise_type", "{engine}");
        assert_eq!(changes[0].actor, format!("admin@{ADMIN}"));
        let detail: serde_json::Value = serde_json::from_str(&changes[0].detail_json)?;
        assert_eq!(detail["reason"], "机构改革后证照改版");
        assert_eq!(
            detail["changed"],
            serde_json::json!(["name", "defining_authority", "service_items", "validity", "issuers"])
        );
        assert_eq!(detail["before"]["name"], "食品经营许可证");
        assert_eq!(detail["after"]["name"], "食品经营许可证（新版）");
        assert_eq!(detail["before"]["issuers"], serde_json::json!([ISSUER]));
        assert_eq!(detail["after"]["validity"], "10/Y");

        // The same fields again change nothing and record nothing.
        revise_type(&lib, &code, &def, "重复提交").await?;
        assert_eq!(changes_of(&lib, &code).await?.len(), changes.len(), "{engine}");

        // What may not change is refused, naming the field, and changes nothing.
        let mut category = def.clone();
        category.holder_category = zhengzhao_core::HolderCategory::NaturalPerson;
        let e = revise_type(&lib, &code, &category, "改为自然人").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{engine}");
        assert_eq!(violated_fields(&e), vec!["holder_category".to_owned()]);
        let mut authority = def.clone();
        authority.defining_authority.code = CONSUMER.into();
        let e = revise_type(&lib, &code, &authority, "换定义机构").await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["defining_authority.code".to_owned()]);
        let mut other_code = def.clone();
        other_code.code = Some(format!("{ADMIN}999"));
        let e = revise_type(&lib, &code, &other_code, "换编码").await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["code".to_owned()]);
        let mut no_issuers = def.clone();
        no_issuers.issuers.clear();
        let e = revise_type(&lib, &code, &no_issuers, "清空").await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["issuers".to_owned()]);
        let e = revise_type(&lib, &code, &def, " ").await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["reason".to_owned()]);
        // The template is revised with ReviseTemplate only.
        let e = lib
            .catalog(Role::Admin, ADMIN)
            .revise_licence_type(catalog::ReviseLicenceTypeRequest {
                code: code.clone(),
                definition: Some(definition_to_wire(&def)),
                reason: "连模板一起改".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["template".to_owned()]);
        // Administrators only.
        let mut definition = definition_to_wire(&def);
        definition.template = None;
        let e = lib
            .catalog(Role::Issuer, ISSUER)
            .revise_licence_type(catalog::ReviseLicenceTypeRequest {
                code: code.clone(),
                definition: Some(definition),
                reason: "发证机关自己改".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{engine}");
        assert_eq!(changes_of(&lib, &code).await?.len(), changes.len(), "{engine}: refused revisions were recorded");
        assert_eq!(get(&lib, &code, 0).await?.definition.unwrap_or_default().issuers, vec![OTHER_ISSUER.to_owned()]);

        // A draft may still change its holder category; a retired type nothing.
        let draft_code =
            create(&lib, "草稿证照", "11100000000013338W", zhengzhao_core::HolderCategory::LegalPerson).await?;
        let mut natural = example_definition();
        natural.name = "草稿证照".into();
        natural.holder_category = zhengzhao_core::HolderCategory::NaturalPerson;
        let t = revise_type(&lib, &draft_code, &natural, "持证主体为自然人").await?;
        assert_eq!(t.definition.unwrap_or_default().holder_category, common::HolderCategory::NaturalPerson as i32);
        lib.catalog(Role::Admin, ADMIN)
            .retire_licence_type(catalog::RetireLicenceTypeRequest { code: code.clone(), reason: "并证".into() })
            .await?;
        let mut renamed = def.clone();
        renamed.name = "再改名".into();
        let e = revise_type(&lib, &code, &renamed, "退役后改名").await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}");
        let e = revise_type(&lib, &format!("{ADMIN}998"), &renamed, "不存在").await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{engine}");
    }
    Ok(())
}

#[tokio::test]
async fn one_definition_is_one_type_and_templates_need_fields() -> Result {
    use zhengzhao_core::HolderCategory::LegalPerson;
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let a = "11100000000013338W";
        let b = "12100000400010275N";
        let first = create(&lib, "食品经营许可证", a, LegalPerson).await?;
        // The same name under the same authority, even padded with spaces, is refused naming the type.
        for name in ["食品经营许可证", " 食品经营许可证 "] {
            let e = create(&lib, name, a, LegalPerson).await.unwrap_err();
            let status = e.downcast_ref::<tonic::Status>().expect("a gRPC status");
            assert_eq!(status.code(), Code::AlreadyExists, "{engine}: {name:?}");
            assert!(status.message().contains(&first), "{}", status.message());
        }
        // Another name, or the same name under another authority, is another type.
        let second = create(&lib, "食品生产许可证", a, LegalPerson).await?;
        create(&lib, "食品经营许可证", b, LegalPerson).await?;
        // Renaming a type onto another's definition is refused the same way.
        let mut onto = example_definition();
        onto.name = "食品经营许可证".into();
        let e = revise_type(&lib, &second, &onto, "改名").await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{engine}");
        assert!(e.message().contains(&first), "{}", e.message());
        // Once the first is retired, its definition may be made again.
        lib.catalog(Role::Admin, ADMIN)
            .retire_licence_type(catalog::RetireLicenceTypeRequest { code: first.clone(), reason: "改革".into() })
            .await?;
        let again = create(&lib, "食品经营许可证", a, LegalPerson).await?;
        assert_ne!(again, first);

        // A template with no fields is refused, on creation and on revision.
        let mut empty = example_definition();
        empty.name = "空模板证照".into();
        empty.template.fields.clear();
        let e = lib
            .catalog(Role::Admin, ADMIN)
            .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&empty)) })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&e), vec!["template.fields".to_owned()], "{engine}");
        let none = zhengzhao_core::FaceTemplate { version: 0, fields: Vec::new() };
        for new_version in [false, true] {
            let e = revise(&lib, &second, &none, new_version).await.unwrap_err();
            assert_eq!(violated_fields(&e), vec!["template.fields".to_owned()], "{engine}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn required_face_fields_are_not_blank_and_integers_are_canonical_and_bounded() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        let face = |key: &str, value: &str| {
            let mut d = draft(&code);
            d.face_fields.insert(key.into(), value.into());
            d
        };
        for blank in [" ", "   ", "\u{3000}"] {
            let e = issue(&lib, face("premises", blank)).await.unwrap_err();
            assert_eq!(violated_fields(&e), vec!["face_fields.premises".to_owned()], "{engine}: {blank:?}");
        }
        for bad in ["+3", "007", "-0", "3.0", " 3"] {
            let e = issue(&lib, face("staff_count", bad)).await.unwrap_err();
            assert_eq!(violated_fields(&e), vec!["face_fields.staff_count".to_owned()], "{engine}: {bad:?}");
        }
        for good in ["0", "-3", "12"] {
            issue(&lib, face("staff_count", good)).await?;
        }

        // Bounds: a new bound is tighter, so only as a new version.
        let mut bounded = current_template(&code);
        let staff = bounded.fields.iter_mut().find(|f| f.key == "staff_count").expect("field");
        staff.min = Some(0);
        staff.max = Some(1000);
        let e = revise(&lib, &code, &bounded, false).await.unwrap_err();
        // Two new bounds: two violations of the field, one each.
        assert_eq!(violated_fields(&e), vec!["template.fields.staff_count".to_owned(); 2], "{engine}");
        assert!(e.message().contains("min raised") && e.message().contains("max lowered"), "{}", e.message());
        let t = revise(&lib, &code, &bounded, true).await?;
        assert_eq!(version_of(&t), 2);
        let wire_field = |t: &catalog::LicenceType| {
            t.definition
                .as_ref()
                .and_then(|d| d.template.as_ref())
                .and_then(|t| t.fields.iter().find(|f| f.key == "staff_count").cloned())
                .unwrap_or_default()
        };
        let f = wire_field(&get(&lib, &code, 2).await?);
        assert_eq!((f.min, f.max), (Some(0), Some(1000)), "{engine}");
        assert_eq!((wire_field(&get(&lib, &code, 1).await?).min), None);
        let mut under_v2 = face("staff_count", "-3");
        under_v2.template_version = 2;
        let e = issue(&lib, under_v2.clone()).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["face_fields.staff_count".to_owned()], "{engine}");
        under_v2.face_fields.insert("staff_count".into(), "1001".into());
        assert!(issue(&lib, under_v2.clone()).await.is_err());
        under_v2.face_fields.insert("staff_count".into(), "1000".into());
        issue(&lib, under_v2.clone()).await?;
        // A looser bound keeps every licence valid, so in place; a tighter one does not.
        let mut looser = bounded.clone();
        let staff = looser.fields.iter_mut().find(|f| f.key == "staff_count").expect("field");
        staff.min = Some(-10);
        staff.max = None;
        assert_eq!(version_of(&revise(&lib, &code, &looser, false).await?), 2, "{engine}");
        under_v2.face_fields.insert("staff_count".into(), "-3".into());
        issue(&lib, under_v2).await?;
        let mut tighter = looser.clone();
        let staff = tighter.fields.iter_mut().find(|f| f.key == "staff_count").expect("field");
        staff.max = Some(5000);
        let e = revise(&lib, &code, &tighter, false).await.unwrap_err();
        assert_eq!(violated_fields(&e), vec!["template.fields.staff_count".to_owned()], "{engine}");
        // Bounds belong to integer fields, below each other.
        let mut misplaced = looser.clone();
        misplaced.fields[0].min = Some(1);
        let staff = misplaced.fields.iter_mut().find(|f| f.key == "staff_count").expect("field");
        staff.min = Some(9);
        staff.max = Some(1);
        let e = revise(&lib, &code, &misplaced, true).await.unwrap_err();
        let mut fields = violated_fields(&e);
        fields.sort();
        assert_eq!(fields, vec!["template.fields[0].kind".to_owned(), "template.fields[5].max".to_owned()], "{engine}");
    }
    Ok(())
}
