//! The holder's side of the CLI: `frontend` (registered portals and mobile
//! ends), `holder` (a front end logs a holder in; the holder lists their
//! licences, who used them, their reminders), `scenario` (where licences
//! may be presented), `present` (a presentation with its key binding and
//! QR code), and `reminders` (windows per type).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use zhengzhao_proto::exchange::v1 as pb;
use zhengzhao_proto::exchange::v1::holder_service_client::HolderServiceClient;

use super::args::read_file;
use super::client::{Client, ClientArgs};
use super::output::{note, print_json, print_json_line, say, time_text, wire_word};

type Holders = HolderServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, zhengzhao_auth::BearerToken>,
>;

fn holders(c: &Client) -> Holders {
    c.holders()
}

#[derive(Debug, Subcommand)]
pub enum FrontEndCommand {
    /// Register a portal or approved mobile end (administrator). Without
    /// --jwk a P-256 key pair is made: its private half is written to
    /// --key-out (default front-end-ID.key.pem, mode 0600) for the front
    /// end to bind its presentations with.
    Register {
        #[arg(long)]
        name: String,
        /// The agency running it (its portal tokens name this code).
        #[arg(long)]
        agency: String,
        /// Its public key as a JWK file.
        #[arg(long)]
        jwk: Option<PathBuf>,
        /// Where the new private key goes (without --jwk).
        #[arg(long)]
        key_out: Option<PathBuf>,
        /// A scenario it may serve (repeatable, or comma-separated).
        #[arg(long = "scenario", value_delimiter = ',')]
        scenarios: Vec<u64>,
        /// Where expiry reminders are POSTed.
        #[arg(long, default_value = "")]
        webhook: String,
    },
    /// Change a front end's scenarios, webhook or state (administrator).
    Update {
        id: u64,
        /// Replace its scenarios (comma-separated; `none` for none).
        #[arg(long)]
        scenarios: Option<String>,
        /// Replace its webhook (`none` for none).
        #[arg(long)]
        webhook: Option<String>,
        #[arg(long, conflicts_with = "resume")]
        suspend: bool,
        #[arg(long)]
        resume: bool,
    },
    /// List front ends (JSON lines).
    List,
}

