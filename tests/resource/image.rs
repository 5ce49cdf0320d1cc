//! The client image, built for real: `scripts/image-rootfs.sh` assembles the root filesystem
//! around a static binary (`BUILDSTATE_STATIC_BINARY`, from `scripts/build-static.sh`),
//! `podman build --build-context rootfs=...` builds the Dockerfile's final `client` stage from it
//! (pulling nothing), `podman create` + `podman export` unpack the image, and `check`, `out` and
//! `in` run inside it with `chroot` and an empty environment, against a server on loopback.
//!
//! Skipped, saying why, when podman, chroot (root) or the static binary are missing; `.ci/run`
//! provides all three.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::helpers::Outcome;
use crate::support::image::{build_client_image, chroot_path, tree};
use crate::support::{Backend, TestApp};

fn skip(why: &str) {
    eprintln!("SKIPPED the image test: {why}");
}

/// Runs `program` inside `root` with an empty environment.
fn in_image(root: &Path, program: &str, dir: Option<&str>, stdin: &Value, token: &str) -> Outcome {
    use std::io::Write as _;
    let mut command = Command::new(chroot_path().expect("chroot"));
    command.arg(root).arg(program);
    if let Some(dir) = dir {
        command.arg(dir);
    }
    let mut child = command
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chroot");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.to_string().as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    let outcome = Outcome {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        !outcome.stdout.contains(token) && !outcome.stderr.contains(token),
        "the token was printed: {outcome:?}"
    );
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_built_image_runs_check_in_and_out_with_an_empty_environment() {
    let image = match build_client_image() {
        Ok(image) => image,
        Err(why) => return skip(&why),
    };
    eprintln!("image size: {} bytes", image.size);
    let root = image.root.clone();

    // Exactly the binary, its names and the CA bundle (podman adds empty mount points).
    let files: Vec<String> = tree(&root)
        .into_iter()
        .filter(|path| {
            !matches!(
                path.as_str(),
                "dev"
                    | "proc"
                    | "sys"
                    | "run"
                    | "etc/hosts"
                    | "etc/resolv.conf"
                    | "etc/hostname"
                    | "run/.containerenv"
            )
        })
        .filter(|path| !path.starts_with("run/"))
        .collect();
    assert_eq!(
        files,
        [
            "etc",
            "etc/nsswitch.conf",
            "etc/ssl",
            "etc/ssl/certs",
            "etc/ssl/certs/ca-certificates.crt",
            "opt",
            "opt/resource",
            "opt/resource/check",
            "opt/resource/in",
            "opt/resource/out",
            "tmp",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/bldst",
            "usr/local/bin/bldst-action",
            "usr/local/bin/bldst_cli",
        ],
    );

    let Some(app) = TestApp::spawn(Backend::Sqlite).await else {
        return;
    };
    let source = json!({
        "api_url": app.base_url, "token": app.admin_token,
        "platform": "aws", "image_type": "rhel8", "key": "image/test",
    });
    std::fs::create_dir_all(root.join("tmp/put")).expect("put dir");
    std::fs::create_dir_all(root.join("tmp/get")).expect("get dir");
    std::fs::write(
        root.join("tmp/put/state.json"),
        r#"{"state": 5, "status": "completed"}"#,
    )
    .expect("report file");
    let root_for = root.clone();
    let token = app.admin_token.clone();
    let (put, check, get) = tokio::task::spawn_blocking(move || {
        let root = root_for;
        let put = in_image(
            &root,
            "/opt/resource/out",
            Some("/tmp/put"),
            &json!({"source": source, "params": {"file": "state.json"}}),
            &token,
        );
        let check = in_image(
            &root,
            "/opt/resource/check",
            None,
            &json!({"source": source}),
            &token,
        );
        let version = serde_json::from_str::<Value>(&put.stdout)
            .map(|answer| answer["version"].clone())
            .unwrap_or_default();
        let get = in_image(
            &root,
            "/opt/resource/in",
            Some("/tmp/get"),
            &json!({"source": source, "version": version}),
            &token,
        );
        (put, check, get)
    })
    .await
    .expect("runs");
    let put = put.json();
    assert_eq!(put["version"]["state"], "5");
    assert_eq!(check.json(), json!([put["version"]]));
    assert_eq!(get.json()["version"], put["version"]);
    assert_eq!(
        std::fs::read_to_string(root.join("tmp/get/gate/5")).expect("gate"),
        "skip\n"
    );
    // Malformed input inside the image: one line, nothing on stdout.
    let bad = in_image(
        &root,
        "/opt/resource/check",
        None,
        &json!("nonsense"),
        &app.admin_token,
    );
    bad.failure();
    assert_eq!(bad.stderr.lines().count(), 1);
    app.stop().await;
}
