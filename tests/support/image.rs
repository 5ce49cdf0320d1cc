//! The client image, built for real and unpacked, for the tests that run its programs among
//! exactly its files (the Concourse resource's `/opt/resource/*` and the GitHub Action's
//! entrypoint): `scripts/image-rootfs.sh` assembles the root filesystem around a static binary
//! (`BUILDSTATE_STATIC_BINARY`, from `scripts/build-static.sh`), `podman build --build-context
//! rootfs=...` builds the Dockerfile's final `client` stage from it (pulling nothing), and
//! `podman create` + `podman export` unpack it. Programs then run in it with `chroot`.
//!
//! Unavailable, saying why, when podman, chroot (root) or the static binary are missing;
//! `.ci/run` provides all three.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The static binary to put in the image, if the environment names one.
pub const BINARY_VAR: &str = "BUILDSTATE_STATIC_BINARY";

/// An unpacked client image.
pub struct ImageRoot {
    /// The image's root filesystem.
    pub root: PathBuf,
    /// The image's ENTRYPOINT, as `podman image inspect` reports it.
    pub entrypoint: Vec<String>,
    /// The image's CMD.
    pub cmd: Vec<String>,
    /// The image's USER (empty: root, as GitHub requires of a Docker action's image).
    pub user: String,
    /// The image's size in bytes, as podman reports it.
    pub size: String,
    _work: tempfile::TempDir,
}

/// Runs a tool, panicking with its output when it fails.
pub fn run(command: &mut Command) -> std::process::Output {
    let output = command.output().expect("start a tool");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `chroot`'s absolute path (children run with an empty environment, so no `PATH` lookup).
pub fn chroot_path() -> Option<PathBuf> {
    ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// Every path in `root`, relative, sorted.
pub fn tree(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let relative = path
                .strip_prefix(root)
                .expect("inside")
                .display()
                .to_string();
            if path.is_dir() && !path.is_symlink() {
                pending.push(path);
            }
            found.push(relative);
        }
    }
    found.sort();
    found
}

fn json_strings(text: &[u8]) -> Vec<String> {
    serde_json::from_slice::<Option<Vec<String>>>(text)
        .expect("a JSON list or null")
        .unwrap_or_default()
}

/// Builds and unpacks the client image, or says why it cannot here.
pub fn build_client_image() -> Result<ImageRoot, String> {
    if Command::new("podman").arg("--version").output().is_err() {
        return Err("podman is not installed (apt-get install podman)".into());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
    if chroot_path().is_none() || !is_root {
        return Err("chroot needs root and /usr/sbin/chroot".into());
    }
    let Some(binary) = std::env::var_os(BINARY_VAR).map(PathBuf::from) else {
        return Err(format!(
            "{BINARY_VAR} is not set: run `export {BINARY_VAR}=$PWD/$(scripts/build-static.sh)`"
        ));
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("work dir");
    run(Command::new("sh")
        .arg(repo.join("scripts/image-rootfs.sh"))
        .arg(&binary)
        .arg("/etc/ssl/certs/ca-certificates.crt")
        .arg(work.path()));
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).expect("empty build context");
    let tag = format!(
        "localhost/buildstate-client-test:{}",
        work.path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .to_lowercase()
            .replace('.', "")
    );
    run(Command::new("podman")
        .args(["build", "--quiet", "--target", "client", "--tag", &tag])
        .arg("--build-context")
        .arg(format!("rootfs={}", work.path().display()))
        .arg("--file")
        .arg(repo.join("Dockerfile"))
        .arg(&context));
    let inspect = |format: &str| {
        run(Command::new("podman").args(["image", "inspect", "--format", format, &tag])).stdout
    };
    let entrypoint = json_strings(&inspect("{{json .Config.Entrypoint}}"));
    let cmd = json_strings(&inspect("{{json .Config.Cmd}}"));
    let user = String::from_utf8_lossy(&inspect("{{.Config.User}}"))
        .trim()
        .to_owned();
    let size = String::from_utf8_lossy(&inspect("{{.Size}}"))
        .trim()
        .to_owned();
    let container =
        String::from_utf8_lossy(&run(Command::new("podman").args(["create", &tag])).stdout)
            .trim()
            .to_owned();
    let archive = work.path().join("image.tar");
    run(Command::new("podman")
        .args(["export", "--output"])
        .arg(&archive)
        .arg(&container));
    run(Command::new("podman").args(["rm", &container]));
    run(Command::new("podman").args(["rmi", &tag]));
    let root = work.path().join("image");
    std::fs::create_dir_all(&root).expect("image root");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&root));
    Ok(ImageRoot {
        root,
        entrypoint,
        cmd,
        user,
        size,
        _work: work,
    })
}
