//! Integration tests of how buildstate is released and installed: the names a release
//! publishes under (one place, publish.env), the published action's metadata beside the one
//! CI builds from source, the release's assets and images as the release workflow makes them
//! (`scripts/release-*.sh`, run here for this machine's architecture), `cargo binstall`'s
//! template, and the setup action's script against a local fake release and a real server.

#[path = "../support/mod.rs"]
mod support;

mod assets;
mod metadata;
mod names;
mod setup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `scripts/release-names.sh`'s names (`REPOSITORY`, `VERSION`, `MAJOR`, `IMAGE`, ...).
fn release_names() -> BTreeMap<String, String> {
    let output = Command::new("bash")
        .arg(repo().join("scripts/release-names.sh"))
        .output()
        .expect("run scripts/release-names.sh");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// The name `scripts/release-assets.sh` gives an asset (`full` or `client`) for `target`.
fn asset_name(kind: &str, target: &str) -> String {
    let output = Command::new("sh")
        .arg(repo().join("scripts/release-assets.sh"))
        .args(["name", kind, target])
        .output()
        .expect("run scripts/release-assets.sh");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// This machine's target triple, as the release names it.
fn this_target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// A YAML file of the repository, parsed.
fn yaml(path: impl AsRef<Path>) -> serde_norway::Value {
    let path: PathBuf = repo().join(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}
