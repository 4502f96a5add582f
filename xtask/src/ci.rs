//! The checks CI runs, in the order that fails fastest, and the test command.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;

use crate::process::{cargo, exit_code, run};

/// `cargo xtask test`: the databases and the browser test's prerequisites first, then every
/// test of the workspace (every test binary runs, even after one fails, so a run reports all
/// that fail).
pub fn test() -> Result<ExitCode> {
    crate::services::ensure_databases()?;
    // The dashboard's browser test needs Chromium and playwright-core; installed when missing.
    let deps = run(std::process::Command::new("bash")
        .arg(crate::process::workspace_root().join(".ci/browser-deps"))
        .current_dir(crate::process::workspace_root()))?;
    if !deps.success() {
        anyhow::bail!("installing the browser test's prerequisites (.ci/browser-deps) failed");
    }
    let status = run(cargo().args(["test", "--workspace", "--no-fail-fast"]))?;
    Ok(exit_code(status))
}

/// One CI step: runs to completion and says how it ended.
type Step = fn() -> Result<ExitCode>;

/// `cargo xtask ci`: every step runs, even after one fails, so one CI run reports everything
/// that is wrong (a formatting slip does not hide a failing test). Each step prints a header and
/// a verdict, and a summary closes the run; the exit code is the first failed step's.
pub fn ci() -> Result<ExitCode> {
    let started = Instant::now();
    let steps: [(&str, Step); 4] = [
        ("format (cargo fmt --all -- --check)", || {
            Ok(exit_code(run(
                cargo().args(["fmt", "--all", "--", "--check"])
            )?))
        }),
        (
            "lint (cargo clippy --workspace --all-targets -- -D warnings)",
            || {
                Ok(exit_code(run(cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))?))
            },
        ),
        ("dependency directions", || {
            crate::deps::check_workspace().map(|()| ExitCode::SUCCESS)
        }),
        ("tests (databases up, then cargo test --workspace)", test),
    ];
    let total = steps.len();
    let mut first_failure: Option<ExitCode> = None;
    let mut summary = Vec::new();
    for (n, (name, step)) in steps.into_iter().enumerate() {
        let n = n + 1;
        println!("\n==> ci step {n}/{total}: {name}");
        let step_started = Instant::now();
        let code = step().unwrap_or_else(|e| {
            println!("error: {e:#}");
            ExitCode::FAILURE
        });
        let seconds = step_started.elapsed().as_secs_f64();
        let verdict = if code == ExitCode::SUCCESS {
            "ok"
        } else {
            first_failure.get_or_insert(code);
            "FAILED"
        };
        let line = format!("==> ci step {n}/{total} {verdict}: {name} ({seconds:.0} s)");
        println!("{line}");
        summary.push(line);
    }
    println!("\n==> ci summary");
    for line in &summary {
        println!("{line}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(match first_failure {
        None => {
            println!("==> ci passed: all {total} steps ({elapsed:.0} s)");
            ExitCode::SUCCESS
        }
        Some(code) => {
            let failed = summary.iter().filter(|l| l.contains(" FAILED: ")).count();
            println!("==> ci FAILED: {failed} of {total} steps ({elapsed:.0} s)");
            code
        }
    })
}
