//! Runs the built `bldst` binary against a [`TestApp`], in an environment of the test's own
//! making, and redacts ids, times and ports from what it printed for snapshots.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use buildstate_domain::BuildId;
use tokio::io::AsyncWriteExt as _;

use crate::support::TestApp;

/// Parses a command's stdout as JSON, showing the text when it is not.
pub fn json<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("JSON on stdout ({error}): {text}"))
}

/// The build `id` as `bldst build get -o json` prints it.
pub async fn build_of(bldst: &Bldst, id: &str) -> buildstate_domain::wire::Build {
    json(
        &bldst
            .run(&["build", "get", id, "-o", "json"])
            .await
            .ok()
            .stdout,
    )
}

/// What one run of `bldst` left behind.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Panics with everything printed unless the exit code is `expected`.
    #[track_caller]
    pub fn expect_code(self, expected: i32) -> Self {
        assert_eq!(
            self.code, expected,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Panics unless the run succeeded.
    #[track_caller]
    pub fn ok(self) -> Self {
        self.expect_code(0)
    }

    /// The failure contract: one `error: ` line on stderr and nothing on stdout.
    #[track_caller]
    pub fn expect_one_error_line(&self) {
        assert_eq!(self.stdout, "", "nothing on stdout on failure");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {:?}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{:?}", self.stderr);
    }
}

/// The `bldst` binary, set up to talk to one test server.
pub struct Bldst {
    pub base_url: String,
    pub token: Option<String>,
    /// Holds the config file and serves as `HOME`, so no test reads the real one.
    pub home: tempfile::TempDir,
    extra_env: Vec<(String, String)>,
}

impl Bldst {
    /// `bldst` with the server's admin token in BUILDSTATE_API_TOKEN.
    pub fn admin(app: &TestApp) -> Self {
        Self::with_token(app, Some(&app.admin_token))
    }

    /// `bldst` with `token` in BUILDSTATE_API_TOKEN, or none.
    pub fn with_token(app: &TestApp, token: Option<&str>) -> Self {
        Bldst {
            base_url: app.base_url.clone(),
            token: token.map(str::to_owned),
            home: tempfile::tempdir().expect("temporary home"),
            extra_env: Vec::new(),
        }
    }

    /// Adds an environment variable to every run.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.extra_env.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.home.path().join("config.json")
    }

    fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bldst"));
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("BUILDSTATE_CONFIG", self.config_path())
            .env("BUILDSTATE_API_URL", &self.base_url)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = &self.token {
            command.env("BUILDSTATE_API_TOKEN", token);
        }
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        command
    }

    /// Starts `bldst ARGS` with stdout and stderr piped, for commands that run while the test
    /// acts (`build watch`).
    pub fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        let mut command = self.command();
        command.args(args);
        command.spawn().expect("run bldst")
    }

    /// Runs `bldst ARGS` with stdin closed.
    pub async fn run(&self, args: &[&str]) -> Outcome {
        self.run_in(args, None, None).await
    }

    /// Runs `bldst ARGS` with `stdin` as its standard input.
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Outcome {
        self.run_in(args, Some(stdin), None).await
    }

    /// Runs `bldst ARGS` in `dir`, with optional standard input.
    pub async fn run_in(&self, args: &[&str], stdin: Option<&str>, dir: Option<&Path>) -> Outcome {
        let mut command = self.command();
        command.args(args);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        if stdin.is_some() {
            command.stdin(Stdio::piped());
        }
        let mut child = command.spawn().expect("run bldst");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            pipe.write_all(text.as_bytes()).await.expect("write stdin");
            drop(pipe);
        }
        let output = child.wait_with_output().await.expect("bldst ran");
        Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
        }
    }

    /// Starts a build with `bldst build create --quiet` and returns its id.
    pub async fn create_build(&self, extra: &[&str]) -> BuildId {
        let mut args = vec![
            "build",
            "create",
            "--platform",
            "aws",
            "--image-type",
            "rhel8",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let outcome = self.run(&args).await.ok();
        outcome.stdout.trim().parse().expect("a build id on stdout")
    }

    /// Reports `state` `status` with `bldst build update`, expecting success.
    pub async fn report(&self, id: &BuildId, state: u8, status: &str) -> Outcome {
        self.run(&[
            "build",
            "update",
            id.as_str(),
            "--state",
            &state.to_string(),
            "--status",
            status,
        ])
        .await
        .ok()
    }
}

/// The redactions every CLI snapshot gets: ids, secrets, times, ports, durations and temporary
/// paths.
pub fn redactions() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"\bb_[a-z0-9]{20}\b", "[build-id]"),
        (r"\bt_[a-z0-9]{16}\b", "[token-id]"),
        (r"\bu_[a-z0-9]{16}\b", "[user-id]"),
        (r"\bbst_[A-Za-z0-9]+", "[secret]"),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "[time]",
        ),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"after \d+s", "after [n]s"),
        (r"/tmp/\.tmp[A-Za-z0-9]+", "[tmp]"),
        (r"version \d+\.\d+\.\d+", "version [x.y.z]"),
    ]
}

/// Asserts a named snapshot of `text` with [`redactions`] applied.
#[macro_export]
macro_rules! assert_cli_snapshot {
    ($name:expr, $text:expr) => {
        insta::with_settings!({filters => $crate::helpers::redactions()}, {
            insta::assert_snapshot!($name, $text);
        })
    };
}
