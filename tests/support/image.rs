//! The images, built for real and unpacked, for the tests that run their programs among
//! exactly their files: the client image (the Concourse resource's `/opt/resource/*` and the
//! GitHub Action's entrypoint) and the server image (`bldst server`). `scripts/image-rootfs.sh`
//! assembles the root filesystem around a static binary (from `scripts/build-static.sh`, named
//! by [`ImageKind::binary_var`]), `podman build --build-context NAME=...` builds the
//! Dockerfile's final stage from it (pulling nothing), and `podman create` + `podman export`
//! unpack it. Programs then run in it with `chroot` (as root, like a Docker action) or, for
//! the server, [`ImageRoot::command`] (the image's user and working directory).
//!
//! Unavailable, saying why, when podman, chroot (root) or the static binary are missing;
//! `.ci/run` provides all three.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Which of the Dockerfile's two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// The default, last stage: the Concourse resource and the GitHub Action.
    Client,
    /// The `server` target.
    Server,
}

impl ImageKind {
    /// The environment variable naming the static binary to put in the image.
    pub fn binary_var(self) -> &'static str {
        match self {
            ImageKind::Client => "BUILDSTATE_STATIC_BINARY",
            ImageKind::Server => "BUILDSTATE_STATIC_SERVER_BINARY",
        }
    }

    /// `scripts/build-static.sh`'s argument for that binary.
    fn build_static_arg(self) -> &'static str {
        match self {
            ImageKind::Client => "",
            ImageKind::Server => " server",
        }
    }

    /// The Dockerfile's final stage, and the stage its root filesystem is copied from (which
    /// the test's directory stands in for).
    fn stages(self) -> (&'static str, &'static str) {
        match self {
            ImageKind::Client => ("client", "rootfs"),
            ImageKind::Server => ("server", "server-rootfs"),
        }
    }
}

/// An unpacked image.
pub struct ImageRoot {
    /// The image's root filesystem.
    pub root: PathBuf,
    /// The image's ENTRYPOINT, as `podman image inspect` reports it.
    pub entrypoint: Vec<String>,
    /// The image's CMD.
    pub cmd: Vec<String>,
    /// The image's USER (empty: root, as GitHub requires of a Docker action's image).
    pub user: String,
    /// The image's ENV, as `NAME=VALUE` lines.
    pub env: Vec<String>,
    /// The image's WORKDIR (empty: `/`).
    pub working_dir: String,
    /// The image's HEALTHCHECK command (`["CMD", program, args…]`; empty if none).
    pub healthcheck: Vec<String>,
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

/// `nsenter`'s absolute path: it enters a root directory, a working directory inside it and a
/// user in one step, which `chroot` (always `/`) cannot.
pub fn nsenter_path() -> Option<PathBuf> {
    ["/usr/bin/nsenter", "/bin/nsenter", "/usr/sbin/nsenter"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

impl ImageRoot {
    /// `argv` (absolute program first) run among the image's files as a container engine
    /// starts it: as the image's USER, in its WORKDIR, with its ENV and nothing of the test's
    /// environment, plus `env` (which wins, as `--env` does).
    pub fn command(&self, argv: &[String], env: &[(&str, &str)]) -> Command {
        let nsenter = nsenter_path().expect("nsenter (util-linux)");
        let (uid, gid) = self
            .user
            .split_once(':')
            .unwrap_or((&self.user, &self.user));
        let working_dir = self.working_dir.trim_start_matches('/');
        let mut command = Command::new(nsenter);
        command
            .arg(format!("--root={}", self.root.display()))
            // A path outside the new root: nsenter opens it before entering the root.
            .arg(format!("--wd={}", self.root.join(working_dir).display()));
        if !uid.is_empty() {
            command.args([format!("--setuid={uid}"), format!("--setgid={gid}")]);
        }
        command.arg("--").args(argv).env_clear();
        for line in &self.env {
            if let Some((name, value)) = line.split_once('=') {
                command.env(name, value);
            }
        }
        command.envs(env.iter().copied());
        command
    }
}

/// Builds and unpacks the client image, or says why it cannot here.
pub fn build_client_image() -> Result<ImageRoot, String> {
    build_image(ImageKind::Client)
}

/// Builds and unpacks one of the images, or says why it cannot here.
pub fn build_image(kind: ImageKind) -> Result<ImageRoot, String> {
    if Command::new("podman").arg("--version").output().is_err() {
        return Err("podman is not installed (apt-get install podman)".into());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0\n"));
    if chroot_path().is_none() || nsenter_path().is_none() || !is_root {
        return Err("chroot and nsenter need root, /usr/sbin/chroot and /usr/bin/nsenter".into());
    }
    let var = kind.binary_var();
    let Some(binary) = std::env::var_os(var).map(PathBuf::from) else {
        return Err(format!(
            "{var} is not set: run `export {var}=$PWD/$(scripts/build-static.sh{})`",
            kind.build_static_arg()
        ));
    };
    let (stage, rootfs_stage) = kind.stages();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("work dir");
    let mut script = Command::new("sh");
    script.arg(repo.join("scripts/image-rootfs.sh"));
    if kind == ImageKind::Server {
        script.arg("--server");
    }
    run(script
        .arg(&binary)
        .arg("/etc/ssl/certs/ca-certificates.crt")
        .arg(work.path()));
    let context = work.path().join("context");
    std::fs::create_dir_all(&context).expect("empty build context");
    let tag = format!(
        "localhost/buildstate-{stage}-test:{}",
        work.path()
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x")
            .to_lowercase()
            .replace('.', "")
    );
    // Docker's format, as `docker build` makes: the OCI format has no HEALTHCHECK.
    run(Command::new("podman")
        .args(["build", "--quiet", "--format", "docker"])
        .args(["--target", stage, "--tag", &tag])
        .arg("--build-context")
        .arg(format!("{rootfs_stage}={}", work.path().display()))
        .arg("--file")
        .arg(repo.join("Dockerfile"))
        .arg(&context));
    let inspected: serde_json::Value = serde_json::from_slice(
        &run(Command::new("podman").args(["image", "inspect", &tag])).stdout,
    )
    .expect("podman image inspect answers JSON");
    let image = &inspected[0];
    let strings = |value: &serde_json::Value| -> Vec<String> {
        serde_json::from_value::<Option<Vec<String>>>(value.clone())
            .expect("a list of strings or null")
            .unwrap_or_default()
    };
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    let config = &image["Config"];
    let entrypoint = strings(&config["Entrypoint"]);
    let cmd = strings(&config["Cmd"]);
    let env = strings(&config["Env"]);
    let user = text(&config["User"]);
    let working_dir = text(&config["WorkingDir"]);
    let healthcheck = strings(&image["Healthcheck"]["Test"]);
    let size = image["Size"].to_string();
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
    // As root, tar keeps the archive's owners: the test sees who owns what in the image.
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
        env,
        working_dir,
        healthcheck,
        size,
        _work: work,
    })
}
