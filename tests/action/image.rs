//! The action from the built image: the Dockerfile's final stage (what `runs.image:
//! Dockerfile` builds) unpacked, its ENTRYPOINT run among exactly the image's files with
//! `chroot`, with the environment a runner gives a Docker action and the step's files where
//! the runner mounts them (`/github/file_commands`), against a server on loopback.
//!
//! Skipped, saying why, when podman, chroot (root) or the static binary are missing; `.ci/run`
//! provides all three.

use crate::helpers::{Action, Step, Workflow};
use crate::support::image::{build_client_image, chroot_path};
use crate::support::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_images_entrypoint_runs_the_action_as_a_runner_starts_it() {
    let image = match tokio::task::spawn_blocking(build_client_image)
        .await
        .expect("build")
    {
        Ok(image) => image,
        Err(why) => return eprintln!("SKIPPED the action image test: {why}"),
    };
    // GitHub's rules for a Docker action's image: no USER (the runner needs root to write the
    // workspace it mounts), an absolute, exec-form ENTRYPOINT (no shell in a FROM scratch
    // image) that is the action, and no CMD that would become its arguments.
    assert_eq!(image.user, "");
    assert_eq!(image.entrypoint, ["/usr/local/bin/bldst-action"]);
    assert!(image.cmd.is_empty(), "{:?}", image.cmd);
    let app = TestApp::spawn(Backend::Sqlite).await.expect("server");
    let chroot = chroot_path().expect("chroot");
    let action = Action::in_image(
        &chroot,
        &image.root,
        &image.entrypoint,
        &app.base_url,
        &app.admin_token,
    );
    let workflow = Workflow::default();

    let started = action
        .run(
            &workflow,
            &Step::new(
                "start",
                &[
                    ("command", "start"),
                    ("platform", "aws"),
                    ("image-type", "rhel8"),
                ],
            ),
        )
        .await
        .ok();
    let id = started.output("build-id").to_owned();
    let gate = Step::new(
        "gate",
        &[("command", "gate"), ("build-id", &id), ("state", "0")],
    );
    let answer = action.run(&workflow, &gate).await.ok();
    let bad = action
        .run(
            &workflow,
            &Step::new(
                "bad",
                &[("command", "gate"), ("build-id", &id), ("state", "7")],
            ),
        )
        .await;

    assert_eq!(started.output("resumed"), "false");
    assert!(
        started.summary.contains("### buildstate:"),
        "{}",
        started.summary
    );
    assert_eq!(
        (answer.output("decision"), answer.output("skip")),
        ("run", "false")
    );
    assert!(bad.failed().starts_with("input `state`: "));
}
