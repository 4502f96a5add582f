//! The smartflow notification service: other services request a notification by publishing
//! [`NotificationRequested`] through the outbox; this service records it once per
//! `(channel, dedupe_key)` in the consumer's transaction, then sends it through a provider
//! outside any transaction, with a lease on the record, retries with backoff, and a scanner
//! that recovers failed and abandoned sends.
//!
//! A library so tests and the all-in-one binary can run the whole service in-process with
//! [`Notification::start`]. Publishers depend on `smartflow-notification-contracts` for the
//! request type and its route, never on this crate.

pub mod app;
pub mod config;
pub mod dispatch;
pub mod events;
pub mod handler;
pub mod http;
pub mod provider;

pub use app::{Notification, RunningNotification};
pub use config::NotificationConfig;
pub use dispatch::{DispatchConfig, Dispatcher, RoundReport};
pub use events::{register, route, routes, Channel, NotificationRequested, Validate};
pub use handler::{RecordNotification, StoredNotification};
pub use provider::{
    FeishuConfig, FeishuWebhook, NotificationProvider, OutgoingNotification, ProviderError,
    Providers, Receipt, TargetPolicy,
};
