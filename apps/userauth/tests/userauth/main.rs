//! Userauth, started in-process against real databases (SQLite, PostgreSQL, MariaDB) and an
//! embedded Kafka-protocol broker, driven through its HTTP API. Every scenario runs on every
//! backend with its own database, broker and topic, so they run in parallel.

mod accounts;
mod families;
mod sessions;
mod support;
mod throttling;
mod tokens;
mod usage;
