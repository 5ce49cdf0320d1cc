//! The server crate's modules import one way (README, Layout): no module imports a module that
//! imports it back, directly or through others. Read from the source: every `crate::…` and
//! `super::…` path outside comments is an import of the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// The module a file is, as a path: `api/builds.rs` is `api::builds`, `db.rs` and
/// `api/mod.rs` are `db` and `api`, `lib.rs` is the root (empty).
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The paths a line of code names from `crate::` or `super::`, each as its segments
/// (`use crate::{api, serving};` names `api` and `serving`).
fn named_paths(line: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut named = Vec::new();
    for (anchor, base) in [
        ("crate::", Vec::new()),
        ("super::", module[..module.len().saturating_sub(1)].to_vec()),
    ] {
        let mut rest = line;
        while let Some(at) = rest.find(anchor) {
            let after = &rest[at + anchor.len()..];
            let preceded = rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            rest = after;
            if preceded {
                continue;
            }
            let path: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '{' | ',' | ' '))
                .collect();
            let (stem, group) = match path.split_once('{') {
                Some((stem, group)) => (stem, group.split(',').collect::<Vec<_>>()),
                None => (path.as_str(), vec![""]),
            };
            for leaf in group {
                let segments = format!("{stem}{}", leaf.trim());
                let mut full = base.clone();
                full.extend(
                    segments
                        .split("::")
                        .map(str::trim)
                        .filter(|segment| !segment.is_empty())
                        .map(str::to_owned),
                );
                named.push(full);
            }
        }
    }
    named
}

/// The longest prefix of `path` that is a module.
fn module_named(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|length| path[..length].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// A module and one it imports, with everything between them, where the second reaches the
/// first again: one loop.
fn find_loop(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        module: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        trail: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(start) = trail.iter().position(|seen| seen == module) {
            let mut circle: Vec<String> = trail[start..].iter().map(|m| m.join("::")).collect();
            circle.push(module.join("::"));
            return Some(circle);
        }
        if !done.insert(module.clone()) {
            return None;
        }
        trail.push(module.clone());
        for next in edges.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, trail, done) {
                return Some(circle);
            }
        }
        trail.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|module| visit(module, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_of_the_server_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let modules: BTreeSet<Vec<String>> = files
        .iter()
        .map(|file| module_of(file.strip_prefix(&root).expect("under src")))
        .collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let module = module_of(file.strip_prefix(&root).expect("under src"));
        let text = std::fs::read_to_string(file).expect("source");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for path in named_paths(code, &module) {
                let Some(target) = module_named(&path, &modules) else {
                    continue;
                };
                // A module naming its own items, or its parent's or children's through `super`,
                // is one module's inside; what counts is an arrow between two.
                let related = target.starts_with(&module) || module.starts_with(&target);
                if !related {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    assert!(
        edges.len() > 10,
        "the reading found the crate's imports: {edges:?}"
    );
    assert!(
        edges[&vec!["peers".to_owned()]].contains(&vec!["token_cache".to_owned()]),
        "the reading follows `use crate::…` lines: {edges:?}"
    );
    assert_eq!(find_loop(&edges), None, "a circle of imports");
}
