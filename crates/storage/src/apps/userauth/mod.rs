//! Userauth's business tables.

mod entity;
pub mod refresh_token_families;
pub mod refresh_tokens;
pub mod revoked_access_tokens;
pub mod token_usage;
pub mod users;
