//! A holder's licences by holder ID: what the exchange asks when a consumer
//! looks a holder up (and the holders' portal, later), across issuers.

use zhengzhao_auth::{Action, Principal, authorize};
use zhengzhao_core::{HolderQuery, LicenceRecord};
use zhengzhao_proto::ServiceError;

use crate::{Issuance, record};

/// Largest page of a holder's licences.
pub const MAX_PAGE_SIZE: u32 = 500;
/// The page size a request of 0 gets.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

impl Issuance {
    /// One page of a holder's licences in identifier order, with the next
    /// page's token (empty on the last). The status filter applies to the
    /// status as of today, after the page is read: a page may hold fewer
    /// licences than asked for while a next token follows.
    pub async fn holder_licences(
        &self,
        who: &Principal,
        q: &HolderQuery,
    ) -> Result<(Vec<LicenceRecord>, String), ServiceError> {
        authorize(who, &Action::FindHolderLicences)?;
        let number = q.check()?;
        let size = match q.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(ServiceError::invalid("page_size", format!("at most {MAX_PAGE_SIZE}")));
            }
            n => n,
        };
        let mut sql = format!(
            "SELECT {} FROM licences WHERE holder_id_type = $1 AND holder_id_number = $2 AND identifier > $3",
            record::LICENCE_COLUMNS
        );
        if !q.type_codes.is_empty() {
            let marks: Vec<String> = (0..q.type_codes.len()).map(|i| format!("${}", i + 5)).collect();
            sql.push_str(&format!(" AND type_code IN ({})", marks.join(", ")));
        }
        sql.push_str(" ORDER BY identifier LIMIT $4");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(&q.holder_id_type)
            .bind(&number)
            .bind(&q.page_token)
            .bind(i64::from(size) + 1);
        for code in &q.type_codes {
            query = query.bind(code);
        }
        let rows = query.fetch_all(&self.db.pool).await?;
        let more = rows.len() > size as usize;
        let today = self.clock.today();
        let mut page = Vec::with_capacity(rows.len().min(size as usize));
        let mut last = String::new();
        for row in rows.iter().take(size as usize) {
            let licence = record::licence_from_row(row, today)?;
            last.clone_from(&licence.identifier);
            if q.status.is_none_or(|s| s == licence.status) {
                page.push(licence);
            }
        }
        Ok((page, if more { last } else { String::new() }))
    }
}
