//! The authorization table (issue 17): every RPC in the descriptor set ×
//! every role × the caller's own agency or another's, called over gRPC on a
//! running library, against [`TABLE`]. A method missing from the table, a
//! row for a method that no longer exists, and any cell where the library
//! answers otherwise than the table says fail the test; so does a README
//! whose printed table differs from this one (`ZHENGZHAO_WRITE_README=1`
//! rewrites it).
//!
//! A cell is "allowed" when the call gets past authorization: any answer
//! but PERMISSION_DENIED (most requests here are deliberately incomplete,
//! so an allowed call usually ends in INVALID_ARGUMENT or NOT_FOUND and
//! changes nothing). A refused cell must be PERMISSION_DENIED, so a handler
//! that looks at its input before asking the policy fails the test. Every
//! call without a token must be UNAUTHENTICATED.
//!
//! The requests name things of agency A (a licence it issued, its outage,
//! its usage list); "own" is a caller of agency A, "other" one of agency B.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use zhengzhao_auth::{HolderIdentity, Role, ServiceName};
use zhengzhao_e2e::{ADMIN, ISSUER, Library, OTHER_ISSUER, fixtures};
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_testkit::TestDb;

/// The agency whose things the requests name.
const A: &str = ISSUER;
/// Another agency.
const B: &str = OTHER_ISSUER;

