//! `zhengzhao usage-log`: who used which licence, why, and whether the
//! exchange let them (administrators and auditors).

use clap::Args;
use serde::Serialize;
use zhengzhao_proto::exchange::v1 as exchange;

use super::args::{DEFAULT_LIMIT, pages};
use super::client::{Client, ClientArgs};
use super::output::{print_json_line, time_text, wire_word};

#[derive(Debug, Args)]
pub struct UsageLogArgs {
    /// Only accesses to this licence.
    #[arg(long, default_value = "")]
    identifier: String,
    /// At most this many entries, newest first; 0 means the default, 100,
    /// as a page size of 0 does in the API.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    limit: u32,
}

/// One use of a licence, as `usage-log` prints it.
#[derive(Serialize)]
struct UsageOut<'a> {
    id: u64,
    accessed_at: String,
    consumer: &'a str,
    role: &'a str,
    identifier: &'a str,
    use_cause: &'a str,
    service_item_code: &'a str,
    case_number: &'a str,
    decision: String,
    refusal_reason: &'a str,
}

impl<'a> From<&'a exchange::UsageRecord> for UsageOut<'a> {
    fn from(r: &'a exchange::UsageRecord) -> Self {
        let decision = exchange::UsageDecision::try_from(r.decision).ok().map(|d| d.as_str_name());
        UsageOut {
            id: r.id,
            accessed_at: time_text(&r.accessed_at),
            consumer: &r.consumer_code,
            role: &r.consumer_role,
            identifier: &r.identifier,
            use_cause: &r.use_cause,
            service_item_code: &r.service_item_code,
            case_number: &r.case_number,
            decision: wire_word(decision, "USAGE_DECISION_"),
            refusal_reason: &r.refusal_reason,
        }
    }
}

pub async fn run(cli: &ClientArgs, u: UsageLogArgs) -> anyhow::Result<()> {
    let c = Client::connect(cli).await?;
    let page = async |page_size, page_token| {
        let r = c
            .exchange()
            .list_usage_log(exchange::ListUsageLogRequest { identifier: u.identifier.clone(), page_size, page_token })
            .await?
            .into_inner();
        Ok((r.records, r.next_page_token))
    };
    pages(u.limit, page, |rec| print_json_line(&UsageOut::from(&rec))).await
}
