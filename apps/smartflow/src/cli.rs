//! The `smartflow` command line: with no subcommand it runs every service ([`AllConfig`]); the
//! `outbox` and `inbox` subcommands are the operator's tools for the bus's tables
//! ([`crate::admin`]).

use clap::Parser;

use crate::admin::AdminCommand;
use crate::config::AllConfig;

#[derive(Parser)]
#[command(
    name = "smartflow",
    version,
    about = "All smartflow services in one process: agent, notification and userauth; \
             `smartflow outbox ...` and `smartflow inbox ...` inspect and repair the bus's tables",
    long_about = None
)]
pub struct Cli {
    /// The all-in-one system's settings; the admin commands take the database settings from
    /// here too (`SMARTFLOW_DATABASE_URL`, `SMARTFLOW_DATABASE_SCHEMA`) unless given their own.
    #[command(flatten)]
    pub run: AllConfig,

    #[command(subcommand)]
    pub command: Option<AdminCommand>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_subcommand_still_runs_every_service_with_its_flags() {
        let cli = Cli::try_parse_from([
            "smartflow",
            "--database-url",
            "postgres://u:pw@db:5432/app",
            "--agent-addr",
            "0.0.0.0:9000",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.service.database_url, "postgres://u:pw@db:5432/app");
        assert_eq!(cli.run.agent_addr.port(), 9000);
    }

    #[test]
    fn the_database_may_be_named_before_or_after_the_subcommand() {
        for args in [
            &[
                "smartflow",
                "--database-url",
                "sqlite://a.db",
                "outbox",
                "stats",
            ][..],
            &[
                "smartflow",
                "outbox",
                "stats",
                "--database-url",
                "sqlite://a.db",
            ][..],
            &[
                "smartflow",
                "outbox",
                "--database-url",
                "sqlite://a.db",
                "stats",
            ][..],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let command = cli.command.as_ref().expect("a subcommand");
            assert_eq!(
                command.target().database_url(&cli.run.service),
                "sqlite://a.db",
                "{args:?}"
            );
        }
    }
}
