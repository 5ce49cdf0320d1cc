//! The action's inputs, read the way the runner passes them to a Docker action and parsed once.
//!
//! The runner sets `INPUT_<NAME>` for every input `action.yml` declares: the name upper-cased,
//! spaces turned into `_`, hyphens kept (`api-url` → `INPUT_API-URL`). An input the workflow did
//! not set arrives as the empty string, which means absent. GitHub does not enforce
//! `required: true` for Docker actions, so this module does, per command, before any network
//! call; every error names the input and says what to put there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use buildstate_client::env::EnvMap;
use buildstate_client::policy::parse_policy;
use buildstate_domain::limits::MAX_MESSAGE_CHARS;
use buildstate_domain::{
    BuildId, BuildKey, BuildRetryPolicy, ImageType, Labels, Outputs, Platform, ReportStatus,
    StateCode,
};

/// Every input `action.yml` declares (a test checks the two agree).
pub const DECLARED: &[&str] = &[
    "api-url",
    "api-token",
    "command",
    "build-id",
    "key",
    "platform",
    "image-type",
    "description",
    "labels",
    "max-retries",
    "retry-policy",
    "state",
    "status",
    "message",
    "message-file",
    "expected-state",
    "outputs",
    "on-backoff",
    "max-wait",
    "run-id",
    "github-token",
    "commit-status",
    "allow-insecure",
    "dashboard-url",
    "summary",
];

/// The environment variable the runner sets for input `name`.
pub fn variable(name: &str) -> String {
    format!("INPUT_{}", name.replace(' ', "_").to_uppercase())
}

/// Input `name`, trimmed; `None` when unset or blank.
pub fn raw(env: &EnvMap, name: &str) -> Option<String> {
    env.get(&variable(name))
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// The inputs holding secrets, to mask before anything is printed.
pub fn secrets(env: &EnvMap) -> Vec<String> {
    ["api-token", "github-token"]
        .iter()
        .filter_map(|name| raw(env, name))
        .collect()
}

/// What the step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start a build, or resume the unfinished one with the same key.
    Start,
    /// Report a transition on a stage.
    Report,
    /// Ask whether a stage should run.
    Gate,
    /// Read the build.
    Get,
    /// After a failed workflow run: wait for its builds' retries to be due, then re-run its
    /// failed jobs.
    Retry,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Start => "start",
            Command::Report => "report",
            Command::Gate => "gate",
            Command::Get => "get",
            Command::Retry => "retry",
        }
    }
}

/// Which build a step is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildRef {
    Id(BuildId),
    /// The newest build with this key.
    Key(BuildKey),
}

/// What a gate does when the stage is backing off after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackoff {
    /// Wait it out, up to `max-wait`.
    Wait,
    /// Fail the step at once.
    Fail,
}

/// Whether to write to the job summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// The command's own choice: the build's ladder for `start`, `get` and a report that fails
    /// or finishes the build; one line otherwise.
    Auto,
    /// Always the ladder.
    Ladder,
    /// Nothing.
    None,
}

/// The parsed inputs.
#[derive(Clone)]
pub struct Inputs {
    pub command: Command,
    pub api_url: String,
    pub api_token: String,
    pub build: Option<BuildRef>,
    pub key: Option<BuildKey>,
    pub platform: Option<Platform>,
    pub image_type: Option<ImageType>,
    pub description: Option<String>,
    pub labels: Labels,
    pub max_retries: Option<u32>,
    /// `start`: the build's retry policy (YAML or JSON), checked before anything is sent.
    pub retry_policy: Option<BuildRetryPolicy>,
    pub state: Option<StateCode>,
    pub status: Option<ReportStatus>,
    pub message: Option<String>,
    pub message_file: Option<PathBuf>,
    pub expected_state: Option<StateCode>,
    pub outputs: Outputs,
    pub on_backoff: OnBackoff,
    pub max_wait: Duration,
    pub github_token: Option<String>,
    pub commit_status: bool,
    /// Send the token over plain `http://` to another host (an internal server without TLS).
    pub allow_insecure: bool,
    pub dashboard_url: Option<String>,
    pub summary: Summary,
    /// `retry`: the builds' keys, every line of `key`.
    pub keys: Vec<BuildKey>,
    /// `retry`: the failed workflow run (`run-id`).
    pub run_id: Option<u64>,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("command", &self.command)
            .field("api_url", &self.api_url)
            .field("api_token", &"<redacted>")
            .field("build", &self.build)
            .field("state", &self.state)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A wrong or missing input: the name and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub input: &'static str,
    pub problem: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "input `{}`: {}", self.input, self.problem)
    }
}

