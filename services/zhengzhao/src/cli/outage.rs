//! `zhengzhao outage`: record an outage and when it ended, mark its backlog
//! caught up, and report outages against the 3-working-day catch-up rule.

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use zhengzhao_proto::issuance::v1 as issuance;

use super::args::{rfc3339, timestamp};
use super::client::{Client, ClientArgs};
use super::output::{print_json, print_json_line, time_text, wire_word};

#[derive(Debug, Subcommand)]
pub enum OutageCommand {
    /// Record an outage; prints it (JSON). Events whose business time falls
    /// inside it are then accepted as backfill until its deadline passes.
    Record {
        /// Start (RFC 3339).
        #[arg(long, value_parser = rfc3339)]
        start: time::OffsetDateTime,
        /// End (RFC 3339); omit while it lasts.
        #[arg(long, value_parser = rfc3339)]
        end: Option<time::OffsetDateTime>,
        #[arg(long)]
        cause: String,
        /// The issuer (administrators only; issuers record their own).
        #[arg(long, default_value = "")]
        issuer: String,
        /// Retrying with the same key returns the first result.
        #[arg(long, default_value = "")]
        idempotency_key: String,
    },
    /// Record when an open outage ended (default now).
    End {
        id: u64,
        /// When it ended (RFC 3339).
        #[arg(long, value_parser = rfc3339)]
        at: Option<time::OffsetDateTime>,
    },
    /// Mark an ended outage's backlog as caught up.
    Complete { id: u64 },
    /// List outages with their deadline and backlog state (JSON lines).
    Report {
        #[arg(long, default_value = "")]
        issuer: String,
    },
}

/// An outage, as the `outage` commands print it.
#[derive(Serialize)]
struct OutageOut<'a> {
    id: u64,
    issuer_code: &'a str,
    started_at: String,
    ended_at: String,
    cause: &'a str,
    recorded_by: &'a str,
    deadline: &'a str,
    state: String,
    calendar: &'a str,
    backfill_events: u64,
    backlog_done_at: String,
}

impl<'a> From<&'a issuance::Outage> for OutageOut<'a> {
    fn from(o: &'a issuance::Outage) -> Self {
        let state = issuance::BacklogState::try_from(o.state).ok().map(|s| s.as_str_name());
        OutageOut {
            id: o.id,
            issuer_code: &o.issuer_code,
            started_at: time_text(&o.started_at),
            ended_at: time_text(&o.ended_at),
            cause: &o.cause,
            recorded_by: &o.recorded_by,
            deadline: &o.deadline,
            state: wire_word(state, "BACKLOG_STATE_"),
            calendar: &o.calendar,
            backfill_events: o.backfill_events,
            backlog_done_at: time_text(&o.backlog_done_at),
        }
    }
}

pub async fn run(cli: &ClientArgs, cmd: OutageCommand) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let outage = match cmd {
        OutageCommand::Record { start, end, cause, issuer, idempotency_key } => {
            c.issuance()
                .record_outage(issuance::RecordOutageRequest {
                    issuer_code: issuer,
                    started_at: Some(timestamp(start)),
                    ended_at: end.map(timestamp),
                    cause,
                    idempotency_key,
                })
                .await?
                .into_inner()
                .outage
        }
        OutageCommand::End { id, at } => {
            c.issuance()
                .end_outage(issuance::EndOutageRequest { id, ended_at: at.map(timestamp) })
                .await?
                .into_inner()
                .outage
        }
        OutageCommand::Complete { id } => {
            c.issuance()
                .complete_outage_backlog(issuance::CompleteOutageBacklogRequest { id })
                .await?
                .into_inner()
                .outage
        }
        OutageCommand::Report { issuer } => {
            let r = c.issuance().list_outages(issuance::ListOutagesRequest { issuer_code: issuer }).await?.into_inner();
            for o in &r.outages {
                print_json_line(&OutageOut::from(o))?;
            }
            return Ok(());
        }
    };
    print_json(&OutageOut::from(&outage.context("no outage returned")?))
}
