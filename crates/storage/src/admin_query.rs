//! What the outbox's and the inbox's operator queries (`outbox/admin.rs`, `inbox_admin.rs`)
//! share: a filter's clauses, counting what a condition matches, the reasons rows died of, and
//! the loop of bounded deletes. Each table family keeps only what is its own (its columns, its
//! keys).

use sea_orm::sea_query::{
    Alias, Cond, Condition, Expr, Func, IntoColumnRef, IntoCondition, IntoTableRef, LikeExpr,
    Order, Query, SimpleExpr, Value,
};
use sea_orm::{ConnectionTrait, FromQueryResult};

use crate::outbox::{MAX_BATCH, TOP_REASONS};
use crate::StorageError;

/// The clauses of an admin filter, all of which a row must meet; a field left empty adds none.
pub(crate) struct Clauses(Condition);

impl Clauses {
    pub(crate) fn new() -> Self {
        Self(Cond::all())
    }

    /// `clause`, when there is one.
    pub(crate) fn with(self, clause: Option<impl IntoCondition>) -> Self {
        match clause {
            Some(clause) => Self(self.0.add(clause.into_condition())),
            None => self,
        }
    }

    /// `column = value`, when there is a value.
    pub(crate) fn equals<V: Into<Value>>(
        self,
        column: impl IntoColumnRef,
        value: Option<V>,
    ) -> Self {
        self.with(value.map(|value| Expr::col(column).eq(Into::<Value>::into(value))))
    }

    /// `column < before` (Unix milliseconds), when there is a bound.
    pub(crate) fn before(self, column: impl IntoColumnRef, before: Option<i64>) -> Self {
        self.with(before.map(|before| Expr::col(column).lt(before)))
    }

    /// `column` contains `text` in any letter case, when there is a text.
    pub(crate) fn contains(self, column: impl IntoColumnRef, text: Option<&str>) -> Self {
        self.with(text.map(|text| contains_ignoring_case(column, text)))
    }

    pub(crate) fn condition(self) -> Condition {
        self.0
    }
}

/// `LOWER(column) LIKE LOWER('%text%')` with the text's wildcards escaped, so the match is the
/// same on every backend (PostgreSQL's `LIKE` is case-sensitive, MySQL's and SQLite's are not).
/// `!` is the escape character because a backslash means something else in MySQL string literals.
fn contains_ignoring_case(column: impl IntoColumnRef, text: &str) -> Condition {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '!') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Expr::expr(Func::lower(Expr::col(column)))
        .like(LikeExpr::new(pattern).escape('!'))
        .into_condition()
}

#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

#[derive(FromQueryResult)]
struct ReasonCount {
    reason: Option<String>,
    n: i64,
}

/// How many rows of `table` meet `condition` (counting `column`, which is never null).
pub(crate) async fn count_where<C: ConnectionTrait>(
    conn: &C,
    table: impl IntoTableRef,
    column: impl IntoColumnRef,
    condition: Condition,
) -> Result<u64, StorageError> {
    let stmt = Query::select()
        .expr_as(Func::count(Expr::col(column)), Alias::new("n"))
        .from(table)
        .cond_where(condition)
        .to_owned();
    let n = Count::find_by_statement(conn.get_database_backend().build(&stmt))
        .one(conn)
        .await?
        .map_or(0, |c| c.n.max(0) as u64);
    Ok(n)
}

/// `(last_error, rows)` over the rows of `table` that are `dead`, most frequent first, at most
/// [`TOP_REASONS`] (reasons grouped as the database compares text). `column` is counted.
pub(crate) async fn dead_reasons<C: ConnectionTrait, Col: IntoColumnRef + Copy>(
    conn: &C,
    table: impl IntoTableRef,
    column: Col,
    last_error: Col,
    dead: SimpleExpr,
) -> Result<Vec<(Option<String>, u64)>, StorageError> {
    let n = Alias::new("n");
    let reasons = Query::select()
        .expr_as(Expr::col(last_error), Alias::new("reason"))
        .expr_as(Func::count(Expr::col(column)), n.clone())
        .from(table)
        .and_where(dead)
        .group_by_col(last_error)
        .order_by(n, Order::Desc)
        .order_by(last_error, Order::Asc)
        .limit(TOP_REASONS)
        .to_owned();
    Ok(
        ReasonCount::find_by_statement(conn.get_database_backend().build(&reasons))
            .all(conn)
            .await?
            .into_iter()
            .map(|r| (r.reason, r.n.max(0) as u64))
            .collect(),
    )
}

/// Deletes in batches of at most `batch` rows (capped at [`MAX_BATCH`]) until none is left;
/// returns how many went. `one_batch(size)` deletes one batch (its keys read first, then deleted
/// under the same conditions, so a row that changed meanwhile stays) and returns how many rows
/// it found and how many went: fewer found than `size` means none is left. Each batch is its own
/// short statement, so the table is never locked for long and the work already done stays done
/// if a later batch fails.
pub(crate) async fn delete_in_batches<F, Fut>(
    batch: u64,
    mut one_batch: F,
) -> Result<u64, StorageError>
where
    // A closure returning a future rather than an async closure: the purge's future must stay
    // `Send` for the admin HTTP API's handlers.
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(u64, u64), StorageError>>,
{
    let batch = batch.clamp(1, MAX_BATCH);
    let mut deleted = 0;
    loop {
        let (found, went) = one_batch(batch).await?;
        deleted += went;
        if found < batch {
            return Ok(deleted);
        }
    }
}