/// Who may call each RPC. Words: a role (`admin`, `auditor`, `issuer`,
/// `consumer`, `portal`, `holder`, `sync`), a service caller
/// (`svc:verification`, ...), `svc` (every service), `anyone`; `:own` after
/// a role: only a caller of the agency the request names.
const TABLE: &[(&str, &str)] = &[
    ("auth.v1.TokenService/RevokeToken", "admin"),
    ("auth.v1.TokenService/ListRevokedTokens", "admin auditor svc"),
    ("catalog.v1.CatalogService/CreateLicenceType", "admin"),
    ("catalog.v1.CatalogService/PublishLicenceType", "admin"),
    ("catalog.v1.CatalogService/GetLicenceType", "anyone"),
    ("catalog.v1.CatalogService/ListLicenceTypes", "anyone"),
    ("catalog.v1.CatalogService/ReviseTemplate", "admin"),
    ("catalog.v1.CatalogService/ReviseLicenceType", "admin"),
    ("catalog.v1.CatalogService/RetireLicenceType", "admin"),
    ("catalog.v1.CatalogService/ListTemplateVersions", "anyone"),
    ("catalog.v1.CatalogService/ListCatalogChanges", "anyone"),
    ("catalog.v1.CatalogService/ExportCatalog", "anyone"),
    ("catalog.v1.CatalogService/ImportCatalog", "admin sync"),
    ("exchange.v1.ExchangeService/FetchLicence", "consumer"),
    ("exchange.v1.ExchangeService/FindLicences", "consumer"),
    ("exchange.v1.ExchangeService/IssueCopy", "consumer"),
    ("exchange.v1.ExchangeService/CreateUsageEntry", "admin"),
    ("exchange.v1.ExchangeService/ApplyForUsage", "consumer"),
    ("exchange.v1.ExchangeService/ApproveApplication", "admin"),
    ("exchange.v1.ExchangeService/RefuseApplication", "admin"),
    ("exchange.v1.ExchangeService/SuspendUsageEntry", "admin"),
    ("exchange.v1.ExchangeService/ResumeUsageEntry", "admin"),
    ("exchange.v1.ExchangeService/EndUsageEntry", "admin"),
    ("exchange.v1.ExchangeService/ListUsageEntries", "admin auditor consumer:own"),
    ("exchange.v1.ExchangeService/ListApplications", "admin auditor consumer:own"),
    ("exchange.v1.ExchangeService/ListUsageListChanges", "admin auditor consumer:own"),
    ("exchange.v1.ExchangeService/ListUsageLog", "admin auditor"),
    ("exchange.v1.ExchangeService/GetUsageCheckpoint", "anyone"),
    ("exchange.v1.ExchangeService/GetUsageConsistencyProof", "anyone"),
    ("exchange.v1.HolderService/RegisterFrontEnd", "admin"),
    ("exchange.v1.HolderService/UpdateFrontEnd", "admin"),
    ("exchange.v1.HolderService/ListFrontEnds", "admin auditor portal"),
    ("exchange.v1.HolderService/HolderLogin", "portal"),
    ("exchange.v1.HolderService/ListMyLicences", "holder"),
    ("exchange.v1.HolderService/GetMyLicence", "holder"),
    ("exchange.v1.HolderService/ListMyUsage", "holder"),
    ("exchange.v1.HolderService/ListMyReminders", "holder"),
    ("exchange.v1.HolderService/PresentLicence", "holder"),
    ("exchange.v1.HolderService/ProposeScenario", "consumer"),
    ("exchange.v1.HolderService/ApproveScenario", "admin"),
    ("exchange.v1.HolderService/RefuseScenario", "admin"),
    ("exchange.v1.HolderService/ListScenarios", "admin auditor issuer consumer portal holder svc"),
    ("exchange.v1.HolderService/VerifyPresentation", "admin auditor consumer svc:gateway"),
    ("exchange.v1.HolderService/SetReminderWindows", "admin"),
    ("gateway.v1.GatewayService/ListLibraries", "anyone"),
    ("issuance.v1.IssuanceService/IssueLicence", "issuer:own"),
    ("issuance.v1.IssuanceService/CancelLicence", "issuer:own"),
    (
        "issuance.v1.IssuanceService/GetLicence",
        "admin auditor issuer:own sync svc:verification svc:exchange svc:gateway",
    ),
    (
        "issuance.v1.IssuanceService/GetLicenceHistory",
        "admin auditor issuer:own sync svc:verification svc:exchange svc:gateway",
    ),
    ("issuance.v1.IssuanceService/ListHolderLicences", "svc:exchange"),
    ("issuance.v1.IssuanceService/RecordEvent", "issuer:own"),
    ("issuance.v1.IssuanceService/ChangeLicence", "issuer:own"),
    ("issuance.v1.IssuanceService/RenewLicence", "issuer:own"),
    ("issuance.v1.IssuanceService/WatchChanges", "admin auditor sync svc:verification svc:exchange svc:gateway"),
    ("issuance.v1.IssuanceService/ImportLicences", "issuer"),
    ("issuance.v1.IssuanceService/RecordOutage", "admin issuer:own"),
    ("issuance.v1.IssuanceService/EndOutage", "admin issuer:own"),
    ("issuance.v1.IssuanceService/CompleteOutageBacklog", "admin issuer:own"),
    ("issuance.v1.IssuanceService/ListOutages", "admin auditor issuer:own"),
    ("issuance.v1.IssuanceService/GetCheckpoint", "anyone"),
    ("issuance.v1.IssuanceService/GetConsistencyProof", "anyone"),
    (
        "issuance.v1.IssuanceService/GetInclusionProof",
        "admin auditor issuer:own sync svc:verification svc:exchange svc:gateway",
    ),
    ("issuance.v1.IssuanceService/ReadReplicaFeed", "admin auditor sync"),
    ("issuance.v1.IssuanceService/ApplyReplica", "sync"),
    ("issuance.v1.IssuanceService/ListReplicas", "anyone"),
    ("issuance.v1.IssuanceService/ResumeReplica", "admin"),
    ("issuance.v1.IssuanceService/GetReadStatus", "admin auditor"),
    ("signing.v1.SigningService/SignDocument", "svc:issuance svc:exchange:own"),
    ("signing.v1.SigningService/SignDocuments", "svc:issuance svc:exchange:own"),
    ("signing.v1.SigningService/ListPublicKeys", "anyone"),
    ("signing.v1.SigningService/ImportPublicKeys", "sync"),
    ("signing.v1.SigningService/CreateKey", "admin"),
    ("signing.v1.SigningService/RotateKey", "admin"),
    ("signing.v1.SigningService/RetireKey", "admin"),
    ("signing.v1.SigningService/CompromiseKey", "admin"),
    ("signing.v1.SigningService/CreateCsr", "admin"),
    ("signing.v1.SigningService/AttachCertificate", "admin"),
    ("signing.v1.SigningService/MakeSelectiveDisclosure", "svc:exchange"),
    ("signing.v1.SigningService/WatchKeyEvents", "svc:verification svc:exchange"),
    ("verification.v1.VerificationService/VerifyLicence", "anyone"),
    ("verification.v1.VerificationService/VerifyDocument", "anyone"),
];

