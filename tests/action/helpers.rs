//! Runs the built binary the way a GitHub runner runs a Docker action: started as
//! `bldst-action`, with only the environment the runner gives the container (`GITHUB_*`,
//! `RUNNER_*`, `INPUT_*` with hyphens kept, every declared input set, unset ones empty), fresh
//! `GITHUB_OUTPUT` / `GITHUB_STEP_SUMMARY` files that are parsed back afterwards.
//!
//! Every step is checked against the runner's contract whatever the test asserts: the token
//! masked before anything else, in no other line and in no file; groups balanced; a failure is
//! exactly one `::error title=buildstate::` line; outputs parse.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use buildstate_action::inputs::{variable, DECLARED};

/// The workflow run a step belongs to.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub server_url: String,
    pub api_url: String,
    pub repository: String,
    pub run_id: String,
    pub run_attempt: u32,
    pub job: String,
    pub sha: String,
}

impl Default for Workflow {
    fn default() -> Self {
        Workflow {
            server_url: "https://github.com".into(),
            api_url: "https://api.github.invalid".into(),
            repository: "org/images".into(),
            run_id: "4242".into(),
            run_attempt: 1,
            job: "build".into(),
            sha: "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567".into(),
        }
    }
}

impl Workflow {
    /// The same run, re-run ("Re-run failed jobs"): the id stays, the attempt goes up.
    pub fn rerun(&self) -> Workflow {
        Workflow {
            run_attempt: self.run_attempt + 1,
            ..self.clone()
        }
    }

    /// The history's source for this run attempt.
    pub fn source(&self) -> String {
        format!(
            "{}/{}/actions/runs/{}/attempts/{}",
            self.server_url, self.repository, self.run_id, self.run_attempt
        )
    }
}

/// One step's inputs and extra environment.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// The step's id (`GITHUB_ACTION`).
    pub id: String,
    pub inputs: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

impl Step {
    pub fn new(id: &str, inputs: &[(&str, &str)]) -> Self {
        Step {
            id: id.to_owned(),
            inputs: inputs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// What one step left behind.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub outputs: BTreeMap<String, String>,
    pub summary: String,
}

impl Outcome {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "exit code\n--- stdout\n{}", self.stdout);
        assert!(
            !self.stdout.contains("::error"),
            "no error on success: {}",
            self.stdout
        );
        self
    }

    /// The failure contract: a non-zero code and exactly one `::error title=buildstate::` line,
    /// whose message (unescaped) is returned.
    #[track_caller]
    pub fn failed(&self) -> String {
        assert_ne!(self.code, 0, "a failure\n--- stdout\n{}", self.stdout);
        let errors: Vec<&str> = self
            .stdout
            .lines()
            .filter(|line| line.starts_with("::error"))
            .collect();
        assert_eq!(errors.len(), 1, "one ::error line: {}", self.stdout);
        let message = errors[0]
            .strip_prefix("::error title=buildstate::")
            .unwrap_or_else(|| panic!("titled buildstate: {}", errors[0]));
        message
            .replace("%0A", "\n")
            .replace("%0D", "\r")
            .replace("%25", "%")
    }

    pub fn output(&self, name: &str) -> &str {
        self.outputs
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("output `{name}` in {:?}", self.outputs))
    }

    /// The lines that are not workflow commands: what a person reads in the log.
    pub fn log_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| !line.starts_with("::"))
            .collect()
    }
}

/// Parses a `GITHUB_OUTPUT` file as the runner does: `name=value` lines and `name<<DELIMITER`
/// heredocs.
pub fn parse_output_file(text: &str) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        if let Some((name, delimiter)) = line.split_once("<<") {
            let mut value = Vec::new();
            loop {
                let next = lines
                    .next()
                    .unwrap_or_else(|| panic!("heredoc `{delimiter}` is closed: {text}"));
                if next == delimiter {
                    break;
                }
                value.push(next);
            }
            outputs.insert(name.to_owned(), value.join("\n"));
        } else {
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("`name=value`: {line:?}"));
            outputs.insert(name.to_owned(), value.to_owned());
        }
    }
    outputs
}

