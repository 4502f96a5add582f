//! Migrations that landed once for several services and now belong to each of their migrators,
//! under the same names.

#[cfg(any(feature = "agent", feature = "notification", feature = "userauth"))]
pub(crate) mod m20261123_000002_create_inbox;
#[cfg(any(feature = "agent", feature = "notification"))]
pub(crate) mod m20261123_000030_outbox_fresh_lane_index;
#[cfg(any(feature = "agent", feature = "notification"))]
pub(crate) mod m20261201_000001_outbox_key_shards;
#[cfg(any(feature = "agent", feature = "notification"))]
pub(crate) mod m20261201_000002_outbox_redrive_history;
#[cfg(any(feature = "agent", feature = "notification"))]
pub(crate) mod m20261203_000001_outbox_commit_cursor;
#[cfg(any(feature = "agent", feature = "notification"))]
pub(crate) mod m20261203_000002_outbox_cursor_index_alone;
