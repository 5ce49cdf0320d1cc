//! The setup action's script (`setup/setup.sh`, what `setup/action.yml` runs) against a local
//! fake of a GitHub release (wiremock serving this build's `bldst` under the release's asset
//! name, with SHA256SUMS from `scripts/release-assets.sh`) and a real server: it installs into
//! the tool cache, exports the server, the masked token and the build for later steps, and the
//! next step is one line. A bad checksum, a missing asset and an unsupported architecture are
//! refused with one `::error::` line, nothing installed and nothing exported.

use std::path::PathBuf;
use std::process::{Command, Output};

use buildstate_domain::BuildId;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::TestApp;
use crate::{asset_name, release_names, repo, this_target};

/// The runner's `RUNNER_ARCH` for this machine.
fn runner_arch() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "ARM64"
    } else {
        "X64"
    }
}

/// A fake release at `{server}/download/vVERSION/`: `assets` and a SHA256SUMS, either the one
/// `scripts/release-assets.sh checksums` writes over them or `sums`.
async fn fake_release(assets: &[(String, Vec<u8>)], sums: Option<String>) -> (MockServer, String) {
    let server = MockServer::start().await;
    let version = &release_names()["VERSION"];
    let base = format!("/download/v{version}");
    let sums = match sums {
        Some(sums) => sums,
        None => {
            let dir = tempfile::tempdir().expect("release dir");
            for (name, bytes) in assets {
                std::fs::write(dir.path().join(name), bytes).expect("asset");
            }
            crate::support::image::run(
                Command::new("sh")
                    .arg(repo().join("scripts/release-assets.sh"))
                    .arg("checksums")
                    .arg(dir.path()),
            );
            std::fs::read_to_string(dir.path().join("SHA256SUMS")).expect("SHA256SUMS")
        }
    };
    Mock::given(method("GET"))
        .and(path(format!("{base}/SHA256SUMS")))
        .respond_with(ResponseTemplate::new(200).set_body_string(sums))
        .mount(&server)
        .await;
    for (name, bytes) in assets {
        Mock::given(method("GET"))
            .and(path(format!("{base}/{name}")))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(bytes.clone()))
            .mount(&server)
            .await;
    }
    let url = format!("{}{base}", server.uri());
    (server, url)
}

/// This build's `bldst`, under the release's name for this machine's client binary.
fn client_asset() -> (String, Vec<u8>) {
    (
        asset_name("client", &this_target()),
        std::fs::read(env!("CARGO_BIN_EXE_bldst")).expect("the built bldst"),
    )
}

/// A runner's job: its temporary directory, tool cache and the step's command files.
struct Runner {
    dir: tempfile::TempDir,
}

/// What one run of the setup script left.
struct Step {
    output: Output,
    env: String,
    path: String,
    outputs: String,
}

impl Step {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// A single-line output's value.
    fn output(&self, name: &str) -> Option<&str> {
        self.outputs
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
    }

    /// The `::error::` line, asserting the step failed with exactly one.
    fn error(&self) -> String {
        assert!(!self.output.status.success(), "{}", self.stdout());
        let errors: Vec<String> = self
            .stdout()
            .lines()
            .filter(|line| line.starts_with("::error"))
            .map(str::to_owned)
            .collect();
        assert_eq!(errors.len(), 1, "{}", self.stdout());
        errors[0].clone()
    }
}

impl Runner {
    fn new() -> Self {
        Runner {
            dir: tempfile::tempdir().expect("runner dir"),
        }
    }

    fn tool_cache(&self) -> PathBuf {
        self.dir.path().join("tool-cache")
    }

