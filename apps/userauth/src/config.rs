//! Userauth's configuration, read once by `main` from flags and `SMARTFLOW_*` variables.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser};
use smartflow_service::{Secret, ServiceSettings, LOOPBACK_ANY_PORT};

use crate::events::DEFAULT_AGENT_TOPIC;
use crate::jwt::SigningKey;
use crate::throttle::{DEFAULT_ACCOUNT_ATTEMPTS_PER_MINUTE, DEFAULT_ADDRESS_ATTEMPTS_PER_MINUTE};

pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8082);
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: u64 = 15 * 60;
pub const DEFAULT_REFRESH_TOKEN_TTL_SECS: u64 = 30 * 24 * 60 * 60;
/// ASVS 4.0 3.3.2's level 2 bound: a session ends 12 hours after the log-in, however often it
/// was refreshed.
pub const DEFAULT_SESSION_MAX_LIFETIME_SECS: u64 = 12 * 60 * 60;
pub const DEFAULT_TOKEN_QUOTA: i64 = 100_000;
/// OWASP's recommended Argon2id setting: 19 MiB, 2 passes, 1 lane.
pub const DEFAULT_PASSWORD_HASH_MEMORY_KIB: u32 = 19 * 1024;
pub const DEFAULT_PASSWORD_HASH_ITERATIONS: u32 = 2;
/// Log-ins, registrations and password changes that may wait for a hashing slot; more are
/// refused with 503 `busy`.
pub const DEFAULT_PASSWORD_HASH_QUEUE: usize = 64;
/// The setting of the signing key itself.
pub const SIGNING_KEY_SETTING: &str = "SMARTFLOW_USERAUTH_SIGNING_KEY";
/// The setting of a file holding the signing key.
pub const SIGNING_KEY_FILE_SETTING: &str = "SMARTFLOW_USERAUTH_SIGNING_KEY_FILE";

/// Everything userauth needs to start. Defaults run embedded: a SQLite file next to the process
/// (the same file the agent uses by default) and an in-process Kafka-protocol broker.
///
/// `Debug` hides the signing key and the database password, so the struct can be logged whole.
#[derive(Clone, Parser)]
#[command(
    name = "smartflow-userauth",
    version,
    about = "The smartflow user/auth service"
)]
pub struct UserauthConfig {
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_HTTP_ADDR", default_value_t = DEFAULT_HTTP_ADDR)]
    pub http_addr: SocketAddr,

    /// The agent's topic, where its `agent.token.usage.recorded` events arrive.
    #[arg(long, env = "SMARTFLOW_AGENT_TOPIC", default_value = DEFAULT_AGENT_TOPIC)]
    pub agent_topic: String,

    /// Where the key that signs access tokens comes from.
    #[command(flatten)]
    pub signing: SigningKeySettings,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "SMARTFLOW_ACCESS_TOKEN_TTL_SECS", default_value_t = DEFAULT_ACCESS_TOKEN_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub access_token_ttl_secs: u64,

    /// Lifetime of a refresh token, in seconds. Each refresh issues a new one with a full lifetime.
    #[arg(long, env = "SMARTFLOW_REFRESH_TOKEN_TTL_SECS", default_value_t = DEFAULT_REFRESH_TOKEN_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub refresh_token_ttl_secs: u64,

