//! `cargo xtask <task>`: the project's chores, in Rust so they run wherever cargo does.
//!
//! - `test`: starts PostgreSQL and MariaDB if they are down, then `cargo test --workspace`.
//! - `ci`: formatting, clippy, the dependency-direction check, then the same as `test`.
//! - `bench`: the outbox, relay and end-to-end latency benchmark (always in release mode).
//! - `chaos`: the broker and two agents as real processes under faults; counts loss and double effects.
//! - `separate-databases`: the three services as processes, each on its own database, one broker.

mod backends;
mod bench;
mod chaos;
mod ci;
mod deps;
mod process;
mod processes;
mod separate_databases;
mod services;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "smartflow's development and CI tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Makes sure PostgreSQL and MariaDB accept connections (starting them if not), then runs
    /// `cargo test --workspace`.
    Test,
    /// What CI runs: fmt check, clippy with `-D warnings`, the dependency-direction check, tests.
    Ci,
    /// Checks that the library crates depend only downwards (part of `ci`).
    Deps,
    /// Measures the outbox's cost, relay throughput and end-to-end latency on every backend.
    Bench(bench::BenchArgs),
    /// The benchmark's relay in a process of its own (started by `bench --phases latency-apart`).
    #[command(hide = true)]
    BenchRelay(bench::relay_process::RelayProcessArgs),
    /// Runs the broker and two agents as processes under faults (kills, outages, produce
    /// errors, cut database connections, SIGSTOP, SIGTERM) and counts loss and double effects.
    Chaos(chaos::ChaosArgs),
    /// Runs userauth, the agent and notification as processes, each on a database of its own,
    /// with one broker, on every backend, and checks what each database holds.
    SeparateDatabases(separate_databases::SeparateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.task {
        Task::Test => ci::test(),
        Task::Ci => ci::ci(),
        Task::Deps => deps::check_workspace().map(|()| ExitCode::SUCCESS),
        Task::Bench(args) => bench::main(args),
        Task::BenchRelay(args) => bench::relay_process::main(args),
        Task::Chaos(args) => chaos::main(args),
        Task::SeparateDatabases(args) => separate_databases::main(args),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
