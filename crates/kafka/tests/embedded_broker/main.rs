//! Every scenario runs against its own `EmbeddedBroker` (librdkafka's mock cluster) with its own
//! random topic and group names, so the tests run in parallel. Waits are bounded polling loops,
//! never sleeps followed by assertions, and nothing asserts on how long something took.

mod backpressure;
mod config;
mod consumer_group;
mod faults;
mod fixture;
mod outage;
mod roundtrip;
mod topics;
