//! The one-way dependency rule, made mechanical: `kproxy-modes` and `kproxy-dataplane` must never
//! depend on `kube` or `k8s-openapi`, directly or through another crate. Read from Cargo.lock,
//! which records the resolved graph of every package.

use std::collections::{BTreeMap, BTreeSet};

const FORBIDDEN: &[&str] = &[
    "kube",
    "kube-client",
    "kube-core",
    "kube-runtime",
    "k8s-openapi",
];

/// Every dependency path from `root` to a forbidden package, as `a -> b -> c`.
fn forbidden_paths(lock: &str, root: &str) -> Vec<String> {
    let doc: toml::Table = lock.parse().expect("Cargo.lock is TOML");
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pkg in doc["package"].as_array().expect("packages") {
        let name = pkg["name"].as_str().unwrap().to_owned();
        let list = pkg
            .get("dependencies")
            .and_then(|d| d.as_array())
            .cloned()
            .unwrap_or_default();
        // Entries are "name" or "name version" when several versions are locked.
        let names = list
            .iter()
            .filter_map(|d| d.as_str())
            .map(|d| d.split(' ').next().unwrap().to_owned());
        deps.entry(name).or_default().extend(names);
    }
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![root.to_owned()]];
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap().clone();
        if FORBIDDEN.contains(&last.as_str()) {
            found.push(path.join(" -> "));
            continue;
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for d in deps.get(&last).into_iter().flatten() {
            let mut next = path.clone();
            next.push(d.clone());
            stack.push(next);
        }
    }
    found
}

#[test]
fn modes_and_dataplane_never_depend_on_kubernetes_crates() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .expect("Cargo.lock");
    for root in ["kproxy-modes", "kproxy-dataplane"] {
        assert!(
            lock.contains(&format!("name = \"{root}\"")),
            "{root} is in the lock file"
        );
        let paths = forbidden_paths(&lock, root);
        assert!(
            paths.is_empty(),
            "{root} must not depend on Kubernetes crates: {paths:?}"
        );
    }
}

/// The check itself can fail: a lock where modes reaches k8s-openapi through a middle crate.
#[test]
fn the_check_finds_a_transitive_kubernetes_dependency() {
    let lock = r#"
version = 4
[[package]]
name = "kproxy-modes"
version = "0.1.0"
dependencies = ["helper 1.0.0", "serde"]
[[package]]
name = "helper"
version = "1.0.0"
dependencies = ["k8s-openapi"]
[[package]]
name = "serde"
version = "1.0.0"
[[package]]
name = "k8s-openapi"
version = "0.29.0"
"#;
    assert_eq!(
        forbidden_paths(lock, "kproxy-modes"),
        ["kproxy-modes -> helper -> k8s-openapi"]
    );
}
