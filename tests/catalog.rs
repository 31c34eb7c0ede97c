//! Catalogue tests over gRPC, each on SQLite and PostgreSQL: versioned
//! templates, compatible and breaking revisions, retirement, search,
//! export/import and the change log.

use tonic::Code;
use zhengzhao_auth::Role;
use zhengzhao_e2e::fixtures::{draft, example_definition, issue, libraries, published_type, violated_fields};
use zhengzhao_e2e::{ADMIN, CONSUMER, ISSUER, Library};
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
        relaxed.fields.push(zhengzhao_core::FieldDefinition {
            key: "remark".into(),
            label: "备注".into(),
            kind: zhengzhao_core::FieldKind::Text,
            required: false,
            order: 0,
            max_length: None,
            pattern: None,
            values: Vec::new(),
            max_scale: None,
        });
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
        let other = published_type(&source).await?;
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

        // One conflict refuses the whole document: the new type is not created either.
        let mut conflicting: serde_json::Value = serde_json::from_str(&later)?;
        let types = conflicting["licence_types"].as_array_mut().expect("types");
        types[0]["definition"]["name"] = "改名的证照".into();
        let mut extra = types[1].clone();
        extra["definition"]["code"] = "11100000000013338W900".into();
        types.push(extra);
        let e = import(&target, &conflicting.to_string()).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{engine}");
        assert!(e.message().contains(&food) && e.message().contains("nothing was applied"), "{}", e.message());
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