fn error(input: &'static str, problem: impl Into<String>) -> InputError {
    InputError {
        input,
        problem: problem.into(),
    }
}

fn parsed<T>(env: &EnvMap, name: &'static str) -> Result<Option<T>, InputError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    raw(env, name)
        .map(|text| {
            text.parse::<T>()
                .map_err(|problem| error(name, problem.to_string()))
        })
        .transpose()
}

fn required<T>(value: Option<T>, name: &'static str, command: Command) -> Result<T, InputError> {
    value.ok_or_else(|| {
        error(
            name,
            format!(
                "required for `command: {}`; set it in the step's `with:`",
                command.as_str()
            ),
        )
    })
}

/// `true`/`false` as YAML 1.2 spells them; `default` when unset.
fn boolean(env: &EnvMap, name: &'static str, default: bool) -> Result<bool, InputError> {
    match raw(env, name).as_deref() {
        None => Ok(default),
        Some("true" | "True" | "TRUE") => Ok(true),
        Some("false" | "False" | "FALSE") => Ok(false),
        Some(other) => Err(error(name, format!("`{other}` is not `true` or `false`"))),
    }
}

/// Lines of `key=value` (blank lines and `#` comments ignored), as labels and outputs are given.
pub fn key_values(
    env: &EnvMap,
    name: &'static str,
) -> Result<BTreeMap<String, String>, InputError> {
    let mut map = BTreeMap::new();
    let Some(text) = raw(env, name) else {
        return Ok(map);
    };
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(error(
                name,
                format!("line {} `{line}` is not `key=value`", number + 1),
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(error(
                name,
                format!("line {} has no key before `=`", number + 1),
            ));
        }
        if map
            .insert(key.to_owned(), value.trim().to_owned())
            .is_some()
        {
            return Err(error(name, format!("`{key}` is given twice")));
        }
    }
    Ok(map)
}

/// Every line of `key` as a build key (blank lines and `#` comments ignored).
fn key_lines(env: &EnvMap) -> Result<Vec<BuildKey>, InputError> {
    let Some(text) = raw(env, "key") else {
        return Ok(Vec::new());
    };
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(number, line)| {
            line.parse::<BuildKey>()
                .map_err(|problem| error("key", format!("line {}: {problem}", number + 1)))
        })
        .collect()
}

