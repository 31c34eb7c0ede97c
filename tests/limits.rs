//! Bounded errors over gRPC, on SQLite and PostgreSQL: a draft with far more
//! face fields than its template has is refused with one violation, and a
//! refusal with many violations reports the first ones and a count of the
//! rest, small enough for a client's HTTP/2 header-list limit (a larger
//! status reaches the caller as `h2 protocol error` instead).

use tonic::Code;
use tonic_types::StatusExt;
use zhengzhao_auth::Role;
use zhengzhao_core::{FieldDefinition, FieldKind};
use zhengzhao_e2e::fixtures::{draft, example_definition, issue, libraries, published_type, violated_fields};
use zhengzhao_e2e::{ADMIN, Library};
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::convert::definition_to_wire;
use zhengzhao_proto::error::{MAX_MESSAGE_BYTES, MAX_REPORTED_VIOLATIONS, MORE_FIELD};

type Result = anyhow::Result<()>;

/// Extra optional integer fields in the wide type.
const EXTRA_FIELDS: usize = 150;

/// Creates and publishes the example type with [`EXTRA_FIELDS`] more
/// integer fields; returns its code.
async fn wide_type(lib: &Library) -> anyhow::Result<String> {
    let mut def = example_definition();
    def.name = "宽模板许可证".into();
    for i in 0..EXTRA_FIELDS {
        def.template.fields.push(FieldDefinition::new(format!("count_{i:03}"), "数量", FieldKind::Integer));
    }
    let mut c = lib.catalog(Role::Admin, ADMIN);
    let created = c
        .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&def)) })
        .await?
        .into_inner();
    let code = created.licence_type.and_then(|t| t.definition).map(|d| d.code).unwrap_or_default();
    c.publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() }).await?;
    Ok(code)
}

#[tokio::test]
async fn a_draft_with_100000_unknown_face_fields_gets_one_bounded_violation() -> Result {
    let template_fields = example_definition().template.fields.len();
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = published_type(&lib).await?;
        for unknown in [100, 100_000] {
            let mut d = draft(&code);
            d.face_fields.extend((0..unknown).map(|i| (format!("x{i:06}"), "1".to_owned())));
            let e = issue(&lib, d).await.expect_err("refused");
            assert_eq!(e.code(), Code::InvalidArgument, "{engine} {unknown}: {e:?}");
            assert_eq!(violated_fields(&e), vec!["face_fields".to_owned()], "{engine} {unknown}");
            assert!(e.message().len() <= MAX_MESSAGE_BYTES, "{engine} {unknown}: {} bytes", e.message().len());
            assert!(
                e.message().contains(&format!("at most {template_fields} entries")),
                "{engine} {unknown}: {}",
                e.message()
            );
        }
        // Unknown keys no more numerous than the template's fields are each named.
        let mut d = draft(&code);
        let required: Vec<String> =
            example_definition().template.fields.into_iter().filter(|f| f.required).map(|f| f.key).collect();
        d.face_fields.retain(|k, _| required.contains(k));
        d.face_fields.insert("not_a_field".into(), "1".into());
        let e = issue(&lib, d).await.expect_err("refused");
        assert!(violated_fields(&e).contains(&"face_fields.not_a_field".to_owned()), "{engine}: {e:?}");
    }
    Ok(())
}

#[tokio::test]
async fn many_field_violations_are_capped_with_a_count_of_the_rest() -> Result {
    for lib in libraries().await? {
        let engine = lib.db.engine();
        let code = wide_type(&lib).await?;
        let mut d = draft(&code);
        d.face_fields.extend((0..EXTRA_FIELDS).map(|i| (format!("count_{i:03}"), "many".to_owned())));
        let e = issue(&lib, d).await.expect_err("refused");
        // Before the cap, 150 violations overflowed the client's 16 KiB
        // header-list limit: the caller saw a protocol error, not this.
        assert_eq!(e.code(), Code::InvalidArgument, "{engine}: {e:?}");
        let reported = e.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default();
        assert_eq!(reported.len(), MAX_REPORTED_VIOLATIONS + 1, "{engine}");
        assert!(reported[..MAX_REPORTED_VIOLATIONS].iter().all(|v| v.field.starts_with("face_fields.count_")));
        let last = &reported[MAX_REPORTED_VIOLATIONS];
        assert_eq!(last.field, MORE_FIELD, "{engine}");
        assert_eq!(
            last.description,
            format!("{} more violations not reported", EXTRA_FIELDS - MAX_REPORTED_VIOLATIONS),
            "{engine}"
        );
        assert!(e.message().len() <= MAX_MESSAGE_BYTES, "{engine}: {} bytes", e.message().len());
    }
    Ok(())
}
