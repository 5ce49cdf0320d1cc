//! Runs the resource's commands through an `/opt/resource` layout and checks the contract every
//! run must keep: JSON on stdout on success, one line on stderr and nothing on stdout on
//! failure, and never the token anywhere.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;

use crate::support::TestApp;

/// What one command left behind.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// The JSON answer of a successful run.
    #[track_caller]
    pub fn json(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!("one JSON document on stdout ({error}): {}", self.stdout)
        })
    }

    /// The failure contract: non-zero, nothing on stdout, and the last stderr line is the error
    /// (retries may be logged before it). Returns that line.
    #[track_caller]
    pub fn failure(&self) -> String {
        assert_ne!(self.code, 0, "should fail: {}", self.stdout);
        assert_eq!(self.stdout, "", "nothing on stdout on failure");
        let last = self.stderr.lines().last().unwrap_or_default().to_owned();
        assert!(last.starts_with("error: "), "{:?}", self.stderr);
        last
    }
}

/// The resource installed as `<root>/opt/resource/{check,in,out}` (links to the built binary),
/// talking to one test server.
pub struct Resource {
    pub root: tempfile::TempDir,
    pub api_url: String,
    pub token: String,
    /// Concourse's build metadata and anything else a test sets; nothing else is passed.
    pub env: Vec<(String, String)>,
}

impl Resource {
    pub fn new(app: &TestApp) -> Self {
        let root = tempfile::tempdir().expect("temporary root");
        let bin = root.path().join("opt/resource");
        std::fs::create_dir_all(&bin).expect("opt/resource");
        for name in ["check", "in", "out"] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bldst"), bin.join(name))
                .expect("link the binary");
        }
        Resource {
            root,
            api_url: app.base_url.clone(),
            token: app.admin_token.clone(),
            env: Vec::new(),
        }
    }

    /// Sets Concourse's metadata for one build of a job.
    pub fn in_concourse_build(mut self, build_id: &str) -> Self {
        self.set_env("BUILD_ID", build_id);
        self.set_env("BUILD_NAME", "7");
        self.set_env("BUILD_JOB_NAME", "rhel8");
        self.set_env("BUILD_PIPELINE_NAME", "images");
        self.set_env("BUILD_TEAM_NAME", "main");
        self.set_env("ATC_EXTERNAL_URL", "https://ci.example");
        self
    }

    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.retain(|(existing, _)| existing != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }

    /// A `source` for the `aws`/`rhel8` line with `key`, merged with `extra`.
    pub fn source(&self, key: &str, extra: Value) -> Value {
        let mut source = json!({
            "api_url": self.api_url,
            "token": self.token,
            "platform": "aws",
            "image_type": "rhel8",
            "key": key,
        });
        if let (Some(source), Some(extra)) = (source.as_object_mut(), extra.as_object()) {
            for (name, value) in extra {
                source.insert(name.clone(), value.clone());
            }
        }
        source
    }

    /// A fresh directory for `in` or `out`.
    pub fn dir(&self) -> tempfile::TempDir {
        tempfile::tempdir().expect("step directory")
    }

    pub async fn check(&self, request: &Value) -> Outcome {
        self.run("check", None, request.to_string().as_bytes())
            .await
    }

    pub async fn get(&self, dir: &Path, request: &Value) -> Outcome {
        self.run("in", Some(dir), request.to_string().as_bytes())
            .await
    }

    /// `in` of `version` of `source` into a fresh directory, as a pipeline's `get` after a
    /// `put` does: the directory and the JSON answer (the step must succeed).
    pub async fn get_version(&self, source: &Value, version: &Value) -> (tempfile::TempDir, Value) {
        let dir = self.dir();
        let answer = self
            .get(dir.path(), &json!({"source": source, "version": version}))
            .await
            .json();
        (dir, answer)
    }

    pub async fn put(&self, dir: &Path, request: &Value) -> Outcome {
        self.run("out", Some(dir), request.to_string().as_bytes())
            .await
    }

    /// Runs `/opt/resource/<command> [dir]` with `stdin` and only [`Resource::env`].
    pub async fn run(&self, command: &str, dir: Option<&Path>, stdin: &[u8]) -> Outcome {
        let program: PathBuf = self.root.path().join("opt/resource").join(command);
        run_program(&program, dir, stdin, &self.env, &self.token).await
    }
}

/// Runs `program` with an empty environment plus `env`, and checks that `token` is printed
/// nowhere.
pub async fn run_program(
    program: &Path,
    dir: Option<&Path>,
    stdin: &[u8],
    env: &[(String, String)],
    token: &str,
) -> Outcome {
    let mut command = tokio::process::Command::new(program);
    command
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = dir {
        command.arg(dir);
    }
    let mut child = command.spawn().expect("spawn the resource");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    let output = child.wait_with_output().await.expect("wait");
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

/// The versions of a `check` answer.
pub fn versions(answer: &Value) -> Vec<Value> {
    answer.as_array().expect("check answers a list").clone()
}

/// The `seq` of each version, as numbers.
pub fn seqs(versions: &[Value]) -> Vec<i64> {
    versions
        .iter()
        .map(|version| {
            version["seq"]
                .as_str()
                .expect("seq is a string")
                .parse()
                .expect("seq is a number")
        })
        .collect()
}

/// Every value of `version` is a string.
#[track_caller]
pub fn assert_strings_only(version: &Value) {
    let map = version.as_object().expect("a version is a map");
    assert!(!map.is_empty());
    assert!(map.values().all(Value::is_string), "{version}");
}

/// The metadata entry `name` of an `in`/`out` answer.
pub fn metadata(answer: &Value, name: &str) -> String {
    answer["metadata"]
        .as_array()
        .expect("metadata list")
        .iter()
        .find(|entry| entry["name"] == name)
        .and_then(|entry| entry["value"].as_str())
        .unwrap_or_else(|| panic!("metadata `{name}` in {answer}"))
        .to_owned()
}

/// A file the `in` step wrote, as text.
pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|error| panic!("{name}: {error}"))
}
