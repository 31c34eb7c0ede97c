//! The consumer's side of the CLI: `zhengzhao usage-list` (usage lists and
//! applications), `licence fetch|find|copy` (uses decided by the list), and
//! `usage-log` (every use, as JSON lines or CSV).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde::Serialize;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::exchange::v1 as exchange;

use super::args::{DEFAULT_LIMIT, pages, rfc3339, timestamp};
use super::client::{Client, ClientArgs};
use super::licence::LicenceOut;
use super::output::{note, print_json, print_json_line, say, time_text, wire_word};

/// A consuming agency's level.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Level {
    City,
    Province,
    Ministry,
}

impl Level {
    fn wire(self) -> i32 {
        match self {
            Level::City => exchange::AgencyLevel::City,
            Level::Province => exchange::AgencyLevel::Province,
            Level::Ministry => exchange::AgencyLevel::Ministry,
        }
        .into()
    }
}

/// What an entry grants, or an application asks for.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("shown").required(true).args(["fields", "all_fields"])))]
pub struct TermsArgs {
    /// What the licences are used for (at most 200 characters).
    #[arg(long)]
    purpose: String,
    /// The face fields the agency sees, by key, comma-separated.
    #[arg(long, value_delimiter = ',')]
    fields: Vec<String>,
    /// The whole licence, signed document included.
    #[arg(long)]
    all_fields: bool,
    /// First day in force (YYYY-MM-DD, China Standard Time) [default: today].
    #[arg(long, default_value = "")]
    from: String,
    /// Last day in force [default: open-ended].
    #[arg(long, default_value = "")]
    until: String,
    /// The agency's level: a province or ministry uses the city's licences through the city.
    #[arg(long, value_enum, default_value = "city")]
    level: Level,
}

impl TermsArgs {
    fn wire(&self) -> exchange::UsageTerms {
        exchange::UsageTerms {
            purpose: self.purpose.clone(),
            fields: self.fields.clone(),
            all_fields: self.all_fields,
            effective_from: self.from.clone(),
            effective_until: self.until.clone(),
        }
    }
}

/// An application's state.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AppState {
    Pending,
    Approved,
    Refused,
}

/// How listings print.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// JSON lines.
    #[default]
    Json,
    /// CSV with a header row.
    Csv,
}

/// A usage list (用证清单) says which licence types an agency may use for
/// which service items, which face fields it sees and when. Administrators
/// add, suspend, resume and end entries; consumers (the city's, and
/// provincial or ministry-level agencies through the city) apply, and
/// administrators approve or refuse. Every change is recorded.
#[derive(Debug, Subcommand)]
pub enum UsageListCommand {
    /// Add an entry to an agency's list (administrators); prints the entry.
    Add {
        /// The consuming agency's unified social credit code.
        #[arg(long)]
        agency: String,
        /// The licence type's code.
        #[arg(long = "type")]
        type_code: String,
        /// A service item code the type lists in the catalogue.
        #[arg(long)]
        service_item: String,
        #[command(flatten)]
        terms: TermsArgs,
    },
    /// Apply for entries for your own agency; prints the application id.
    /// Each type with each service item it lists becomes one entry.
    Apply {
        #[arg(long = "type", required = true)]
        type_codes: Vec<String>,
        #[arg(long = "service-item", required = true)]
        service_items: Vec<String>,
        #[command(flatten)]
        terms: TermsArgs,
    },
    /// Approve a pending application (administrators); prints it and its entries.
    Approve {
        id: u64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Refuse a pending application, saying why (administrators).
    Refuse {
        id: u64,
        #[arg(long)]
        reason: String,
    },
    /// Suspend an active entry (administrators).
    Suspend {
        entry_id: u64,
        #[arg(long)]
        reason: String,
    },
    /// Resume a suspended entry (administrators).
    Resume {
        entry_id: u64,
        #[arg(long)]
        reason: String,
    },
    /// End an entry for good (administrators).
    End {
        entry_id: u64,
        #[arg(long)]
        reason: String,
    },
    /// List entries, newest first (JSON lines): a consumer its own.
    List {
        #[arg(long, default_value = "")]
        agency: String,
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: u32,
    },
    /// List or export applications and their decisions.
    Applications {
        #[arg(long, default_value = "")]
        agency: String,
        #[arg(long, value_enum)]
        state: Option<AppState>,
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: u32,
    },
    /// Every change to usage lists, newest first (JSON lines).
    History {
        #[arg(long, default_value = "")]
        agency: String,
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: u32,
    },
}

/// What every use names.
#[derive(Debug, Args)]
pub struct UseArgs {
    /// Why the licence is used (用证事由; at most 200 characters).
    #[arg(long)]
    cause: String,
    /// The service item (事项编码) the use serves.
    #[arg(long)]
    service_item: String,
    /// The case (办件编号) the use serves.
    #[arg(long)]
    case_number: String,
}

impl UseArgs {
    fn wire(&self) -> Option<exchange::UseContext> {
        Some(exchange::UseContext {
            use_cause: self.cause.clone(),
            service_item_code: self.service_item.clone(),
            case_number: self.case_number.clone(),
        })
    }
}

/// A licence status, for lookups.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Status {
    Valid,
    Seized,
    Withdrawn,
    Cancelled,
    Expired,
    TransferredOut,
    Revoked,
    Superseded,
}

