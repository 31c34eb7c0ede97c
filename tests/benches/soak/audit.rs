//! The crash run's audit of the city's database.

use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::workload::Ledger;

/// Looks for every accepted write in the city's database once the sync job
/// has caught up: how many are missing, and how many rows are doubled.
pub async fn audit(city_url: &str, ledger: &Ledger) -> anyhow::Result<(usize, i64)> {
    let mut db = sqlx::PgConnection::connect(city_url).await?;
    let count = |sql: &'static str, v: String| sqlx::query_scalar::<_, i64>(sql).bind(v);
    // District licences arrive through sync: wait for them (up to 3 minutes).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut missing = 0;
        for id in &ledger.district_accepted {
            if count("SELECT count(*) FROM issuance.licences WHERE identifier = $1", id.clone())
                .fetch_one(&mut db)
                .await?
                == 0
            {
                missing += 1;
            }
        }
        if missing == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut lost = 0;
    for id in ledger.city_accepted.iter().chain(&ledger.district_accepted) {
        let n = count("SELECT count(*) FROM issuance.licences WHERE identifier = $1", id.clone())
            .fetch_one(&mut db)
            .await?;
        if n != 1 {
            lost += 1;
            println!("  {id}: {n} rows in the city");
        }
    }
    for key in &ledger.imported {
        let n = count("SELECT count(*) FROM issuance.licences WHERE source_key = $1", key.clone())
            .fetch_one(&mut db)
            .await?;
        if n != 1 {
            lost += 1;
            println!("  import row {key}: {n} licences in the city");
        }
    }
    // What the database holds of the workload's serials, against what was
    // accepted: more rows than accepted writes is a write done twice (or one
    // the ledger missed), fewer is a loss.
    let mut duplicated = 0i64;
    for (pattern, accepted, what) in [
        ("^SOAK[0-9]", ledger.city_accepted.len(), "city issues and changes"),
        ("^SOAKIMP", ledger.imported.len(), "import rows"),
        ("^SOAKD[0-9]", ledger.district_accepted.len(), "district licences"),
    ] {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM issuance.licences WHERE serial ~ $1")
            .bind(pattern)
            .fetch_one(&mut db)
            .await?;
        let accepted = i64::try_from(accepted)?;
        if held != accepted {
            println!("  {what}: {held} rows in the city, {accepted} accepted");
            duplicated += (held - accepted).max(0);
        }
    }
    // Every licence has the event that made it, in the log.
    let unlogged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM issuance.licences l WHERE l.serial ~ '^SOAK' AND NOT EXISTS
         (SELECT 1 FROM issuance.licence_events e WHERE e.identifier = l.identifier AND e.log_index IS NOT NULL)",
    )
    .fetch_one(&mut db)
    .await?;
    if unlogged > 0 {
        println!("  {unlogged} licences without their logged event");
    }
    let doubled_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT identifier FROM issuance.licence_events WHERE kind = 'issue'
         GROUP BY identifier HAVING count(*) > 1) d",
    )
    .fetch_one(&mut db)
    .await?;
    lost += usize::try_from(unlogged)?;
    Ok((lost, duplicated + doubled_events))
}
