//! Every table and every SQL statement of smartflow. The same code runs on PostgreSQL,
//! MySQL/MariaDB and SQLite; other crates call these repository functions and never build queries.
//!
//! The bus's own tables, [`outbox`] and [`inbox`], work under any table name, so any service can
//! keep them next to its own tables. The tables of this workspace's services sit behind cargo
//! features named after them (`agent`: [`chat_history`], [`conversations`]; `notification`:
//! [`notification`]; `userauth`: [`users`], [`refresh_token_families`], [`refresh_tokens`],
//! [`revoked_access_tokens`], [`token_usage`]), none on by default, so a dependent inherits none
//! of them.
//!
//! Rows are sea-orm entities (`entity/`, and each service's `apps/<service>/entity/`): ordinary
//! reads and writes go through the entity API, and the statements an entity cannot express
//! (claims with `SKIP LOCKED`, batch settles, anything on a table named at run time) are
//! sea-query written against the entity's columns, decoded into `FromQueryResult` types.

mod admin_query;
mod apps;
pub mod catalog;
pub mod conflict;
pub mod connect;
mod entity;
pub mod error;
mod error_text;
pub mod inbox;
pub mod inbox_admin;
pub mod outbox;
mod table_name;
mod time;

#[cfg(feature = "agent")]
pub use apps::agent::{chat_history, conversations};
#[cfg(feature = "notification")]
pub use apps::notification::records as notification;
#[cfg(feature = "userauth")]
pub use apps::userauth::{
    refresh_token_families, refresh_tokens, revoked_access_tokens, token_usage, users,
};

pub use connect::{connect, ConnectConfig};
pub use error::StorageError;
pub use time::now_millis;

pub use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait,
};