/// Methods that answer NOT_FOUND, not PERMISSION_DENIED, to a caller who
/// may do this to its own agency's things but names another's by a bare
/// number: the row is not read past whose it is, so the answer does not
/// tell whether it exists.
const HIDDEN_FROM_OTHERS: &[&str] =
    &["issuance.v1.IssuanceService/EndOutage", "issuance.v1.IssuanceService/CompleteOutageBacklog"];

/// The roles, in the README's column order.
fn roles() -> Vec<Role> {
    let mut out =
        vec![Role::Admin, Role::Auditor, Role::Issuer, Role::Consumer, Role::Portal, Role::Holder, Role::Sync];
    out.extend(ServiceName::ALL.map(Role::Service));
    out
}

fn role_word(role: Role) -> String {
    match role {
        Role::Service(s) => format!("svc:{}", s.as_str()),
        r => r.to_string(),
    }
}

/// What the table says of `role` on `method`: (allowed for its own agency, for another).
fn expected(spec: &str, role: Role) -> (bool, bool) {
    let word = role_word(role);
    let (mut own, mut other) = (false, false);
    for w in spec.split_whitespace() {
        let (name, own_only) = match w.strip_suffix(":own") {
            Some(n) => (n, true),
            None => (w, false),
        };
        let hit = name == "anyone" || name == word || (name == "svc" && matches!(role, Role::Service(_)));
        if hit {
            own = true;
            other |= !own_only;
        }
    }
    (own, other)
}

/// A method from the descriptor set.
#[derive(Debug, Clone)]
struct Method {
    /// `issuance.v1.IssuanceService/GetLicence`.
    name: String,
    /// Its request message, `.zhengzhao.issuance.v1.GetLicenceRequest`.
    input: String,
    client_streaming: bool,
    server_streaming: bool,
}

impl Method {
    fn path(&self) -> String {
        format!("/zhengzhao.{}", self.name)
    }
}