#[derive(Debug, Subcommand)]
pub enum HolderCommand {
    /// A front end (its portal token) logs a holder in: prints a holder token (15 minutes).
    Login {
        #[arg(long)]
        holder_id_type: String,
        #[arg(long)]
        holder_id: String,
        /// Which of the agency's front ends (when it runs several).
        #[arg(long)]
        front_end: Option<u64>,
    },
    /// The holder's licences (JSON lines; a holder token).
    Licences,
    /// One of the holder's licences with its history (JSON).
    Licence { identifier: String },
    /// Who used the holder's licences (JSON lines).
    Usage,
    /// The holder's expiry reminders (JSON lines).
    Reminders,
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// Propose where holders may present a licence (consumer); prints the scenario id.
    Propose {
        #[arg(long)]
        name: String,
        /// Licence type code (repeatable, or comma-separated).
        #[arg(long = "type", value_delimiter = ',', required = true)]
        types: Vec<String>,
        /// The claims the counter needs: face field keys, holder_name,
        /// holder_id_type, holder_id_number, licence_number (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        fields: Vec<String>,
        #[arg(long)]
        purpose: String,
    },
    /// Approve a proposed scenario (administrator).
    Approve {
        id: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Refuse a proposed scenario (administrator).
    Refuse {
        id: u64,
        #[arg(long)]
        reason: String,
    },
    /// List scenarios (JSON lines).
    List,
}

#[derive(Debug, Args)]
pub struct PresentArgs {
    /// The licence's identifier.
    identifier: String,
    /// The approved scenario to present it in.
    #[arg(long)]
    scenario: u64,
    /// The front end's private key (PEM) [default: front-end-ID.key.pem, ID from the holder token].
    #[arg(long)]
    key: Option<PathBuf>,
    /// Also write the QR code as a PNG.
    #[arg(long)]
    qr: Option<PathBuf>,
    /// Also write the QR code as an SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Also draw the QR code in the terminal (on stderr).
    #[arg(long)]
    terminal: bool,
}

#[derive(Debug, Args)]
pub struct RemindersArgs {
    /// Licence type code.
    #[arg(long = "type")]
    type_code: String,
    /// Days before the last valid day (comma-separated; empty: the default 90,30,7).
    #[arg(long, value_delimiter = ',', default_value = "")]
    days: Vec<String>,
}

#[derive(Serialize)]
struct FrontEndOut {
    id: u64,
    name: String,
    agency: String,
    jwk: serde_json::Value,
    scenarios: Vec<u64>,
    webhook: String,
    state: String,
    registered_by: String,
    registered_at: String,
}

impl From<&pb::FrontEnd> for FrontEndOut {
    fn from(f: &pb::FrontEnd) -> Self {
        FrontEndOut {
            id: f.id,
            name: f.name.clone(),
            agency: f.agency_code.clone(),
            jwk: serde_json::from_str(&f.jwk_json).unwrap_or_default(),
            scenarios: f.scenario_ids.clone(),
            webhook: f.webhook_url.clone(),
            state: wire_word(pb::FrontEndState::try_from(f.state).ok().map(|s| s.as_str_name()), "FRONT_END_STATE_"),
            registered_by: f.registered_by.clone(),
            registered_at: time_text(&f.registered_at),
        }
    }
}

#[derive(Serialize)]
struct ScenarioOut {
    id: u64,
    agency: String,
    name: String,
    types: Vec<String>,
    fields: Vec<String>,
    purpose: String,
    state: String,
    proposed_by: String,
    decided_by: String,
    reason: String,
}

impl From<&pb::Scenario> for ScenarioOut {
    fn from(s: &pb::Scenario) -> Self {
        ScenarioOut {
            id: s.id,
            agency: s.agency_code.clone(),
            name: s.name.clone(),
            types: s.type_codes.clone(),
            fields: s.fields.clone(),
            purpose: s.purpose.clone(),
            state: wire_word(pb::ScenarioState::try_from(s.state).ok().map(|s| s.as_str_name()), "SCENARIO_STATE_"),
            proposed_by: s.proposed_by.clone(),
            decided_by: s.decided_by.clone(),
            reason: s.decision_reason.clone(),
        }
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(path).with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn default_key_path(front_end: u64) -> PathBuf {
    PathBuf::from(format!("front-end-{front_end}.key.pem"))
}

pub async fn front_end(cli: &ClientArgs, cmd: FrontEndCommand) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let mut h = holders(&c);
    match cmd {
        FrontEndCommand::Register { name, agency, jwk, key_out, scenarios, webhook } => {
            let (jwk_json, new_key) = match jwk {
                Some(f) => (read_file(&f)?, None),
                None => {
                    let key = zhengzhao_crypto::Es256KeyPair::generate();
                    (key.public_key().to_jwk("").to_string(), Some(key))
                }
            };
            // The key file is written before registering, so a key is never
            // registered whose private half was lost.
            let staged = match &new_key {
                Some(k) => {
                    let path = key_out.clone().unwrap_or_else(|| PathBuf::from("front-end-new.key.pem"));
                    write_private(&path, &k.to_pkcs8_pem()?)?;
                    Some(path)
                }
                None => None,
            };
            let r = h
                .register_front_end(pb::RegisterFrontEndRequest {
                    name,
                    agency_code: agency,
                    jwk_json,
                    scenario_ids: scenarios,
                    webhook_url: webhook,
                })
                .await;
            let fe = match r {
                Ok(r) => r.into_inner().front_end.context("no front end returned")?,
                Err(e) => {
                    if let Some(p) = &staged {
                        let _ = std::fs::remove_file(p);
                    }
                    return Err(e.into());
                }
            };
            if let Some(p) = staged {
                let path = if key_out.is_some() {
                    p
                } else {
                    let to = default_key_path(fe.id);
                    std::fs::rename(&p, &to).with_context(|| format!("cannot name the key {}", to.display()))?;
                    to
                };
                note!(
                    "front end {}'s private key: {} (give it to the front end; keep it secret)",
                    fe.id,
                    path.display()
                );
            }
            print_json(&FrontEndOut::from(&fe))?;
        }
        FrontEndCommand::Update { id, scenarios, webhook, suspend, resume } => {
            let scenario_ids = match scenarios.as_deref() {
                None => None,
                Some("none") => Some(vec![]),
                Some(s) => Some(
                    s.split(',')
                        .map(|x| x.trim().parse::<u64>().with_context(|| format!("--scenarios: {x:?} is not an id")))
                        .collect::<anyhow::Result<Vec<_>>>()?,
                ),
            };
            let state = match (suspend, resume) {
                (true, _) => pb::FrontEndState::Suspended,
                (_, true) => pb::FrontEndState::Active,
                _ => pb::FrontEndState::Unspecified,
            };
            let r = h
                .update_front_end(pb::UpdateFrontEndRequest {
                    id,
                    set_scenarios: scenario_ids.is_some(),
                    scenario_ids: scenario_ids.unwrap_or_default(),
                    set_webhook: webhook.is_some(),
                    webhook_url: webhook.filter(|w| w != "none").unwrap_or_default(),
                    state: state as i32,
                })
                .await?
                .into_inner();
            print_json(&FrontEndOut::from(&r.front_end.context("no front end returned")?))?;
        }
        FrontEndCommand::List => {
            for f in h.list_front_ends(pb::ListFrontEndsRequest {}).await?.into_inner().front_ends {
                print_json_line(&FrontEndOut::from(&f))?;
            }
        }
    }
    Ok(())
}

pub async fn holder(cli: &ClientArgs, cmd: HolderCommand) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let mut h = holders(&c);
    match cmd {
        HolderCommand::Login { holder_id_type, holder_id, front_end } => {
            let r = h
                .holder_login(pb::HolderLoginRequest {
                    holder_id_type,
                    holder_id_number: holder_id,
                    front_end_id: front_end.unwrap_or(0),
                    ttl_seconds: 0,
                })
                .await?
                .into_inner();
            note!("holder token {} for front end {}, until {}", r.token_id, r.front_end_id, time_text(&r.expires_at));
            say!("{}", r.token);
        }
        HolderCommand::Licences => {
            let mut token = String::new();
            loop {
                let r = h
                    .list_my_licences(pb::ListMyLicencesRequest { status: 0, page_size: 100, page_token: token })
                    .await?
                    .into_inner();
                for l in &r.licences {
                    print_json_line(&super::licence::LicenceOut::of(l)?)?;
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
        }
        HolderCommand::Licence { identifier } => {
            let r = h.get_my_licence(pb::GetMyLicenceRequest { identifier }).await?.into_inner();
            let licence = r.licence.context("no licence returned")?;
            let events: Vec<serde_json::Value> = r
                .events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "sequence": e.sequence,
                        "kind": wire_word(zhengzhao_proto::issuance::v1::EventKind::try_from(e.kind).ok().map(|k| k.as_str_name()), "EVENT_KIND_"),
                        "status_after": super::output::status_text(e.status_after).0,
                        "reason": e.reason,
                        "occurred_at": time_text(&e.occurred_at),
                    })
                })
                .collect();
            print_json(&serde_json::json!({ "licence": super::licence::LicenceOut::of(&licence)?, "events": events }))?;
        }
        HolderCommand::Usage => {
            let mut token = String::new();
            loop {
                let r =
                    h.list_my_usage(pb::ListMyUsageRequest { page_size: 200, page_token: token }).await?.into_inner();
                for u in &r.records {
                    print_json_line(&serde_json::json!({
                        "agency": u.consumer_code,
                        "identifier": u.identifier,
                        "cause": u.use_cause,
                        "service_item": u.service_item_code,
                        "decision": wire_word(pb::UsageDecision::try_from(u.decision).ok().map(|d| d.as_str_name()), "USAGE_DECISION_"),
                        "reason": u.refusal_reason,
                        "at": time_text(&u.accessed_at),
                    }))?;
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
        }
        HolderCommand::Reminders => {
            for r in h.list_my_reminders(pb::ListMyRemindersRequest {}).await?.into_inner().reminders {
                print_json_line(&serde_json::json!({
                    "id": r.id,
                    "identifier": r.identifier,
                    "type_code": r.type_code,
                    "days_before": r.days_before,
                    "valid_until": r.valid_until,
                    "due_at": time_text(&r.due_at),
                    "state": wire_word(pb::ReminderState::try_from(r.state).ok().map(|s| s.as_str_name()), "REMINDER_STATE_"),
                    "sent_at": time_text(&r.sent_at),
                }))?;
            }
        }
    }
    Ok(())
}

pub async fn scenario(cli: &ClientArgs, cmd: ScenarioCommand) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let mut h = holders(&c);
    match cmd {
        ScenarioCommand::Propose { name, types, fields, purpose } => {
            let r = h
                .propose_scenario(pb::ProposeScenarioRequest { name, type_codes: types, fields, purpose })
                .await?
                .into_inner();
            let s = r.scenario.context("no scenario returned")?;
            note!("scenario {} proposed; an administrator approves it (`zhengzhao scenario approve {}`)", s.id, s.id);
            say!("{}", s.id);
        }
        ScenarioCommand::Approve { id, reason } => {
            let r = h.approve_scenario(pb::ApproveScenarioRequest { id, reason }).await?.into_inner();
            print_json(&ScenarioOut::from(&r.scenario.context("no scenario returned")?))?;
        }
        ScenarioCommand::Refuse { id, reason } => {
            let r = h.refuse_scenario(pb::RefuseScenarioRequest { id, reason }).await?.into_inner();
            print_json(&ScenarioOut::from(&r.scenario.context("no scenario returned")?))?;
        }
        ScenarioCommand::List => {
            for s in h.list_scenarios(pb::ListScenariosRequest { state: 0 }).await?.into_inner().scenarios {
                print_json_line(&ScenarioOut::from(&s))?;
            }
        }
    }
    Ok(())
}

