//! Writes the seed corpus under `fuzz/corpus/<target>/`: well-formed inputs
//! of every format, made by the library's own code (the example licence
//! type and draft, documents and tokens signed with the fuzzing keys), and
//! prefixes of each, for the fuzzer to grow from. `scripts/fuzz` runs it
//! before fuzzing; files already there are kept.
//!
//! cargo run -p zhengzhao-fuzzing --example seed

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use zhengzhao_crypto::sdjwt::{self, Disclosure, Presentation};
use zhengzhao_crypto::{IssuerKeyPair, JwsHeader, jws};
use zhengzhao_fuzzing::keys;

const ISSUER: &str = "91350100M000100Y43";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut def = zhengzhao::examples::definition(ISSUER)?;
    // The code the catalogue would assign the first type of administrator 11100000000013338W.
    def.code = Some("11100000000013338W011".into());
    let draft = zhengzhao::examples::draft(&def, "2026-11-27")?;
    let type_code = def.code.clone().unwrap_or_default();
    let id = zhengzhao_core::LicenceId::new(
        zhengzhao_core::TypeCode::parse(&type_code)?,
        zhengzhao_core::Uscc::parse(ISSUER)?,
        "A1B2C3D4",
        1,
    )?
    .to_string();
    let document = zhengzhao_core::LicenceDocument {
        identifier: id.clone(),
        licence_number: "A1B2C3D4".into(),
        name: def.name.clone(),
        type_code: type_code.clone(),
        template_version: 1,
        issuer: zhengzhao_core::document::DocumentIssuer { code: ISSUER.into(), name: draft.issuer_name.clone() },
        issue_date: draft.issue_date.clone(),
        valid_from: draft.valid_from.clone(),
        valid_until: Some(draft.valid_until.clone()).filter(|v| !v.is_empty()),
        holder: zhengzhao_core::document::DocumentHolder {
            name: draft.holder.name.clone(),
            id_type_code: draft.holder.id_type_code.clone(),
            id_number: draft.holder.id_number.clone(),
        },
        area_code: draft.area_code.clone(),
        face_fields: draft.face_fields.clone(),
        replaces: None,
    };
    let doc_json = document.canonical_bytes()?;
    let k = keys();

    let mut legacy = id.clone();
    legacy.pop();
    legacy.push(if id.ends_with('0') { '1' } else { '0' });
    write(&root, "identifier", &[id.as_bytes(), legacy.as_bytes(), format!("{id}.").as_bytes()]);

    let holder = format!("{}\n{}", draft.holder.id_type_code, draft.holder.id_number);
    let codes: Vec<&[u8]> = vec![
        ISSUER.as_bytes(),
        b"11100000000013338W",
        b"91110000802100433B",
        b"12100000400010275N",
        holder.as_bytes(),
        draft.holder.id_number.as_bytes(),
        b"001\nMA12345678",
        b"111\n11010519491231002X",
    ];
    write(&root, "codes", &codes);

    let def_json = serde_json::to_vec(&def)?;
    let draft_json = serde_json::to_vec(&draft)?;
    write(&root, "canonical_json", &[&doc_json, &def_json, &draft_json, br#"{"b":1e3,"a":[0.5,-0,"\u00e9"]}"#]);

    let signed = |key: &IssuerKeyPair, alg: &str, typ: Option<&str>, payload: &[u8]| {
        let header =
            JwsHeader { alg: alg.into(), kid: Some("k1".into()), typ: typ.map(str::to_owned), iat: Some(1), x5c: None };
        let input = jws::signing_input(&header, payload);
        jws::assemble(&input, &key.sign(input.as_bytes()))
    };
    let es = signed(&k.es256, "ES256", None, &doc_json);
    let sm = signed(&k.sm2, zhengzhao_crypto::sm2::JWS_ALG, None, &doc_json);
    write(&root, "jws", &[&mode(0, es.as_bytes()), &mode(0, sm.as_bytes()), &mode(1, &doc_json)]);

    let holder_key = zhengzhao_crypto::Es256KeyPair::generate();
    let disclosures = vec![
        Disclosure::new("licence_number", json!("A1B2C3D4")),
        Disclosure::new("holder_name", json!(draft.holder.name)),
        Disclosure::new("holder_id_number", json!(draft.holder.id_number)),
    ];
    let mut plain = serde_json::Map::new();
    plain.insert("iss".into(), json!(format!("urn:zhengzhao:issuer:{ISSUER}")));
    plain.insert("vct".into(), json!(format!("urn:zhengzhao:licence-type:{type_code}")));
    plain.insert("identifier".into(), json!(id));
    plain.insert("scenario".into(), json!({ "id": 1, "name": "counter", "audience": "12100000400010275N" }));
    plain.insert("cnf".into(), json!({ "jwk": holder_key.public_key().to_jwk("holder") }));
    plain.insert("iat".into(), json!(1_796_428_000));
    plain.insert("exp".into(), json!(1_796_428_300));
    let payload = serde_json::to_vec(&sdjwt::issuer_payload(plain, &disclosures))?;
    let issuer_jwt = signed(&k.es256, "ES256", Some(sdjwt::SD_JWT_TYP), &payload);
    let presentation = Presentation { issuer_jwt, disclosures, kb_jwt: None }.bind(
        &holder_key,
        "12100000400010275N",
        "nonce-1",
        1_796_428_100,
    );
    let full = presentation.serialize();
    let bare = presentation.without_key_binding();
    write(&root, "sd_jwt", &[full.as_bytes(), bare.as_bytes()]);
    write(&root, "presentation", &[full.as_bytes(), bare.as_bytes()]);

    // Tokens as the operator mints them, their times moved around the
    // targets' fixed now and signed again, so that they are accepted.
    let kid = zhengzhao_auth::token_kid(&k.token.public_key());
    let authority = zhengzhao_auth::TokenAuthority::operator(
        zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&k.token.to_pkcs8_pem()?)?,
        &kid,
    );
    let mut tokens = Vec::new();
    for role in [zhengzhao_auth::Role::Admin, zhengzhao_auth::Role::Consumer, zhengzhao_auth::Role::Issuer] {
        let t = authority.mint(ISSUER, role, Duration::from_secs(3600))?;
        let mut claims: serde_json::Value = serde_json::from_slice(&jws::parse(&t)?.payload)?;
        claims["iat"] = json!(zhengzhao_fuzzing::NOW - 60);
        claims["exp"] = json!(zhengzhao_fuzzing::NOW + 3000);
        let claims = serde_json::to_vec(&claims)?;
        let header =
            JwsHeader { alg: "ES256".into(), kid: Some(kid.clone()), typ: Some("JWT".into()), iat: None, x5c: None };
        let input = jws::signing_input(&header, &claims);
        let token = jws::assemble(&input, &k.token.sign(input.as_bytes()));
        tokens.push(mode(0, token.as_bytes()));
        tokens.push(mode(1, &claims));
    }
    write(&root, "bearer_token", &tokens.iter().map(Vec::as_slice).collect::<Vec<_>>());

    let face: Vec<(&String, &String)> = draft.face_fields.iter().collect();
    let mut header = vec![
        "source_key",
        "identifier",
        "type_code",
        "issuer_name",
        "serial",
        "holder_name",
        "holder_id_type_code",
        "holder_id_number",
        "issue_date",
        "valid_from",
        "valid_until",
        "area_code",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    header.extend(face.iter().map(|(k, _)| format!("face.{k}")));
    let row = |key: &str, identifier: &str| {
        let mut cells = vec![
            key.to_owned(),
            identifier.to_owned(),
            type_code.clone(),
            draft.issuer_name.clone(),
            "A1B2C3D4".into(),
            draft.holder.name.clone(),
            draft.holder.id_type_code.clone(),
            draft.holder.id_number.clone(),
            draft.issue_date.clone(),
            draft.valid_from.clone(),
            draft.valid_until.clone(),
            draft.area_code.clone(),
        ];
        cells.extend(face.iter().map(|(_, v)| (*v).clone()));
        cells.iter().map(|c| format!("\"{}\"", c.replace('"', "\"\""))).collect::<Vec<_>>().join(",")
    };
    let csv = format!("{}\n{}\n{}\n", header.join(","), row("s1", ""), row("s2", &id));
    write(&root, "import_csv", &[csv.as_bytes()]);
    let line = |key: &str, identifier: &str| {
        json!({ "source_key": key, "identifier": identifier, "licence": draft }).to_string()
    };
    let jsonl = format!("{}\n\n{}\n", line("s1", ""), line("s2", &id));
    write(&root, "import_jsonl", &[jsonl.as_bytes()]);

    let template = serde_json::to_vec(&def.template)?;
    let catalogue = serde_json::to_vec(&json!({
        "format": "zhengzhao-catalog",
        "format_version": 1,
        "licence_types": [{ "status": "published", "definition": def, "template_versions": [def.template] }],
    }))?;
    write(&root, "catalogue", &[&catalogue, &def_json, &template]);

    // Certificates: the fixture chain as PEM (with its CA), as x5c (each
    // DER after its length), and the fixture CRL.
    let chain_and_ca = format!("{}{}", zhengzhao_fuzzing::CHAIN_PEM, zhengzhao_fuzzing::CA_PEM);
    let der: Vec<Vec<u8>> = zhengzhao_crypto::x509::Chain::from_pem(&chain_and_ca)?
        .to_x5c()
        .iter()
        .map(|c| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, c))
        .collect::<Result<_, _>>()?;
    let x5c_lines: Vec<u8> = der
        .iter()
        .flat_map(|d| u16::try_from(d.len()).unwrap_or(u16::MAX).to_be_bytes().into_iter().chain(d.iter().copied()))
        .collect();
    let first = x5c_lines[..2 + der[0].len()].to_vec();
    write(
        &root,
        "certificates",
        &[
            &mode(0, chain_and_ca.as_bytes()),
            &mode(0, zhengzhao_fuzzing::CHAIN_PEM.as_bytes()),
            &mode(1, &x5c_lines),
            &mode(1, &first),
            &mode(2, zhengzhao_fuzzing::CRL_PEM.as_bytes()),
        ],
    );
    println!("seed corpus under {}", root.display());
    Ok(())
}

fn mode(m: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![m];
    v.extend_from_slice(rest);
    v
}

/// Writes each seed and its prefixes (a quarter, a half, three quarters)
/// as `seed-<n>`, keeping what is there.
fn write(root: &Path, target: &str, seeds: &[&[u8]]) {
    let dir: PathBuf = root.join(target);
    std::fs::create_dir_all(&dir).expect("the corpus directory can be made");
    let mut n = 0;
    for s in seeds {
        for cut in [s.len(), s.len() * 3 / 4, s.len() / 2, s.len() / 4] {
            let path = dir.join(format!("seed-{n}"));
            n += 1;
            if !path.exists() {
                std::fs::write(&path, &s[..cut]).expect("the seed can be written");
            }
        }
    }
}