/// Parses and checks the inputs for the command they name. Never touches the network.
pub fn parse(env: &EnvMap) -> Result<Inputs, InputError> {
    let command = match raw(env, "command").as_deref() {
        None => {
            return Err(error(
                "command",
                "required: one of `start`, `report`, `gate`, `get`, `retry`",
            ))
        }
        Some("start") => Command::Start,
        Some("report") => Command::Report,
        Some("gate") => Command::Gate,
        Some("get") => Command::Get,
        Some("retry") => Command::Retry,
        Some(other) => {
            return Err(error(
                "command",
                format!("`{other}` is not one of `start`, `report`, `gate`, `get`, `retry`"),
            ))
        }
    };
    let api_url = raw(env, "api-url").ok_or_else(|| {
        error(
            "api-url",
            "required: the buildstate server's URL, e.g. `https://buildstate.example.com`",
        )
    })?;
    if !(api_url.starts_with("http://") || api_url.starts_with("https://")) {
        return Err(error(
            "api-url",
            format!("`{api_url}` must start with http:// or https://"),
        ));
    }
    let api_token = raw(env, "api-token").ok_or_else(|| {
        error(
            "api-token",
            "required: a buildstate API token with `write` scope, e.g. `${{ secrets.BUILDSTATE_TOKEN }}`",
        )
    })?;

    // `retry` takes a key per line (the builds of one workflow run); the others take one.
    let keys = match command {
        Command::Retry => key_lines(env)?,
        _ => Vec::new(),
    };
    let key: Option<BuildKey> = match command {
        Command::Retry => None,
        _ => parsed(env, "key")?,
    };
    let build_id: Option<BuildId> = parsed(env, "build-id")?;
    let build = build_id
        .map(BuildRef::Id)
        .or_else(|| key.clone().map(BuildRef::Key));
    let labels = Labels::try_from(key_values(env, "labels")?)
        .map_err(|invalid| error("labels", invalid.reason))?;
    let max_retries = raw(env, "max-retries")
        .map(|text| {
            text.parse::<u32>()
                .map_err(|_| error("max-retries", format!("`{text}` is not a whole number")))
        })
        .transpose()?;
    // The same sentences as the API's, naming the input instead of a file.
    let retry_policy = raw(env, "retry-policy")
        .map(|text| parse_policy(&text, "input `retry-policy`"))
        .transpose()
        .map_err(|invalid| error("retry-policy", invalid.reason))?;
    let message = raw(env, "message");
    if let Some(message) = &message {
        if message.chars().count() > MAX_MESSAGE_CHARS {
            return Err(error(
                "message",
                format!("at most {MAX_MESSAGE_CHARS} characters; use `message-file` for logs (its end is kept)"),
            ));
        }
    }
    let on_backoff = match raw(env, "on-backoff").as_deref() {
        None | Some("wait") => OnBackoff::Wait,
        Some("fail") => OnBackoff::Fail,
        Some(other) => {
            return Err(error(
                "on-backoff",
                format!("`{other}` is not `wait` or `fail`"),
            ))
        }
    };
    let max_wait = match raw(env, "max-wait") {
        None => Duration::from_secs(900),
        Some(text) => Duration::from_secs(
            text.parse::<u64>()
                .map_err(|_| error("max-wait", format!("`{text}` is not a number of seconds")))?,
        ),
    };
    let summary = match raw(env, "summary").as_deref() {
        None | Some("auto") | Some("true") => Summary::Auto,
        Some("ladder") => Summary::Ladder,
        Some("none") | Some("false") => Summary::None,
        Some(other) => {
            return Err(error(
                "summary",
                format!("`{other}` is not `auto`, `ladder` or `none`"),
            ))
        }
    };
    let inputs = Inputs {
        command,
        api_url,
        api_token,
        build,
        key,
        platform: parsed(env, "platform")?,
        image_type: parsed(env, "image-type")?,
        description: raw(env, "description"),
        labels,
        max_retries,
        retry_policy,
        state: parsed(env, "state")?,
        status: parsed(env, "status")?,
        message,
        message_file: raw(env, "message-file").map(PathBuf::from),
        expected_state: parsed(env, "expected-state")?,
        outputs: Outputs::try_from(key_values(env, "outputs")?)
            .map_err(|invalid| error("outputs", invalid.to_string()))?,
        on_backoff,
        max_wait,
        github_token: raw(env, "github-token"),
        commit_status: boolean(env, "commit-status", false)?,
        allow_insecure: boolean(env, "allow-insecure", false)?,
        dashboard_url: raw(env, "dashboard-url"),
        summary,
        keys,
        run_id: raw(env, "run-id")
            .map(|text| {
                text.parse::<u64>()
                    .map_err(|_| error("run-id", format!("`{text}` is not a workflow run id")))
            })
            .transpose()?,
    };
    check_for_command(&inputs)?;
    Ok(inputs)
}