impl Status {
    fn wire(self) -> i32 {
        use common::LicenceStatus as S;
        match self {
            Status::Valid => S::Valid,
            Status::Seized => S::Seized,
            Status::Withdrawn => S::Withdrawn,
            Status::Cancelled => S::Cancelled,
            Status::Expired => S::Expired,
            Status::TransferredOut => S::TransferredOut,
            Status::Revoked => S::Revoked,
            Status::Superseded => S::Superseded,
        }
        .into()
    }
}

#[derive(Debug, Args)]
pub struct FindArgs {
    /// GB/T 36903 holder ID type code (001 unified social credit code, 111 citizen ID, …).
    #[arg(long)]
    holder_id_type: String,
    #[arg(long)]
    holder_id: String,
    /// Only these licence types (repeat the flag).
    #[arg(long = "type")]
    type_codes: Vec<String>,
    #[arg(long, value_enum)]
    status: Option<Status>,
    #[command(flatten)]
    use_: UseArgs,
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    limit: u32,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    id: String,
    #[command(flatten)]
    use_: UseArgs,
    /// Days the copy is good for (1 to 90) [default: 30].
    #[arg(long, default_value_t = 0)]
    days: u32,
    /// Write the copy's PDF here.
    #[arg(long)]
    pdf: Option<PathBuf>,
    /// Make a single-use download link, valid 10 minutes.
    #[arg(long)]
    link: bool,
}

#[derive(Debug, Args)]
pub struct UsageLogArgs {
    /// Only uses of this licence.
    #[arg(long, default_value = "")]
    identifier: String,
    /// Only this consumer agency.
    #[arg(long, default_value = "")]
    agency: String,
    /// Only this holder (with --holder-id).
    #[arg(long, requires = "holder_id")]
    holder_id_type: Option<String>,
    #[arg(long, requires = "holder_id_type")]
    holder_id: Option<String>,
    /// Only uses at or after this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    since: Option<time::OffsetDateTime>,
    /// Only uses before this time (RFC 3339).
    #[arg(long, value_parser = rfc3339)]
    until: Option<time::OffsetDateTime>,
    #[arg(long, value_enum)]
    decision: Option<Decision>,
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// At most this many records, newest first; 0 means the default, 100.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    limit: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Decision {
    Granted,
    Refused,
}

