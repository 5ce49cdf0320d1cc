//! The server image, built for real: `scripts/image-rootfs.sh --server` assembles the root
//! filesystem around the static server binary (`BUILDSTATE_STATIC_SERVER_BINARY`, from
//! `scripts/build-static.sh server`), `podman build --build-context server-rootfs=...` builds
//! the Dockerfile's `server` stage from it (pulling nothing), `podman create` + `podman export`
//! unpack it, and its ENTRYPOINT + CMD run among exactly its files as its USER in its WORKDIR,
//! with its ENV and nothing of the test's environment: on the default SQLite file, then on a
//! scratch PostgreSQL database. Its HEALTHCHECK command answers, a build is reported to over
//! HTTP, and SIGTERM stops it cleanly.
//!
//! Skipped, saying why, when podman, nsenter (root) or the static binary are missing;
//! `.ci/run` provides all three.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Output;

use buildstate_domain::{BuildStatus, ReportStatus};

use crate::helpers::{code, report, start_request};
use crate::support::image::{build_image, tree, ImageKind, ImageRoot};
use crate::support::process::{ServerProcess, BOOTSTRAP_ARGS};
use crate::support::ScratchDatabase;

/// The user the image runs as (Debian's `nobody`), and who owns its data directory.
const SERVER_UID: u32 = 65534;

/// A loopback port nobody listens on now: the container's `BUILDSTATE_LISTEN`.
fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `argv` in the image (as a container engine would) to the end.
fn run_in_image(image: &ImageRoot, argv: &[String], env: &[(&str, &str)]) -> Output {
    image.command(argv, env).output().expect("nsenter runs")
}

fn bldst(args: &[&str]) -> Vec<String> {
    std::iter::once("/usr/local/bin/bldst")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// The image's server on `env` (its database, its loopback address): it starts and applies
/// its migrations, its HEALTHCHECK passes, `bldst server bootstrap` gives a token, a build is
/// started and reported to over HTTP, SIGTERM stops it with exit 0, and its health check then
/// fails.
async fn serve_a_build_and_stop(image: &ImageRoot, env: &[(&str, &str)]) {
    let port = free_loopback_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = env.to_vec();
    env.push(("BUILDSTATE_LISTEN", &listen));
    let server_argv: Vec<String> = image.entrypoint.iter().chain(&image.cmd).cloned().collect();
    let mut server = ServerProcess::spawn(image.command(&server_argv, &env), "http").await;
    assert_eq!(server.address, listen, "{:?}", server.log());

    // The image's own HEALTHCHECK command ("CMD", then the program and its arguments).
    let healthy = run_in_image(image, &image.healthcheck[1..], &env);
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );

    let bootstrap = run_in_image(image, &bldst(&BOOTSTRAP_ARGS), &env);
    assert!(
        bootstrap.status.success(),
        "{}",
        String::from_utf8_lossy(&bootstrap.stderr)
    );
    let token = String::from_utf8(bootstrap.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let client = server.client_with(&token);
    let id = client
        .start_build(&start_request(Some("image/server")))
        .await
        .expect("start a build")
        .build
        .id;
    client
        .report_transition(&id, &report(0, ReportStatus::Completed), None)
        .await
        .expect("report");
    let build = client.get_build(&id).await.expect("get the build");
    assert_eq!((build.state, build.status), (code(5), BuildStatus::Running));

    server.terminate();
    let status = server.exited().await;
    let log = server.log().join("\n");
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("stopped accepting"), "{log}");
    assert!(!log.contains(&token), "the token was logged: {log}");
    let gone = run_in_image(image, &image.healthcheck[1..], &env);
    assert_eq!(gone.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_image_serves_sqlite_by_default_and_postgresql_as_user_65534() {
    let image = match tokio::task::spawn_blocking(|| build_image(ImageKind::Server))
        .await
        .expect("build")
    {
        Ok(image) => image,
        Err(why) => return eprintln!("SKIPPED the server image test: {why}"),
    };
    eprintln!("server image size: {} bytes", image.size);
    assert_eq!(image.user, "65534:65534");
    assert_eq!(image.entrypoint, ["/usr/local/bin/bldst"]);
    assert_eq!(image.cmd, ["server"]);
    assert_eq!(image.working_dir, "/var/lib/buildstate");
    assert_eq!(
        image.healthcheck,
        ["CMD", "/usr/local/bin/bldst", "server", "healthcheck"]
    );
    assert!(
        image
            .env
            .contains(&"BUILDSTATE_LISTEN=0.0.0.0:8000".to_owned()),
        "{:?}",
        image.env
    );

    // Exactly the binary, the CA bundle, /tmp and the data directory: no shell, no loader, no
    // libraries (so the binary that runs below is static). podman adds empty mount points.
    let root = &image.root;
    let files: Vec<String> = tree(root)
        .into_iter()
        .filter(|path| {
            !matches!(
                path.as_str(),
                "dev" | "proc" | "sys" | "run" | "etc/hosts" | "etc/resolv.conf" | "etc/hostname"
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
            "tmp",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/bldst",
            "var",
            "var/lib",
            "var/lib/buildstate",
        ],
    );
    // The user may write its data directory and /tmp, and nothing else.
    let data = std::fs::metadata(root.join("var/lib/buildstate")).expect("data directory");
    assert_eq!((data.uid(), data.gid()), (SERVER_UID, SERVER_UID));
    let tmp = std::fs::metadata(root.join("tmp")).expect("/tmp");
    assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
    for path in ["usr/local/bin/bldst", "etc/ssl/certs", "var/lib", "."] {
        assert_eq!(
            std::fs::metadata(root.join(path)).expect("exists").uid(),
            0,
            "{path}"
        );
    }

    // The default: SQLite in the working directory, created by the server's user.
    serve_a_build_and_stop(&image, &[]).await;
    let database = std::fs::metadata(root.join("var/lib/buildstate/buildstate.db"))
        .expect("the default SQLite file");
    assert_eq!(database.uid(), SERVER_UID);

    // PostgreSQL, as the compose file runs it: DATABASE_URL (with a host name, which the
    // static binary resolves through the /etc/hosts a container runtime writes) and
    // SECRET_KEY.
    let Some(scratch) = ScratchDatabase::create().await else {
        return;
    };
    let by_name = scratch
        .url
        .replacen("@127.0.0.1:", "@postgres.buildstate.test:", 1)
        .replacen("@localhost:", "@postgres.buildstate.test:", 1);
    assert!(by_name.contains("@postgres.buildstate.test:"), "{by_name}");
    std::fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n127.0.0.1 postgres.buildstate.test\n",
    )
    .expect("the image's /etc/hosts");
    serve_a_build_and_stop(
        &image,
        &[
            ("DATABASE_URL", &by_name),
            ("SECRET_KEY", "image-test-secret-key-of-32-bytes-or-more"),
        ],
    )
    .await;
}