/// The action's binary under its entrypoint name, in a directory of its own, or an image's
/// entrypoint run among the image's files.
pub struct Action {
    dir: tempfile::TempDir,
    program: PathBuf,
    args: Vec<String>,
    /// With an image: its root filesystem, where the step's files go (the runner mounts them
    /// at /github/file_commands).
    image_root: Option<PathBuf>,
    pub api_url: String,
    pub token: String,
}

impl Action {
    pub fn new(api_url: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let program = dir.path().join(buildstate_action::PROGRAM_NAME);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bldst"), &program).expect("symlink");
        Action {
            dir,
            program,
            args: Vec::new(),
            image_root: None,
            api_url: api_url.to_owned(),
            token: token.to_owned(),
        }
    }

    /// The image unpacked at `root`, started as `chroot ROOT ENTRYPOINT...`.
    pub fn in_image(
        chroot: &std::path::Path,
        root: &std::path::Path,
        entrypoint: &[String],
        api_url: &str,
        token: &str,
    ) -> Self {
        let mut args = vec![root.display().to_string()];
        args.extend(entrypoint.iter().cloned());
        Action {
            dir: tempfile::tempdir().expect("temporary directory"),
            program: chroot.to_path_buf(),
            args,
            image_root: Some(root.to_path_buf()),
            api_url: api_url.to_owned(),
            token: token.to_owned(),
        }
    }

