//! The command line: `serve`, `token`, and the client commands, which talk to
//! a running library over gRPC with a bearer token.
//!
//! Exit codes: 0 success (for `verify`, the licence is valid; for `audit`,
//! the log checks out); 1 the command could not do its work (an input file
//! that cannot be read or is not what it should be, no token, the server
//! unreachable or refusing); 2 the command line itself is wrong (clap's
//! own: an unknown flag, a missing argument, a value that does not parse);
//! 3 the check ran and the answer is no (`verify`: not valid, including a
//! malformed identifier or document; `audit`: the log does not check out;
//! `licence import`: some rows were refused). Output goes through [`say`]:
//! a closed stdout (`| head`) ends the command quietly, with the exit code
//! it would have had (0 for commands that only print).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use zhengzhao_auth::{BearerToken, OPERATOR_ROLES, Role};
use zhengzhao_proto::auth::v1 as auth;
use zhengzhao_proto::auth::v1::token_service_client::TokenServiceClient;
use zhengzhao_proto::catalog::v1 as catalog;
use zhengzhao_proto::catalog::v1::catalog_service_client::CatalogServiceClient;
use zhengzhao_proto::common::v1 as common;
use zhengzhao_proto::convert::{definition_from_wire, definition_to_wire, from_timestamp, status_from_wire};
use zhengzhao_proto::exchange::v1 as exchange;
use zhengzhao_proto::exchange::v1::exchange_service_client::ExchangeServiceClient;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::issuance::v1::issuance_service_client::IssuanceServiceClient;
use zhengzhao_proto::signing::v1 as signing;
use zhengzhao_proto::signing::v1::signing_service_client::SigningServiceClient;
use zhengzhao_proto::verification::v1 as verification;
use zhengzhao_proto::verification::v1::verification_service_client::VerificationServiceClient;

use zhengzhao::examples;

/// Exit code of `verify` when the check ran but the licence is not valid.
const NOT_VALID: u8 = 3;

/// Prints one line on stdout; a closed stdout ends the command quietly
/// (see [`StdoutClosed`]).
macro_rules! say {
    ($($arg:tt)*) => {
        write_line(format_args!($($arg)*))?
    };
}

/// Prints one line on stderr, ignoring a closed stderr (`2>&1 | head`).
macro_rules! note {
    ($($arg:tt)*) => {{
        let mut err = std::io::stderr().lock();
        let _ = std::io::Write::write_fmt(&mut err, format_args!($($arg)*))
            .and_then(|()| std::io::Write::write_all(&mut err, b"\n"));
    }};
}
pub(crate) use note;

/// The reader of stdout went away (`zhengzhao ... | head -1`): the command
/// stops quietly instead of failing.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether `e` is a closed stdout (the command ends quietly).
pub fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<StdoutClosed>())
}