#[derive(Serialize)]
struct EntryOut {
    id: u64,
    agency: String,
    level: String,
    type_code: String,
    service_item_code: String,
    purpose: String,
    fields: String,
    all_fields: bool,
    effective_from: String,
    effective_until: String,
    state: String,
    effective: bool,
    application_id: u64,
    created_at: String,
    created_by: String,
}

impl From<&exchange::UsageEntry> for EntryOut {
    fn from(e: &exchange::UsageEntry) -> Self {
        EntryOut {
            id: e.id,
            agency: e.agency_code.clone(),
            level: wire_word(exchange::AgencyLevel::try_from(e.level).ok().map(|l| l.as_str_name()), "AGENCY_LEVEL_"),
            type_code: e.type_code.clone(),
            service_item_code: e.service_item_code.clone(),
            purpose: e.purpose.clone(),
            fields: e.fields.join(","),
            all_fields: e.all_fields,
            effective_from: e.effective_from.clone(),
            effective_until: e.effective_until.clone(),
            state: wire_word(
                exchange::UsageEntryState::try_from(e.state).ok().map(|s| s.as_str_name()),
                "USAGE_ENTRY_STATE_",
            ),
            effective: e.effective,
            application_id: e.application_id,
            created_at: time_text(&e.created_at),
            created_by: e.created_by.clone(),
        }
    }
}

#[derive(Serialize)]
struct ApplicationOut {
    id: u64,
    agency: String,
    level: String,
    type_codes: String,
    service_item_codes: String,
    purpose: String,
    fields: String,
    all_fields: bool,
    effective_from: String,
    effective_until: String,
    state: String,
    applied_by: String,
    applied_at: String,
    decided_by: String,
    decided_at: String,
    decision_reason: String,
    entry_ids: String,
}

impl From<&exchange::UsageApplication> for ApplicationOut {
    fn from(a: &exchange::UsageApplication) -> Self {
        let t = a.terms.clone().unwrap_or_default();
        ApplicationOut {
            id: a.id,
            agency: a.agency_code.clone(),
            level: wire_word(exchange::AgencyLevel::try_from(a.level).ok().map(|l| l.as_str_name()), "AGENCY_LEVEL_"),
            type_codes: a.type_codes.join(","),
            service_item_codes: a.service_item_codes.join(","),
            purpose: t.purpose,
            fields: t.fields.join(","),
            all_fields: t.all_fields,
            effective_from: t.effective_from,
            effective_until: t.effective_until,
            state: wire_word(
                exchange::ApplicationState::try_from(a.state).ok().map(|s| s.as_str_name()),
                "APPLICATION_STATE_",
            ),
            applied_by: a.applied_by.clone(),
            applied_at: time_text(&a.applied_at),
            decided_by: a.decided_by.clone(),
            decided_at: time_text(&a.decided_at),
            decision_reason: a.decision_reason.clone(),
            entry_ids: a.entry_ids.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        }
    }
}

#[derive(Serialize)]
struct ChangeOut<'a> {
    id: u64,
    at: String,
    action: &'a str,
    entry_id: u64,
    application_id: u64,
    agency: &'a str,
    actor: &'a str,
    operator: &'a str,
    reason: &'a str,
    details: serde_json::Value,
}

/// One use, as `usage-log` prints it.
#[derive(Serialize)]
struct UsageOut<'a> {
    id: u64,
    log_index: u64,
    accessed_at: String,
    consumer: &'a str,
    role: &'a str,
    operator: &'a str,
    method: &'a str,
    client_address: &'a str,
    identifier: &'a str,
    type_code: &'a str,
    holder_id_type: &'a str,
    holder_id_masked: &'a str,
    use_cause: &'a str,
    service_item_code: &'a str,
    case_number: &'a str,
    decision: String,
    refusal_rule: &'a str,
    refusal_reason: &'a str,
    entry_id: u64,
    copy_id: &'a str,
    token_id: &'a str,
}