/// The front end a holder token names (read, not verified: the library verifies it).
fn front_end_of_token(token: &str) -> anyhow::Result<u64> {
    let parsed = zhengzhao_crypto::jws::parse(token.trim()).context("--token is not a holder token")?;
    let claims: serde_json::Value = serde_json::from_slice(&parsed.payload).context("--token is not a holder token")?;
    claims["hld"]["front_end"].as_u64().context("--token is not a holder token (it names no front end)")
}

pub async fn present(cli: &ClientArgs, a: PresentArgs) -> anyhow::Result<()> {
    let token = cli.token().unwrap_or_default();
    let key_path = match a.key {
        Some(k) => k,
        None => default_key_path(front_end_of_token(&token)?),
    };
    let key = zhengzhao_crypto::Es256KeyPair::from_pkcs8_pem(&read_file(&key_path)?)
        .with_context(|| format!("{} is not the front end's private key (PKCS#8 PEM)", key_path.display()))?;
    let c = Client::connect(cli).await?;
    let r = holders(&c)
        .present_licence(pb::PresentLicenceRequest { identifier: a.identifier, scenario_id: a.scenario })
        .await?
        .into_inner();
    let p = zhengzhao_crypto::sdjwt::Presentation::parse(&r.sd_jwt).context("the library answered no SD-JWT")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let text = p.bind(&key, &r.audience, &r.nonce, now).serialize();
    if let Some(f) = &a.qr {
        std::fs::write(f, zhengzhao_pdf::qr::png(&text, 4)?)
            .with_context(|| format!("cannot write {}", f.display()))?;
    }
    if let Some(f) = &a.svg {
        std::fs::write(f, zhengzhao_pdf::qr::svg(&text)?).with_context(|| format!("cannot write {}", f.display()))?;
    }
    if a.terminal {
        eprintln!("{}", zhengzhao_pdf::qr::terminal(&text)?);
    }
    note!("discloses {}; good until {}", r.disclosed.join(", "), time_text(&r.expires_at));
    say!("{text}");
    Ok(())
}

