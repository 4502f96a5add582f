//! The broker's configuration, read once by `main` from flags and `SMARTFLOW_BROKER_*` variables.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;

/// The control API's default address: loopback, with a port the OS picks (see the ready file).
pub const DEFAULT_CONTROL_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// How to run the development broker. Kafka ports are always loopback ports the OS picks (the
/// mock cluster does not let them be chosen); the ready file and stdout say which.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "smartflow-broker",
    version,
    about = "A development Kafka-protocol broker (librdkafka's mock cluster, in memory) with an HTTP \
             control API for fault injection"
)]
pub struct BrokerConfig {
    /// Mock brokers in the cluster (ids 1..=N).
    #[arg(long, env = "SMARTFLOW_BROKER_COUNT", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=64))]
    pub brokers: i32,

    /// A topic to create at start, as NAME:PARTITIONS (repeatable; comma-separated in the
    /// environment variable).
    #[arg(long = "topic", env = "SMARTFLOW_BROKER_TOPICS", value_delimiter = ',')]
    pub topics: Vec<TopicSpec>,

    /// Address of the HTTP control API (port 0 picks a free one).
    #[arg(long, env = "SMARTFLOW_BROKER_CONTROL_ADDR", default_value_t = DEFAULT_CONTROL_ADDR)]
    pub control_addr: SocketAddr,

    /// Once ready, write `{"bootstrap_servers": ..., "control_addr": ...}` to this file
    /// (atomically: written under a temporary name, then renamed).
    #[arg(long, env = "SMARTFLOW_BROKER_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

/// A topic to create: `NAME:PARTITIONS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

impl FromStr for TopicSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, partitions) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("expected NAME:PARTITIONS, got `{s}`"))?;
        let partitions: i32 = partitions
            .trim()
            .parse()
            .map_err(|_| format!("`{partitions}` in `{s}` is not a partition count"))?;
        let spec = TopicSpec {
            name: name.trim().to_owned(),
            partitions,
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// The longest topic name Kafka accepts.
pub const MAX_TOPIC_CHARS: usize = 249;
/// The most partitions one topic may have here; the mock keeps every partition in memory.
pub const MAX_PARTITIONS: i32 = 1000;

impl TopicSpec {
    /// Checks the name against Kafka's rules (1..=249 of `[A-Za-z0-9._-]`, not `.` or `..`) and
    /// the partition count (1..=1000), so a bad request is refused with a reason rather than
    /// reaching the mock cluster.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() || name.len() > MAX_TOPIC_CHARS {
            return Err(format!(
                "topic name must be 1 to {MAX_TOPIC_CHARS} characters, got {}",
                name.len()
            ));
        }
        if name == "." || name == ".." {
            return Err(format!("`{name}` is not a legal topic name"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "topic name `{name}` may hold only letters, digits, `.`, `_` and `-`"
            ));
        }
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(format!(
                "topic `{name}` needs 1 to {MAX_PARTITIONS} partitions, not {}",
                self.partitions
            ));
        }
        Ok(())
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
            "broker",
            &BrokerConfig::command(),
            None,
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        BrokerConfig::command().debug_assert();
    }

    #[test]
    fn topics_parse_and_repeat() {
        let config = BrokerConfig::try_parse_from([
            "smartflow-broker",
            "--brokers",
            "3",
            "--topic",
            "a.events:3",
            "--topic",
            "b:1",
        ])
        .unwrap();
        assert_eq!(config.brokers, 3);
        assert_eq!(
            config.topics,
            vec![
                TopicSpec {
                    name: "a.events".into(),
                    partitions: 3
                },
                TopicSpec {
                    name: "b".into(),
                    partitions: 1
                },
            ]
        );
        assert_eq!(config.control_addr, DEFAULT_CONTROL_ADDR);
    }

    #[test]
    fn bad_topics_and_broker_counts_are_refused() {
        for bad in ["nocount", "x:0", "x:-1", "x:many", ":3", "sp ace:1", "..:1"] {
            assert!(bad.parse::<TopicSpec>().is_err(), "{bad} should be refused");
        }
        assert!(BrokerConfig::try_parse_from(["smartflow-broker", "--brokers", "0"]).is_err());
    }
}