impl<'a> From<&'a exchange::UsageRecord> for UsageOut<'a> {
    fn from(r: &'a exchange::UsageRecord) -> Self {
        UsageOut {
            id: r.id,
            log_index: r.log_index,
            accessed_at: time_text(&r.accessed_at),
            consumer: &r.consumer_code,
            role: &r.consumer_role,
            operator: &r.operator,
            method: &r.method,
            client_address: &r.client_address,
            identifier: &r.identifier,
            type_code: &r.type_code,
            holder_id_type: &r.holder_id_type,
            holder_id_masked: &r.holder_id_masked,
            use_cause: &r.use_cause,
            service_item_code: &r.service_item_code,
            case_number: &r.case_number,
            decision: wire_word(
                exchange::UsageDecision::try_from(r.decision).ok().map(|d| d.as_str_name()),
                "USAGE_DECISION_",
            ),
            refusal_rule: &r.refusal_rule,
            refusal_reason: &r.refusal_reason,
            entry_id: r.entry_id,
            copy_id: &r.copy_id,
            token_id: &r.token_id,
        }
    }
}

/// A licence as a use returned it.
#[derive(Serialize)]
struct UsedOut<'a> {
    #[serde(flatten)]
    licence: LicenceOut<'a>,
    withheld_fields: Vec<String>,
    whole_licence: bool,
    usage_id: u64,
    entry_id: u64,
}

impl<'a> UsedOut<'a> {
    fn of(u: &'a exchange::UsedLicence) -> anyhow::Result<Self> {
        Ok(UsedOut {
            licence: LicenceOut::of(u.licence.as_ref().context("no licence returned")?)?,
            withheld_fields: u.withheld_fields.clone(),
            whole_licence: u.whole_licence,
            usage_id: u.usage_id,
            entry_id: u.entry_id,
        })
    }
}

/// Prints `rows` as JSON lines or as CSV with a header row (the field
/// names). In CSV a text cell that a spreadsheet would take for a formula
/// (starting with `=`, `+`, `-`, `@`, a tab or a carriage return — a
/// consumer's use cause is free text) is written with a leading `'`.
struct Printer {
    format: Format,
    csv: Option<csv::Writer<std::io::Stdout>>,
    header: bool,
}

/// A CSV cell that no spreadsheet evaluates.
fn cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_owned() }
}

impl Printer {
    fn new(format: Format) -> Self {
        let csv = matches!(format, Format::Csv).then(|| csv::Writer::from_writer(std::io::stdout()));
        Printer { format, csv, header: false }
    }

