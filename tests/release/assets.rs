//! The release's files as the release workflow makes them: the static binaries for this
//! machine's architecture and SHA256SUMS (`scripts/release-assets.sh`), the images assembled
//! from them with podman (`scripts/release-images.sh`), and the URL `cargo binstall` renders
//! from Cargo.toml for each target.
//!
//! The build and image tests need the static binaries `.ci/run` builds
//! (`BUILDSTATE_STATIC_BINARY`, `BUILDSTATE_STATIC_SERVER_BINARY`, so the script's own cargo
//! builds find everything compiled), and podman for the images; without them they say they
//! are skipped.

use std::path::Path;
use std::process::Command;

use crate::support::image::run;
use crate::{asset_name, release_names, repo, this_target};

/// Cargo.toml's `[package.metadata.binstall]` `pkg-url`.
fn binstall_template() -> String {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let section = manifest
        .split("[package.metadata.binstall]")
        .nth(1)
        .expect("a [package.metadata.binstall] section");
    let line = section
        .lines()
        .find_map(|line| line.trim().strip_prefix("pkg-url = "))
        .expect("pkg-url");
    line.trim_matches('"').to_owned()
}

/// Cargo.toml's `repository`.
fn repository_url() -> String {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    manifest
        .lines()
        .find_map(|line| line.strip_prefix("repository = "))
        .expect("repository")
        .trim_matches('"')
        .to_owned()
}

#[test]
fn cargo_binstall_renders_the_url_of_the_asset_the_release_publishes_for_each_target() {
    let names = release_names();
    for target in ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"] {
        // binstall's template variables, as it fills them for `cargo binstall buildstate`.
        let rendered = binstall_template()
            .replace("{ repo }", &repository_url())
            .replace("{ version }", &names["VERSION"])
            .replace("{ target }", target);

        assert_eq!(
            rendered,
            format!(
                "{}/download/v{}/{}",
                names["RELEASES"],
                names["VERSION"],
                asset_name("full", target)
            )
        );
        assert!(!rendered.contains('{'), "{rendered}");
    }
}

/// The static binaries are built (by `.ci/run`), or why this test is skipped.
fn static_binaries_built() -> Result<(), String> {
    for var in [
        "BUILDSTATE_STATIC_BINARY",
        "BUILDSTATE_STATIC_SERVER_BINARY",
    ] {
        if std::env::var_os(var).is_none() {
            return Err(format!("{var} is not set (.ci/run sets it)"));
        }
    }
    Ok(())
}

/// `scripts/release-assets.sh build` + `checksums` into `dist`, as the workflow's jobs do.
fn build_assets(dist: &Path) {
    run(Command::new("sh")
        .arg(repo().join("scripts/release-assets.sh"))
        .arg("build")
        .arg(dist));
    run(Command::new("sh")
        .arg(repo().join("scripts/release-assets.sh"))
        .arg("checksums")
        .arg(dist));
}

#[test]
fn the_release_assets_for_this_architecture_build_and_check_against_sha256sums() {
    if let Err(why) = static_binaries_built() {
        return eprintln!("SKIPPED the release assets test: {why}");
    }
    let dist = tempfile::tempdir().expect("dist");
    let target = this_target();

    build_assets(dist.path());
    let sums = std::fs::read_to_string(dist.path().join("SHA256SUMS")).expect("SHA256SUMS");
    let check = |dir: &Path| {
        Command::new("sha256sum")
            .args(["--check", "--quiet", "SHA256SUMS"])
            .current_dir(dir)
            .output()
            .expect("sha256sum")
    };
    let good = check(dist.path());
    let full = dist.path().join(asset_name("full", &target));
    let version = run(Command::new(&full).arg("--version")).stdout;
    let mut tampered = std::fs::read(&full).expect("read");
    tampered.push(0);
    std::fs::write(&full, tampered).expect("tamper");
    let bad = check(dist.path());

    let listed: Vec<&str> = sums
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    // The script lists them in the shell's sorted order (`bldst-client-…` before `bldst-…`).
    assert_eq!(
        listed,
        [asset_name("client", &target), asset_name("full", &target)]
    );
    assert!(good.status.success(), "{good:?}");
    assert!(
        !bad.status.success(),
        "a changed binary must fail the check"
    );
    assert!(
        String::from_utf8_lossy(&version).contains(&release_names()["VERSION"]),
        "{}",
        String::from_utf8_lossy(&version)
    );
}

#[test]
fn the_release_images_assemble_from_the_release_binaries_with_podman() {
    if let Err(why) = static_binaries_built() {
        return eprintln!("SKIPPED the release images test: {why}");
    }
    if Command::new("podman").arg("--version").output().is_err() {
        return eprintln!("SKIPPED the release images test: podman is not installed");
    }
    let dist = tempfile::tempdir().expect("dist");
    build_assets(dist.path());
    let unique = dist
        .path()
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("x")
        .to_lowercase()
        .replace('.', "");
    let image = format!("localhost/buildstate-release-test-{unique}");
    let server_image = format!("localhost/buildstate-server-release-test-{unique}");
    let version = "0.0.0-test";
    let arch = std::env::consts::ARCH;

    run(Command::new("bash")
        .arg(repo().join("scripts/release-images.sh"))
        .arg(dist.path())
        .env("IMAGE", &image)
        .env("SERVER_IMAGE", &server_image)
        .env("VERSION", version)
        .env("MAJOR", "0"));
    let inspect = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&run(Command::new("podman").args(["image", "inspect", name])).stdout)
            .expect("podman image inspect answers JSON")
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &run(Command::new("podman").args(["manifest", "inspect", &format!("{image}:{version}")]))
            .stdout,
    )
    .expect("podman manifest inspect answers JSON");
    let client = inspect(&format!("{image}:{version}-{arch}"));
    let server = inspect(&format!("{server_image}:{version}-{arch}"));
    for list in [&image, &server_image] {
        let _ = Command::new("podman")
            .args(["manifest", "rm", &format!("{list}:{version}")])
            .output();
        let _ = Command::new("podman")
            .args(["rmi", &format!("{list}:{version}-{arch}")])
            .output();
    }

    let platforms: Vec<&str> = manifest["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|entry| entry["platform"]["architecture"].as_str())
        .collect();
    let expected_arch = if arch == "aarch64" { "arm64" } else { "amd64" };
    assert_eq!(platforms, [expected_arch]);
    assert_eq!(client[0]["Architecture"].as_str(), Some(expected_arch));
    assert_eq!(
        client[0]["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/bldst-action"])
    );
    assert_eq!(server[0]["Config"]["Cmd"], serde_json::json!(["server"]));
    // The bound for the image every action step pulls.
    let size = client[0]["Size"].as_u64().expect("size");
    assert!(size < 15_000_000, "the client image is {size} bytes");
}
