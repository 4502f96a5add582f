//! The dependency-direction check: the layers of `docs/architecture.md` point down only.
//!
//! Reads `cargo metadata --no-deps` and follows normal and build dependencies (dev-dependencies
//! shape tests, not the library) through workspace members, so a forbidden crate reached through
//! another workspace crate is caught too, with the path that reaches it.

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

/// A workspace package: its direct normal/build dependencies and whether it builds a library.
#[derive(Debug, Default)]
struct Package {
    deps: BTreeSet<String>,
    is_lib: bool,
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
        packages.insert(name.to_owned(), Package { deps, is_lib });
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
fn check(packages: &BTreeMap<String, Package>) -> Result<(Vec<String>, usize)> {
    let mut lines = Vec::new();
    let mut violations = 0;
    let mut report = |package: &str, what: String, bad: Vec<&Vec<String>>| {
        if bad.is_empty() {
            lines.push(format!("ok    {package}: no dependency on {what}"));
        }
        for path in bad {
            violations += 1;
            lines.push(format!(
                "ERROR {package} must not depend on {}: {}",
                path.last().expect("paths are never empty"),
                path.join(" -> ")
            ));
        }
    };
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
        report(rule.package, what.join(", "), bad);
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
        report(
            name,
            format!("rdkafka (only {KAFKA_ADAPTER} may name it)"),
            direct.iter().collect(),
        );
    }
    Ok((lines, violations))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(edges: &[(&str, &[&str])]) -> BTreeMap<String, Package> {
        edges
            .iter()
            .map(|(name, deps)| {
                let package = Package {
                    deps: deps.iter().map(|d| (*d).to_owned()).collect(),
                    is_lib: true,
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
}
