//! Retention: the rows the bus is done with, deleted once they are old enough.

use sea_orm::sea_query::{Cond, Expr};
use sea_orm::ConnectionTrait;
use smartflow_domain::OutboxStatus;

use super::{status_is, OutboxTable};
use crate::entity::outbox::Column as Outbox;
use crate::StorageError;

/// The topics one retention pass covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topics<'a> {
    /// The rows of this topic.
    Only(&'a str),
    /// The rows of every topic but these (those with a retention of their own).
    AllBut(&'a [String]),
}

impl OutboxTable {
    /// Deletes the rows of `topics` the bus is done with and that last changed (`updated_at`)
    /// before `before` (Unix milliseconds): `consumed` rows, and `published` rows with no
    /// consumption deadline (handed off to other services' consumers, which deduplicate in
    /// their own databases, or published with re-sends switched off). Never a row still to be
    /// sent, sent again or looked at by an operator (`pending`, `published` awaiting its
    /// consumer, `dead`, `stored`). One batch of at most `batch` rows (two short statements),
    /// so the table is never locked for long and the caller can pace the batches; returns how
    /// many rows were found and how many went (fewer found than `batch`: none is left).
    pub async fn delete_done<C: ConnectionTrait>(
        &self,
        conn: &C,
        topics: Topics<'_>,
        before: i64,
        batch: u64,
    ) -> Result<(u64, u64), StorageError> {
        let done = Cond::any()
            .add(status_is(OutboxStatus::Consumed))
            .add(status_is(OutboxStatus::Published).and(Expr::col(Outbox::NextRetryAt).is_null()));
        let topic = match topics {
            Topics::Only(topic) => Expr::col(Outbox::Topic).eq(topic),
            Topics::AllBut([]) => Expr::value(true),
            Topics::AllBut(others) => Expr::col(Outbox::Topic).is_not_in(others.iter().cloned()),
        };
        let condition = Cond::all()
            .add(done)
            .add(topic)
            .add(Expr::col(Outbox::UpdatedAt).lt(before));
        self.delete_one_batch(conn, condition, batch).await
    }
}
