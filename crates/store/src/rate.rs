//! Request counts for rate limits, per subject (a user) and fixed window, in one table that
//! every gateway replica shares: an increment is one atomic upsert, so replicas never lose
//! each other's counts.

use sea_orm::sea_query::{Alias, Expr, OnConflict, Query};
use sea_orm::{ConnectionTrait, ExprTrait, TransactionTrait};

use crate::Store;
use crate::codec::col;
use crate::error::{Result, db};

/// What [`Store::count_requests`] saw: the subject's requests in the current window (these ones
/// included) and in the window before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowCounts {
    pub current: u64,
    pub previous: u64,
}

impl Store {
    /// Counts `n` requests of `subject` (at least one) in the window of `window_s` seconds that
    /// holds the unix time `now_s`, and returns the counts of this window and the one before.
    /// Windows older than that are deleted when a new window begins for the subject.
    pub async fn count_requests(&self, subject: &str, n: u64, window_s: u64, now_s: u64) -> Result<WindowCounts> {
        let window_s = Ord::max(window_s, 1);
        let n = i64::try_from(Ord::max(n, 1)).unwrap_or(i64::MAX);
        let start = i64::try_from(now_s - now_s % window_s).unwrap_or(i64::MAX);
        let previous_start = start - i64::try_from(window_s).unwrap_or(i64::MAX);
        let table = Alias::new("rate_limits");
        let (subject_c, start_c, count_c) = (Alias::new("subject"), Alias::new("window_start"), Alias::new("count"));
        let txn = self.db.begin().await.map_err(db("begin counting a request"))?;
        let mut upsert = Query::insert();
        upsert
            .into_table(table.clone())
            .columns([subject_c.clone(), start_c.clone(), count_c.clone()])
            .values_panic([subject.into(), start.into(), n.into()])
            .on_conflict(
                OnConflict::columns([subject_c.clone(), start_c.clone()])
                    .value(count_c.clone(), Expr::col((table.clone(), count_c.clone())).add(n))
                    .to_owned(),
            )
            .returning(Query::returning().column(count_c.clone()));
        let what = || "a request count".to_string();
        let row = txn.query_one(&upsert).await.map_err(db("count a request"))?;
        let current: i64 = match &row {
            Some(row) => col(row, "count", what)?,
            None => n,
        };
        let mut before = Query::select();
        before
            .column(count_c.clone())
            .from(table.clone())
            .and_where(Expr::col(subject_c.clone()).eq(subject))
            .and_where(Expr::col(start_c.clone()).eq(previous_start));
        let previous: i64 = match txn.query_one(&before).await.map_err(db("read the previous window's count"))? {
            Some(row) => col(&row, "count", what)?,
            None => 0,
        };
        if current == n {
            let mut old = Query::delete();
            old.from_table(table)
                .and_where(Expr::col(subject_c).eq(subject))
                .and_where(Expr::col(start_c).lt(previous_start));
            txn.execute(&old).await.map_err(db("drop old request counts"))?;
        }
        txn.commit().await.map_err(db("commit a request count"))?;
        Ok(WindowCounts {
            current: u64::try_from(current).unwrap_or(0),
            previous: u64::try_from(previous).unwrap_or(0),
        })
    }
}
