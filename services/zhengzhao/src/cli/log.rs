//! The checks anyone can run: `zhengzhao verify` (a licence or a signed
//! document), `zhengzhao log` (the transparency log's checkpoint and
//! proofs) and `zhengzhao audit` (the log checked from the outside).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use zhengzhao_proto::issuance::v1 as issuance;
use zhengzhao_proto::verification::v1 as verification;

use super::args::read_file;
use super::client::{Client, ClientArgs};
use super::output::{answer, note, print_json, quietly, say, time_text, wire_word, write_line};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Licence identifier.
    #[arg(required_unless_present_any = ["document", "presentation"], conflicts_with_all = ["document", "presentation"])]
    id: Option<String>,
    /// A file holding a JWS compact serialisation.
    #[arg(long, conflicts_with = "presentation")]
    document: Option<PathBuf>,
    /// A file holding a holder's presentation (SD-JWT~disclosures~KB-JWT).
    #[arg(long)]
    presentation: Option<PathBuf>,
    /// With --presentation: check without asking the library (signature,
    /// disclosures, binding, freshness; not single use or current status).
    #[arg(long, requires = "presentation")]
    offline: bool,
    /// With --offline: the published keys (a JWKS file) [default: fetched from the library].
    #[arg(long, requires = "offline")]
    keys: Option<PathBuf>,
    /// Also prove the licence's events are in the transparency log (by identifier).
    #[arg(long, conflicts_with = "document")]
    with_proof: bool,
}

#[derive(Debug, Subcommand)]
pub enum LogCommand {
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

/// Audits the transparency log of issuance (`--from`), the exchange's usage
/// log (`--usage`), or both.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("logs").required(true).multiple(true).args(["from", "usage"])))]
pub struct AuditArgs {
    /// A file holding a checkpoint saved earlier (`log checkpoint`): audit
    /// the transparency log of issuance from it.
    #[arg(long = "from", value_name = "CHECKPOINT")]
    from: Option<PathBuf>,
    /// Audit the usage log: every record rebuilt against the current signed
    /// checkpoint.
    #[arg(long)]
    usage: bool,
    /// A usage-log checkpoint saved earlier (`--save-usage`): also prove the
    /// usage log only grew since.
    #[arg(long, value_name = "CHECKPOINT", requires = "usage")]
    usage_from: Option<PathBuf>,
    /// Write the current usage-log checkpoint here when the audit passes.
    #[arg(long, value_name = "FILE", requires = "usage")]
    save_usage: Option<PathBuf>,
    /// A file of licence identifiers to prove, one per line.
    #[arg(long)]
    licences: Option<PathBuf>,
    /// The library key (JWK file) to trust; default: the key the library serves.
    #[arg(long)]
    library_jwk: Option<PathBuf>,
    /// Write the current checkpoint here when the audit passes.
    #[arg(long, requires = "from")]
    save: Option<PathBuf>,
}

/// A checkpoint, as `log checkpoint --json` prints it.
#[derive(Serialize)]
struct CheckpointOut<'a> {
    origin: &'a str,
    tree_size: u64,
    root_hash: String,
    timestamp: String,
    jws: &'a str,
}

/// A licence's logged events, as `log prove` prints them.
#[derive(Serialize)]
struct ProofOut<'a> {
    tree_size: u64,
    checkpoint: &'a str,
    events: Vec<LoggedOut>,
}

/// One logged event with its audit path.
#[derive(Serialize)]
struct LoggedOut {
    leaf_index: u64,
    /// The leaf's JSON; `null` when it is not readable (or not shown).
    leaf: serde_json::Value,
    audit_path: Vec<String>,
}

pub async fn log(cli: &ClientArgs, cmd: LogCommand) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let r = c.issuance().get_checkpoint(issuance::GetCheckpointRequest {}).await?.into_inner();
    let cp = r.checkpoint.context("no checkpoint returned")?;
    match cmd {
        LogCommand::Checkpoint { json: false } => say!("{}", cp.jws),
        LogCommand::Checkpoint { json: true } => print_json(&CheckpointOut {
            origin: &cp.origin,
            tree_size: cp.tree_size,
            root_hash: hex::encode(&cp.root_hash),
            timestamp: time_text(&cp.timestamp),
            jws: &cp.jws,
        })?,
        LogCommand::Prove { identifier, tree_size } => {
            let p = c
                .issuance()
                .get_inclusion_proof(issuance::GetInclusionProofRequest {
                    identifier,
                    tree_size: tree_size.unwrap_or(cp.tree_size),
                })
                .await?
                .into_inner();
            let events = p
                .events
                .iter()
                .map(|e| LoggedOut {
                    leaf_index: e.leaf_index,
                    leaf: serde_json::from_slice(&e.leaf).unwrap_or_default(),
                    audit_path: e.audit_path.iter().map(hex::encode).collect(),
                })
                .collect();
            print_json(&ProofOut { tree_size: p.tree_size, checkpoint: &cp.jws, events })?;
        }
    }
    Ok(())
}