fn write_line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// `r`, with a closed stdout counted as done: for commands whose exit code
/// is their answer (`verify`, `audit`, `licence import`), which keeps it.
fn quietly(r: anyhow::Result<()>) -> anyhow::Result<()> {
    match r {
        Err(e) if stdout_closed(&e) => Ok(()),
        other => other,
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "zhengzhao",
    version,
    about = "Zhengzhao electronic-licence library (电子证照库): server and operator CLI"
)]
pub struct Cli {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where client commands connect, and as whom.
#[derive(Debug, Clone, Args)]
struct ClientArgs {
    /// Library (or gateway) URL.
    #[arg(long, global = true, env = "ZHENGZHAO_SERVER", default_value = "http://127.0.0.1:7070")]
    server: String,
    /// Bearer token (mint one with `zhengzhao token`).
    #[arg(long, global = true, env = "ZHENGZHAO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// PEM CA certificates to trust for an https:// server.
    #[arg(long, global = true, env = "ZHENGZHAO_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in one process on one port (SQLite under --data-dir unless --database-url).
    Serve(zhengzhao_server::ServeArgs),
    /// Create --data-dir (mode 0700) with a new library's keys (serve does this
    /// too for the embedded default). Keys are created only in an empty directory.
    Init {
        #[arg(long, default_value = "zhengzhao-data")]
        data_dir: PathBuf,
        /// Lay out a split deployment: an `operator` directory with the token
        /// key and one directory per service holding exactly what it loads.
        #[arg(long, conflicts_with = "upgrade")]
        split: bool,
        /// Upgrade a directory an earlier version made (one library-key.pem).
        #[arg(long)]
        upgrade: bool,
    },
    /// Mint a bearer token with the operator's token key in --data-dir; or
    /// revoke one, or rotate the token key.
    Token(TokenArgs),
    /// Licence types (catalogue).
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Licences: issue, read, cancel, use.
    #[command(subcommand)]
    Licence(LicenceCommand),
    /// Issuer public keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Outages and the 3-working-day catch-up rule.
    #[command(subcommand)]
    Outage(OutageCommand),
    /// Verify a licence by identifier, or a signed document; exit 0 only when valid (3 when not).
    Verify(VerifyArgs),
    /// The transparency log of issuance: checkpoints and proofs.
    #[command(subcommand)]
    Log(LogCommand),
    /// Check the library's log is consistent with an earlier checkpoint and
    /// that the listed licences are in it; exit 0 when it is, 3 when not.
    Audit(AuditArgs),
    /// Read the usage log (administrators and auditors).
    UsageLog(UsageLogArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct TokenArgs {
    #[command(subcommand)]
    command: Option<TokenCommand>,
    /// The operator's directory (holds token-key.pem).
    #[arg(long, default_value = "zhengzhao-data", global = true)]
    data_dir: PathBuf,
    /// admin, issuer, consumer, portal, sync or auditor.
    #[arg(long, required = true)]
    role: Option<String>,
    /// The caller's unified social credit code.
    #[arg(long, required = true)]
    agency: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d; at most 12h for a
    /// person's role, 31d for sync.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Print the token with its ID (jti) and expiry as JSON; otherwise the
    /// token goes to stdout and its ID and expiry to stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Revoke a token by its ID (jti) until it would have expired (administrators).
    Revoke {
        /// The token's ID (jti), as `zhengzhao token` printed it.
        token_id: String,
        /// When the token expires (RFC 3339); without it the entry is kept
        /// for the longest lifetime any token may have.
        #[arg(long, value_parser = rfc3339)]
        until: Option<time::OffsetDateTime>,
        #[arg(long)]
        reason: String,
    },
    /// List the revoked tokens that have not yet expired, as JSON lines.
    Revoked,
    /// Replace the token-signing key in --data-dir; tokens signed by the old
    /// key stay valid for --grace. Prints the new key's kid. Copy
    /// token-keys.json to every process of a split deployment.
    RotateKey {
        /// How long the old key stays trusted: seconds, or a number with s, m, h or d.
        #[arg(long, default_value = "12h")]
        grace: String,
    },
}

fn revoked_json(t: &auth::RevokedToken) -> serde_json::Value {
    serde_json::json!({
        "token_id": t.token_id,
        "expires_at": time_text(&t.expires_at),
        "revoked_at": time_text(&t.revoked_at),
        "actor": t.actor,
        "reason": t.reason,
    })
}

async fn token_command(cli: &ClientArgs, t: TokenArgs) -> anyhow::Result<()> {
    match t.command {
        Some(TokenCommand::Revoke { token_id, until, reason }) => {
            let c = Client::connect(cli).await?;
            let revoked = c
                .tokens()
                .revoke_token(auth::RevokeTokenRequest {
                    token_id,
                    expires_at: until.map(zhengzhao_proto::convert::timestamp),
                    reason,
                })
                .await?
                .into_inner()
                .revoked_token
                .context("the library returned no revoked token")?;
            say!("revoked {} until {}", revoked.token_id, time_text(&revoked.expires_at));
        }
        Some(TokenCommand::RotateKey { grace }) => {
            let grace = parse_ttl(&grace)?;
            let kid = zhengzhao_server::keys::rotate_token_key(&t.data_dir, grace)?;
            say!("{kid}");
        }
        Some(TokenCommand::Revoked) => {
            let c = Client::connect(cli).await?;
            let list = c.tokens().list_revoked_tokens(auth::ListRevokedTokensRequest {}).await?.into_inner();
            for t in &list.revoked_tokens {
                say!("{}", revoked_json(t));
            }
        }
        None => {
            let (Some(role), Some(agency)) = (t.role, t.agency) else {
                bail!("--role and --agency are required to mint a token");
            };
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            if !OPERATOR_ROLES.contains(&role) {
                bail!("role must be one of admin, issuer, consumer, portal, sync, auditor");
            }
            let ttl = parse_ttl(&t.ttl)?;
            let max = role.max_token_lifetime();
            if ttl > max {
                bail!(
                    "--ttl {}: a {role} token may live at most {} (mint a new one when it expires)",
                    t.ttl,
                    zhengzhao_auth::token::human(max)
                );
            }
            let authority = zhengzhao_server::keys::operator_authority(&t.data_dir)?;
            let minted = authority.issue(&agency, role, ttl)?;
            let expires = minted.expires_at.format(&time::format_description::well_known::Rfc3339)?;
            if t.json {
                print_json(&serde_json::json!({
                    "token": minted.token,
                    "token_id": minted.token_id,
                    "role": role.to_string(),
                    "agency": agency,
                    "expires_at": expires,
                }))?;
            } else {
                say!("{}", minted.token);
                note!("token id (jti) {}, {role} for {agency}, expires {expires}", minted.token_id);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Print a valid licence-type definition (JSON).
    Example {
        /// Agency allowed to issue the example type.
        #[arg(long, default_value = examples::EXAMPLE_ISSUER)]
        issuer: String,
    },
    /// Create and publish the licence type in FILE; prints its type code.
    Create {
        #[arg(long)]
        file: PathBuf,
    },
    /// Print a licence type (JSON), with its current or a given template version.
    Get {
        code: String,
        #[arg(long, default_value_t = 0)]
        template_version: u32,
    },
    /// List licence types (code, status, template version, name), optionally filtered.
    List {
        /// Only types whose name contains this text.
        #[arg(long, default_value = "")]
        name: String,
        /// Only types defined by this authority.
        #[arg(long, default_value = "")]
        authority: String,
        /// natural_person or legal_person.
        #[arg(long)]
        holder_category: Option<String>,
        /// draft, published or retired.
        #[arg(long)]
        status: Option<String>,
    },
    /// Change a type's face template from FILE (a template JSON): in place if
    /// existing licences stay valid, or with --new-version as the next version.
    Revise {
        code: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        new_version: bool,
    },
    /// Change a type's own fields from FILE (a licence-type definition, or
    /// what `catalog get` prints): name, defining authority's name and level,
    /// service items, validity, issuing level, issuers, and holder category
    /// while a draft. The code and the template stay: a template in FILE is
    /// not applied (use `catalog revise`). Recorded in the change log.
    ReviseType {
        code: String,
        #[arg(long)]
        file: PathBuf,
        /// Why the type changes (recorded).
        #[arg(long)]
        reason: String,
    },
    /// Retire a type: no new issuance; existing licences stay valid.
    Retire {
        code: String,
        #[arg(long)]
        reason: String,
    },
    /// Print every template version of a type (JSON).
    Versions { code: String },
    /// Print the catalogue change log, newest first (JSON lines).
    Changes {
        /// Only this type's changes.
        #[arg(long, default_value = "")]
        code: String,
        /// At most this many changes; 0 means the default, 100, as a page
        /// size of 0 does in the API.
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: u32,
    },
    /// Print the whole catalogue as one JSON document.
    Export,
    /// Import a catalogue document: idempotent; a conflicting one is refused whole.
    Import {
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum LicenceCommand {
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
    Import {
        #[arg(long)]
        file: PathBuf,
        /// csv or jsonl (default: from the file extension).
        #[arg(long)]
        format: Option<String>,
        /// Accept existing identifiers with a legacy check character (marked legacy).
        #[arg(long)]
        allow_legacy: bool,
        /// Rows per message.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Write refused rows to this file (JSON lines) instead of stderr.
        #[arg(long)]
        errors: Option<PathBuf>,
    },
    /// Print the change feed after a cursor (JSON lines); --follow keeps
    /// following it. With nothing after the cursor, says on stderr where the
    /// feed ends (exit 0); a cursor past the end is an error (exit 1).
    Watch {
        /// Print the events after this sequence; 0 for the whole feed.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep following the feed. When the library becomes unavailable
        /// (it is shutting down, say) the follower reconnects with backoff,
        /// resuming after the last event it printed.
        #[arg(long)]
        follow: bool,
        /// With --follow: how long to keep trying to reconnect before
        /// giving up with exit 1 (0: give up at once).
        #[arg(long, value_name = "SECONDS", default_value_t = 60, requires = "follow")]
        retry_for: u64,
    },
    /// Use a licence through the exchange (consumers); prints it (JSON).
    Fetch {
        id: String,
        /// Why the licence is used (required, at most 200 characters).
        #[arg(long)]
        cause: String,
        #[arg(long, default_value = "")]
        service_item: String,
        #[arg(long, default_value = "")]
        case_number: String,
    },
}

/// What every lifecycle event takes.
#[derive(Debug, Args)]
struct EventArgs {
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
struct CheckArgs {
    #[command(flatten)]
    event: EventArgs,
    /// The result (e.g. pass, fail; 合格).
    #[arg(long)]
    result: String,
    /// Next due date, YYYY-MM-DD.
    #[arg(long)]
    next_due: String,
}

fn occurred_at(e: &EventArgs) -> anyhow::Result<Option<prost_types::Timestamp>> {
    Ok(e.occurred_at.map(zhengzhao_proto::convert::timestamp))
}

#[derive(Debug, Subcommand)]
enum OutageCommand {
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

/// A time flag's value: RFC 3339 with an offset. A value that does not
/// parse is a usage error (exit 2), said once with the format wanted.
fn rfc3339(t: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(t.trim(), &time::format_description::well_known::Rfc3339).map_err(|e| {
        // The error's source repeats its own text: say it once.
        let reason = match &e {
            time::error::Parse::TryFromParsed(inner) => inner.to_string(),
            time::error::Parse::ParseFromDescription(inner) => inner.to_string(),
            other => other.to_string(),
        };
        format!("not an RFC 3339 time ({reason}); use a date, T, a time and an offset, e.g. 2026-11-27T09:30:00+08:00")
    })
}

fn outage_json(o: &issuance::Outage) -> serde_json::Value {
    let state = issuance::BacklogState::try_from(o.state).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
    serde_json::json!({
        "id": o.id,
        "issuer_code": o.issuer_code,
        "started_at": time_text(&o.started_at),
        "ended_at": time_text(&o.ended_at),
        "cause": o.cause,
        "recorded_by": o.recorded_by,
        "deadline": o.deadline,
        "state": state.trim_start_matches("BACKLOG_STATE_").to_lowercase(),
        "calendar": o.calendar,
        "backfill_events": o.backfill_events,
        "backlog_done_at": time_text(&o.backlog_done_at),
    })
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an issuer's active key (administrator; refused while one is active).
    Create {
        /// The issuer's unified social credit code.
        #[arg(long)]
        issuer: String,
        /// es256 (P-256, SHA-256) or sm2 (SM2 with SM3).
        #[arg(long, default_value = "es256")]
        alg: String,
        #[arg(long, default_value = "key created by the administrator")]
        reason: String,
    },
    /// Retire the issuer's active key and create its successor (administrator).
    Rotate {
        #[arg(long)]
        issuer: String,
        /// Algorithm of the new key [default: the old key's].
        #[arg(long)]
        alg: Option<String>,
        #[arg(long, default_value = "scheduled rotation")]
        reason: String,
    },
    /// Retire the issuer's active key without a successor (administrator).
    Retire {
        #[arg(long)]
        issuer: String,
        #[arg(long, default_value = "retired by the administrator")]
        reason: String,
    },
    /// Mark a key compromised as of a time (administrator): its signatures
    /// from then on verify as "key compromised"; an active key is replaced.
    Compromise {
        /// The key ID (`keys list` shows them).
        key_id: String,
        /// From when (RFC 3339) its signatures are distrusted.
        #[arg(long, value_parser = rfc3339)]
        since: time::OffsetDateTime,
        #[arg(long)]
        reason: String,
    },
    /// List keys with their status and dates (JSON lines).
    List {
        /// Only this issuer's keys.
        #[arg(long, default_value = "")]
        issuer: String,
    },
    /// Print the public keys as a JWKS (JSON), with status and dates.
    Jwks {
        /// Only this issuer's keys.
        #[arg(long, default_value = "")]
        issuer: String,
    },
}

fn algorithm_arg(flag: &str, alg: &str) -> anyhow::Result<signing::SignatureAlgorithm> {
    match alg.parse::<zhengzhao_crypto::Algorithm>() {
        Ok(zhengzhao_crypto::Algorithm::Es256) => Ok(signing::SignatureAlgorithm::Es256),
        Ok(zhengzhao_crypto::Algorithm::Sm2Sm3) => Ok(signing::SignatureAlgorithm::Sm2Sm3),
        Err(e) => bail!("{flag}: {e}"),
    }
}

fn key_json(k: &signing::PublicKey) -> serde_json::Value {
    let alg = match signing::SignatureAlgorithm::try_from(k.algorithm) {
        Ok(signing::SignatureAlgorithm::Es256) => "es256",
        Ok(signing::SignatureAlgorithm::Sm2Sm3) => "sm2",
        _ => "unknown",
    };
    let status = signing::KeyStatus::try_from(k.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN");
    serde_json::json!({
        "key_id": k.key_id,
        "issuer_code": k.issuer_code,
        "algorithm": alg,
        "status": status.trim_start_matches("KEY_STATUS_").to_lowercase(),
        "created_at": time_text(&k.created_at),
        "retired_at": k.retired_at.as_ref().map(|_| time_text(&k.retired_at)),
        "compromised_since": k.compromised_since.as_ref().map(|_| time_text(&k.compromised_since)),
    })
}

async fn keys_command(c: &Client, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create { issuer, alg, reason } => {
            let r = c
                .signing()
                .create_key(signing::CreateKeyRequest {
                    issuer_code: issuer,
                    algorithm: algorithm_arg("--alg", &alg)? as i32,
                    reason,
                })
                .await?
                .into_inner();
            print_json(&key_json(&r.key.context("no key returned")?))?;
        }
        KeysCommand::Rotate { issuer, alg, reason } => {
            let algorithm = alg.as_deref().map(|a| algorithm_arg("--alg", a)).transpose()?;
            let r = c
                .signing()
                .rotate_key(signing::RotateKeyRequest {
                    issuer_code: issuer,
                    algorithm: algorithm.map_or(0, |a| a as i32),
                    reason,
                })
                .await?
                .into_inner();
            print_json(&serde_json::json!({
                "retired": r.retired.as_ref().map(key_json),
                "active": r.active.as_ref().map(key_json),
            }))?;
        }
        KeysCommand::Retire { issuer, reason } => {
            let r =
                c.signing().retire_key(signing::RetireKeyRequest { issuer_code: issuer, reason }).await?.into_inner();
            print_json(&key_json(&r.key.context("no key returned")?))?;
        }
        KeysCommand::Compromise { key_id, since, reason } => {
            let r = c
                .signing()
                .compromise_key(signing::CompromiseKeyRequest {
                    key_id,
                    since: Some(zhengzhao_proto::convert::timestamp(since)),
                    reason,
                })
                .await?
                .into_inner();
            print_json(&serde_json::json!({
                "compromised": r.key.as_ref().map(key_json),
                "replacement": r.replacement.as_ref().map(key_json),
            }))?;
        }
        KeysCommand::List { issuer } => {
            let r = c
                .signing()
                .list_public_keys(signing::ListPublicKeysRequest { issuer_code: issuer })
                .await?
                .into_inner();
            for k in &r.keys {
                say!("{}", key_json(k));
            }
        }
        KeysCommand::Jwks { issuer } => {
            let r = c
                .signing()
                .list_public_keys(signing::ListPublicKeysRequest { issuer_code: issuer })
                .await?
                .into_inner();
            print_json(&serde_json::from_str::<serde_json::Value>(&r.jwks_json)?)?;
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Licence identifier.
    #[arg(required_unless_present = "document", conflicts_with = "document")]
    id: Option<String>,
    /// A file holding a JWS compact serialisation.
    #[arg(long)]
    document: Option<PathBuf>,
    /// Also prove the licence's events are in the transparency log (by identifier).
    #[arg(long, conflicts_with = "document")]
    with_proof: bool,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Print the latest signed checkpoint (a JWS line; keep it for `audit --from`).
    Checkpoint {
        /// Print its size, root and time as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Print a licence's logged events with their audit paths (JSON).
    Prove {
        identifier: String,
        /// Tree size to prove against [default: the latest checkpoint's].
        #[arg(long)]
        tree_size: Option<u64>,
    },
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// A file holding a checkpoint saved earlier (`log checkpoint`).
    #[arg(long = "from", value_name = "CHECKPOINT")]
    from: PathBuf,
    /// A file of licence identifiers to prove, one per line.
    #[arg(long)]
    licences: Option<PathBuf>,
    /// The library key (JWK file) to trust; default: the key the library serves.
    #[arg(long)]
    library_jwk: Option<PathBuf>,
    /// Write the current checkpoint here when the audit passes.
    #[arg(long)]
    save: Option<PathBuf>,
}

async fn log_command(c: &Client, cmd: LogCommand) -> anyhow::Result<()> {
    let r = c.issuance().get_checkpoint(issuance::GetCheckpointRequest {}).await?.into_inner();
    let cp = r.checkpoint.context("no checkpoint returned")?;
    match cmd {
        LogCommand::Checkpoint { json: false } => say!("{}", cp.jws),
        LogCommand::Checkpoint { json: true } => print_json(&serde_json::json!({
            "origin": cp.origin,
            "tree_size": cp.tree_size,
            "root_hash": hex::encode(&cp.root_hash),
            "timestamp": time_text(&cp.timestamp),
            "jws": cp.jws,
        }))?,
        LogCommand::Prove { identifier, tree_size } => {
            let p = c
                .issuance()
                .get_inclusion_proof(issuance::GetInclusionProofRequest {
                    identifier,
                    tree_size: tree_size.unwrap_or(cp.tree_size),
                })
                .await?
                .into_inner();
            let events: Vec<serde_json::Value> = p
                .events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "leaf_index": e.leaf_index,
                        "leaf": serde_json::from_slice::<serde_json::Value>(&e.leaf).unwrap_or_default(),
                        "audit_path": e.audit_path.iter().map(hex::encode).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_json(&serde_json::json!({ "tree_size": p.tree_size, "checkpoint": cp.jws, "events": events }))?;
        }
    }
    Ok(())
}

/// Verifies a licence or a document: exit 0 when valid, 3 when the check
/// ran and the answer is no (a malformed identifier or document included),
/// 1 when it could not run (an unreadable file, no token, no server).
async fn verify_command(args: &ClientArgs, v: VerifyArgs) -> anyhow::Result<ExitCode> {
    let document = v.document.as_ref().map(|f| read_file(f).map(|text| (f, text))).transpose()?;
    let c = Client::connect(args).await?;
    let answer = match (v.id, document) {
        (Some(id), _) => c
            .verification()
            .verify_licence(verification::VerifyLicenceRequest {
                identifier: id,
                include_inclusion_proof: v.with_proof,
            })
            .await
            .map(|r| r.into_inner().verification),
        (None, Some((file, jws))) if jws.trim().is_empty() => {
            quietly(write_line(format_args!(
                "malformed: {} is empty: there is no document to verify",
                file.display()
            )))?;
            return Ok(ExitCode::from(NOT_VALID));
        }
        (None, Some((_, jws))) => c
            .verification()
            .verify_document(verification::VerifyDocumentRequest { jws: jws.trim().to_owned() })
            .await
            .map(|r| r.into_inner().verification),
        (None, None) => bail!("give an identifier or --document FILE"),
    };
    let verdict = match answer {
        Ok(v) => v.context("the server returned no verification")?,
        // What was presented cannot be any licence: the answer is no.
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            quietly(write_line(format_args!("malformed: {}", s.message().replace('\n', " "))))?;
            return Ok(ExitCode::from(NOT_VALID));
        }
        Err(s) => return Err(s.into()),
    };
    let outcome = verification::VerificationOutcome::try_from(verdict.outcome)
        .unwrap_or(verification::VerificationOutcome::Unspecified);
    let name = outcome.as_str_name().trim_start_matches("VERIFICATION_OUTCOME_").to_lowercase().replace('_', " ");
    quietly((|| {
        say!("{name}: {}", verdict.detail);
        if !verdict.identifier.is_empty() {
            say!("identifier: {}", verdict.identifier);
        }
        if !verdict.key_id.is_empty() {
            say!("key: {}", verdict.key_id);
        }
        if let Some(log) = &verdict.log_inclusion {
            let size = log.checkpoint.as_ref().map_or(0, |c| c.tree_size);
            say!("log: {} event(s) proven against the checkpoint of {size} leaves", log.events.len());
        }
        Ok(())
    })())?;
    Ok(if outcome == verification::VerificationOutcome::Valid { ExitCode::SUCCESS } else { ExitCode::from(NOT_VALID) })
}

/// Audits the library's log. The auditor's own files are read and checked
/// first: a problem with them is an error (exit 1), never an audit failure.
async fn audit_command(args: &ClientArgs, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let from = read_file(&a.from)?;
    zhengzhao::audit::read_checkpoint(&from)
        .map_err(|e| anyhow::anyhow!("--from {}: {e} (save one with `zhengzhao log checkpoint`)", a.from.display()))?;
    let mut identifiers = Vec::new();
    if let Some(f) = &a.licences {
        for (n, line) in read_file(f)?.lines().enumerate() {
            let id = line.trim();
            if id.is_empty() {
                continue;
            }
            zhengzhao_core::LicenceId::parse_allowing_legacy(id).map_err(|e| {
                anyhow::anyhow!("--licences {} line {}: {id:?} is not a licence identifier: {e}", f.display(), n + 1)
            })?;
            identifiers.push(id.to_owned());
        }
    }
    let pinned = match &a.library_jwk {
        Some(f) => {
            let not_a_key = || format!("--library-jwk {} is not the library's public key (a P-256 JWK)", f.display());
            let jwk: serde_json::Value = serde_json::from_str(&read_file(f)?).with_context(not_a_key)?;
            zhengzhao_crypto::Es256PublicKey::from_jwk(&jwk).map_err(|e| anyhow::anyhow!("{}: {e}", not_a_key()))?;
            Some(jwk)
        }
        None => None,
    };
    let c = Client::connect(args).await?;
    let report = zhengzhao::audit::audit(&mut c.issuance(), &from, &identifiers, pinned.as_ref()).await?;
    if report.passed() {
        if let Some(path) = &a.save {
            std::fs::write(path, format!("{}\n", report.current))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        quietly(write_line(format_args!(
            "audit passed: the log grew from {} to {} leaves consistently; {} licence(s) proven",
            report.from_size, report.current_size, report.licences_checked
        )))?;
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &report.failures {
            note!("AUDIT FAILED: {f}");
        }
        note!("AUDIT FAILED: {} problem(s); do not trust this library's history", report.failures.len());
        Ok(ExitCode::from(NOT_VALID))
    }
}

#[derive(Debug, Args)]
struct UsageLogArgs {
    /// Only accesses to this licence.
    #[arg(long, default_value = "")]
    identifier: String,
    /// At most this many entries, newest first; 0 means the default, 100,
    /// as a page size of 0 does in the API.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    limit: u32,
}

/// The `--limit` of listings when none is given; `--limit 0` means it too,
/// as a page size of 0 means the service's default page in the API.
const DEFAULT_LIMIT: u32 = 100;

fn effective_limit(limit: u32) -> u32 {
    if limit == 0 { DEFAULT_LIMIT } else { limit }
}

/// One line describing an error, for stderr.
pub fn one_line(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        let code = format!("{:?}", s.code());
        let mut words = String::new();
        for (i, c) in code.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                words.push(' ');
            }
            words.extend(c.to_lowercase());
        }
        return format!("{words}: {}", s.message()).replace('\n', " ");
    }
    format!("{e:#}").replace('\n', " ")
}

fn parse_ttl(s: &str) -> anyhow::Result<Duration> {
    let (n, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = n.parse().with_context(|| format!("--ttl {s:?}: use e.g. 3600, 30m, 1h or 7d"))?;
    let secs = match unit {
        's' => n,
        'm' => n.saturating_mul(60),
        'h' => n.saturating_mul(3600),
        'd' => n.saturating_mul(86400),
        _ => bail!("--ttl {s:?}: unit must be s, m, h or d"),
    };
    if secs == 0 || secs > 366 * 86400 {
        bail!("--ttl must be between 1 second and 366 days");
    }
    Ok(Duration::from_secs(secs))
}

type Authed = InterceptedService<Channel, BearerToken>;

struct Client {
    channel: Channel,
    token: BearerToken,
}

impl Client {
    async fn connect(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match args.token.as_deref().map(str::trim) {
            None => bail!("no token: pass --token or set ZHENGZHAO_TOKEN (mint one with `zhengzhao token`)"),
            Some("") => {
                bail!("no token given: --token (or ZHENGZHAO_TOKEN) is empty; mint one with `zhengzhao token`")
            }
            Some(t) => t,
        };
        let token = BearerToken::new(token).context("the token is not valid header text")?;
        let ca = zhengzhao_server::tls::trusted_ca(args.ca_file.as_deref())?;
        let channel = zhengzhao_server::tls::endpoint(&args.server, ca.as_deref())
            .context("--server")?
            .connect()
            .await
            .with_context(|| format!("cannot reach {}", args.server))?;
        Ok(Client { channel, token })
    }
    fn catalog(&self) -> CatalogServiceClient<Authed> {
        CatalogServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    fn issuance(&self) -> IssuanceServiceClient<Authed> {
        IssuanceServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    fn signing(&self) -> SigningServiceClient<Authed> {
        SigningServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    fn verification(&self) -> VerificationServiceClient<Authed> {
        VerificationServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    fn exchange(&self) -> ExchangeServiceClient<Authed> {
        ExchangeServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
    fn tokens(&self) -> TokenServiceClient<Authed> {
        TokenServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
    }
}

fn read_file(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn time_text(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| from_timestamp("t", t).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn status_text(code: i32) -> (String, String) {
    common::LicenceStatus::try_from(code)
        .ok()
        .and_then(status_from_wire)
        .map(|s| (s.name().to_owned(), s.code().to_owned()))
        .unwrap_or_else(|| ("unknown".into(), String::new()))
}

fn type_status_text(code: i32) -> String {
    catalog::LicenceTypeStatus::try_from(code)
        .map(|s| s.as_str_name().trim_start_matches("LICENCE_TYPE_STATUS_").to_lowercase())
        .unwrap_or_else(|_| "unknown".into())
}

fn licence_json(l: &common::Licence) -> anyhow::Result<serde_json::Value> {
    let (status, status_code) = status_text(l.status);
    Ok(serde_json::json!({
        "identifier": l.identifier,
        "status": status,
        "status_code": status_code,
        "type_code": l.type_code,
        "issuer_code": l.issuer_code,
        "template_version": l.template_version,
        "key_id": l.key_id,
        "recorded_at": time_text(&l.recorded_at),
        "updated_at": time_text(&l.updated_at),
        "reported_lost": l.reported_lost,
        "mortgaged": l.mortgaged,
        "superseded_by": l.superseded_by,
        "replaces": l.replaces,
        "document": serde_json::from_str::<serde_json::Value>(&l.document_json)?,
    }))
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    say!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            zhengzhao_server::run("all-in-one", &args, zhengzhao::serve::build).await?;
        }
        Command::Init { data_dir, split, upgrade } => {
            use zhengzhao_server::keys;
            if split {
                keys::init_split(&data_dir)?;
                say!("operator (token key; keep it off the servers): {}", data_dir.join("operator").display());
                for name in zhengzhao_auth::ServiceName::ALL {
                    say!("{}: {}", name.as_str(), data_dir.join(name.as_str()).display());
                }
            } else {
                if upgrade {
                    keys::upgrade(&data_dir)?;
                } else {
                    keys::init_library(&data_dir)?;
                }
                say!("token key (operator): {}", data_dir.join(keys::TOKEN_KEY_FILE).display());
                say!("log key: {}", data_dir.join(keys::LOG_KEY_FILE).display());
                if std::env::var(keys::MASTER_KEY_ENV).is_err() && !upgrade {
                    say!("master key: {}", data_dir.join(keys::MASTER_KEY_FILE).display());
                }
            }
            say!("default administrator code: {}", keys::default_agency());
        }
        Command::Token(t) => token_command(&cli.client, t).await?,
        Command::Catalog(CatalogCommand::Example { issuer }) => {
            zhengzhao_core::Uscc::parse(&issuer).with_context(|| format!("--issuer {issuer}"))?;
            print_json(&examples::definition(&issuer)?)?;
        }
        Command::Catalog(cmd) => catalog_command(&Client::connect(&cli.client).await?, cmd).await?,
        Command::Licence(cmd) => return licence_command(&Client::connect(&cli.client).await?, cmd).await,
        Command::Outage(cmd) => {
            let c = Client::connect(&cli.client).await?;
            let outage = match cmd {
                OutageCommand::Record { start, end, cause, issuer, idempotency_key } => {
                    c.issuance()
                        .record_outage(issuance::RecordOutageRequest {
                            issuer_code: issuer,
                            started_at: Some(zhengzhao_proto::convert::timestamp(start)),
                            ended_at: end.map(zhengzhao_proto::convert::timestamp),
                            cause,
                            idempotency_key,
                        })
                        .await?
                        .into_inner()
                        .outage
                }
                OutageCommand::End { id, at } => {
                    c.issuance()
                        .end_outage(issuance::EndOutageRequest {
                            id,
                            ended_at: at.map(zhengzhao_proto::convert::timestamp),
                        })
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
                    let r = c
                        .issuance()
                        .list_outages(issuance::ListOutagesRequest { issuer_code: issuer })
                        .await?
                        .into_inner();
                    for o in &r.outages {
                        say!("{}", outage_json(o));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
            };
            print_json(&outage_json(&outage.context("no outage returned")?))?;
        }
        Command::Keys(cmd) => keys_command(&Client::connect(&cli.client).await?, cmd).await?,
        Command::Log(cmd) => log_command(&Client::connect(&cli.client).await?, cmd).await?,
        Command::Audit(a) => return audit_command(&cli.client, a).await,
        Command::Verify(v) => return verify_command(&cli.client, v).await,
        Command::UsageLog(u) => {
            let c = Client::connect(&cli.client).await?;
            let mut token = String::new();
            let mut left = effective_limit(u.limit);
            while left > 0 {
                let r = c
                    .exchange()
                    .list_usage_log(exchange::ListUsageLogRequest {
                        identifier: u.identifier.clone(),
                        page_size: left.min(500),
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                for rec in &r.records {
                    left = left.saturating_sub(1);
                    let decision =
                        exchange::UsageDecision::try_from(rec.decision).map(|d| d.as_str_name()).unwrap_or("UNKNOWN");
                    say!(
                        "{}",
                        serde_json::json!({
                            "id": rec.id, "accessed_at": time_text(&rec.accessed_at), "consumer": rec.consumer_code,
                            "role": rec.consumer_role, "identifier": rec.identifier, "use_cause": rec.use_cause,
                            "service_item_code": rec.service_item_code, "case_number": rec.case_number,
                            "decision": decision.trim_start_matches("USAGE_DECISION_").to_lowercase(),
                            "refusal_reason": rec.refusal_reason,
                        })
                    );
                }
                if r.next_page_token.is_empty() || r.records.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn catalog_command(c: &Client, cmd: CatalogCommand) -> anyhow::Result<()> {
    match cmd {
        // Needs no server: answered in `run` before connecting.
        CatalogCommand::Example { .. } => {}
        CatalogCommand::Create { file } => {
            let def: zhengzhao_core::LicenceTypeDefinition = serde_json::from_str(&read_file(&file)?)
                .with_context(|| format!("{} is not a licence-type definition", file.display()))?;
            def.validate()?;
            let created = c
                .catalog()
                .create_licence_type(catalog::CreateLicenceTypeRequest { definition: Some(definition_to_wire(&def)) })
                .await?
                .into_inner();
            let code = created.licence_type.and_then(|t| t.definition).map(|d| d.code).context("no type returned")?;
            c.catalog().publish_licence_type(catalog::PublishLicenceTypeRequest { code: code.clone() }).await?;
            say!("{code}");
        }
        CatalogCommand::Get { code, template_version } => {
            let t = c
                .catalog()
                .get_licence_type(catalog::GetLicenceTypeRequest { code, template_version })
                .await?
                .into_inner();
            let t = t.licence_type.context("no type returned")?;
            let def = definition_from_wire(t.definition.unwrap_or_default())?;
            print_json(&serde_json::json!({
                "status": type_status_text(t.status),
                "created_at": time_text(&t.created_at),
                "published_at": time_text(&t.published_at),
                "retired_at": time_text(&t.retired_at),
                "definition": def,
            }))?;
        }
        CatalogCommand::List { name, authority, holder_category, status } => {
            let holder_category = match holder_category.as_deref() {
                None => common::HolderCategory::Unspecified,
                Some("natural_person") => common::HolderCategory::NaturalPerson,
                Some("legal_person") => common::HolderCategory::LegalPerson,
                Some(other) => bail!("--holder-category {other:?}: use natural_person or legal_person"),
            };
            let status = match status.as_deref() {
                None => catalog::LicenceTypeStatus::Unspecified,
                Some("draft") => catalog::LicenceTypeStatus::Draft,
                Some("published") => catalog::LicenceTypeStatus::Published,
                Some("retired") => catalog::LicenceTypeStatus::Retired,
                Some(other) => bail!("--status {other:?}: use draft, published or retired"),
            };
            let mut token = String::new();
            loop {
                let r = c
                    .catalog()
                    .list_licence_types(catalog::ListLicenceTypesRequest {
                        page_size: 500,
                        page_token: token,
                        name_contains: name.clone(),
                        defining_authority_code: authority.clone(),
                        holder_category: holder_category as i32,
                        status: status as i32,
                    })
                    .await?
                    .into_inner();
                for t in &r.licence_types {
                    let d = t.definition.clone().unwrap_or_default();
                    let version = d.template.as_ref().map_or(0, |t| t.version);
                    say!("{}\t{}\tv{}\t{}", d.code, type_status_text(t.status), version, d.name);
                }
                if r.next_page_token.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
        }
        CatalogCommand::Revise { code, file, new_version } => {
            let template: zhengzhao_core::FaceTemplate = serde_json::from_str(&read_file(&file)?)
                .with_context(|| format!("{} is not a face template", file.display()))?;
            let r = c
                .catalog()
                .revise_template(catalog::ReviseTemplateRequest {
                    code,
                    template: Some(zhengzhao_proto::convert::template_to_wire(&template)),
                    new_version,
                })
                .await?
                .into_inner();
            let d = r.licence_type.and_then(|t| t.definition).context("no type returned")?;
            say!("{} template version {}", d.code, d.template.map_or(0, |t| t.version));
        }
        CatalogCommand::ReviseType { code, file, reason } => {
            let not_a_definition = || format!("{} is not a licence-type definition", file.display());
            let mut v: serde_json::Value = serde_json::from_str(&read_file(&file)?).with_context(not_a_definition)?;
            if let Some(inner) = v.get("definition").cloned() {
                v = inner;
            }
            // The template is not revised here: a placeholder lets the rest parse.
            v.as_object_mut()
                .with_context(not_a_definition)?
                .insert("template".into(), serde_json::json!({ "fields": [] }));
            let def: zhengzhao_core::LicenceTypeDefinition =
                serde_json::from_value(v).with_context(not_a_definition)?;
            def.validate_fields()?;
            let mut definition = definition_to_wire(&def);
            definition.template = None;
            let r = c
                .catalog()
                .revise_licence_type(catalog::ReviseLicenceTypeRequest { code, definition: Some(definition), reason })
                .await?
                .into_inner();
            let d = r.licence_type.and_then(|t| t.definition).context("no type returned")?;
            say!("{}\t{}", d.code, d.name);
        }
        CatalogCommand::Retire { code, reason } => {
            let r =
                c.catalog().retire_licence_type(catalog::RetireLicenceTypeRequest { code, reason }).await?.into_inner();
            let t = r.licence_type.context("no type returned")?;
            say!("{}: {}", t.definition.map(|d| d.code).unwrap_or_default(), type_status_text(t.status));
        }
        CatalogCommand::Versions { code } => {
            let r =
                c.catalog().list_template_versions(catalog::ListTemplateVersionsRequest { code }).await?.into_inner();
            let versions = r
                .versions
                .into_iter()
                .map(|v| {
                    let mut violations = Vec::new();
                    let t =
                        zhengzhao_proto::convert::template_from_wire(v.template.unwrap_or_default(), &mut violations);
                    serde_json::json!({ "created_at": time_text(&v.created_at), "template": t })
                })
                .collect::<Vec<_>>();
            print_json(&versions)?;
        }
        CatalogCommand::Changes { code, limit } => {
            let mut token = String::new();
            let mut left = effective_limit(limit);
            while left > 0 {
                let r = c
                    .catalog()
                    .list_catalog_changes(catalog::ListCatalogChangesRequest {
                        code: code.clone(),
                        page_size: left.min(500),
                        page_token: token,
                    })
                    .await?
                    .into_inner();
                for ch in &r.changes {
                    left = left.saturating_sub(1);
                    say!(
                        "{}",
                        serde_json::json!({
                            "id": ch.id, "recorded_at": time_text(&ch.recorded_at), "code": ch.code, "actor": ch.actor,
                            "change": ch.change, "detail": serde_json::from_str::<serde_json::Value>(&ch.detail_json)?,
                        })
                    );
                }
                if r.next_page_token.is_empty() || r.changes.is_empty() {
                    break;
                }
                token = r.next_page_token;
            }
        }
        CatalogCommand::Export => {
            let r = c.catalog().export_catalog(catalog::ExportCatalogRequest {}).await?.into_inner();
            say!("{}", r.catalog_json);
        }
        CatalogCommand::Import { file } => {
            let catalog_json = read_file(&file)?;
            let r = c.catalog().import_catalog(catalog::ImportCatalogRequest { catalog_json }).await?.into_inner();
            say!("created {}, updated {}, unchanged {}", r.created, r.updated, r.unchanged);
        }
    }
    Ok(())
}

async fn licence_command(c: &Client, cmd: LicenceCommand) -> anyhow::Result<ExitCode> {
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
            let draft: zhengzhao_core::LicenceDraft = serde_json::from_str(&read_file(&file)?)
                .with_context(|| format!("{} is not a licence (see `zhengzhao licence example`)", file.display()))?;
            let r = c
                .issuance()
                .issue_licence(issuance::IssueLicenceRequest { draft: Some((&draft).into()), idempotency_key })
                .await?
                .into_inner();
            say!("{}", r.licence.context("no licence returned")?.identifier);
        }
        LicenceCommand::Get { id, jws } => {
            let l = c.issuance().get_licence(issuance::GetLicenceRequest { identifier: id }).await?.into_inner();
            let l = l.licence.context("no licence returned")?;
            if jws {
                say!("{}", l.jws);
            } else {
                print_json(&licence_json(&l)?)?;
            }
        }
        LicenceCommand::History { id } => {
            let h = c
                .issuance()
                .get_licence_history(issuance::GetLicenceHistoryRequest { identifier: id })
                .await?
                .into_inner();
            for e in h.events {
                say!("{}", event_json(&e, "", ""));
            }
        }
        LicenceCommand::Change { event, file } => {
            let draft: zhengzhao_core::LicenceDraft = serde_json::from_str(&read_file(&file)?)
                .with_context(|| format!("{} is not a licence (see `zhengzhao licence example`)", file.display()))?;
            let r = c
                .issuance()
                .change_licence(issuance::ChangeLicenceRequest {
                    occurred_at: occurred_at(&event)?,
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
                    occurred_at: occurred_at(&event)?,
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
        LicenceCommand::Review(check) => {
            record(c, issuance::EventKind::Review, check.event, check.result, check.next_due).await?
        }
        LicenceCommand::Inspect(check) => {
            record(c, issuance::EventKind::Inspect, check.event, check.result, check.next_due).await?
        }
        LicenceCommand::ReportLoss(e) => {
            record(c, issuance::EventKind::ReportLoss, e, String::new(), String::new()).await?
        }
        LicenceCommand::WithdrawLoss(e) => {
            record(c, issuance::EventKind::WithdrawLoss, e, String::new(), String::new()).await?
        }
        LicenceCommand::Mortgage(e) => {
            record(c, issuance::EventKind::Mortgage, e, String::new(), String::new()).await?
        }
        LicenceCommand::Release(e) => record(c, issuance::EventKind::Release, e, String::new(), String::new()).await?,
        LicenceCommand::Seize(e) => record(c, issuance::EventKind::Seize, e, String::new(), String::new()).await?,
        LicenceCommand::Return(e) => record(c, issuance::EventKind::Return, e, String::new(), String::new()).await?,
        LicenceCommand::Cancel { event, force } => {
            record_event(c, issuance::EventKind::Cancel, event, String::new(), String::new(), force).await?
        }
        LicenceCommand::Replace(e) => {
            let l = record_event_raw(c, issuance::EventKind::Replace, e, String::new(), String::new(), false).await?;
            say!("{}", l.identifier);
        }
        LicenceCommand::Withdraw(e) => {
            record(c, issuance::EventKind::Withdraw, e, String::new(), String::new()).await?
        }
        LicenceCommand::Revoke(e) => record(c, issuance::EventKind::Revoke, e, String::new(), String::new()).await?,
        LicenceCommand::Import { file, format, allow_legacy, batch, errors } => {
            return import_file(c, &file, format.as_deref(), allow_legacy, batch, errors.as_deref()).await;
        }
        LicenceCommand::Watch { after, follow, retry_for } => {
            watch(c, after, follow.then(|| Duration::from_secs(retry_for))).await?
        }
        LicenceCommand::Fetch { id, cause, service_item, case_number } => {
            let r = c
                .exchange()
                .fetch_licence(exchange::FetchLicenceRequest {
                    identifier: id,
                    use_cause: cause,
                    service_item_code: service_item,
                    case_number,
                })
                .await?
                .into_inner();
            print_json(&licence_json(&r.licence.context("no licence returned")?)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The metadata key under which `WatchChanges` says the sequence its feed
/// ends at when the stream starts.
const FEED_END: &str = "zhengzhao-feed-end";

/// Prints the feed after `after`; with `follow` (how long to keep trying to
/// reconnect), keeps following it across restarts of the library.
async fn watch(c: &Client, after: u64, follow: Option<Duration>) -> anyhow::Result<()> {
    let mut cursor = after;
    let mut printed = false;
    let mut first = true;
    // Since when the library has been unavailable, and the next wait.
    let mut outage: Option<(Instant, Duration)> = None;
    loop {
        let request = issuance::WatchChangesRequest { after_sequence: cursor, until_caught_up: follow.is_none() };
        let ended = match c.issuance().watch_changes(request).await {
            Ok(response) => {
                let end = response.metadata().get(FEED_END).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if first
                    && let Some(end) = end
                    && after > end
                {
                    bail!("--after {after} is past the end of the feed, which ends at sequence {end}");
                }
                first = false;
                if outage.take().is_some() {
                    note!("the library is back: following the feed after sequence {cursor}");
                }
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(item)) => {
                            let e = item.event.unwrap_or_default();
                            say!("{}", event_json(&e, &item.type_code, &item.issuer_code));
                            cursor = e.sequence;
                            printed = true;
                        }
                        Ok(None) => {
                            if follow.is_none() {
                                if !printed {
                                    match end {
                                        Some(0) => note!("no events: the feed is empty"),
                                        Some(end) => {
                                            note!("no events after sequence {after}: the feed ends at sequence {end}")
                                        }
                                        None => note!("no events after sequence {after}"),
                                    }
                                }
                                return Ok(());
                            }
                            // A follow stream ended without a status: as if unavailable.
                            break tonic::Status::unavailable("the library ended the feed");
                        }
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        let Some(retry_for) = follow.filter(|_| ended.code() == tonic::Code::Unavailable) else {
            let resume = if printed { format!("; resume with --after {cursor}") } else { String::new() };
            bail!("{}{resume}", one_line(&ended.into()));
        };
        let (since, wait) = *outage.get_or_insert_with(|| {
            note!("the library is unavailable ({}): reconnecting, resuming after sequence {cursor}", ended.message());
            (Instant::now(), Duration::from_millis(250))
        });
        let Some(left) = retry_for.checked_sub(since.elapsed()).filter(|left| !left.is_zero()) else {
            bail!(
                "the library has been unavailable for {}s ({}); gave up reconnecting: resume with --after {cursor}",
                since.elapsed().as_secs(),
                ended.message()
            );
        };
        tokio::time::sleep(wait.min(left)).await;
        outage = Some((since, (wait * 2).min(Duration::from_secs(5))));
    }
}

fn event_json(e: &issuance::LicenceEvent, type_code: &str, issuer_code: &str) -> serde_json::Value {
    let kind = issuance::EventKind::try_from(e.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN");
    let mut v = serde_json::json!({
        "sequence": e.sequence,
        "identifier": e.identifier,
        "kind": kind.trim_start_matches("EVENT_KIND_").to_lowercase(),
        "status_after": status_text(e.status_after).0,
        "actor": e.actor,
        "reason": e.reason,
        "occurred_at": time_text(&e.occurred_at),
        "recorded_at": time_text(&e.recorded_at),
    });
    for (k, val) in
        [("result", &e.result), ("next_due_date", &e.next_due_date), ("related_identifier", &e.related_identifier)]
    {
        if !val.is_empty() {
            v[k] = val.as_str().into();
        }
    }
    if e.backfill {
        v["backfill"] = true.into();
    }
    if !type_code.is_empty() {
        v["type_code"] = type_code.into();
        v["issuer_code"] = issuer_code.into();
    }
    v
}

/// Streams a file of historical licences to the library.
async fn import_file(
    c: &Client,
    file: &std::path::Path,
    format: Option<&str>,
    allow_legacy: bool,
    batch: usize,
    errors_file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use zhengzhao::import::{Format, Rows, count_rows};
    if !(1..=1000).contains(&batch) {
        bail!("--batch must be between 1 and 1000");
    }
    let format = Format::of(file, format)?;
    let mut rows = Rows::open(file, format)?;
    let total = count_rows(file, format)?;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} rows, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<issuance::ImportLicencesRequest>(4);
    let reader_bar = bar.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut local = Vec::new();
        let mut chunk = Vec::with_capacity(batch);
        while let Some(row) = rows.next_row() {
            reader_bar.inc(1);
            match row {
                Ok(r) => chunk.push(r),
                Err(e) => local.push(e),
            }
            if chunk.len() == batch {
                let msg = issuance::ImportLicencesRequest { rows: std::mem::take(&mut chunk), allow_legacy };
                if tx.blocking_send(msg).is_err() {
                    return local;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.blocking_send(issuance::ImportLicencesRequest { rows: chunk, allow_legacy });
        }
        local
    });
    let response = c
        .issuance()
        .max_decoding_message_size(256 << 20)
        .import_licences(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let local = reader.await?;
    bar.finish();
    let r = response?.into_inner();
    let mut lines = Vec::new();
    for e in &local {
        lines.push(serde_json::json!({ "row": e.row_number, "field": "row", "reason": e.reason }));
    }
    for e in &r.errors {
        lines.push(serde_json::json!({ "row": e.row_number, "source_key": e.source_key, "field": e.field, "reason": e.reason }));
    }
    let refused_rows: std::collections::BTreeSet<u64> =
        local.iter().map(|e| e.row_number).chain(r.errors.iter().map(|e| e.row_number)).collect();
    match errors_file {
        Some(path) => {
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            for l in &lines {
                note!("{l}");
            }
        }
    }
    quietly(write_line(format_args!(
        "rows {}, imported {}, already present {}, legacy identifiers {}, refused {}",
        r.received + local.len() as u64,
        r.imported,
        r.already_present,
        r.legacy,
        refused_rows.len()
    )))?;
    Ok(if refused_rows.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(NOT_VALID) })
}

/// Records a version-keeping lifecycle event and prints the licence's new status.
async fn record(
    c: &Client,
    kind: issuance::EventKind,
    e: EventArgs,
    result: String,
    next_due_date: String,
) -> anyhow::Result<()> {
    record_event(c, kind, e, result, next_due_date, false).await
}

/// Records a lifecycle event and returns the licence the library answers with.
async fn record_event_raw(
    c: &Client,
    kind: issuance::EventKind,
    e: EventArgs,
    result: String,
    next_due_date: String,
    force: bool,
) -> anyhow::Result<common::Licence> {
    let r = c
        .issuance()
        .record_event(issuance::RecordEventRequest {
            occurred_at: occurred_at(&e)?,
            identifier: e.id,
            kind: kind as i32,
            reason: e.reason,
            result,
            next_due_date,
            idempotency_key: e.idempotency_key,
            force,
        })
        .await?
        .into_inner();
    r.licence.context("no licence returned")
}

/// Records a version-keeping lifecycle event and prints the licence's new status.
async fn record_event(
    c: &Client,
    kind: issuance::EventKind,
    e: EventArgs,
    result: String,
    next_due_date: String,
    force: bool,
) -> anyhow::Result<()> {
    let l = record_event_raw(c, kind, e, result, next_due_date, force).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("3600").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("400d").is_err());
        assert!(parse_ttl("h").is_err());
    }

    #[test]
    fn status_errors_are_one_line() {
        let e = anyhow::Error::new(tonic::Status::permission_denied("issuer@X may not\nissue"));
        assert_eq!(one_line(&e), "permission denied: issuer@X may not issue");
    }
}
