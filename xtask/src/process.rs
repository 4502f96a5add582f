//! Running cargo and other tools with their output going straight to ours.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus};

use anyhow::{bail, Context, Result};

/// The cargo that runs us (so `+toolchain` and `CARGO_HOME` carry over), or `cargo` from `PATH`.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// The workspace root: the parent of this crate's directory, fixed at build time.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// The target directory cargo builds into: `CARGO_TARGET_DIR`, or the workspace's `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `--release` and `--no-build`, flattened into every task that runs the service binaries.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// Build and run release binaries (default: debug, as `cargo build` makes them).
    #[arg(long)]
    release: bool,
    /// Do not build the binaries first; use the ones in the target directory.
    #[arg(long)]
    no_build: bool,
}

impl BuildArgs {
    /// Builds the binaries of `packages` (unless `--no-build`) and returns the directory they
    /// are in.
    pub fn binaries(&self, packages: &[&str]) -> Result<PathBuf> {
        if !self.no_build {
            let mut build = cargo();
            build.arg("build");
            for package in packages {
                build.args(["-p", package]);
            }
            if self.release {
                build.arg("--release");
            }
            let status = run(&mut build)?;
            if !status.success() {
                bail!("building {} failed", packages.join(", "));
            }
        }
        let profile = if self.release { "release" } else { "debug" };
        Ok(target_dir().join(profile))
    }
}

/// Prints the command line, runs it with inherited stdio and returns its status.
pub fn run(cmd: &mut Command) -> Result<ExitStatus> {
    println!("$ {}", display(cmd));
    cmd.status()
        .with_context(|| format!("cannot run `{}`", display(cmd)))
}

/// The exit code to hand on for a child's status (a signal becomes a plain failure).
pub fn exit_code(status: ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

pub fn display(cmd: &Command) -> String {
    let program = cmd.get_program();
    let program = if program == std::env::var_os("CARGO").unwrap_or_default() {
        OsStr::new("cargo")
    } else {
        program
    };
    std::iter::once(program)
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
