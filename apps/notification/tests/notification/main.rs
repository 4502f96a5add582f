//! The notification service against real databases (SQLite, PostgreSQL, MariaDB), the
//! in-process Kafka-protocol broker and a local fake of the Feishu webhook. Every test has its
//! own database, topic names and fake webhook, so they run in parallel.

mod delivery;
mod poison;
mod provider;
mod service;
mod support;
