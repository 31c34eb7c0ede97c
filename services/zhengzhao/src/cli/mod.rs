//! The command line: `serve`, `init`, `token`, and the client commands,
//! which talk to a running library over gRPC with a bearer token. One module
//! per noun, each with its arguments beside its handler.
//!
//! Exit codes: 0 success (for `verify`, the licence is valid; for `audit`,
//! the log checks out); 1 the command could not do its work (an input file
//! that cannot be read or is not what it should be, no token, the server
//! unreachable or refusing); 2 the command line itself is wrong (clap's
//! own: an unknown flag, a missing argument, a value that does not parse);
//! 3 the check ran and the answer is no (`verify`: not valid, including a
//! malformed identifier or document; `audit`: the log does not check out;
//! `licence import`: some rows were refused). Output goes through `say!`
//! ([`output`]): a closed stdout (`| head`) ends the command quietly, with
//! the exit code it would have had (0 for commands that only print).

mod args;
mod bench;
mod catalog;
mod client;
mod exchange;
mod federation;
mod holder;
mod init;
mod keys;
mod licence;
mod log;
mod outage;
pub mod output;
mod status;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::{one_line, stdout_closed};

#[derive(Debug, Parser)]
#[command(
    name = "zhengzhao",
    version,
    about = "Zhengzhao electronic-licence library (电子证照库): server and operator CLI"
)]
pub struct Cli {
    #[command(flatten)]
    client: client::ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process on one port (SQLite under --data-dir unless --database-url).
    Serve(zhengzhao_server::ServeArgs),
    /// Create --data-dir (mode 0700) with a new library's keys (serve does this
    /// too for the embedded default). Keys are created only in an empty directory.
    Init(init::InitArgs),
    /// Mint a bearer token with the operator's token key in --data-dir; or
    /// revoke one, or rotate the token key.
    Token(token::TokenArgs),
    /// Licence types (catalogue).
    #[command(subcommand)]
    Catalog(catalog::CatalogCommand),
    /// Licences: issue, read, cancel, use.
    #[command(subcommand)]
    Licence(licence::LicenceCommand),
    /// Issuer public keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Outages and the 3-working-day catch-up rule.
    #[command(subcommand)]
    Outage(outage::OutageCommand),
    /// Verify a licence by identifier, or a signed document; exit 0 only when valid (3 when not).
    Verify(log::VerifyArgs),
    /// The transparency log of issuance: checkpoints and proofs.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// Check the library's log is consistent with an earlier checkpoint and
    /// that the listed licences are in it; exit 0 when it is, 3 when not.
    Audit(log::AuditArgs),
    /// Usage lists (用证清单): which licence types each consuming agency may
    /// use for which service items; applications and their decisions.
    #[command(subcommand)]
    UsageList(exchange::UsageListCommand),
    /// Read or export the usage log (administrators and auditors).
    UsageLog(exchange::UsageLogArgs),
    /// Registered front ends: the portal and approved mobile ends that vouch for holders.
    #[command(subcommand, name = "frontend")]
    FrontEnd(holder::FrontEndCommand),
    /// A holder's own licences, their use and reminders (a holder token);
    /// `holder login` mints one for a front end.
    #[command(subcommand)]
    Holder(holder::HolderCommand),
    /// Presentation scenarios: where holders may show a licence.
    #[command(subcommand)]
    Scenario(holder::ScenarioCommand),
    /// Present a licence in a scenario: prints the presentation
    /// (SD-JWT~disclosures~KB-JWT), optionally as a QR code.
    Present(holder::PresentArgs),
    /// Set a licence type's expiry-reminder windows (administrator).
    Reminders(holder::RemindersArgs),
    /// District-to-city sync: run the job (`--city URL --district NAME=URL`),
    /// or `status`, `resume`, `audit` against the city (--server).
    Sync(federation::SyncArgs),
    /// The gateway over the city and its districts.
    #[command(subcommand)]
    Gateway(federation::GatewayCommand),
    /// Load a deployment's read path and print the rate and p50/p99/p99.9
    /// latency: `verify`, `verify-document`, `fetch`, or `echo` (the
    /// transport's ceiling); exit 1 if any call failed.
    Bench(bench::BenchArgs),
    /// Where the reads that may lag (GetLicence, verification) are served
    /// from: the primary, or a streaming replica and its lag (administrators, auditors).
    ReadStatus,
}

/// Runs the command; the exit code says how it went (see above).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = &cli.client;
    match cli.command {
        Command::Serve(args) => zhengzhao_server::run("all-in-one", &args, zhengzhao::serve::build).await?,
        Command::Init(args) => init::run(args)?,
        Command::Sync(args) => return federation::run(client, args).await,
        Command::Gateway(cmd) => return federation::gateway(client, cmd).await,
        Command::Bench(a) => return bench::run(client, a).await,
        Command::ReadStatus => status::read_status(client).await?,
        Command::Token(t) => token::run(client, t).await?,
        Command::Catalog(cmd) => catalog::run(client, cmd).await?,
        Command::Licence(cmd) => return licence::run(client, cmd).await,
        Command::Keys(cmd) => keys::run(client, cmd).await?,
        Command::Outage(cmd) => outage::run(client, cmd).await?,
        Command::Log(cmd) => log::log(client, cmd).await?,
        Command::Audit(a) => return log::audit(client, a).await,
        Command::Verify(v) => return log::verify(client, v).await,
        Command::UsageList(cmd) => exchange::usage_list(client, cmd).await?,
        Command::UsageLog(u) => exchange::usage_log(client, u).await?,
        Command::FrontEnd(cmd) => holder::front_end(client, cmd).await?,
        Command::Holder(cmd) => holder::holder(client, cmd).await?,
        Command::Scenario(cmd) => holder::scenario(client, cmd).await?,
        Command::Present(a) => holder::present(client, a).await?,
        Command::Reminders(a) => holder::reminders(client, a).await?,
    }
    Ok(ExitCode::SUCCESS)
}
