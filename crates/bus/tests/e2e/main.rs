//! Bus scenarios against a real database (SQLite, PostgreSQL, MariaDB) and the in-process
//! Kafka-protocol broker. Each scenario is written once and runs on every backend.

mod batches;
mod consumers;
mod delivery;
mod direct;
mod failures;
mod fixture;
mod order;
mod outages;
mod ownership;
mod relays;
mod retention;
mod spans;
mod wake;