    /// Absolute lifetime of a session, in seconds from the log-in: no refresh token outlives it,
    /// and refreshing after it answers `session_expired`.
    #[arg(long, env = "SMARTFLOW_SESSION_MAX_LIFETIME_SECS", default_value_t = DEFAULT_SESSION_MAX_LIFETIME_SECS,
          value_parser = clap::value_parser!(u64).range(60..=31_536_000))]
    pub session_max_lifetime_secs: u64,

    /// The token quota a new account gets.
    #[arg(long, env = "SMARTFLOW_DEFAULT_TOKEN_QUOTA", default_value_t = DEFAULT_TOKEN_QUOTA,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub default_token_quota: i64,

    /// Argon2id memory cost per password hash, in KiB.
    #[arg(long, env = "SMARTFLOW_PASSWORD_HASH_MEMORY_KIB", default_value_t = DEFAULT_PASSWORD_HASH_MEMORY_KIB,
          value_parser = clap::value_parser!(u32).range(8..=1_048_576))]
    pub password_hash_memory_kib: u32,

    /// Argon2id passes per password hash.
    #[arg(long, env = "SMARTFLOW_PASSWORD_HASH_ITERATIONS", default_value_t = DEFAULT_PASSWORD_HASH_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub password_hash_iterations: u32,

    /// Requests that may wait for one of the Argon2 slots (two per core) at once; one more is
    /// answered 503 `busy` with `Retry-After`, so a flood cannot queue real log-ins behind it.
    #[arg(long, env = "SMARTFLOW_PASSWORD_HASH_QUEUE", default_value_t = DEFAULT_PASSWORD_HASH_QUEUE)]
    pub password_hash_queue: usize,

    /// Log-ins, registrations and refreshes per minute from one client address, each route
    /// its own budget (a burst of this many, then one every 60/n seconds); more get 429
    /// `rate_limited` with `Retry-After`. 0: no limit (behind a proxy that limits).
    #[arg(long, env = "SMARTFLOW_AUTH_ADDRESS_ATTEMPTS_PER_MINUTE",
          default_value_t = DEFAULT_ADDRESS_ATTEMPTS_PER_MINUTE)]
    pub auth_address_attempts_per_minute: u32,

    /// The same per account (the email of a log-in or registration, the user of a refresh
    /// token), whatever addresses the attempts come from. 0: no limit.
    #[arg(long, env = "SMARTFLOW_AUTH_ACCOUNT_ATTEMPTS_PER_MINUTE",
          default_value_t = DEFAULT_ACCOUNT_ATTEMPTS_PER_MINUTE)]
    pub auth_account_attempts_per_minute: u32,

    /// The database, the broker (the agent's: without one, an embedded broker runs that only
    /// an agent in this same process can reach), start-up waits, the stop's grace and the bus's
    /// reliability.
    #[command(flatten)]
    pub service: ServiceSettings,
}

impl Default for UserauthConfig {
    /// The command line's defaults, without reading the environment.
    fn default() -> Self {
        Self {
            http_addr: DEFAULT_HTTP_ADDR,
            agent_topic: DEFAULT_AGENT_TOPIC.to_owned(),
            signing: SigningKeySettings::default(),
            access_token_ttl_secs: DEFAULT_ACCESS_TOKEN_TTL_SECS,
            refresh_token_ttl_secs: DEFAULT_REFRESH_TOKEN_TTL_SECS,
            session_max_lifetime_secs: DEFAULT_SESSION_MAX_LIFETIME_SECS,
            default_token_quota: DEFAULT_TOKEN_QUOTA,
            password_hash_memory_kib: DEFAULT_PASSWORD_HASH_MEMORY_KIB,
            password_hash_iterations: DEFAULT_PASSWORD_HASH_ITERATIONS,
            password_hash_queue: DEFAULT_PASSWORD_HASH_QUEUE,
            auth_address_attempts_per_minute: DEFAULT_ADDRESS_ATTEMPTS_PER_MINUTE,
            auth_account_attempts_per_minute: DEFAULT_ACCOUNT_ATTEMPTS_PER_MINUTE,
            service: ServiceSettings::default(),
        }
    }
}

impl UserauthConfig {
    /// The defaults with another database, an OS-chosen HTTP port and the embedded broker.
    pub fn embedded(database_url: impl Into<String>) -> Self {
        Self {
            http_addr: LOOPBACK_ANY_PORT,
            service: ServiceSettings::on_database(database_url),
            ..Self::default()
        }
    }

    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }

    pub fn refresh_token_ttl(&self) -> Duration {
        Duration::from_secs(self.refresh_token_ttl_secs)
    }

    pub fn session_max_lifetime(&self) -> Duration {
        Duration::from_secs(self.session_max_lifetime_secs)
    }
}

/// Where userauth's signing key comes from: the key itself or a file, flattened into userauth's
/// command line and the all-in-one binary's. `Debug` hides the key.
#[derive(Clone, Debug, Default, Args)]
pub struct SigningKeySettings {
    /// The Ed25519 private key that signs access tokens: PEM (`openssl genpkey -algorithm
    /// ed25519`) or base64 of its PKCS#8 DER. The services that accept the tokens are given its
    /// public key (`openssl pkey -pubout`; logged at start). Absent, with no key file either: a
    /// new key is made at every start, so tokens do not survive a restart and the agent must be
    /// given that start's public key.
    #[arg(
        long,
        env = "SMARTFLOW_USERAUTH_SIGNING_KEY",
        hide_env_values = true,
        conflicts_with = "signing_key_file"
    )]
    pub signing_key: Option<Secret>,

    /// A file holding the signing key, as SMARTFLOW_USERAUTH_SIGNING_KEY would.
    #[arg(long, env = "SMARTFLOW_USERAUTH_SIGNING_KEY_FILE")]
    pub signing_key_file: Option<PathBuf>,
}