/// Verifies a licence or a document: exit 0 when valid, 3 when the check
/// ran and the answer is no (a malformed identifier or document included),
/// 1 when it could not run (an unreadable file, no token, no server).
pub async fn verify(cli: &ClientArgs, v: VerifyArgs) -> anyhow::Result<ExitCode> {
    if let Some(p) = &v.presentation {
        let valid = super::holder::verify_presentation(cli, p, v.offline, v.keys.as_deref()).await?;
        return Ok(answer(valid));
    }
    let document = v.document.as_ref().map(|f| read_file(f).map(|text| (f, text))).transpose()?;
    let c = Client::connect(cli).await?;
    let answered = match (v.id, document) {
        (Some(id), _) => c
            .verification()
            .verify_licence(verification::VerifyLicenceRequest {
                identifier: id,
                include_inclusion_proof: v.with_proof,
            })
            .await
            .map(|r| r.into_inner().verification),
        (None, Some((file, jws))) if jws.trim().is_empty() => {
            return malformed(&format!("{} is empty: there is no document to verify", file.display()));
        }
        (None, Some((_, jws))) => c
            .verification()
            .verify_document(verification::VerifyDocumentRequest { jws: jws.trim().to_owned() })
            .await
            .map(|r| r.into_inner().verification),
        (None, None) => bail!("give an identifier or --document FILE"),
    };
    let verdict = match answered {
        Ok(v) => v.context("the server returned no verification")?,
        // What was presented cannot be any licence: the answer is no.
        Err(s) if s.code() == tonic::Code::InvalidArgument => return malformed(&s.message().replace('\n', " ")),
        Err(s) => return Err(s.into()),
    };
    let outcome = verification::VerificationOutcome::try_from(verdict.outcome)
        .unwrap_or(verification::VerificationOutcome::Unspecified);
    let name = wire_word(Some(outcome.as_str_name()), "VERIFICATION_OUTCOME_").replace('_', " ");
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
    Ok(answer(outcome == verification::VerificationOutcome::Valid))
}

/// What was presented is no licence at all: says why; the answer is no.
fn malformed(why: &str) -> anyhow::Result<ExitCode> {
    quietly(write_line(format_args!("malformed: {why}")))?;
    Ok(answer(false))
}

/// Audits the library's log. The auditor's own files are read and checked
/// first: a problem with them is an error (exit 1), never an audit failure.
pub async fn audit(cli: &ClientArgs, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let from = match &a.from {
        Some(f) => {
            let text = read_file(f)?;
            zhengzhao::audit::read_checkpoint(&text).map_err(|e| {
                anyhow::anyhow!("--from {}: {e} (save one with `zhengzhao log checkpoint`)", f.display())
            })?;
            Some(text)
        }
        None => None,
    };
    let usage_from = match &a.usage_from {
        Some(f) => {
            let text = read_file(f)?;
            zhengzhao::usage_audit::read_usage_checkpoint(&text).map_err(|e| {
                anyhow::anyhow!(
                    "--usage-from {}: {e} (save one with `zhengzhao audit --usage --save-usage FILE`)",
                    f.display()
                )
            })?;
            Some(text)
        }
        None => None,
    };
    let identifiers = match &a.licences {
        Some(f) => identifiers_in(f)?,
        None => Vec::new(),
    };
    let pinned = a.library_jwk.as_deref().map(library_key_in).transpose()?;
    let c = Client::connect(cli).await?;
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    let mut saves = Vec::new();
    if let Some(from) = &from {
        let report = zhengzhao::audit::audit(&mut c.issuance(), from, &identifiers, pinned.as_ref()).await?;
        failures.extend(report.failures.iter().cloned());
        passed.push(format!(
            "the log grew from {} to {} leaves consistently; {} licence(s) proven",
            report.from_size, report.current_size, report.licences_checked
        ));
        if let Some(path) = &a.save {
            saves.push((path.clone(), report.current.clone()));
        }
    }
    if a.usage {
        let report =
            zhengzhao::usage_audit::audit_usage(&mut c.exchange(), &mut c.signing(), usage_from.as_deref()).await?;
        failures.extend(report.failures.iter().map(|f| format!("usage log: {f}")));
        passed.push(match report.from_size {
            Some(n) => format!(
                "the usage log grew from {n} to {} records consistently, every record rebuilt",
                report.current_size
            ),
            None => format!("the usage log's {} records rebuild its signed checkpoint", report.current_size),
        });
        if let Some(path) = &a.save_usage {
            saves.push((path.clone(), report.current.clone()));
        }
    }
    if !failures.is_empty() {
        for f in &failures {
            note!("AUDIT FAILED: {f}");
        }
        note!("AUDIT FAILED: {} problem(s); do not trust this library's history", failures.len());
        return Ok(answer(false));
    }
    for (path, checkpoint) in saves {
        std::fs::write(&path, format!("{checkpoint}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    }
    quietly(write_line(format_args!("audit passed: {}", passed.join("; "))))?;
    Ok(answer(true))
}

/// The licence identifiers in `--licences FILE`, one a line.
fn identifiers_in(f: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let mut identifiers = Vec::new();
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
    Ok(identifiers)
}

/// The library key in `--library-jwk FILE`.
fn library_key_in(f: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let not_a_key = || format!("--library-jwk {} is not the library's public key (a P-256 JWK)", f.display());
    let jwk: serde_json::Value = serde_json::from_str(&read_file(f)?).with_context(not_a_key)?;
    zhengzhao_crypto::Es256PublicKey::from_jwk(&jwk).map_err(|e| anyhow::anyhow!("{}: {e}", not_a_key()))?;
    Ok(jwk)
}
