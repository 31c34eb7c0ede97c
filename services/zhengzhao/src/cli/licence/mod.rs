//! `zhengzhao licence`: issue, read, change and renew licences, record
//! their lifecycle events, use them through the exchange, follow the change
//! feed ([`watch`]) and aggregate historical ones ([`import`]).

mod import;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;
use zhengzhao_core::LicenceDraft;
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::definition_from_wire;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::EventKind;

use super::args::{json_file, rfc3339, timestamp};
use super::client::{Client, ClientArgs};
use super::output::{print_json, print_json_line, say, status_text, time_text, wire_word};
use zhengzhao::examples;

#[derive(Debug, Subcommand)]
pub enum LicenceCommand {
    /// Print a valid licence for a type (JSON), to edit and issue.
    Example {
        #[arg(long = "type")]
        type_code: String,
        /// Template version to follow; 0 means the current one.
        #[arg(long, default_value_t = 0)]
        template_version: u32,
    },
    /// Issue the licence in FILE; prints its identifier.
    Issue {
        #[arg(long)]
        file: PathBuf,
        /// Retrying with the same key returns the first result.
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Print a licence (JSON), or with --jws its signed compact form.
    Get {
        id: String,
        #[arg(long)]
        jws: bool,
    },
    /// Print a licence's lifecycle events (JSON lines).
    History { id: String },
    /// Change (变更) a licence: the licence in FILE becomes the next version; prints its identifier.
    Change {
        #[command(flatten)]
        event: EventArgs,
        #[arg(long)]
        file: PathBuf,
    },
    /// Renew (延续) a licence: the next version with a new validity period; prints its identifier.
    Renew {
        #[command(flatten)]
        event: EventArgs,
        /// New validity start (YYYY-MM-DD); default the day after the old end date.
        #[arg(long, default_value = "")]
        valid_from: String,
        /// New validity end (YYYY-MM-DD); default from the type's validity range.
        #[arg(long, default_value = "")]
        valid_until: String,
    },
    /// Record an annual review (年审) with its result and next due date.
    Review(CheckArgs),
    /// Record an annual inspection (年检) with its result and next due date.
    Inspect(CheckArgs),
    /// Record a report of loss (挂失).
    ReportLoss(EventArgs),
    /// Withdraw a report of loss (解除挂失).
    WithdrawLoss(EventArgs),
    /// Record a mortgage (抵押).
    Mortgage(EventArgs),
    /// Release a mortgage (解除抵押).
    Release(EventArgs),
    /// Record a temporary seizure (暂扣).
    Seize(EventArgs),
    /// Return a seized licence (发还).
    Return(EventArgs),
    /// Cancel (注销) a licence. A mortgaged one waits for the release,
    /// unless an administrator forces it (--force, recorded as forced).
    Cancel {
        #[command(flatten)]
        event: EventArgs,
        /// Administrators only: cancel although the licence is mortgaged.
        #[arg(long)]
        force: bool,
    },
    /// Replace (补发) a licence reported lost: the next version, same content
    /// and validity; the lost one no longer verifies. Prints its identifier.
    Replace(EventArgs),
    /// Withdraw (撤销) a licence.
    Withdraw(EventArgs),
    /// Revoke (吊销) a licence.
    Revoke(EventArgs),
    /// Aggregate historical licences from a CSV or JSON Lines file, with a
    /// progress bar. Columns: source_key, identifier (optional), type_code,
    /// template_version (optional), issuer_name, serial, holder_name,
    /// holder_id_type_code, holder_id_number, issue_date, valid_from,
    /// valid_until, area_code, face.<key>... Re-running skips rows already
    /// imported. Exit 0 when every row is in the library, 3 when some were refused.
    Import(import::ImportArgs),
    /// Print the change feed after a cursor (JSON lines); --follow keeps
    /// following it. With nothing after the cursor, says on stderr where the
    /// feed ends (exit 0); a cursor past the end is an error (exit 1).
    Watch(watch::WatchArgs),
    /// Use a licence through the exchange (consumers): granted only within
    /// your usage list; prints it as your entry shows it (JSON).
    Fetch {
        id: String,
        #[command(flatten)]
        use_: super::exchange::UseArgs,
    },
    /// Find a holder's licences of the types your usage list covers for the
    /// service item (consumers); JSON lines, each a logged use.
    Find(super::exchange::FindArgs),
    /// An annotated copy (加注件) signed by the library, its PDF, or a
    /// single-use 10-minute download link (consumers).
    Copy(super::exchange::CopyArgs),
}

/// What every lifecycle event takes.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// Licence identifier.
    id: String,
    /// Why (required, at most 500 characters).
    #[arg(long)]
    reason: String,
    /// Business time (RFC 3339) when it happened; default now.
    #[arg(long, value_parser = rfc3339)]
    occurred_at: Option<time::OffsetDateTime>,
    /// Retrying with the same key returns the first result.
    #[arg(long, default_value = "")]
    idempotency_key: String,
}