impl SigningKeySettings {
    /// Settings that hand userauth `key` itself.
    pub fn with_key(key: &SigningKey) -> Self {
        Self {
            signing_key: Some(Secret::new(key.to_pem())),
            signing_key_file: None,
        }
    }

    /// The key these settings give; `None` when neither is set. A key that cannot be used, or
    /// both set, is an error naming the setting and never showing the key.
    pub fn load(&self) -> anyhow::Result<Option<SigningKey>> {
        let key = match (&self.signing_key, &self.signing_key_file) {
            (Some(_), Some(_)) => {
                bail!("set {SIGNING_KEY_SETTING} or {SIGNING_KEY_FILE_SETTING}, not both")
            }
            (None, None) => return Ok(None),
            (Some(key), None) => SigningKey::parse(key.expose()).map_err(|reason| {
                anyhow::anyhow!("{SIGNING_KEY_SETTING} is not usable: {reason}")
            })?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading {SIGNING_KEY_FILE_SETTING} {}", path.display())
                })?;
                SigningKey::parse(&text).map_err(|reason| {
                    anyhow::anyhow!(
                        "{SIGNING_KEY_FILE_SETTING} {} is not usable: {reason}",
                        path.display()
                    )
                })?
            }
        };
        Ok(Some(key))
    }
}

impl fmt::Debug for UserauthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserauthConfig")
            .field("http_addr", &self.http_addr)
            .field("agent_topic", &self.agent_topic)
            .field("signing", &self.signing)
            .field("access_token_ttl_secs", &self.access_token_ttl_secs)
            .field("refresh_token_ttl_secs", &self.refresh_token_ttl_secs)
            .field("session_max_lifetime_secs", &self.session_max_lifetime_secs)
            .field("default_token_quota", &self.default_token_quota)
            .field("password_hash_memory_kib", &self.password_hash_memory_kib)
            .field("password_hash_iterations", &self.password_hash_iterations)
            .field("password_hash_queue", &self.password_hash_queue)
            .field(
                "auth_address_attempts_per_minute",
                &self.auth_address_attempts_per_minute,
            )
            .field(
                "auth_account_attempts_per_minute",
                &self.auth_account_attempts_per_minute,
            )
            .field("service", &self.service)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_setting_is_in_the_operations_guide() {
        smartflow_testkit::settings_doc::check_operations_guide(
            env!("CARGO_MANIFEST_DIR"),
            "userauth",
            &UserauthConfig::command(),
            Some(&smartflow_service::ServiceSettings::command()),
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        UserauthConfig::command().debug_assert();
    }

    #[test]
    fn flags_override_defaults() {
        let config = UserauthConfig::try_parse_from([
            "smartflow-userauth",
            "--http-addr",
            "0.0.0.0:9001",
            "--agent-topic",
            "custom.agent",
            "--access-token-ttl-secs",
            "60",
            "--default-token-quota",
            "5",
            "--auth-address-attempts-per-minute",
            "7",
            "--auth-account-attempts-per-minute",
            "0",
            "--password-hash-queue",
            "3",
        ])
        .unwrap();
        assert_eq!(config.auth_address_attempts_per_minute, 7);
        assert_eq!(config.auth_account_attempts_per_minute, 0);
        assert_eq!(config.password_hash_queue, 3);
        assert_eq!(config.http_addr.port(), 9001);
        assert_eq!(config.agent_topic, "custom.agent");
        assert_eq!(config.access_token_ttl(), Duration::from_secs(60));
        assert_eq!(config.default_token_quota, 5);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        for args in [
            ["--access-token-ttl-secs", "0"],
            ["--default-token-quota", "-1"],
            ["--kafka-partitions", "0"],
            ["--password-hash-iterations", "0"],
            ["--session-max-lifetime-secs", "59"],
            ["--auth-address-attempts-per-minute", "-1"],
            ["--password-hash-queue", "many"],
        ] {
            let mut argv = vec!["smartflow-userauth"];
            argv.extend(args);
            assert!(UserauthConfig::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = UserauthConfig::embedded("postgres://app:s3cret@db:5432/app");
        let key = crate::jwt::SigningKey::generate().to_pem();
        config.signing.signing_key = Some(Secret::new(key.clone()));
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let body = key.lines().nth(1).unwrap();
        assert!(!shown.contains(body), "{shown}");
    }

    #[test]
    fn a_key_and_a_key_file_together_are_refused() {
        let err = UserauthConfig::try_parse_from([
            "smartflow-userauth",
            "--signing-key",
            "k",
            "--signing-key-file",
            "/k.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--signing-key-file"), "{err}");
    }
}
