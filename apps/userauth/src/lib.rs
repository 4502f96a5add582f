//! The smartflow user/auth service: accounts with Argon2id passwords, short-lived JWT access
//! tokens, rotating refresh tokens with replay detection, an access-token blacklist, and
//! token-usage accounting with quotas, fed by the agent's `agent.token.usage.recorded` events.
//!
//! Other services use `smartflow-userauth-contracts` (`UserauthClient`, which verifies an access
//! token with userauth's public key, then asks `GET /v1/auth/authorize` whether it may still be
//! served, and returns the token's user), never this crate. The usage event is the agent's (`smartflow-agent-contracts`).
//!
//! A library so tests can run the whole service in-process with [`Userauth::start`]; `main.rs`
//! only parses configuration and handles signals.

pub mod app;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod jwt;
pub mod passwords;
pub mod refresh_token;
pub mod service;
pub mod throttle;
pub mod usage;
pub mod validation;

pub use app::{RunningUserauth, Userauth};
pub use config::UserauthConfig;
pub use error::AuthError;
pub use events::TokenUsageRecorded;
pub use service::{AuthService, Principal, TokenPair};
pub use smartflow_userauth_contracts::{AuthorizeError, UserauthClient};
