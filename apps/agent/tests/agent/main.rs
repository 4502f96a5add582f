//! The agent, started in-process against real databases and an embedded Kafka-protocol broker,
//! driven through its HTTP API. Every test has its own database and its own broker, so they run
//! in parallel.

mod auth;
mod backends;
mod batches;
mod behind_userauth;
mod forged;
mod messages;
mod metrics;
mod notify;
mod ownership;
mod pages;
mod roles;
mod startup;
mod support;
mod validation;
