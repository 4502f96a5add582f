//! The notification service's business table.

mod entity;
pub mod records;
