//! The dependency-direction check: the layers of `docs/architecture.md` point down only.
//!
//! Reads `cargo metadata --no-deps` and follows normal and build dependencies (dev-dependencies
//! shape tests, not the library) through workspace members, so a forbidden crate reached through
//! another workspace crate is caught too, with the path that reaches it.
//!
//! Besides the per-crate rules: no library under `crates/` depends on an app under `apps/`, and
//! an app depends on another app only through that app's contracts crate
//! (`smartflow-<app>-contracts`), except the all-in-one binary, which composes them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Crate families: naming the family forbids each of these packages.
const TOKIO: &[&str] = &["tokio"];
const SEA_ORM: &[&str] = &["sea-orm", "sea-orm-migration", "sea-query", "sqlx"];
const RDKAFKA: &[&str] = &["rdkafka", "rdkafka-sys"];
const SMARTFLOW_PREFIX: &str = "smartflow-";

/// What one crate must not depend on.
struct Rule {
    package: &'static str,
    forbidden: &'static [&'static [&'static str]],
    /// Crate names forbidden one by one.
    crates: &'static [&'static str],
    /// Forbids every `smartflow-*` crate.
    no_smartflow: bool,
}

const RULES: &[Rule] = &[
    Rule {
        package: "smartflow-domain",
        forbidden: &[TOKIO, SEA_ORM, RDKAFKA],
        crates: &[],
        no_smartflow: true,
    },
    Rule {
        package: "smartflow-storage",
        forbidden: &[RDKAFKA],
        crates: &["smartflow-kafka", "smartflow-bus"],
        no_smartflow: false,
    },
    Rule {
        package: "smartflow-kafka",
        forbidden: &[SEA_ORM],
        crates: &["smartflow-storage", "smartflow-bus"],
        no_smartflow: false,
    },
    Rule {
        package: "smartflow-bus",
        forbidden: &[RDKAFKA],
        crates: &["smartflow-kafka"],
        no_smartflow: false,
    },
];

/// The one library crate allowed to name rdkafka.
const KAFKA_ADAPTER: &str = "smartflow-kafka";

/// The apps that compose other apps and so may depend on their implementations: the all-in-one
/// binary.
const COMPOSITION_ROOTS: &[&str] = &["smartflow-cli"];

/// Where a workspace package lives, which decides the layer rules that apply to it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Location {
    /// Under `crates/`: a library layer.
    Crates,
    /// Under `apps/`: a service, a tool or the all-in-one binary.
    Apps,
    /// Anywhere else (`migrations/`, `xtask/`).
    #[default]
    Elsewhere,
}

impl Location {
    fn of(relative_manifest: &std::path::Path) -> Self {
        match relative_manifest
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
        {
            Some("crates") => Location::Crates,
            Some("apps") => Location::Apps,
            _ => Location::Elsewhere,
        }
    }
}

/// Whether `name` is an app's contracts crate (`smartflow-<app>-contracts`).
fn is_contracts_crate(name: &str) -> bool {
    name.strip_prefix(SMARTFLOW_PREFIX)
        .and_then(|rest| rest.strip_suffix("-contracts"))
        .is_some_and(|app| !app.is_empty())
}

/// A workspace package: its direct normal/build dependencies, whether it builds a library, and
/// where it lives.
#[derive(Debug, Default)]
struct Package {
    deps: BTreeSet<String>,
    is_lib: bool,
    location: Location,
}

/// Runs `cargo metadata` and checks every rule; prints one line per rule.
pub fn check_workspace() -> Result<()> {
    let output = crate::process::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run `cargo metadata`")?;
    if !output.status.success() {
        bail!(
            "`cargo metadata` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("`cargo metadata` printed no JSON")?;
    let packages = workspace_packages(&metadata)?;
    let (lines, violations) = check(&packages)?;
    for line in &lines {
        println!("{line}");
    }
    if violations > 0 {
        bail!("{violations} dependency-direction violation(s); see docs/architecture.md");
    }
    Ok(())
}

fn workspace_packages(metadata: &Value) -> Result<BTreeMap<String, Package>> {
    let root = std::path::Path::new(
        metadata["workspace_root"]
            .as_str()
            .context("metadata has no workspace_root")?,
    );
    let members: BTreeSet<&str> = metadata["workspace_members"]
        .as_array()
        .context("metadata has no workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut packages = BTreeMap::new();
    for p in metadata["packages"]
        .as_array()
        .context("metadata has no packages")?
    {
        let id = p["id"].as_str().unwrap_or_default();
        if !members.contains(id) {
            continue;
        }
        let name = p["name"].as_str().context("a package without a name")?;
        let deps = p["dependencies"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect();
        let is_lib = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| matches!(k.as_str(), Some("lib" | "rlib"))))
            });
        let manifest = std::path::Path::new(p["manifest_path"].as_str().unwrap_or_default());
        let location = Location::of(manifest.strip_prefix(root).unwrap_or(manifest));
        packages.insert(
            name.to_owned(),
            Package {
                deps,
                is_lib,
                location,
            },
        );
    }
    Ok(packages)
}