    fn row(&mut self, row: &impl Serialize) -> anyhow::Result<()> {
        let Some(w) = self.csv.as_mut().filter(|_| matches!(self.format, Format::Csv)) else {
            return print_json_line(row);
        };
        // The row as csv writes it (fields in declaration order), read back
        // to defuse each cell.
        let mut one = csv::Writer::from_writer(Vec::new());
        one.serialize(row)?;
        let bytes = one.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut back = csv::Reader::from_reader(bytes.as_slice());
        if !self.header {
            w.write_record(back.headers()?)?;
            self.header = true;
        }
        for record in back.records() {
            w.write_record(record?.iter().map(cell))?;
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Some(mut w) = self.csv {
            w.flush()?;
        }
        Ok(())
    }
}

pub async fn usage_list(cli: &ClientArgs, cmd: UsageListCommand) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let mut x = c.exchange();
    match cmd {
        UsageListCommand::Add { agency, type_code, service_item, terms } => {
            let r = x
                .create_usage_entry(exchange::CreateUsageEntryRequest {
                    agency_code: agency,
                    level: terms.level.wire(),
                    type_code,
                    service_item_code: service_item,
                    terms: Some(terms.wire()),
                })
                .await?
                .into_inner();
            print_json(&EntryOut::from(&r.entry.context("no entry returned")?))?;
        }
        UsageListCommand::Apply { type_codes, service_items, terms } => {
            let r = x
                .apply_for_usage(exchange::ApplyForUsageRequest {
                    level: terms.level.wire(),
                    type_codes,
                    service_item_codes: service_items,
                    terms: Some(terms.wire()),
                })
                .await?
                .into_inner();
            say!("{}", r.application.context("no application returned")?.id);
        }
        UsageListCommand::Approve { id, reason } => {
            let r = x
                .approve_application(exchange::ApproveApplicationRequest { application_id: id, reason })
                .await?
                .into_inner();
            #[derive(Serialize)]
            struct Approved {
                application: ApplicationOut,
                entries: Vec<EntryOut>,
            }
            print_json(&Approved {
                application: ApplicationOut::from(&r.application.context("no application returned")?),
                entries: r.entries.iter().map(EntryOut::from).collect(),
            })?;
        }
        UsageListCommand::Refuse { id, reason } => {
            let r = x
                .refuse_application(exchange::RefuseApplicationRequest { application_id: id, reason })
                .await?
                .into_inner();
            print_json(&ApplicationOut::from(&r.application.context("no application returned")?))?;
        }
        UsageListCommand::Suspend { entry_id, reason } => {
            let r = x.suspend_usage_entry(exchange::SuspendUsageEntryRequest { entry_id, reason }).await?.into_inner();
            print_json(&EntryOut::from(&r.entry.context("no entry returned")?))?;
        }
        UsageListCommand::Resume { entry_id, reason } => {
            let r = x.resume_usage_entry(exchange::ResumeUsageEntryRequest { entry_id, reason }).await?.into_inner();
            print_json(&EntryOut::from(&r.entry.context("no entry returned")?))?;
        }
        UsageListCommand::End { entry_id, reason } => {
            let r = x.end_usage_entry(exchange::EndUsageEntryRequest { entry_id, reason }).await?.into_inner();
            print_json(&EntryOut::from(&r.entry.context("no entry returned")?))?;
        }
        UsageListCommand::List { agency, limit } => {
            let page = async |page_size, page_token| {
                let r = x
                    .clone()
                    .list_usage_entries(exchange::ListUsageEntriesRequest {
                        agency_code: agency.clone(),
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.entries, r.next_page_token))
            };
            pages(limit, page, |e| print_json_line(&EntryOut::from(&e))).await?;
        }
        UsageListCommand::Applications { agency, state, format, limit } => {
            let state = state.map_or(0, |s| {
                match s {
                    AppState::Pending => exchange::ApplicationState::Pending,
                    AppState::Approved => exchange::ApplicationState::Approved,
                    AppState::Refused => exchange::ApplicationState::Refused,
                }
                .into()
            });
            let page = async |page_size, page_token| {
                let r = x
                    .clone()
                    .list_applications(exchange::ListApplicationsRequest {
                        agency_code: agency.clone(),
                        state,
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((r.applications, r.next_page_token))
            };
            let mut out = Printer::new(format);
            pages(limit, page, |a| out.row(&ApplicationOut::from(&a))).await?;
            out.finish()?;
        }
        UsageListCommand::History { agency, limit } => {
            let page = async |page_size, page_token| {
                let r = x
                    .clone()
                    .list_usage_list_changes(exchange::ListUsageListChangesRequest {
                        agency_code: agency.clone(),
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
                    at: time_text(&ch.at),
                    action: &ch.action,
                    entry_id: ch.entry_id,
                    application_id: ch.application_id,
                    agency: &ch.agency_code,
                    actor: &ch.actor,
                    operator: &ch.operator,
                    reason: &ch.reason,
                    details: serde_json::from_str(&ch.details_json).unwrap_or(serde_json::Value::Null),
                })
            })
            .await?;
        }
    }
    Ok(())
}

/// `licence fetch`: one licence, as the caller's usage list shows it.
pub async fn fetch(c: &Client, id: String, use_: UseArgs) -> anyhow::Result<()> {
    let r = c
        .exchange()
        .fetch_licence(exchange::FetchLicenceRequest { identifier: id, r#use: use_.wire() })
        .await?
        .into_inner();
    print_json(&UsedOut::of(&r.used.context("no licence returned")?)?)
}

/// `licence find`: a holder's licences of the types the list covers (JSON lines).
pub async fn find(c: &Client, f: FindArgs) -> anyhow::Result<()> {
    let mut uncovered = Vec::new();
    let page = async |page_size: u32, page_token| {
        let r = c
            .exchange()
            .find_licences(exchange::FindLicencesRequest {
                holder_id_type: f.holder_id_type.clone(),
                holder_id_number: f.holder_id.clone(),
                type_codes: f.type_codes.clone(),
                status: f.status.map_or(0, Status::wire),
                r#use: f.use_.wire(),
                page_size: page_size.min(100),
                page_token,
            })
            .await?
            .into_inner();
        if uncovered.is_empty() {
            uncovered.clone_from(&r.uncovered_type_codes);
        }
        Ok((r.licences, r.next_page_token))
    };
    pages(f.limit, page, |u| print_json_line(&UsedOut::of(&u)?)).await?;
    if !uncovered.is_empty() {
        note!("not searched (your usage list does not cover them for this service item): {}", uncovered.join(", "));
    }
    Ok(())
}

/// `licence copy`: an annotated copy, its PDF, a download link.
pub async fn copy(c: &Client, a: CopyArgs) -> anyhow::Result<()> {
    let r = c
        .exchange()
        .issue_copy(exchange::IssueCopyRequest {
            identifier: a.id,
            r#use: a.use_.wire(),
            valid_days: a.days,
            pdf: a.pdf.is_some(),
            link: a.link,
        })
        .await?
        .into_inner();
    if let Some(path) = &a.pdf {
        std::fs::write(path, &r.pdf).with_context(|| format!("cannot write {}", path.display()))?;
    }
    #[derive(Serialize)]
    struct CopyOut {
        copy_id: String,
        good_until: String,
        verify_url: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        download_url: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        link_expires_at: String,
        usage_id: u64,
        jws: String,
    }
    print_json(&CopyOut {
        copy_id: r.copy_id,
        good_until: time_text(&r.good_until),
        verify_url: r.verify_url,
        download_url: r.download_url,
        link_expires_at: if r.link_expires_at.is_some() { time_text(&r.link_expires_at) } else { String::new() },
        usage_id: r.usage_id,
        jws: r.jws,
    })
}

/// `usage-log`: who used which licence, why, and whether the list let them.
pub async fn usage_log(cli: &ClientArgs, u: UsageLogArgs) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let decision = u.decision.map_or(0, |d| {
        match d {
            Decision::Granted => exchange::UsageDecision::Granted,
            Decision::Refused => exchange::UsageDecision::Refused,
        }
        .into()
    });
    let page = async |page_size, page_token| {
        let r = c
            .exchange()
            .list_usage_log(exchange::ListUsageLogRequest {
                identifier: u.identifier.clone(),
                page_size,
                page_token,
                agency_code: u.agency.clone(),
                holder_id_type: u.holder_id_type.clone().unwrap_or_default(),
                holder_id_number: u.holder_id.clone().unwrap_or_default(),
                since: u.since.map(timestamp),
                until: u.until.map(timestamp),
                decision,
                oldest_first: false,
            })
            .await?
            .into_inner();
        Ok((r.records, r.next_page_token))
    };
    let mut out = Printer::new(u.format);
    pages(u.limit, page, |rec| out.row(&UsageOut::from(&rec))).await?;
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn spreadsheet_formulas_are_defused() {
        assert_eq!(cell("=HYPERLINK(\"http://x\")"), "'=HYPERLINK(\"http://x\")");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("核验经营资质"), "核验经营资质");
        assert_eq!(cell("42"), "42");
        assert_eq!(cell(""), "");
    }
}