    /// Runs `setup/setup.sh` as the composite action's step runs it: the inputs as `SETUP_*`,
    /// the runner's variables, fresh command files, nothing else of the test's environment.
    fn setup(&self, inputs: &[(&str, &str)]) -> Step {
        let dir = self.dir.path();
        let step = tempfile::tempdir_in(dir).expect("step dir");
        let file = |name: &str| step.path().join(name);
        for name in ["env", "path", "output", "summary"] {
            std::fs::write(file(name), "").expect("command file");
        }
        let temp = dir.join("runner-temp");
        std::fs::create_dir_all(&temp).expect("runner temp");
        let mut command = Command::new("bash");
        command
            .arg(repo().join("setup/setup.sh"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", dir)
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", runner_arch())
            .env("RUNNER_TEMP", &temp)
            .env("RUNNER_TOOL_CACHE", self.tool_cache())
            .env("GITHUB_ENV", file("env"))
            .env("GITHUB_PATH", file("path"))
            .env("GITHUB_OUTPUT", file("output"))
            .env("GITHUB_STEP_SUMMARY", file("summary"))
            .env("GITHUB_REPOSITORY", "octo/images")
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_RUN_ATTEMPT", "1")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_ACTION_PATH", repo().join("setup"));
        for (name, value) in inputs {
            command.env(*name, value);
        }
        let output = command.output().expect("run setup/setup.sh");
        let read = |name: &str| std::fs::read_to_string(file(name)).expect("command file");
        Step {
            output,
            env: read("env"),
            path: read("path"),
            outputs: read("output"),
        }
    }

    /// The directory a version is installed in.
    fn installed(&self) -> PathBuf {
        self.tool_cache()
            .join("bldst")
            .join(&release_names()["VERSION"])
            .join(std::env::consts::ARCH)
    }
}

/// The inputs of a setup step that starts a build.
fn inputs<'a>(app_url: &'a str, token: &'a str, release_url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SETUP_API_URL", app_url),
        ("SETUP_API_TOKEN", token),
        ("SETUP_PLATFORM", "aws"),
        ("SETUP_IMAGE_TYPE", "rhel8"),
        ("SETUP_RELEASE_URL", release_url),
        ("SETUP_SUMMARY", "auto"),
    ]
}

/// `GITHUB_ENV`'s `NAME=value` lines as pairs.
fn exported(env: &str) -> Vec<(String, String)> {
    env.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

async fn setup_installs_bldst_exports_the_build_and_a_stage_is_one_line(app: TestApp) {
    // Arrange
    let (release, release_url) = fake_release(&[client_asset()], None).await;
    let runner = Runner::new();
    let inputs = inputs(&app.base_url, &app.admin_token, &release_url);

    // Act: the setup step, a one-line stage with the variables it exported, and the setup of
    // a re-run of the job (same run id).
    let first = tokio::task::block_in_place(|| runner.setup(&inputs));
    let env = exported(&first.env);
    let bin = PathBuf::from(first.path.trim());
    let stage = tokio::task::block_in_place(|| {
        Command::new("bldst")
            .args(["build", "run", "--state", "5", "--"])
            .args([
                "sh",
                "-c",
                "echo ami_id=ami-0abc >> \"$BLDST_OUTPUTS_FILE\"",
            ])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .envs(env.iter().map(|(name, value)| (name, value)))
            .output()
            .expect("run bldst build run")
    });
    let rerun = tokio::task::block_in_place(|| runner.setup(&inputs));

    // Assert: masked first, installed, exported, started; the stage ran through the server.
    let stdout = first.stdout();
    assert!(
        first.output.status.success(),
        "{stdout}\n{:?}",
        first.output
    );
    assert_eq!(
        stdout.lines().next(),
        Some(format!("::add-mask::{}", app.admin_token).as_str())
    );
    let mask = format!("::add-mask::{}", app.admin_token);
    assert!(
        stdout
            .lines()
            .filter(|line| line.contains(&app.admin_token))
            .all(|line| line == mask),
        "the token appears only in masks: {stdout}"
    );
    assert_eq!(bin, runner.installed());
    assert!(bin.join("bldst").is_file() && bin.join("bldst-action").exists());
    let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "BUILDSTATE_API_URL",
            "BUILDSTATE_API_TOKEN",
            "BUILDSTATE_BUILD_ID"
        ]
    );
    let id: BuildId = env[2].1.parse().expect("a build id");
    assert_eq!(first.output("build-id"), Some(id.as_str()));
    assert_eq!(first.output("resumed"), Some("false"));
    assert!(
        stage.status.success(),
        "{}",
        String::from_utf8_lossy(&stage.stderr)
    );
    let build = app.client().get_build(&id).await.expect("the build");
    assert_eq!(build.state.to_string(), "10");
    assert_eq!(build.outputs["ami_id"].value, "ami-0abc");
    assert_eq!(
        build.key.map(|key| key.to_string()).as_deref(),
        Some("octo/images/4242/aws/rhel8")
    );
    // The re-run resumes the same build from the tool cache: no second download.
    assert!(rerun.output.status.success(), "{}", rerun.stdout());
    assert!(
        rerun.stdout().contains("from the tool cache"),
        "{}",
        rerun.stdout()
    );
    assert_eq!(rerun.output("build-id"), Some(id.as_str()));
    assert_eq!(rerun.output("resumed"), Some("true"));
    let requests = release.received_requests().await.expect("recorded");
    assert_eq!(requests.len(), 2, "SHA256SUMS and the binary, once");
}