/// The inputs each command needs, and the ones that make no sense with it.
fn check_for_command(inputs: &Inputs) -> Result<(), InputError> {
    let command = inputs.command;
    match command {
        Command::Start => {
            required(inputs.platform.as_ref(), "platform", command)?;
            required(inputs.image_type.as_ref(), "image-type", command)?;
        }
        Command::Report => {
            required(inputs.build.as_ref(), "build-id", command).map_err(with_key_hint)?;
            required(inputs.state, "state", command)?;
            let status = required(inputs.status, "status", command)?;
            if !inputs.outputs.is_empty() && status != ReportStatus::Completed {
                return Err(error(
                    "outputs",
                    format!("only a `completed` report records outputs (this one is `{status}`)"),
                ));
            }
        }
        Command::Gate => {
            required(inputs.build.as_ref(), "build-id", command).map_err(with_key_hint)?;
            required(inputs.state, "state", command)?;
        }
        Command::Get => {
            required(inputs.build.as_ref(), "build-id", command).map_err(with_key_hint)?;
        }
        Command::Retry => {
            if inputs.keys.is_empty() && (inputs.platform.is_none() || inputs.image_type.is_none())
            {
                return Err(error(
                    "key",
                    "required for `command: retry`: the keys of the failed run's builds, one per line, or `platform` and `image-type` for the key `start` gives by default",
                ));
            }
            required(inputs.github_token.as_ref(), "github-token", command)?;
        }
    }
    if inputs.commit_status && inputs.github_token.is_none() {
        return Err(error(
            "github-token",
            "required with `commit-status: true` (its default is `${{ github.token }}`)",
        ));
    }
    Ok(())
}