fn methods() -> anyhow::Result<Vec<Method>> {
    let set = prost_types::FileDescriptorSet::decode(zhengzhao_proto::FILE_DESCRIPTOR_SET)?;
    let mut out = Vec::new();
    for file in set.file {
        let package = file.package().strip_prefix("zhengzhao.").unwrap_or(file.package()).to_owned();
        for service in &file.service {
            for m in &service.method {
                out.push(Method {
                    name: format!("{package}.{}/{}", service.name(), m.name()),
                    input: m.input_type().to_owned(),
                    client_streaming: m.client_streaming(),
                    server_streaming: m.server_streaming(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Every message type in the descriptor set, by full name (`.pkg.Msg`).
fn message_types() -> anyhow::Result<BTreeMap<String, prost_types::DescriptorProto>> {
    fn add(out: &mut BTreeMap<String, prost_types::DescriptorProto>, prefix: &str, m: &prost_types::DescriptorProto) {
        let name = format!("{prefix}.{}", m.name());
        for n in &m.nested_type {
            add(out, &name, n);
        }
        out.insert(name, m.clone());
    }
    let set = prost_types::FileDescriptorSet::decode(zhengzhao_proto::FILE_DESCRIPTOR_SET)?;
    let mut out = BTreeMap::new();
    for file in &set.file {
        for m in &file.message_type {
            add(&mut out, &format!(".{}", file.package()), m);
        }
    }
    Ok(out)
}

/// A request of type `name` with every field set to something no handler
/// takes: text with a newline, a NUL and a bidirectional override, the
/// largest numbers (−1 as a signed integer), enum value 999, bytes that are
/// no key or document; messages within, likewise, three levels deep (a
/// timestamp gets seconds −1 and nanos −1).
fn hostile(types: &BTreeMap<String, prost_types::DescriptorProto>, name: &str, depth: u32) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    use prost_types::field_descriptor_proto::Type;
    let mut out = Vec::new();
    let Some(m) = types.get(name) else {
        return out;
    };
    for f in &m.field {
        let n = u32::try_from(f.number()).unwrap_or(1);
        match f.r#type() {
            Type::String | Type::Bytes => {
                let v = "x\n\0\u{202e}1.2.156.3005.2./../".as_bytes();
                encode_key(n, WireType::LengthDelimited, &mut out);
                encode_varint(v.len() as u64, &mut out);
                out.extend_from_slice(v);
            }
            Type::Message if depth < 3 => {
                let inner = hostile(types, f.type_name(), depth + 1);
                encode_key(n, WireType::LengthDelimited, &mut out);
                encode_varint(inner.len() as u64, &mut out);
                out.extend_from_slice(&inner);
            }
            Type::Message | Type::Group => {}
            Type::Enum => {
                encode_key(n, WireType::Varint, &mut out);
                encode_varint(999, &mut out);
            }
            Type::Bool => {
                encode_key(n, WireType::Varint, &mut out);
                encode_varint(1, &mut out);
            }
            Type::Double | Type::Fixed64 | Type::Sfixed64 => {
                encode_key(n, WireType::SixtyFourBit, &mut out);
                out.extend_from_slice(&u64::MAX.to_le_bytes());
            }
            Type::Float | Type::Fixed32 | Type::Sfixed32 => {
                encode_key(n, WireType::ThirtyTwoBit, &mut out);
                out.extend_from_slice(&u32::MAX.to_le_bytes());
            }
            Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64 | Type::Sint32 | Type::Sint64 => {
                encode_key(n, WireType::Varint, &mut out);
                encode_varint(u64::MAX, &mut out);
            }
        }
    }
    out
}

/// Passes encoded messages through as bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// What the library holds of agency A for the requests to name.
struct Things {
    type_code: String,
    licence: zhengzhao_proto::common::v1::Licence,
    outage: u64,
}

/// The request each method is called with: empty (all defaults) unless it
/// must name one of A's things for the policy to have something to decide.
fn request(method: &str, t: &Things) -> Vec<u8> {
    let id = t.licence.identifier.clone();
    let short = method.rsplit('/').next().unwrap_or(method);
    match short {
        "IssueLicence" => {
            issuance::IssueLicenceRequest { draft: Some(fixtures::draft(&t.type_code)), idempotency_key: String::new() }
                .encode_to_vec()
        }
        "CancelLicence" => issuance::CancelLicenceRequest { identifier: id, ..Default::default() }.encode_to_vec(),
        "GetLicence" => issuance::GetLicenceRequest { identifier: id, may_lag: false }.encode_to_vec(),
        "GetLicenceHistory" => issuance::GetLicenceHistoryRequest { identifier: id }.encode_to_vec(),
        "GetInclusionProof" => issuance::GetInclusionProofRequest { identifier: id, tree_size: 1 }.encode_to_vec(),
        "RecordEvent" => issuance::RecordEventRequest { identifier: id, ..Default::default() }.encode_to_vec(),
        "ChangeLicence" => issuance::ChangeLicenceRequest { identifier: id, ..Default::default() }.encode_to_vec(),
        "RenewLicence" => issuance::RenewLicenceRequest { identifier: id, ..Default::default() }.encode_to_vec(),
        "ImportLicences" => issuance::ImportLicencesRequest {
            rows: vec![issuance::ImportRow { row_number: 1, ..Default::default() }],
            allow_legacy: false,
        }
        .encode_to_vec(),
        "RecordOutage" => issuance::RecordOutageRequest { issuer_code: A.into(), ..Default::default() }.encode_to_vec(),
        "EndOutage" => issuance::EndOutageRequest { id: t.outage, ended_at: None }.encode_to_vec(),
        "CompleteOutageBacklog" => issuance::CompleteOutageBacklogRequest { id: t.outage }.encode_to_vec(),
        "ListOutages" => issuance::ListOutagesRequest { issuer_code: A.into() }.encode_to_vec(),
        "SignDocument" => signing::SignDocumentRequest { issuer_code: A.into(), payload: Vec::new() }.encode_to_vec(),
        "SignDocuments" => {
            signing::SignDocumentsRequest { issuer_code: A.into(), payloads: Vec::new() }.encode_to_vec()
        }
        "MakeSelectiveDisclosure" => {
            signing::MakeSelectiveDisclosureRequest { licence_jws: t.licence.jws.clone(), ..Default::default() }
                .encode_to_vec()
        }
        "ListUsageEntries" => {
            exchange::ListUsageEntriesRequest { agency_code: A.into(), ..Default::default() }.encode_to_vec()
        }
        "ListApplications" => {
            exchange::ListApplicationsRequest { agency_code: A.into(), ..Default::default() }.encode_to_vec()
        }
        "ListUsageListChanges" => {
            exchange::ListUsageListChangesRequest { agency_code: A.into(), ..Default::default() }.encode_to_vec()
        }
        _ => Vec::new(),
    }
}

/// How a call ended: its gRPC code (OK for a stream that opened).
async fn call(channel: tonic::transport::Channel, token: Option<&str>, m: &Method, body: Vec<u8>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        panic!("{}: channel not ready: {e}", m.name);
    }
    let path = PathAndQuery::try_from(m.path()).expect("method paths are valid");
    let authorize = |r| with_token(r, token);
    let first_of = |stream: Result<tonic::Response<tonic::Streaming<Vec<u8>>>, tonic::Status>| async move {
        match stream {
            Err(s) => s.code(),
            Ok(r) => match tokio::time::timeout(Duration::from_millis(300), r.into_inner().message()).await {
                Ok(Err(s)) => s.code(),
                // A message, the end, or a watch with nothing to say yet.
                Ok(Ok(_)) | Err(_) => Code::Ok,
            },
        }
    };
    match (m.client_streaming, m.server_streaming) {
        (false, false) => match grpc.unary(authorize(tonic::Request::new(body)), path, Raw).await {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        },
        (false, true) => first_of(grpc.server_streaming(authorize(tonic::Request::new(body)), path, Raw).await).await,
        (true, false) => {
            let stream = tokio_stream::iter(vec![body]);
            match grpc.client_streaming(with_token(tonic::Request::new(stream), token), path, Raw).await {
                Ok(_) => Code::Ok,
                Err(s) => s.code(),
            }
        }
        (true, true) => {
            let stream = tokio_stream::iter(vec![body]);
            first_of(grpc.streaming(with_token(tonic::Request::new(stream), token), path, Raw).await).await
        }
    }
}

fn with_token<T>(mut r: tonic::Request<T>, token: Option<&str>) -> tonic::Request<T> {
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("tokens are header text"));
    }
    r
}

/// A token of `role` for `agency`, as each kind of caller gets one.
fn token(lib: &Library, role: Role, agency: &str, holder: &(String, String)) -> anyhow::Result<String> {
    let hour = Duration::from_secs(3600);
    Ok(match role {
        Role::Service(name) => {
            let pem = std::fs::read_to_string(lib.keys_dir.join(zhengzhao_server::keys::service_key_file(name)))?;
            let key = zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&pem)?;
            zhengzhao_auth::TokenAuthority::service(key, name).mint(agency, role, Duration::from_secs(60))?
        }
        Role::Holder => {
            let pem = std::fs::read_to_string(
                lib.keys_dir.join(zhengzhao_server::keys::service_key_file(ServiceName::Exchange)),
            )?;
            let key = zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&pem)?;
            let who = HolderIdentity { id_type: holder.0.clone(), id_number: holder.1.clone(), front_end: 1 };
            zhengzhao_auth::TokenAuthority::service(key, ServiceName::Exchange)
                .issue_holder(agency, &who, zhengzhao_auth::HOLDER_TOKEN_LIFETIME)?
                .token
        }
        _ => lib.tokens.mint(agency, role, hour)?,
    })
}

