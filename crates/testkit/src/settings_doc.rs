//! Holding `docs/operations.md`'s settings tables against the binaries' command lines: each table
//! is generated from a clap [`Command`] (its flags, their `SMARTFLOW_*` variables, defaults and
//! help), so a setting added, renamed or given another default without its row fails a test.
//!
//! A table sits in the document between `<!-- settings:NAME -->` and `<!-- /settings:NAME -->`.
//! Run the failing test with `SMARTFLOW_UPDATE_DOCS=1` to write the table there instead.

use std::collections::BTreeSet;
use std::path::Path;

use clap::{ArgAction, Command};

/// The markdown table of `command`'s settings, leaving out those `common` has (the settings every
/// service binary shares, documented once). clap's own `--help` and `--version` are left out.
pub fn settings_table(command: &Command, common: Option<&Command>) -> String {
    let shared: BTreeSet<&str> = common
        .into_iter()
        .flat_map(|c| c.get_arguments())
        .map(|a| a.get_id().as_str())
        .collect();
    let mut out = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if shared.contains(id) || matches!(id, "help" | "version") || arg.is_hide_set() {
            continue;
        }
        let variable = arg
            .get_env()
            .map(|v| format!("`{}`", v.to_string_lossy()))
            .unwrap_or_else(|| "(flag only)".to_owned());
        let flag = arg
            .get_long()
            .map(|l| format!("`--{l}`"))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if !defaults.is_empty() {
            format!("`{}`", defaults.join(","))
        } else if matches!(arg.get_action(), ArgAction::SetTrue) {
            "`false`".to_owned()
        } else {
            "(unset)".to_owned()
        };
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let meaning = help
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|");
        out.push_str(&format!(
            "| {variable} | {flag} | {default} | {meaning} |\n"
        ));
    }
    out
}

/// Holds `command`'s table (less `common`'s settings) against the section `name` of the
/// workspace's `docs/operations.md`, for a crate at `manifest_dir` (`env!("CARGO_MANIFEST_DIR")`,
/// two levels below the workspace root).
pub fn check_operations_guide(
    manifest_dir: &str,
    name: &str,
    command: &Command,
    common: Option<&Command>,
) {
    let guide = Path::new(manifest_dir).join("../../docs/operations.md");
    check_section(guide, name, &settings_table(command, common));
}

/// Panics unless the section `name` of the markdown file at `path` is `table`; with
/// `SMARTFLOW_UPDATE_DOCS=1` in the environment, writes `table` there instead.
pub fn check_section(path: impl AsRef<Path>, name: &str, table: &str) {
    let update = std::env::var("SMARTFLOW_UPDATE_DOCS").as_deref() == Ok("1");
    check_or_update(path.as_ref(), name, table, update);
}

fn check_or_update(path: &Path, name: &str, table: &str, update: bool) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let begin = format!("<!-- settings:{name} -->\n");
    let end = format!("<!-- /settings:{name} -->");
    let (Some(start), Some(stop)) = (text.find(&begin), text.find(&end)) else {
        panic!(
            "{} has no `{begin}` ... `{end}` section for these settings; add both lines and run \
             the test with SMARTFLOW_UPDATE_DOCS=1",
            path.display()
        );
    };
    let start = start + begin.len();
    assert!(start <= stop, "`{end}` comes before `{begin}`");
    if &text[start..stop] == table {
        return;
    }
    if update {
        let updated = format!("{}{table}{}", &text[..start], &text[stop..]);
        std::fs::write(path, updated).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    panic!(
        "the settings table `{name}` in {} is not the command line's; run this test with \
         SMARTFLOW_UPDATE_DOCS=1 to write it. It should be:\n{table}\nIt is:\n{}",
        path.display(),
        &text[start..stop]
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Arg;

    fn command() -> Command {
        Command::new("x")
            .arg(
                Arg::new("addr")
                    .long("addr")
                    .env("X_ADDR")
                    .default_value("127.0.0.1:1")
                    .help("Where | it listens."),
            )
            .arg(Arg::new("shared").long("shared").env("X_SHARED"))
            .arg(
                Arg::new("loud")
                    .long("loud")
                    .action(ArgAction::SetTrue)
                    .help("Say more."),
            )
    }

    #[test]
    fn a_table_lists_variables_defaults_and_help_without_the_common_ones() {
        let common = Command::new("c").arg(Arg::new("shared").long("shared"));
        assert_eq!(
            settings_table(&command(), Some(&common)),
            "| variable | flag | default | meaning |\n|---|---|---|---|\n\
             | `X_ADDR` | `--addr` | `127.0.0.1:1` | Where \\| it listens. |\n\
             | (flag only) | `--loud` | `false` | Say more. |\n"
        );
    }

    #[test]
    fn a_section_is_held_against_its_table() {
        let dir = std::env::temp_dir().join(format!("settings-doc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("doc.md");
        let table = settings_table(&command(), None);
        std::fs::write(
            &path,
            format!("# Doc\n<!-- settings:x -->\n{table}<!-- /settings:x -->\nafter\n"),
        )
        .unwrap();
        check_or_update(&path, "x", &table, false);
        let stale = std::panic::catch_unwind(|| check_or_update(&path, "x", "| other |\n", false));
        assert!(stale.is_err(), "a stale table must fail");
        let missing = std::panic::catch_unwind(|| check_or_update(&path, "y", &table, false));
        assert!(missing.is_err(), "a missing section must fail");
        check_or_update(&path, "x", "| other |\n", true);
        check_or_update(&path, "x", "| other |\n", false);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# Doc\n") && text.ends_with("<!-- /settings:x -->\nafter\n"),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
