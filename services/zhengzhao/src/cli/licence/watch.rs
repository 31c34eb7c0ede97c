//! `zhengzhao licence watch`: prints the change feed after a cursor and,
//! with `--follow`, keeps following it across restarts of the library.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use zhengzhao_proto::issuance::v1 as issuance;

use super::super::client::Client;
use super::super::output::{note, one_line, print_json_line};
use super::{EventOut, Placement};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Print the events after this sequence; 0 for the whole feed.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// Keep following the feed. When the library becomes unavailable
    /// (it is shutting down, say) the follower reconnects with backoff,
    /// resuming after the last event it printed.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: how long to keep trying to reconnect before
    /// giving up with exit 1 (0: give up at once).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, requires = "follow")]
    pub retry_for: u64,
}

/// The metadata key under which `WatchChanges` says the sequence its feed
/// ends at when the stream starts.
const FEED_END: &str = "zhengzhao-feed-end";

/// Prints the feed after `after`; with `follow` (how long to keep trying to
/// reconnect), keeps following it across restarts of the library.
pub async fn run(c: &Client, after: u64, follow: Option<Duration>) -> anyhow::Result<()> {
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
                            let placement = (!item.type_code.is_empty())
                                .then(|| Placement { type_code: &item.type_code, issuer_code: &item.issuer_code });
                            print_json_line(&EventOut::of(&e, placement))?;
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
