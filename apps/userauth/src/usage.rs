//! Token-usage accounting: the handler that turns each `agent.token.usage.recorded` event into a
//! ledger row and an addition to the user's usage.
//!
//! Two keys make a redelivered event change nothing, both written in the handler's transaction:
//! the bus's inbox row `(userauth, event_id)` (userauth consumes another service's events, so
//! the runner is `ConsumerRunner::for_subscriber`), and the ledger's primary key, the event id.
//! The inbox is what the bus checks first and where a permanently failing event is recorded as
//! dead with its reason; the ledger key is the business rule itself, so it holds even if the
//! inbox is pruned, a second consumer name is configured, or events are replayed by hand.

use async_trait::async_trait;
use sea_orm::DatabaseTransaction;
use smartflow_bus::{BusError, HandlerError, HandlerRegistry, TypedHandler};
use smartflow_domain::Envelope;
use smartflow_storage::token_usage::{self, Recorded, UsageEntry};

use crate::events::TokenUsageRecorded;

/// Records one usage event: ledger row plus usage addition, or nothing if already recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordTokenUsage;

#[async_trait]
impl TypedHandler<TokenUsageRecorded> for RecordTokenUsage {
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        event: TokenUsageRecorded,
        envelope: &Envelope,
    ) -> Result<(), HandlerError> {
        let tokens = i64::try_from(event.tokens).map_err(|_| {
            HandlerError::Permanent(format!(
                "{} tokens is more than can be counted",
                event.tokens
            ))
        })?;
        let entry = UsageEntry {
            event_id: envelope.event_id.to_string(),
            user_id: event.user_id,
            conversation_id: event.conversation_id,
            tokens,
            occurred_at: envelope.occurred_at.timestamp_millis(),
        };
        match token_usage::record(txn, &entry).await? {
            Recorded::Added => {
                tracing::debug!(user_id = %entry.user_id, tokens, "token usage recorded");
                Ok(())
            }
            Recorded::Duplicate => {
                tracing::debug!(event_id = %entry.event_id, "token usage already in the ledger");
                Ok(())
            }
            // Users are never deleted and the agent only serves authenticated users, so this is
            // an event that can never apply: dead, with the reason kept in the inbox.
            Recorded::UnknownUser => Err(HandlerError::Permanent(format!(
                "no user `{}` to charge {tokens} tokens to",
                entry.user_id
            ))),
        }
    }
}

/// Every handler of userauth's consumer.
pub fn registry() -> Result<HandlerRegistry, BusError> {
    HandlerRegistry::builder()
        .on::<TokenUsageRecorded, _>(RecordTokenUsage)
        .build()
}
