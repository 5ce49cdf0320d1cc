//! One place names where releases are published (publish.env): every file that names the
//! repository, an image or the action agrees with it, and a fork changes that one line.

use std::process::Command;

use crate::{release_names, repo, yaml};

fn names_script(args: &[&str], root: &std::path::Path) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/release-names.sh"))
        .args(args)
        .arg(root)
        .output()
        .expect("run scripts/release-names.sh")
}

#[test]
fn every_file_names_the_repository_that_publish_env_names() {
    let output = names_script(&["--check"], repo());

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_fork_changes_one_line_and_the_rest_follows() {
    // Arrange: a copy of the files that name the repository, and a fork's publish.env.
    let fork = tempfile::tempdir().expect("temp dir");
    let files = [
        "Cargo.toml",
        "action.yml",
        "resource/README.md",
        "pipelines/github/image-build-one-line.yml",
        "pipelines/concourse/image-build.yml",
    ];
    for file in files {
        let to = fork.path().join(file);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("dirs");
        std::fs::copy(repo().join(file), &to).expect("copy");
    }
    std::fs::write(
        fork.path().join("publish.env"),
        "BUILDSTATE_REPOSITORY=Forker/buildstate\n",
    )
    .expect("publish.env");

    // Act
    let before = names_script(&["--check"], fork.path());
    let applied = names_script(&["--apply"], fork.path());
    let after = names_script(&["--check"], fork.path());

    // Assert: the check named every copied file, the rewrite left none behind, and the
    // image is named in GHCR's lower case.
    let complaints = String::from_utf8_lossy(&before.stderr);
    assert!(!before.status.success());
    for file in files {
        assert!(
            complaints.contains(&format!("./{file}:")),
            "{file}: {complaints}"
        );
    }
    assert!(applied.status.success(), "{applied:?}");
    assert!(after.status.success(), "{after:?}");
    let action = std::fs::read_to_string(fork.path().join("action.yml")).expect("action.yml");
    assert!(
        action.contains("image: docker://ghcr.io/forker/buildstate:"),
        "{action}"
    );
    let example = std::fs::read_to_string(
        fork.path()
            .join("pipelines/github/image-build-one-line.yml"),
    )
    .expect("example");
    assert!(
        example.contains("uses: Forker/buildstate/setup@v"),
        "{example}"
    );
}

/// The release workflow's first check: a tag pushed in a repository that publish.env does not
/// name (a fork that has not changed the line yet, or the placeholder) stops before anything is
/// built, saying which line to change; the repository publish.env names passes, in any case.
#[test]
fn a_release_from_a_repository_publish_env_does_not_name_is_refused_with_the_fix() {
    let named = release_names()["REPOSITORY"].clone();
    let elsewhere = "someone-else/buildstate";
    assert_ne!(named.to_lowercase(), elsewhere);

    let refused = names_script(&["--published-from", elsewhere], repo());
    let accepted = names_script(&["--published-from", &named.to_uppercase()], repo());

    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{why}");
    assert!(refused.stdout.is_empty());
    assert_eq!(why.lines().count(), 1, "{why}");
    assert!(
        why.contains(&format!("publish.env names `{named}`"))
            && why.contains(&format!("BUILDSTATE_REPOSITORY={elsewhere}"))
            && why.contains("release-names.sh --apply"),
        "{why}"
    );
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    // ... and the workflow runs it with the repository it runs in, before it builds anything.
    let workflow =
        std::fs::read_to_string(repo().join(".github/workflows/release.yml")).expect("release.yml");
    let check = workflow
        .find(r#"release-names.sh --published-from "$GITHUB_REPOSITORY""#)
        .expect("release.yml checks publish.env against the repository it runs in");
    let build = workflow
        .find("scripts/release-assets.sh build")
        .expect("release.yml builds the binaries");
    assert!(check < build, "the check comes before the build");
}

#[test]
fn the_concourse_examples_register_the_released_image_by_its_major_version() {
    let names = release_names();
    for example in ["downstream.yml", "image-build.yml", "packer-ansible.yml"] {
        let pipeline = yaml(format!("pipelines/concourse/{example}"));
        let types = pipeline["resource_types"]
            .as_sequence()
            .expect("resource_types");
        let state_store = types
            .iter()
            .find(|t| t["name"].as_str() == Some("state-store"))
            .expect("the state-store type");

        assert_eq!(
            state_store["source"]["repository"].as_str(),
            Some(names["IMAGE"].as_str()),
            "{example}"
        );
        assert_eq!(
            state_store["source"]["tag"].as_str(),
            Some(names["MAJOR"].as_str()),
            "{example}"
        );
    }
}
