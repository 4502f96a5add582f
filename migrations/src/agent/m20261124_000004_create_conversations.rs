//! Conversations and their owners. A conversation belongs to the user who started it; the agent
//! writes the row in the transaction that accepts the first message, so ownership is settled
//! before the message is stored asynchronously.
//!
//! Conversations from before this migration have chat rows but no owner: each is given to the
//! user of its earliest message (by `created_at`, then by storage order), the one who started it.

use sea_orm_migration::prelude::*;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    OwnerUserId,
    CreatedAt,
}

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261124_000004_create_conversations"
    }
}

/// The owner of every conversation that has messages and no row yet: the user of its earliest
/// message. Plain SQL every backend reads alike; the `NOT EXISTS` on `conversations` makes a
/// second run change nothing.
const BACK_FILL: &str = "INSERT INTO conversations (id, owner_user_id, created_at) \
     SELECT h.conversation_id, h.user_id, h.created_at FROM chat_histories h \
     WHERE NOT EXISTS (SELECT 1 FROM chat_histories e \
         WHERE e.conversation_id = h.conversation_id \
         AND (e.created_at < h.created_at OR (e.created_at = h.created_at AND e.id < h.id))) \
     AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.id = h.conversation_id)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Conversations::Id)
                            .string_len(128)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Conversations::OwnerUserId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Conversations::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(BACK_FILL)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Conversations::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
