//! Column names as the queries in this crate spell them. The migrations crate creates the tables.

use sea_orm::DeriveIden;

#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Outbox {
    Id,
    EventId,
    EventType,
    EventVersion,
    MessageKey,
    Topic,
    Payload,
    Traceparent,
    Status,
    RetryCount,
    MaxRetry,
    NextRetryAt,
    LastError,
    LockedBy,
    LockedUntil,
    CreatedAt,
    PublishedAt,
    ConsumedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Inbox {
    Table,
    Consumer,
    EventId,
    EventType,
    Status,
    LastError,
    HandledAt,
}

#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum ChatHistories {
    Table,
    Id,
    EventId,
    ConversationId,
    UserId,
    Role,
    Content,
    CreatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum Users {
    Table,
    Id,
    Email,
    PasswordHash,
    TokenQuota,
    TokenUsage,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum RefreshTokens {
    Table,
    TokenHash,
    FamilyId,
    UserId,
    AccessJti,
    AccessExpiresAt,
    IssuedAt,
    ExpiresAt,
    RetiredAt,
    RevokedAt,
}

#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum TokenUsageLedger {
    Table,
    EventId,
    UserId,
    ConversationId,
    Tokens,
    OccurredAt,
    RecordedAt,
}

#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum RevokedAccessTokens {
    Table,
    Jti,
    UserId,
    ExpiresAt,
    RevokedAt,
}

#[derive(DeriveIden, Clone, Copy)]
pub(crate) enum NotificationRecords {
    Table,
    Id,
    Channel,
    DedupeKey,
    SourceEventId,
    Payload,
    Status,
    Attempts,
    MaxAttempts,
    NextRetryAt,
    LeaseOwner,
    LeaseUntil,
    LastError,
    ProviderResponse,
    CreatedAt,
    UpdatedAt,
    SentAt,
}
