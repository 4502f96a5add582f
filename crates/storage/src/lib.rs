//! Every table and every SQL statement of smartflow. The same code runs on PostgreSQL,
//! MySQL/MariaDB and SQLite; other crates call these repository functions and never build queries.

pub mod chat_history;
pub mod conflict;
pub mod connect;
pub mod error;
mod error_text;
pub mod inbox;
pub mod notification;
pub mod outbox;
pub mod refresh_tokens;
pub mod revoked_access_tokens;
mod schema;
mod time;
pub mod token_usage;
pub mod users;

pub use connect::{connect, ConnectConfig};
pub use error::StorageError;
pub use time::now_millis;

pub use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait,
};