/// Every crate `from` reaches through normal/build dependencies, following workspace members
/// only, with the path to each (the first path found, which is a shortest one).
fn reachable(packages: &BTreeMap<String, Package>, from: &str) -> BTreeMap<String, Vec<String>> {
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut queue = VecDeque::from([vec![from.to_owned()]]);
    while let Some(path) = queue.pop_front() {
        let last = path.last().expect("paths are never empty");
        let Some(package) = packages.get(last) else {
            continue;
        };
        for dep in &package.deps {
            if dep == from || paths.contains_key(dep) {
                continue;
            }
            let mut next = path.clone();
            next.push(dep.clone());
            paths.insert(dep.clone(), next.clone());
            queue.push_back(next);
        }
    }
    paths
}

/// Checks every rule; returns the report lines and the number of violations.
/// The report lines and the violations counted so far.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    violations: usize,
}

impl Report {
    /// One rule's outcome for `package`: `ok` when no path is `bad`, else an error per path.
    fn rule(&mut self, package: &str, what: &str, bad: Vec<&Vec<String>>) {
        if bad.is_empty() {
            self.lines
                .push(format!("ok    {package}: no dependency on {what}"));
        }
        for path in bad {
            self.error(format!(
                "{package} must not depend on {}: {}",
                path.last().expect("paths are never empty"),
                path.join(" -> ")
            ));
        }
    }

    fn error(&mut self, message: String) {
        self.violations += 1;
        self.lines.push(format!("ERROR {message}"));
    }

    fn note(&mut self, line: String) {
        self.lines.push(line);
    }
}

fn check(packages: &BTreeMap<String, Package>) -> Result<(Vec<String>, usize)> {
    let mut report = Report::default();
    for rule in RULES {
        if !packages.contains_key(rule.package) {
            bail!("the workspace has no package `{}` to check", rule.package);
        }
        let reach = reachable(packages, rule.package);
        let forbidden = |name: &str| {
            (rule.no_smartflow && name.starts_with(SMARTFLOW_PREFIX))
                || rule.crates.contains(&name)
                || rule.forbidden.iter().any(|family| family.contains(&name))
        };
        let bad: Vec<&Vec<String>> = reach
            .iter()
            .filter(|(name, _)| forbidden(name))
            .map(|(_, path)| path)
            .collect();
        let mut what: Vec<String> = rule
            .forbidden
            .iter()
            .map(|family| family[0].to_owned())
            .chain(rule.crates.iter().map(|c| (*c).to_owned()))
            .collect();
        if rule.no_smartflow {
            what.push("any smartflow crate".to_owned());
        }
        report.rule(rule.package, &what.join(", "), bad);
    }
    // Only the Kafka adapter names rdkafka, among every crate that builds a library.
    for (name, package) in packages {
        if name == KAFKA_ADAPTER || !package.is_lib {
            continue;
        }
        let direct: Vec<Vec<String>> = package
            .deps
            .iter()
            .filter(|d| RDKAFKA.contains(&d.as_str()))
            .map(|d| vec![name.clone(), d.clone()])
            .collect();
        report.rule(
            name,
            &format!("rdkafka (only {KAFKA_ADAPTER} may name it)"),
            direct.iter().collect(),
        );
    }
    check_layers(packages, &mut report);
    Ok((report.lines, report.violations))
}