crate::on_both_backends!(setup_installs_bldst_exports_the_build_and_a_stage_is_one_line);

/// Asserts that a failed setup installed and exported nothing.
fn assert_nothing_left(runner: &Runner, step: &Step) {
    assert!(!runner.installed().join("bldst").exists());
    assert_eq!((step.env.as_str(), step.path.as_str()), ("", ""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_whose_checksum_is_not_the_listed_one_is_refused() {
    let (name, bytes) = client_asset();
    let wrong = format!("{}  {name}\n", "0".repeat(64));
    let (_release, url) = fake_release(&[(name.clone(), bytes)], Some(wrong)).await;
    let runner = Runner::new();

    let step = tokio::task::block_in_place(|| {
        runner.setup(&inputs("http://127.0.0.1:9", "a-token", &url))
    });

    let error = step.error();
    assert!(
        error.contains(&format!("checksum mismatch for `{name}`"))
            && error.contains("not installed"),
        "{error}"
    );
    assert_nothing_left(&runner, &step);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_without_this_architectures_binary_is_refused() {
    // SHA256SUMS lists the binary, but the release has no such file.
    let name = asset_name("client", &this_target());
    let sums = format!("{}  {name}\n", "a".repeat(64));
    let (_release, url) = fake_release(&[], Some(sums)).await;
    let runner = Runner::new();

    let step = tokio::task::block_in_place(|| {
        runner.setup(&inputs("http://127.0.0.1:9", "a-token", &url))
    });

    let error = step.error();
    assert!(
        error.contains(&format!("cannot download `{name}`")) && error.contains("404"),
        "{error}"
    );
    assert_nothing_left(&runner, &step);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_architecture_is_refused_before_anything_is_downloaded() {
    let (release, url) = fake_release(&[client_asset()], None).await;
    let runner = Runner::new();
    let mut inputs = inputs("http://127.0.0.1:9", "a-token", &url);
    inputs.push(("RUNNER_ARCH", "ARM"));

    let step = tokio::task::block_in_place(|| runner.setup(&inputs));

    let error = step.error();
    assert!(
        error.contains("unsupported runner architecture `ARM`"),
        "{error}"
    );
    assert_nothing_left(&runner, &step);
    assert!(release
        .received_requests()
        .await
        .expect("recorded")
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_named_as_the_input_to_set() {
    let runner = Runner::new();

    let step = tokio::task::block_in_place(|| {
        runner.setup(&[
            ("SETUP_API_URL", "https://buildstate.example.com"),
            ("SETUP_RELEASE_URL", "http://127.0.0.1:9"),
        ])
    });

    assert!(
        step.error().contains("input `api-token`"),
        "{}",
        step.stdout()
    );
    assert_nothing_left(&runner, &step);
}