/// The table as the README prints it.
fn render() -> String {
    let roles = roles();
    let mut out = String::from("| RPC |");
    for r in &roles {
        out.push_str(&format!(" {} |", role_word(*r).replace("svc:", "")));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(roles.len()));
    out.push('\n');
    for (method, spec) in TABLE {
        out.push_str(&format!("| `{method}` |"));
        for r in &roles {
            let cell = match expected(spec, *r) {
                (true, true) => "✓",
                (true, false) => "own",
                _ => "",
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

const README_BEGIN: &str = "<!-- authorization table: tests/authz.rs -->\n";
const README_END: &str = "<!-- end of authorization table -->";

#[test]
fn the_readme_prints_this_table() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path)?;
    let start = readme.find(README_BEGIN).ok_or_else(|| anyhow::anyhow!("README has no authorization table"))?
        + README_BEGIN.len();
    let end = start + readme[start..].find(README_END).ok_or_else(|| anyhow::anyhow!("table not closed"))?;
    let table = render();
    if readme[start..end] != table {
        if std::env::var_os("ZHENGZHAO_WRITE_README").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &readme[..start], &readme[end..]))?;
        } else {
            anyhow::bail!(
                "the README's authorization table differs from tests/authz.rs (ZHENGZHAO_WRITE_README=1 rewrites it)"
            );
        }
    }
    Ok(())
}