/// No library under `crates/` reaches an app; an app depends on another app only through its
/// contracts crate, unless it composes apps.
fn check_layers(packages: &BTreeMap<String, Package>, report: &mut Report) {
    let is_app = |name: &str| packages.get(name).map(|p| p.location) == Some(Location::Apps);
    for (name, package) in packages {
        match package.location {
            Location::Crates => {
                let reach = reachable(packages, name);
                let bad = reach
                    .iter()
                    .filter(|(dep, _)| is_app(dep))
                    .map(|(_, path)| path);
                report.rule(name, "an app", bad.collect());
            }
            Location::Apps if COMPOSITION_ROOTS.contains(&name.as_str()) => {
                report.note(format!("ok    {name}: composes the apps"));
            }
            Location::Apps => {
                let bad: Vec<Vec<String>> = package
                    .deps
                    .iter()
                    .filter(|d| is_app(d) && !is_contracts_crate(d))
                    .map(|d| vec![name.clone(), d.clone()])
                    .collect();
                report.rule(
                    name,
                    "another app's implementation (only its smartflow-<app>-contracts crate)",
                    bad.iter().collect(),
                );
            }
            Location::Elsewhere => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layered workspace's packages live under `crates/`; these under `apps/`.
    const APPS: &[&str] = &[
        "smartflow-agent",
        "smartflow-notification",
        "smartflow-notification-contracts",
        "smartflow-userauth",
        "smartflow-cli",
    ];

    fn workspace(edges: &[(&str, &[&str])]) -> BTreeMap<String, Package> {
        edges
            .iter()
            .map(|(name, deps)| {
                let location = if APPS.contains(name) {
                    Location::Apps
                } else if name.starts_with(SMARTFLOW_PREFIX) {
                    Location::Crates
                } else {
                    Location::Elsewhere
                };
                let package = Package {
                    deps: deps.iter().map(|d| (*d).to_owned()).collect(),
                    is_lib: true,
                    location,
                };
                ((*name).to_owned(), package)
            })
            .collect()
    }

    fn layered() -> Vec<(&'static str, &'static [&'static str])> {
        vec![
            ("smartflow-domain", &["serde", "uuid"]),
            ("smartflow-storage", &["smartflow-domain", "sea-orm"]),
            ("smartflow-kafka", &["smartflow-domain", "rdkafka", "tokio"]),
            (
                "smartflow-bus",
                &["smartflow-domain", "smartflow-storage", "sea-orm"],
            ),
        ]
    }

    #[test]
    fn the_layered_workspace_passes() {
        let (lines, violations) = check(&workspace(&layered())).unwrap();
        assert_eq!(violations, 0, "{lines:#?}");
    }

    #[test]
    fn a_forbidden_crate_is_caught_directly_and_through_another_member() {
        let mut edges = layered();
        edges[0] = ("smartflow-domain", &["tokio"]);
        edges[3] = ("smartflow-bus", &["smartflow-domain", "smartflow-helper"]);
        edges.push(("smartflow-helper", &["smartflow-kafka"]));
        let (lines, violations) = check(&workspace(&edges)).unwrap();
        // domain -> tokio; bus -> helper -> kafka and, through kafka, rdkafka; helper is a
        // library naming no rdkafka itself, so only those three.
        assert_eq!(violations, 3, "{lines:#?}");
        assert!(lines
            .iter()
            .any(|l| l.contains("smartflow-bus -> smartflow-helper -> smartflow-kafka")));
    }

    #[test]
    fn only_the_kafka_adapter_may_name_rdkafka() {
        let mut edges = layered();
        edges.push(("smartflow-agent", &["smartflow-bus", "rdkafka"]));
        let (lines, violations) = check(&workspace(&edges)).unwrap();
        assert_eq!(violations, 1, "{lines:#?}");
        assert!(lines
            .iter()
            .any(|l| l.contains("smartflow-agent -> rdkafka")));
    }

    /// The apps of today: each on the others' contracts crates only, the all-in-one binary on
    /// every app.
    fn with_apps() -> Vec<(&'static str, &'static [&'static str])> {
        let mut edges = layered();
        edges.extend([
            (
                "smartflow-agent",
                &[
                    "smartflow-bus",
                    "smartflow-notification-contracts",
                    "smartflow-userauth-contracts",
                ][..],
            ),
            ("smartflow-notification", &["smartflow-bus"][..]),
            (
                "smartflow-notification-contracts",
                &["smartflow-domain"][..],
            ),
            ("smartflow-userauth-contracts", &["smartflow-domain"][..]),
            ("smartflow-userauth", &["smartflow-bus"][..]),
            (
                "smartflow-cli",
                &[
                    "smartflow-agent",
                    "smartflow-notification",
                    "smartflow-userauth",
                ][..],
            ),
        ]);
        edges
    }

    #[test]
    fn apps_may_use_contracts_crates_and_the_all_in_one_binary_composes_them() {
        let (lines, violations) = check(&workspace(&with_apps())).unwrap();
        assert_eq!(violations, 0, "{lines:#?}");
        assert!(
            lines
                .iter()
                .any(|l| l == "ok    smartflow-cli: composes the apps"),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_library_on_an_app_and_an_app_on_another_apps_implementation_are_caught() {
        let mut edges = with_apps();
        // bus -> helper -> notification: a library reaching an app through another member.
        edges[3] = ("smartflow-bus", &["smartflow-domain", "smartflow-helper"]);
        edges.push(("smartflow-helper", &["smartflow-notification"]));
        // The agent on userauth's implementation instead of its contracts crate.
        edges[4] = ("smartflow-agent", &["smartflow-bus", "smartflow-userauth"]);
        let (lines, violations) = check(&workspace(&edges)).unwrap();
        let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("ERROR")).collect();
        assert_eq!(
            errors,
            [
                "ERROR smartflow-agent must not depend on smartflow-userauth: \
                 smartflow-agent -> smartflow-userauth",
                "ERROR smartflow-bus must not depend on smartflow-notification: \
                 smartflow-bus -> smartflow-helper -> smartflow-notification",
                "ERROR smartflow-helper must not depend on smartflow-notification: \
                 smartflow-helper -> smartflow-notification",
            ],
            "{lines:#?}"
        );
        assert_eq!(violations, 3, "{lines:#?}");
    }

    #[test]
    fn contracts_crates_are_named_for_their_app() {
        assert!(is_contracts_crate("smartflow-notification-contracts"));
        assert!(!is_contracts_crate("smartflow--contracts"));
        assert!(!is_contracts_crate("smartflow-notification"));
        assert!(!is_contracts_crate("other-notification-contracts"));
    }
}
