//! `zhengzhao read-status`: where the reads that may lag are served from.

use super::client::{Client, ClientArgs};
use super::output::say;

/// `zhengzhao read-status`.
pub async fn read_status(args: &ClientArgs) -> anyhow::Result<()> {
    let c = Client::connect(args).await?;
    let s = c
        .issuance()
        .get_read_status(zhengzhao_proto::issuance::v1::GetReadStatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    if s.replica {
        say!(
            "reads that may lag: a streaming replica, {} bytes of WAL behind, {:.1} s behind",
            s.lag_bytes,
            s.lag_seconds
        );
    } else {
        say!("reads that may lag: the primary database (no read replica configured)");
    }
    Ok(())
}