pub async fn reminders(cli: &ClientArgs, a: RemindersArgs) -> anyhow::Result<()> {
    let days = a
        .days
        .iter()
        .filter(|d| !d.trim().is_empty())
        .map(|d| d.trim().parse::<u32>().with_context(|| format!("--days: {d:?} is not a number of days")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let c = Client::connect(cli).await?;
    let r = holders(&c)
        .set_reminder_windows(pb::SetReminderWindowsRequest { type_code: a.type_code, days })
        .await?
        .into_inner();
    print_json(&serde_json::json!({ "type_code": r.type_code, "days": r.days }))?;
    Ok(())
}

/// Verifies a presentation: online through the library, or `offline`
/// against published keys (`keys`, a JWKS file, or the library's as it
/// lists them). Prints the verdict; true when valid.
pub async fn verify_presentation(
    cli: &ClientArgs,
    file: &Path,
    offline: bool,
    keys: Option<&Path>,
) -> anyhow::Result<bool> {
    let text = read_file(file)?;
    let text = text.trim();
    if text.is_empty() {
        bail!("{} is empty: there is no presentation to verify", file.display());
    }
    let v = if offline {
        let records = match keys {
            Some(f) => {
                let set: serde_json::Value =
                    serde_json::from_str(&read_file(f)?).with_context(|| format!("{} is not a JWKS", f.display()))?;
                set["keys"]
                    .as_array()
                    .with_context(|| format!("{} is not a JWKS", f.display()))?
                    .iter()
                    .map(zhengzhao_crypto::published::PublicKeyRecord::from_published_jwk)
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
            }
            None => {
                let c = Client::connect(cli).await?;
                let r = c
                    .signing()
                    .list_public_keys(zhengzhao_proto::signing::v1::ListPublicKeysRequest {
                        issuer_code: String::new(),
                    })
                    .await?
                    .into_inner();
                r.keys
                    .into_iter()
                    .map(zhengzhao_crypto::published::PublicKeyRecord::try_from)
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        zhengzhao_exchange::holder_grpc::verdict_to_wire(&zhengzhao_exchange::presentations::check_offline(
            text,
            &records,
            time::OffsetDateTime::now_utc(),
        ))
    } else {
        let c = Client::connect(cli).await?;
        holders(&c)
            .verify_presentation(pb::VerifyPresentationRequest { presentation: text.to_owned() })
            .await?
            .into_inner()
    };
    let mut out = serde_json::json!({
        "valid": v.valid,
        "failed_check": v.failed_check,
        "reason": v.reason,
        "identifier": v.identifier,
        "licence_name": v.licence_name,
        "issuer_name": v.issuer_name,
        "scenario": v.scenario_id,
        "scenario_name": v.scenario_name,
        "disclosed": v.disclosed,
    });
    if offline {
        out["not_checked"] = serde_json::json!(["single use", "current status"]);
    } else {
        out["status"] = super::output::status_text(v.status).0.into();
    }
    print_json(&out)?;
    Ok(v.valid)
}