/// A review or inspection.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    event: EventArgs,
    #[command(flatten)]
    outcome: Outcome,
}

/// What a review or inspection found; nothing for other events.
#[derive(Debug, Default, Args)]
struct Outcome {
    /// The result (e.g. pass, fail; 合格).
    #[arg(long)]
    result: String,
    /// Next due date, YYYY-MM-DD.
    #[arg(long = "next-due", value_name = "NEXT_DUE")]
    next_due_date: String,
}

/// A licence, as `licence get` and `licence fetch` print it.
#[derive(Serialize)]
pub(crate) struct LicenceOut<'a> {
    identifier: &'a str,
    status: String,
    status_code: String,
    type_code: &'a str,
    issuer_code: &'a str,
    template_version: u32,
    key_id: &'a str,
    recorded_at: String,
    updated_at: String,
    reported_lost: bool,
    mortgaged: bool,
    superseded_by: &'a str,
    replaces: &'a str,
    document: serde_json::Value,
}

impl<'a> LicenceOut<'a> {
    pub(crate) fn of(l: &'a common::Licence) -> anyhow::Result<Self> {
        let (status, status_code) = status_text(l.status);
        Ok(LicenceOut {
            identifier: &l.identifier,
            status,
            status_code,
            type_code: &l.type_code,
            issuer_code: &l.issuer_code,
            template_version: l.template_version,
            key_id: &l.key_id,
            recorded_at: time_text(&l.recorded_at),
            updated_at: time_text(&l.updated_at),
            reported_lost: l.reported_lost,
            mortgaged: l.mortgaged,
            superseded_by: &l.superseded_by,
            replaces: &l.replaces,
            document: serde_json::from_str(&l.document_json)?,
        })
    }
}

/// A lifecycle event, as `licence history` and `licence watch` print it.
#[derive(Serialize)]
struct EventOut<'a> {
    sequence: u64,
    identifier: &'a str,
    kind: String,
    status_after: String,
    actor: &'a str,
    reason: &'a str,
    occurred_at: String,
    recorded_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    result: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    next_due_date: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    related_identifier: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    backfill: bool,
    /// In the feed: the licence's type and issuer.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    placement: Option<Placement<'a>>,
}

/// Whose licence a feed event is about.
#[derive(Serialize)]
struct Placement<'a> {
    type_code: &'a str,
    issuer_code: &'a str,
}

impl<'a> EventOut<'a> {
    fn of(e: &'a issuance::LicenceEvent, placement: Option<Placement<'a>>) -> Self {
        let kind = EventKind::try_from(e.kind).ok().map(|k| k.as_str_name());
        EventOut {
            sequence: e.sequence,
            identifier: &e.identifier,
            kind: wire_word(kind, "EVENT_KIND_"),
            status_after: status_text(e.status_after).0,
            actor: &e.actor,
            reason: &e.reason,
            occurred_at: time_text(&e.occurred_at),
            recorded_at: time_text(&e.recorded_at),
            result: &e.result,
            next_due_date: &e.next_due_date,
            related_identifier: &e.related_identifier,
            backfill: e.backfill,
            placement,
        }
    }
}

/// What a licence file is, for when it is not.
const DRAFT: &str = "a licence (see `zhengzhao licence example`)";