fn with_key_hint(mut error: InputError) -> InputError {
    error.problem = format!(
        "{} (or set `key` to use the newest build with that key), e.g. `${{{{ steps.start.outputs.build-id }}}}`",
        error.problem
    );
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs
            .iter()
            .map(|(name, value)| (variable(name), (*value).to_owned()))
            .collect()
    }

    const BASE: [(&str, &str); 2] = [("api-url", "http://127.0.0.1:1"), ("api-token", "t")];

    fn with(extra: &[(&str, &str)]) -> EnvMap {
        let mut pairs: Vec<(&str, &str)> = BASE.to_vec();
        pairs.extend_from_slice(extra);
        env(&pairs)
    }

    #[test]
    fn input_variables_keep_hyphens_and_turn_spaces_into_underscores() {
        assert_eq!(variable("api-url"), "INPUT_API-URL");
        assert_eq!(variable("image type"), "INPUT_IMAGE_TYPE");
    }

    #[test]
    fn an_empty_input_means_absent() {
        let inputs = parse(&with(&[
            ("command", "get"),
            ("build-id", "b_1"),
            ("key", ""),
        ]))
        .expect("valid");
        assert_eq!(inputs.key, None);
        assert_eq!(inputs.build, Some(BuildRef::Id("b_1".parse().expect("id"))));
    }

    #[test]
    fn bad_inputs_name_the_input_and_what_to_do() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case<'_>] = &[
            (&[], "command", "required: one of"),
            (
                &[("command", "deploy")],
                "command",
                "`deploy` is not one of",
            ),
            (
                &[("command", "start")],
                "platform",
                "required for `command: start`",
            ),
            (
                &[("command", "start"), ("platform", "AWS")],
                "platform",
                "invalid platform",
            ),
            (
                &[
                    ("command", "report"),
                    ("build-id", "b_1"),
                    ("status", "completed"),
                ],
                "state",
                "required",
            ),
            (
                &[
                    ("command", "report"),
                    ("build-id", "b_1"),
                    ("state", "7"),
                    ("status", "completed"),
                ],
                "state",
                "7",
            ),
            (
                &[
                    ("command", "report"),
                    ("build-id", "b_1"),
                    ("state", "5"),
                    ("status", "done"),
                ],
                "status",
                "`done` is not a valid report status",
            ),
            (
                &[
                    ("command", "report"),
                    ("build-id", "b_1"),
                    ("state", "5"),
                    ("status", "failed"),
                    ("outputs", "a=1"),
                ],
                "outputs",
                "only a `completed` report",
            ),
            (
                &[("command", "gate"), ("state", "5")],
                "build-id",
                "or set `key`",
            ),
            (
                &[
                    ("command", "report"),
                    ("build-id", "b_1"),
                    ("state", "5"),
                    ("status", "completed"),
                    ("outputs", "ami id=1"),
                ],
                "outputs",
                "ami id",
            ),
            (
                &[
                    ("command", "gate"),
                    ("build-id", "b_1"),
                    ("state", "5"),
                    ("on-backoff", "sleep"),
                ],
                "on-backoff",
                "`sleep`",
            ),
            (
                &[
                    ("command", "gate"),
                    ("build-id", "b_1"),
                    ("state", "5"),
                    ("max-wait", "10m"),
                ],
                "max-wait",
                "seconds",
            ),
            (
                &[
                    ("command", "get"),
                    ("build-id", "b_1"),
                    ("commit-status", "yes"),
                ],
                "commit-status",
                "`yes` is not",
            ),
            (
                &[
                    ("command", "get"),
                    ("build-id", "b_1"),
                    ("commit-status", "true"),
                ],
                "github-token",
                "required with",
            ),
            (
                &[
                    ("command", "start"),
                    ("platform", "aws"),
                    ("image-type", "x"),
                    ("labels", "git sha=1"),
                ],
                "labels",
                "label keys",
            ),
            (
                &[
                    ("command", "start"),
                    ("platform", "aws"),
                    ("image-type", "x"),
                    ("labels", "nokey"),
                ],
                "labels",
                "not `key=value`",
            ),
        ];
        for (extra, input, fragment) in cases {
            let error = parse(&with(extra)).expect_err(&format!("{extra:?}"));
            assert_eq!(error.input, *input, "{extra:?}: {error}");
            assert!(error.problem.contains(fragment), "{extra:?}: {error}");
        }
        let no_url = parse(&env(&[("command", "get"), ("build-id", "b")])).expect_err("url");
        assert_eq!(no_url.input, "api-url");
        let no_token = parse(&env(&[("command", "get"), ("api-url", "http://x")])).expect_err("t");
        assert_eq!(no_token.input, "api-token");
    }

    #[test]
    fn labels_and_outputs_are_lines_of_key_value() {
        let inputs = parse(&with(&[
            ("command", "report"),
            ("build-id", "b_1"),
            ("state", "10"),
            ("status", "completed"),
            (
                "outputs",
                "ami_id = ami-123\n\n# comment\nregion=eu-west-1=x\n",
            ),
        ]))
        .expect("valid");
        assert_eq!(
            inputs.outputs.as_map(),
            &BTreeMap::from([
                ("ami_id".to_owned(), "ami-123".to_owned()),
                ("region".to_owned(), "eu-west-1=x".to_owned()),
            ])
        );
    }

    #[test]
    fn the_inputs_declared_here_are_the_ones_action_yml_declares() {
        let yaml = include_str!("../../action.yml");
        let section = yaml
            .split("\ninputs:\n")
            .nth(1)
            .and_then(|rest| rest.split("\noutputs:\n").next())
            .expect("an inputs: section before outputs:");
        let declared: Vec<&str> = section
            .lines()
            .filter(|line| {
                line.starts_with("  ") && !line.starts_with("   ") && line.ends_with(':')
            })
            .map(|line| line.trim().trim_end_matches(':'))
            .collect();
        assert_eq!(declared, DECLARED);
    }
}