#[test]
fn every_rpc_has_a_row_and_every_row_an_rpc() -> anyhow::Result<()> {
    let described: BTreeSet<String> = methods()?.into_iter().map(|m| m.name).collect();
    let tabled: BTreeSet<String> = TABLE.iter().map(|(m, _)| (*m).to_owned()).collect();
    assert_eq!(tabled.len(), TABLE.len(), "a method has two rows");
    let missing: Vec<_> = described.difference(&tabled).collect();
    let stale: Vec<_> = tabled.difference(&described).collect();
    assert!(missing.is_empty() && stale.is_empty(), "no row for {missing:?}; rows for no RPC: {stale:?}");
    for (m, spec) in TABLE {
        for w in spec.split_whitespace() {
            let name = w.strip_suffix(":own").unwrap_or(w);
            let known = name == "anyone" || name == "svc" || roles().into_iter().any(|r| role_word(r) == name);
            assert!(known, "{m}: unknown word {w}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_rpc_answers_every_role_as_the_table_says() -> anyhow::Result<()> {
    let lib = Library::start(TestDb::sqlite()?).await?;
    let type_code = fixtures::published_type(&lib).await?;
    let licence = fixtures::issue(&lib, fixtures::draft(&type_code)).await?;
    let outage = lib
        .issuance(Role::Admin, ADMIN)
        .record_outage(issuance::RecordOutageRequest {
            issuer_code: A.into(),
            started_at: Some(zhengzhao_proto::convert::timestamp(
                time::OffsetDateTime::now_utc() - time::Duration::hours(1),
            )),
            cause: "power cut".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .outage
        .map(|o| o.id)
        .unwrap_or_default();
    let holder = fixtures::draft(&type_code).holder.unwrap_or_default();
    let holder = (holder.id_type_code, holder.id_number);
    let things = Things { type_code, licence, outage };
    let spec: BTreeMap<&str, &str> = TABLE.iter().copied().collect();

    let mut wrong = Vec::new();
    let mut calls = 0;
    for m in methods()? {
        let Some(spec) = spec.get(m.name.as_str()) else { continue };
        let body = request(&m.name, &things);
        let code = call(lib.channel(), None, &m, body.clone()).await;
        calls += 1;
        if code != Code::Unauthenticated {
            wrong.push(format!("{} without a token: {code:?}", m.name));
        }
        for role in roles() {
            let (own, other) = expected(spec, role);
            for (agency, allowed) in [(A, own), (B, other)] {
                let t = token(&lib, role, agency, &holder)?;
                let code = call(lib.channel(), Some(&t), &m, body.clone()).await;
                calls += 1;
                let side = if agency == A { "own" } else { "other" };
                let hidden = HIDDEN_FROM_OTHERS.contains(&m.name.as_str()) && own && agency == B;
                match (allowed, code) {
                    (false, Code::NotFound) if hidden => {}
                    (false, c) if hidden => {
                        wrong.push(format!("{} {} ({side}): {c:?}, not NOT_FOUND", m.name, role_word(role)))
                    }
                    (_, Code::Unauthenticated) => {
                        wrong.push(format!("{} {} ({side}): unauthenticated", m.name, role_word(role)))
                    }
                    (true, Code::PermissionDenied) => {
                        wrong.push(format!("{} {} ({side}): refused, the table allows", m.name, role_word(role)))
                    }
                    (false, c) if c != Code::PermissionDenied => {
                        wrong.push(format!("{} {} ({side}): {c:?}, the table refuses", m.name, role_word(role)))
                    }
                    _ => {}
                }
            }
        }
    }
    // The same refusals for a request no handler would take: the policy is
    // asked before anything of the request is read.
    let types = message_types()?;
    for m in methods()? {
        let Some(spec) = spec.get(m.name.as_str()) else { continue };
        let body = hostile(&types, &m.input, 0);
        for role in roles() {
            // The hostile request sets `force`, which makes RecordEvent the administrator's.
            let forced = m.name.ends_with("/RecordEvent") && role == Role::Admin;
            if expected(spec, role) != (false, false) || forced {
                continue;
            }
            let t = token(&lib, role, A, &holder)?;
            let code = call(lib.channel(), Some(&t), &m, body.clone()).await;
            calls += 1;
            if code != Code::PermissionDenied {
                wrong.push(format!("{} {} (a hostile request): {code:?}, the table refuses", m.name, role_word(role)));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {calls} calls differ from the table:\n{}", wrong.len(), wrong.join("\n"));
    Ok(())
}

/// `RecordEvent` with `force` (forcing the cancellation of an encumbered
/// licence): the administrator's alone, the issuer's own included.
#[tokio::test]
async fn only_an_administrator_forces_a_cancellation() -> anyhow::Result<()> {
    let lib = Library::start(TestDb::sqlite()?).await?;
    let type_code = fixtures::published_type(&lib).await?;
    let licence = fixtures::issue(&lib, fixtures::draft(&type_code)).await?;
    let holder = fixtures::draft(&type_code).holder.unwrap_or_default();
    let holder = (holder.id_type_code, holder.id_number);
    let m = Method {
        name: "issuance.v1.IssuanceService/RecordEvent".into(),
        input: ".zhengzhao.issuance.v1.RecordEventRequest".into(),
        client_streaming: false,
        server_streaming: false,
    };
    // Not a cancellation: refused as such once the policy has let it through.
    let body = issuance::RecordEventRequest {
        identifier: licence.identifier.clone(),
        kind: issuance::EventKind::ReportLoss as i32,
        force: true,
        ..Default::default()
    }
    .encode_to_vec();
    for role in roles() {
        for agency in [A, B] {
            let t = token(&lib, role, agency, &holder)?;
            let code = call(lib.channel(), Some(&t), &m, body.clone()).await;
            let want = if role == Role::Admin { Code::InvalidArgument } else { Code::PermissionDenied };
            assert_eq!(code, want, "{} of {agency}", role_word(role));
        }
    }
    Ok(())
}
