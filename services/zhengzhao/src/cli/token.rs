//! `zhengzhao token`: mint a bearer token with the operator's token key;
//! `token revoke`, `token revoked` and `token rotate-key`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use zhengzhao_auth::Role;
use zhengzhao_proto::auth::v1 as auth;

use super::args::{parse_ttl, rfc3339, timestamp};
use super::client::{Client, ClientArgs};
use super::output::{note, print_json, print_json_line, say, time_text};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: Option<TokenCommand>,
    /// The operator's directory (holds token-key.pem).
    #[arg(long, default_value = "zhengzhao-data", global = true)]
    data_dir: PathBuf,
    /// The caller's role.
    #[arg(long, required = true)]
    role: Option<OperatorRole>,
    /// The caller's unified social credit code.
    #[arg(long, required = true)]
    agency: Option<String>,
    /// Lifetime: seconds, or a number with s, m, h or d; at most 12h for a
    /// person's role, 31d for sync.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// The person acting (经办人), whom the usage log and usage-list
    /// history record; at most 64 characters.
    #[arg(long, default_value = "")]
    operator: String,
    /// Print the token with its ID (jti) and expiry as JSON; otherwise the
    /// token goes to stdout and its ID and expiry to stderr.
    #[arg(long)]
    json: bool,
}

/// The roles an operator mints tokens for (services mint their own): the
/// CLI's spelling of [`zhengzhao_auth::OPERATOR_ROLES`].
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OperatorRole {
    Admin,
    Issuer,
    Consumer,
    Portal,
    Sync,
    Auditor,
}

impl From<OperatorRole> for Role {
    fn from(r: OperatorRole) -> Role {
        match r {
            OperatorRole::Admin => Role::Admin,
            OperatorRole::Issuer => Role::Issuer,
            OperatorRole::Consumer => Role::Consumer,
            OperatorRole::Portal => Role::Portal,
            OperatorRole::Sync => Role::Sync,
            OperatorRole::Auditor => Role::Auditor,
        }
    }
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

/// A freshly minted token, as `--json` prints it.
#[derive(Serialize)]
struct Minted<'a> {
    token: &'a str,
    token_id: &'a str,
    role: String,
    agency: &'a str,
    expires_at: &'a str,
}

/// A revoked token, as `token revoked` prints it.
#[derive(Serialize)]
struct Revoked<'a> {
    token_id: &'a str,
    expires_at: String,
    revoked_at: String,
    actor: &'a str,
    reason: &'a str,
}

impl<'a> From<&'a auth::RevokedToken> for Revoked<'a> {
    fn from(t: &'a auth::RevokedToken) -> Self {
        Revoked {
            token_id: &t.token_id,
            expires_at: time_text(&t.expires_at),
            revoked_at: time_text(&t.revoked_at),
            actor: &t.actor,
            reason: &t.reason,
        }
    }
}

pub async fn run(cli: &ClientArgs, t: TokenArgs) -> anyhow::Result<()> {
    match t.command {
        Some(TokenCommand::Revoke { token_id, until, reason }) => {
            let c = Client::connect(cli).await?;
            let revoked = c
                .tokens()
                .revoke_token(auth::RevokeTokenRequest { token_id, expires_at: until.map(timestamp), reason })
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
                print_json_line(&Revoked::from(t))?;
            }
        }
        None => {
            let (Some(role), Some(agency)) = (t.role, t.agency) else {
                bail!("--role and --agency are required to mint a token");
            };
            mint(&t.data_dir, role.into(), &agency, &t.ttl, &t.operator, t.json)?;
        }
    }
    Ok(())
}

/// Mints a token for `role` at `agency`, within the role's longest lifetime.
fn mint(
    data_dir: &std::path::Path,
    role: Role,
    agency: &str,
    ttl_text: &str,
    operator: &str,
    json: bool,
) -> anyhow::Result<()> {
    let ttl = parse_ttl(ttl_text)?;
    let max = role.max_token_lifetime();
    if ttl > max {
        bail!(
            "--ttl {ttl_text}: a {role} token may live at most {} (mint a new one when it expires)",
            zhengzhao_auth::token::human(max)
        );
    }
    let authority = zhengzhao_server::keys::operator_authority(data_dir)?;
    let minted = authority.issue_for(agency, role, ttl, operator)?;
    let expires = minted.expires_at.format(&time::format_description::well_known::Rfc3339)?;
    if json {
        print_json(&Minted {
            token: &minted.token,
            token_id: &minted.token_id,
            role: role.to_string(),
            agency,
            expires_at: &expires,
        })?;
    } else {
        say!("{}", minted.token);
        note!("token id (jti) {}, {role} for {agency}, expires {expires}", minted.token_id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_flag_takes_exactly_the_operator_roles() {
        let roles: Vec<Role> = OperatorRole::value_variants().iter().map(|&r| r.into()).collect();
        assert_eq!(roles, zhengzhao_auth::OPERATOR_ROLES);
        for r in OperatorRole::value_variants() {
            let name = r.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(name, Some(Role::from(*r).to_string()));
        }
    }
}