    /// Runs `step` of `workflow`.
    pub async fn run(&self, workflow: &Workflow, step: &Step) -> Outcome {
        let files = match &self.image_root {
            Some(root) => {
                let mounted = root.join("github/file_commands");
                std::fs::create_dir_all(&mounted).expect("file_commands");
                tempfile::tempdir_in(mounted).expect("step directory")
            }
            None => tempfile::tempdir_in(self.dir.path()).expect("step directory"),
        };
        let output_path = files.path().join("set_output");
        let summary_path = files.path().join("step_summary");
        std::fs::write(&output_path, "").expect("output file");
        std::fs::write(&summary_path, "").expect("summary file");
        // The paths the step sees: inside the image, relative to its root.
        let seen = |path: &std::path::Path| match &self.image_root {
            Some(root) => format!("/{}", path.strip_prefix(root).expect("inside").display()),
            None => path.display().to_string(),
        };

        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .current_dir(files.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let runner_env = [
            ("HOME", "/github/home".to_owned()),
            ("CI", "true".to_owned()),
            ("GITHUB_ACTIONS", "true".to_owned()),
            ("GITHUB_SERVER_URL", workflow.server_url.clone()),
            ("GITHUB_API_URL", workflow.api_url.clone()),
            (
                "GITHUB_GRAPHQL_URL",
                format!("{}/graphql", workflow.api_url),
            ),
            ("GITHUB_REPOSITORY", workflow.repository.clone()),
            ("GITHUB_REPOSITORY_OWNER", "org".to_owned()),
            ("GITHUB_RUN_ID", workflow.run_id.clone()),
            ("GITHUB_RUN_NUMBER", "17".to_owned()),
            ("GITHUB_RUN_ATTEMPT", workflow.run_attempt.to_string()),
            ("GITHUB_JOB", workflow.job.clone()),
            ("GITHUB_ACTION", step.id.clone()),
            ("GITHUB_ACTION_REPOSITORY", String::new()),
            ("GITHUB_ACTION_REF", String::new()),
            ("GITHUB_WORKFLOW", "images".to_owned()),
            ("GITHUB_EVENT_NAME", "push".to_owned()),
            ("GITHUB_REF", "refs/heads/main".to_owned()),
            ("GITHUB_SHA", workflow.sha.clone()),
            ("GITHUB_ACTOR", "octocat".to_owned()),
            ("GITHUB_WORKSPACE", "/github/workspace".to_owned()),
            (
                "GITHUB_EVENT_PATH",
                "/github/workflow/event.json".to_owned(),
            ),
            ("GITHUB_OUTPUT", seen(&output_path)),
            ("GITHUB_STEP_SUMMARY", seen(&summary_path)),
            ("GITHUB_ENV", seen(&files.path().join("set_env"))),
            ("GITHUB_PATH", seen(&files.path().join("add_path"))),
            ("GITHUB_STATE", seen(&files.path().join("save_state"))),
            ("RUNNER_OS", "Linux".to_owned()),
            ("RUNNER_ARCH", "X64".to_owned()),
            ("RUNNER_NAME", "GitHub Actions 2".to_owned()),
            ("RUNNER_TEMP", "/home/runner/work/_temp".to_owned()),
            ("RUNNER_DEBUG", String::new()),
            ("ACTIONS_RUNTIME_TOKEN", "runtime-token-not-ours".to_owned()),
        ];
        for (name, value) in runner_env {
            command.env(name, value);
        }
        // Every declared input is set; the defaults of action.yml apply, then the step's `with:`.
        let mut inputs: BTreeMap<&str, String> =
            DECLARED.iter().map(|name| (*name, String::new())).collect();
        inputs.insert("api-url", self.api_url.clone());
        inputs.insert("api-token", self.token.clone());
        inputs.insert("on-backoff", "wait".into());
        inputs.insert("max-wait", "900".into());
        inputs.insert("github-token", GITHUB_TOKEN.into());
        inputs.insert("commit-status", "false".into());
        inputs.insert("summary", "auto".into());
        for (name, value) in &step.inputs {
            assert!(
                inputs.contains_key(name.as_str()),
                "`{name}` is a declared input"
            );
            inputs.insert(name.as_str(), value.clone());
        }
        for (name, value) in &inputs {
            command.env(variable(name), value);
        }
        for (name, value) in &step.env {
            command.env(name, value);
        }

        let output = command
            .spawn()
            .expect("run bldst-action")
            .wait_with_output()
            .await
            .expect("bldst-action ran");
        let outcome = Outcome {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("utf-8 stderr"),
            outputs: parse_output_file(&std::fs::read_to_string(&output_path).expect("outputs")),
            summary: std::fs::read_to_string(&summary_path).expect("summary"),
        };
        let secrets = [
            inputs["api-token"].as_str(),
            inputs["github-token"].as_str(),
        ];
        check_runner_contract(&outcome, &secrets);
        outcome
    }
}

/// The `github-token` every step gets (the runner's `github.token` default).
pub const GITHUB_TOKEN: &str = "ghs_fakeGitHubTokenForTests0123456789";

/// What every step must do, whatever it was asked.
#[track_caller]
fn check_runner_contract(outcome: &Outcome, secrets: &[&str]) {
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    // Masks come first, one per secret given.
    let masks: Vec<&str> = lines
        .iter()
        .take_while(|line| line.starts_with("::add-mask::"))
        .copied()
        .collect();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        assert!(
            masks.contains(&format!("::add-mask::{secret}").as_str()),
            "the secret is masked before anything else: {}",
            outcome.stdout
        );
        for line in &lines[masks.len()..] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
        assert!(!outcome.stderr.contains(secret), "a secret on stderr");
        assert!(!outcome.summary.contains(secret), "a secret in the summary");
        for value in outcome.outputs.values() {
            assert!(!value.contains(secret), "a secret in an output");
        }
    }
    // Groups are balanced and never nested.
    let mut open = false;
    for line in &lines {
        if line.starts_with("::group::") {
            assert!(!open, "nested group: {}", outcome.stdout);
            open = true;
        } else if *line == "::endgroup::" {
            assert!(open, "endgroup without group: {}", outcome.stdout);
            open = false;
        }
    }
    assert!(!open, "an unclosed group: {}", outcome.stdout);
    assert!(
        !outcome.stdout.contains("::set-output"),
        "outputs go to GITHUB_OUTPUT"
    );
    if outcome.code == 0 {
        assert!(
            !outcome.stdout.contains("::error"),
            "no error annotation on success"
        );
    }
}
