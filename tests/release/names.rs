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
