//! `state-store`: buildstate as a Concourse resource type (the v1 resource interface).
//!
//! The image installs the `bldst` binary as `/opt/resource/check`, `in` and `out`; it calls
//! [`run`] with the command its name says. Each command reads one JSON request on stdin,
//! writes exactly one JSON document on stdout and logs on stderr. On any failure it writes one
//! line on stderr, nothing on stdout, and exits non-zero. The token never appears in any output.
//!
//! - [`schema`]: the `source` and `params` keys (unknown keys are refused), and the versions.
//! - [`check`], [`get`] (`in`), [`put`] (`out`): the three commands, thin over
//!   `buildstate-client`.

pub mod check;
pub mod get;
pub mod put;
pub mod schema;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use buildstate_client::api::{insecure_host, Client, ClientConfig, ClientError, Proxies};
use buildstate_client::env::EnvMap;
use buildstate_client::failure::{self, Hints};

use schema::Source;

/// One of the three commands of the resource interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Check,
    In,
    Out,
}

impl Command {
    /// The command a program called `name` (the file name of `argv[0]`) performs.
    pub fn from_program_name(name: &str) -> Option<Command> {
        match name {
            "check" => Some(Command::Check),
            "in" => Some(Command::In),
            "out" => Some(Command::Out),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Command::Check => "check",
            Command::In => "in",
            Command::Out => "out",
        }
    }
}

/// Runs the resource's `command` on the process's stdin, stdout, stderr, arguments and
/// environment: what `/opt/resource/{check,in,out}` do.
pub fn main(command: Command) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let env = EnvMap::from_process();
    let code = run(
        command,
        &args,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
        &env,
    );
    std::process::ExitCode::from(code)
}

/// Exit code of a failed command (the resource interface only distinguishes zero/non-zero).
pub const FAILURE: u8 = 1;

/// Runs `command` with its arguments (`in` and `out` take the directory), reading the request
/// from `stdin`, writing the answer to `stdout` and logs to `stderr`, in the environment `env`.
/// Returns the exit code.
pub fn run(
    command: Command,
    args: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
    env: &EnvMap,
) -> u8 {
    let mut log = Log::new();
    let outcome = run_inner(command, args, stdin, env, &log);
    let (code, answer) = match outcome {
        Ok(answer) => (0, Some(answer)),
        Err(message) => {
            log.line(format!("error: {}: {message}", command.name()));
            (FAILURE, None)
        }
    };
    log.flush_to(stderr);
    if let Some(answer) = answer {
        let mut text = answer.to_string();
        text.push('\n');
        if stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .is_err()
        {
            log.line(format!(
                "error: {}: cannot write the answer to stdout",
                command.name()
            ));
            log.flush_to(stderr);
            return FAILURE;
        }
    }
    code
}

fn run_inner(
    command: Command,
    args: &[String],
    stdin: &mut dyn Read,
    env: &EnvMap,
    log: &Log,
) -> Result<serde_json::Value, String> {
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read the request on stdin: {error}"))?;
    // Parsed loosely first, so that every later message can be scrubbed of the token.
    let request: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|error| format!("the request on stdin is not JSON: {error}"))?;
    if let Some(token) = request
        .get("source")
        .and_then(|source| source.get("token"))
        .and_then(serde_json::Value::as_str)
    {
        log.redact(token);
    }
    let directory = || -> Result<&str, String> {
        args.first()
            .map(String::as_str)
            .ok_or_else(|| format!("`{}` needs the directory as its argument", command.name()))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the async runtime: {error}"))?;
    let result = match command {
        Command::Check => {
            let request = schema::parse::<schema::CheckRequest>(request)?;
            let client = client_for(&request.source, env, log)?;
            runtime.block_on(check::check(&client, &request, log))
        }
        Command::In => {
            let request = schema::parse::<schema::InRequest>(request)?;
            let directory = directory()?;
            let client = client_for(&request.source, env, log)?;
            runtime.block_on(get::get(&client, &request, directory.as_ref(), env, log))
        }
        Command::Out => {
            let request = schema::parse::<schema::OutRequest>(request)?;
            let directory = directory()?;
            let client = client_for(&request.source, env, log)?;
            runtime.block_on(put::put(&client, &request, directory.as_ref(), env, log))
        }
    };
    result.map_err(|error| log.scrub(&error))
}

/// The identity this Concourse build reports under, for stage leases: an `in_progress` put
/// claims the stage for it, and every later put (and `in`'s gate answers) of the same build
/// speaks as it, so the build's own reports are accepted without carrying the lease's fence
/// from step to step. It is the build's page, which is unique per build and which a person can
/// open from the holder named in a refusal: `ATC_EXTERNAL_URL/builds/BUILD_ID`; without
/// `ATC_EXTERNAL_URL`, `concourse-build:BUILD_ID`; without `BUILD_ID`, the job build's page
/// (`ATC_EXTERNAL_URL/teams/T/pipelines/P/jobs/J/builds/N`). Outside a Concourse build
/// (none of these set), `None`: the put claims no lease, as a report without a run identity.
pub fn concourse_run(env: &EnvMap) -> Option<String> {
    let atc = env
        .get("ATC_EXTERNAL_URL")
        .map(|url| url.trim_end_matches('/').to_owned());
    match (env.get("BUILD_ID"), atc) {
        (Some(id), Some(atc)) => Some(format!("{atc}/builds/{id}")),
        (Some(id), None) => Some(format!("concourse-build:{id}")),
        (None, _) => buildstate_client::ci::concourse_build_url(&|name| env.get(name)),
    }
}

