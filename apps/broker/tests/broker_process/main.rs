//! Starts the built `smartflow-broker` binary as a child process and talks to it as services
//! do: Kafka clients on its bootstrap servers, HTTP on its control API. Every test has its own
//! broker process (killed when the test ends, pass or fail) and its own topic names, so they run
//! in parallel. Waits are bounded polling loops; nothing asserts on how long something took.

mod control;
mod fixture;
mod kafka;
mod lifecycle;
