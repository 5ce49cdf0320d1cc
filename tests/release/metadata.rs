//! The published action (`action.yml`: the released image) and the one this repository's CI
//! builds from source (`.github/actions/from-source/action.yml`) are the same action: every
//! field agrees but `runs.image`, so what CI tests is what a release ships.

use crate::{release_names, repo, yaml};

#[test]
fn the_published_action_and_the_one_ci_builds_differ_only_in_the_image() {
    let names = release_names();
    let mut published = yaml("action.yml");
    let mut from_source = yaml(".github/actions/from-source/action.yml");

    let published_image = published["runs"]["image"].as_str().map(str::to_owned);
    let source_image = from_source["runs"]["image"].as_str().map(str::to_owned);
    published["runs"]["image"] = serde_norway::Value::Null;
    from_source["runs"]["image"] = serde_norway::Value::Null;

    // The released image of this major version, named from publish.env: nothing compiles
    // when a workflow uses the action.
    assert_eq!(
        published_image.as_deref(),
        Some(format!("docker://{}:{}", names["IMAGE"], names["MAJOR"]).as_str())
    );
    // The Dockerfile at the root, relative to the twin's directory.
    let dockerfile = source_image.expect("runs.image of the from-source action");
    assert!(
        dockerfile.ends_with("Dockerfile")
            && repo()
                .join(".github/actions/from-source")
                .join(&dockerfile)
                .canonicalize()
                .ok()
                == repo().join("Dockerfile").canonicalize().ok(),
        "{dockerfile}"
    );
    assert_eq!(
        published, from_source,
        "copy action.yml's change into .github/actions/from-source/action.yml"
    );
}

#[test]
fn ci_runs_the_action_from_source_and_the_setup_action_from_this_commit() {
    let workflow = std::fs::read_to_string(repo().join(".github/workflows/action-self-test.yml"))
        .expect("the self-test workflow");

    let uses: Vec<&str> = workflow
        .lines()
        .filter_map(|line| line.trim().strip_prefix("uses: "))
        .filter(|target| target.starts_with("./"))
        .collect();

    assert!(uses.contains(&"./.github/actions/from-source"), "{uses:?}");
    assert!(uses.contains(&"./setup"), "{uses:?}");
    assert!(
        !uses.contains(&"./"),
        "`uses: ./` would pull the released image: {uses:?}"
    );
}