pub async fn run(cli: &ClientArgs, cmd: LicenceCommand) -> anyhow::Result<ExitCode> {
    let c = &Client::connect(cli).await?;
    match cmd {
        LicenceCommand::Example { type_code, template_version } => {
            let t = c
                .catalog()
                .get_licence_type(catalog::GetLicenceTypeRequest { code: type_code, template_version })
                .await?
                .into_inner();
            let def = definition_from_wire(t.licence_type.and_then(|t| t.definition).unwrap_or_default())?;
            let today = zhengzhao_core::date::format_date(zhengzhao_core::clock::Clock::default().today());
            print_json(&examples::draft(&def, &today)?)?;
        }
        LicenceCommand::Issue { file, idempotency_key } => {
            let draft: LicenceDraft = json_file(&file, DRAFT)?;
            let r = c
                .issuance()
                .issue_licence(issuance::IssueLicenceRequest { draft: Some((&draft).into()), idempotency_key })
                .await?
                .into_inner();
            say!("{}", r.licence.context("no licence returned")?.identifier);
        }
        LicenceCommand::Get { id, jws } => {
            let l = c
                .issuance()
                .get_licence(issuance::GetLicenceRequest { identifier: id, ..Default::default() })
                .await?
                .into_inner();
            let l = l.licence.context("no licence returned")?;
            if jws {
                say!("{}", l.jws);
            } else {
                print_json(&LicenceOut::of(&l)?)?;
            }
        }
        LicenceCommand::History { id } => {
            let h = c
                .issuance()
                .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: id })
                .await?
                .into_inner();
            for e in &h.events {
                print_json_line(&EventOut::of(e, None))?;
            }
        }
        LicenceCommand::Change { event, file } => {
            let draft: LicenceDraft = json_file(&file, DRAFT)?;
            let r = c
                .issuance()
                .change_licence(issuance::ChangeLicenceRequest {
                    occurred_at: event.occurred_at.map(timestamp),
                    identifier: event.id,
                    draft: Some((&draft).into()),
                    reason: event.reason,
                    idempotency_key: event.idempotency_key,
                })
                .await?
                .into_inner();
            say!("{}", r.licence.context("no licence returned")?.identifier);
        }
        LicenceCommand::Renew { event, valid_from, valid_until } => {
            let r = c
                .issuance()
                .renew_licence(issuance::RenewLicenceRequest {
                    occurred_at: event.occurred_at.map(timestamp),
                    identifier: event.id,
                    valid_from,
                    valid_until,
                    reason: event.reason,
                    idempotency_key: event.idempotency_key,
                })
                .await?
                .into_inner();
            say!("{}", r.licence.context("no licence returned")?.identifier);
        }
        LicenceCommand::Review(check) => status_after(c, EventKind::Review, check.event, check.outcome, false).await?,
        LicenceCommand::Inspect(check) => {
            status_after(c, EventKind::Inspect, check.event, check.outcome, false).await?
        }
        LicenceCommand::ReportLoss(e) => status_after(c, EventKind::ReportLoss, e, Outcome::default(), false).await?,
        LicenceCommand::WithdrawLoss(e) => {
            status_after(c, EventKind::WithdrawLoss, e, Outcome::default(), false).await?
        }
        LicenceCommand::Mortgage(e) => status_after(c, EventKind::Mortgage, e, Outcome::default(), false).await?,
        LicenceCommand::Release(e) => status_after(c, EventKind::Release, e, Outcome::default(), false).await?,
        LicenceCommand::Seize(e) => status_after(c, EventKind::Seize, e, Outcome::default(), false).await?,
        LicenceCommand::Return(e) => status_after(c, EventKind::Return, e, Outcome::default(), false).await?,
        LicenceCommand::Cancel { event, force } => {
            status_after(c, EventKind::Cancel, event, Outcome::default(), force).await?
        }
        LicenceCommand::Replace(e) => {
            let l = record_event(c, EventKind::Replace, e, Outcome::default(), false).await?;
            say!("{}", l.identifier);
        }
        LicenceCommand::Withdraw(e) => status_after(c, EventKind::Withdraw, e, Outcome::default(), false).await?,
        LicenceCommand::Revoke(e) => status_after(c, EventKind::Revoke, e, Outcome::default(), false).await?,
        LicenceCommand::Import(args) => return import::run(c, args).await,
        LicenceCommand::Watch(args) => {
            watch::run(c, args.after, args.follow.then(|| Duration::from_secs(args.retry_for))).await?
        }
        LicenceCommand::Fetch { id, use_ } => super::exchange::fetch(c, id, use_).await?,
        LicenceCommand::Find(f) => super::exchange::find(c, f).await?,
        LicenceCommand::Copy(a) => super::exchange::copy(c, a).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Records a lifecycle event and returns the licence the library answers with.
async fn record_event(
    c: &Client,
    kind: EventKind,
    e: EventArgs,
    outcome: Outcome,
    force: bool,
) -> anyhow::Result<common::Licence> {
    let r = c
        .issuance()
        .record_event(issuance::RecordEventRequest {
            occurred_at: e.occurred_at.map(timestamp),
            identifier: e.id,
            kind: kind as i32,
            reason: e.reason,
            result: outcome.result,
            next_due_date: outcome.next_due_date,
            idempotency_key: e.idempotency_key,
            force,
        })
        .await?
        .into_inner();
    r.licence.context("no licence returned")
}

/// Records a version-keeping lifecycle event and prints the licence's new status.
async fn status_after(c: &Client, kind: EventKind, e: EventArgs, outcome: Outcome, force: bool) -> anyhow::Result<()> {
    let l = record_event(c, kind, e, outcome, force).await?;
    let mut line = format!("{}: {}", l.identifier, status_text(l.status).0);
    if l.reported_lost {
        line.push_str(", reported lost");
    }
    if l.mortgaged {
        line.push_str(", mortgaged");
    }
    say!("{line}");
    Ok(())
}