/// How the resource's messages say to fix the URL or the token.
const HINTS: Hints<'static> = Hints {
    no_token: "set `token` in the resource's `source`",
    bad_token: "set a valid `token` in the resource's `source`",
    api_url: "`api_url` in the resource's `source`",
    allow_insecure: "set `allow_insecure: true` in the resource's `source`",
    field: failure::api_field,
};

/// A client error as one sentence.
pub(crate) fn describe(error: &ClientError) -> String {
    failure::describe(error, &HINTS)
}

/// A client for `source`: its URL, token, timeout, CA certificates, the proxies of `env`,
/// and retries logged through `log`.
fn client_for(source: &Source, env: &EnvMap, log: &Log) -> Result<Client, String> {
    let mut config = ClientConfig::new(&source.api_url, Some(source.token.expose().to_owned()));
    if let Some(seconds) = source.timeout_seconds {
        config.timeout = Duration::from_secs(seconds);
    }
    if let Some(attempts) = source.max_attempts {
        config.max_attempts = attempts;
    }
    config.extra_root_pem = source.ca_certs.as_ref().map(|pem| pem.as_bytes().to_vec());
    config.allow_insecure = source.allow_insecure;
    if source.allow_insecure {
        if let Some(host) = insecure_host(&source.api_url) {
            log.line(format!(
                "warning: sending the token over plain http:// to `{host}` (`allow_insecure: true`): \
                 anyone on the network path can read it; prefer an https:// `api_url`"
            ));
        }
    }
    config.proxies = Some(Proxies::from_env(&|name| env.get(name)));
    let retries = log.clone();
    config.on_retry = Some(Arc::new(move |line: &str| {
        retries.line(format!("retrying: {line}"));
    }));
    if source.debug {
        log.line(format!(
            "debug: API {} (token redacted), timeout {}s, at most {} attempts",
            source.api_url,
            config.timeout.as_secs(),
            config.max_attempts
        ));
    }
    Client::new(config).map_err(|error| describe(&error))
}

/// Lines for stderr, kept until the command ends (the client's retry callback may run on the
/// runtime's thread), each scrubbed of the token.
#[derive(Clone, Default)]
pub struct Log {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    lines: Vec<String>,
    secrets: Vec<String>,
    debug: bool,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Log")
    }
}

impl Log {
    fn new() -> Self {
        Log::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        // A poisoned lock only means a panic elsewhere; the lines are still good.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Never print `secret`.
    fn redact(&self, secret: &str) {
        if !secret.is_empty() {
            self.lock().secrets.push(secret.to_owned());
        }
    }

    /// `text` with every secret replaced.
    fn scrub(&self, text: &str) -> String {
        let inner = self.lock();
        let mut text = text.to_owned();
        for secret in &inner.secrets {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        text
    }

    /// Adds one line for stderr.
    pub fn line(&self, line: String) {
        let line = self.scrub(&line);
        self.lock().lines.push(line);
    }

    /// Turns on `debug:` lines (the source's `debug`).
    pub fn set_debug(&self, on: bool) {
        self.lock().debug = on;
    }

    /// Adds a `debug:` line when debugging is on.
    pub fn debug(&self, line: impl FnOnce() -> String) {
        if self.lock().debug {
            self.line(format!("debug: {}", line()));
        }
    }

    fn flush_to(&mut self, stderr: &mut dyn Write) {
        let lines = std::mem::take(&mut self.lock().lines);
        for line in lines {
            // Nowhere to report a broken stderr.
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs<'a> = Vec<(&'a str, &'a str)>;

    fn env(pairs: &[(&str, &str)]) -> EnvMap {
        pairs.iter().copied().collect()
    }

    #[test]
    fn the_run_identity_is_the_concourse_builds_page() {
        let job = [
            ("BUILD_TEAM_NAME", "main"),
            ("BUILD_PIPELINE_NAME", "images"),
            ("BUILD_JOB_NAME", "rhel8"),
            ("BUILD_NAME", "7"),
        ];
        let cases: Vec<(&str, Pairs, Option<&str>)> = vec![
            (
                "build id and ATC",
                [
                    &job[..],
                    &[("BUILD_ID", "1234"), ("ATC_EXTERNAL_URL", "https://ci/")],
                ]
                .concat(),
                Some("https://ci/builds/1234"),
            ),
            (
                "build id without ATC",
                vec![("BUILD_ID", "1234")],
                Some("concourse-build:1234"),
            ),
            (
                "a job build without its id",
                [&job[..], &[("ATC_EXTERNAL_URL", "https://ci")]].concat(),
                Some("https://ci/teams/main/pipelines/images/jobs/rhel8/builds/7"),
            ),
            ("outside Concourse", Vec::new(), None),
        ];
        for (name, pairs, expected) in cases {
            assert_eq!(concourse_run(&env(&pairs)).as_deref(), expected, "{name}");
        }
    }
}
